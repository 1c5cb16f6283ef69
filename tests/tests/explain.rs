//! Deep leak investigation: the processes in evidence carry their executable, command line,
//! parent chain and service; `ipcaudit explain` tells an object's story from the live daemon and
//! the same story from the recording; `ipcaudit report --html` renders in headless Chromium
//! without console errors and shows the leaked segment.

use std::{io::Write as _, path::PathBuf, time::Duration};

use ipcaudit_tests::{
    Held, Owned, Watch, ensure_chromium, png_size, render_in_chromium, require_root, run_ipcaudit,
    workload,
};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_ipc-workload");

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ipcaudit-explain-{}-{name}", std::process::id()))
}

/// The explanation without the fields that depend on when it was asked.
fn story(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("now_ns");
    }
    v
}

fn whats(e: &Value) -> Vec<String> {
    e["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["what"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn explain_live_and_replayed_and_the_html_report() {
    if !require_root() {
        return;
    }
    let exe = std::fs::canonicalize(WORKLOAD).unwrap();
    let exe = exe.to_str().unwrap();
    let watch = Watch::start("1");
    let socket = watch.socket.to_string_lossy().into_owned();
    let mut holder = Held::start(WORKLOAD, "hold-shm", None);
    let shmid = holder.info["shmid"].clone();
    let _owned = Owned::new("shm", &shmid);
    let pid = u64::from(holder.pid());
    // A segment whose story ends: created, attached, detached, removed.
    let basic = workload(WORKLOAD, "shm-basic");
    std::thread::sleep(Duration::from_millis(500));
    holder.kill();
    let finding = watch.wait_finding("orphaned-segment", &shmid);

    // Who owns it: the creator in evidence carries its executable, command line, parents, and
    // the service to blame.
    let creator = finding["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["role"] == "creator")
        .cloned()
        .unwrap_or_else(|| panic!("no creator in {finding:#}"));
    assert_eq!(creator["pid"].as_u64(), Some(pid), "{finding:#}");
    assert_eq!(creator["executable"], exe, "{finding:#}");
    assert!(
        creator["command_line"]
            .as_str()
            .is_some_and(|c| c.starts_with(WORKLOAD) && c.ends_with("hold-shm")),
        "{finding:#}"
    );
    let ancestors = creator["ancestors"].as_array().unwrap();
    assert_eq!(
        ancestors[0]["pid"].as_u64(),
        Some(u64::from(std::process::id())),
        "the parent is this test: {finding:#}"
    );
    assert_eq!(
        ancestors.last().unwrap()["pid"],
        1,
        "the chain ends at pid 1: {finding:#}"
    );
    assert_eq!(
        ancestors[0]["executable"].as_str(),
        std::env::current_exe()
            .ok()
            .as_deref()
            .and_then(|p| p.to_str()),
        "{finding:#}"
    );
    assert!(finding["service"].is_string(), "{finding:#}");

    // explain, live (once the call sites are symbolized: they come after the finding).
    let id = shmid.to_string();
    let explain_live = || {
        let (code, out, err) = run_ipcaudit(&[
            "explain", &id, "--type", "shm", "--json", "--socket", &socket,
        ]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let mut answer = explain_live();
    ipcaudit_tests::eventually(Duration::from_secs(20), || {
        answer = explain_live();
        answer["explanation"]["call_site"].is_object()
            && answer["explanation"]["operations"][0]["attach_site"].is_object()
    });
    assert_eq!(answer["source"], "watch");
    let live = answer["explanation"].clone();
    assert_eq!(
        whats(&live),
        ["create", "attach", "detach", "finding-raised"],
        "{live:#}"
    );
    let timeline = live["timeline"].as_array().unwrap();
    assert!(
        timeline[..3]
            .iter()
            .all(|t| t["process"]["pid"].as_u64() == Some(pid))
    );
    assert_eq!(timeline[1]["how"], "shmat");
    assert_eq!(
        timeline[1]["address"].as_u64(),
        u64::from_str_radix(
            holder.info["addr"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16
        )
        .ok()
    );
    assert_eq!(timeline[2]["how"], "exit");
    assert_eq!(timeline[2]["exit_code"], 9, "SIGKILL: {live:#}");
    assert_eq!(timeline[3]["rule"], "orphaned-segment");
    assert_eq!(live["verdict"]["state"], "leaked");
    assert_eq!(live["verdict"]["remedy"], format!("ipcrm -m {id}"));
    let why = live["verdict"]["findings"][0]["why"].to_string();
    assert!(why.contains("killed by SIGKILL"), "{why}");
    let ops = &live["operations"][0];
    assert_eq!(ops["process"]["pid"].as_u64(), Some(pid));
    assert_eq!(
        (
            ops["created"].as_u64(),
            ops["attached"].as_u64(),
            ops["detached"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    let person = live["people"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
        .unwrap();
    assert_eq!(person["executable"], exe);
    assert_eq!(person["ended"], "killed by SIGKILL");
    assert_eq!(live["holders"], serde_json::json!([]));

    // The same, as text for a terminal.
    let (code, text, err) = run_ipcaudit(&["explain", &id, "--type", "shm", "--socket", &socket]);
    assert_eq!(code, 0, "{err}");
    for expected in [
        "verdict: LEAKED — orphaned-segment",
        &format!("by {pid} ipc-workload †"),
        "killed by SIGKILL",
        "hold-shm",
        &format!("fix: ipcrm -m {id}"),
        "· not attached (nattch 0)",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    // An object the model does not know: one clear line.
    let (code, _, err) = run_ipcaudit(&[
        "explain",
        "--key",
        "0x7ffe1234",
        "--type",
        "sem",
        "--socket",
        &socket,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("knows no sem with key 0x7ffe1234"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // report, live.
    let live_html = tmp("live.html");
    let (code, _, err) = run_ipcaudit(&[
        "report",
        "--html",
        live_html.to_str().unwrap(),
        "--socket",
        &socket,
    ]);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(&live_html).unwrap();
    assert!(html.contains(&format!("-{id}-")) && html.contains("rect class=\"bar leaked\""));

    // Stop; the recording tells the same story.
    let records = watch.ipcaudit.stop();
    let context = records
        .iter()
        .find(|r| {
            r["event"]["action"] == "process-context" && r["process"]["pid"].as_u64() == Some(pid)
        })
        .unwrap_or_else(|| panic!("no process-context record for {pid}"));
    assert_eq!(context["process"]["executable"], exe);
    let recording = tmp("recording.ndjson");
    let mut f = std::fs::File::create(&recording).unwrap();
    for r in &records {
        writeln!(f, "{r}").unwrap();
    }
    drop(f);
    let rec = recording.to_str().unwrap();
    let (code, out, err) = run_ipcaudit(&[
        "explain", &id, "--type", "shm", "--json", "--replay", rec, "--grace", "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let replayed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(replayed["source"], "replay");
    assert_eq!(
        story(replayed["explanation"].clone()),
        story(live.clone()),
        "the replayed story differs from the live one"
    );
    // The removed segment's story is kept too.
    let (code, out, err) = run_ipcaudit(&[
        "explain",
        &basic["shmid"].to_string(),
        "--type",
        "shm",
        "--json",
        "--replay",
        rec,
        "--grace",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let removed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        whats(&removed["explanation"]),
        ["create", "attach", "detach", "remove", "destroy"],
        "{removed:#}"
    );
    assert_eq!(removed["explanation"]["verdict"]["state"], "destroyed");

    // report, from the recording, in headless Chromium.
    let html_path = tmp("report.html");
    let (code, _, err) = run_ipcaudit(&[
        "report",
        "--html",
        html_path.to_str().unwrap(),
        "--replay",
        rec,
        "--grace",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let Some(chromium) = ensure_chromium() else {
        return;
    };
    // The console check can fail: a page with an error is caught.
    let bad = tmp("bad.html");
    std::fs::write(
        &bad,
        "<!DOCTYPE html><html><body><script>console.error('x'); nope();</script></body></html>",
    )
    .unwrap();
    let caught = render_in_chromium(&chromium, &bad, false);
    assert_eq!(caught.console.len(), 2, "{:?}", caught.console);

    let page = render_in_chromium(&chromium, &html_path, true);
    assert!(
        page.console.is_empty(),
        "console messages: {:?}",
        page.console
    );
    let dom = &page.dom;
    let ready = dom
        .split("data-ready=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("the page's script did not run:\n{dom}"));
    assert!(ready >= 2, "{ready} bars");
    let leaked = dom
        .split("<rect ")
        .filter(|r| r.starts_with("class=\"bar leaked\""))
        .any(|r| r.contains(&format!("-{id}-")));
    assert!(leaked, "no leaked bar for shm {id}");
    let removed_id = basic["shmid"].to_string();
    assert!(
        dom.split("<rect ")
            .any(|r| r.starts_with("class=\"bar removed\"")
                && r.contains(&format!("-{removed_id}-"))),
        "no removed bar for shm {removed_id}"
    );
    assert!(dom.contains("class=\"holder dead\""), "no holder lane");
    assert!(dom.contains("<path class=\"finding\""), "no finding marker");
    assert!(dom.contains("data-rule=\"orphaned-segment\""));
    assert!(
        dom.contains(&format!("<td>{exe}</td>")),
        "no per-executable row for {exe}"
    );
    let png = page.screenshot.unwrap();
    assert_eq!(png_size(&png), Some((1400, 1000)));
    assert!(
        png.len() > 20_000,
        "a blank screenshot? {} bytes",
        png.len()
    );
    let shot = tmp("report.png");
    std::fs::write(&shot, &png).unwrap();
    eprintln!(
        "report: {} screenshot: {}",
        html_path.display(),
        shot.display()
    );
    let _ = std::fs::remove_file(&recording);
    let _ = std::fs::remove_file(&bad);
    let _ = std::fs::remove_file(&live_html);
}

/// The C program the call-site tests build (`tests/c/leaky.c`).
fn leaky_source_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("c")
}

/// The line of `leaky.c` that carries a `/* @marker */` comment.
fn line_of(marker: &str) -> usize {
    let text = std::fs::read_to_string(leaky_source_dir().join("leaky.c")).unwrap();
    text.lines()
        .position(|l| l.contains(&format!("/* @{marker} */")))
        .map_or_else(|| panic!("no @{marker} in leaky.c"), |i| i + 1)
}

/// Builds `leaky.c` with gcc and `flags` (from its directory, so that DWARF names it
/// `leaky.c`).
fn build_leaky(out: &std::path::Path, flags: &[&str]) {
    let status = std::process::Command::new("gcc")
        .current_dir(leaky_source_dir())
        .args(["-g", "-O1"])
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg("leaky.c")
        .status()
        .unwrap_or_else(|e| panic!("gcc is needed to build tests/c/leaky.c: {e}"));
    assert!(status.success(), "gcc {flags:?} failed");
}

fn creator_site(finding: &Value) -> Value {
    finding["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["role"] == "creator")
        .map(|e| e["call_site"].clone())
        .unwrap_or_default()
}

#[test]
fn call_sites_name_the_function_and_line_that_leaked() {
    if !require_root() {
        return;
    }
    let dir = tmp("leaky");
    std::fs::create_dir_all(&dir).unwrap();
    let variants: [(&str, &[&str]); 3] = [
        ("frame-pointers", &["-fno-omit-frame-pointer"]),
        ("no-frame-pointers", &["-fomit-frame-pointer"]),
        (
            "no-frame-pointers-no-unwind-tables",
            &[
                "-fomit-frame-pointer",
                "-fno-asynchronous-unwind-tables",
                "-fno-unwind-tables",
            ],
        ),
    ];
    for (name, flags) in variants {
        build_leaky(&dir.join(name), flags);
    }
    let (create, attach, setup, main) = (
        line_of("create"),
        line_of("attach"),
        line_of("setup"),
        line_of("main"),
    );
    let full = format!(
        "cache_init (leaky.c:{create}) ← setup_cache (leaky.c:{setup}) ← main (leaky.c:{main})"
    );

    let watch = Watch::start("1");
    let socket = watch.socket.to_string_lossy().into_owned();
    let mut held = Vec::new();
    for (name, _) in variants {
        let h = Held::spawn(std::process::Command::new(dir.join(name)));
        let owned = Owned::new("shm", &h.info["shmid"]);
        held.push((name, h, owned));
    }
    std::thread::sleep(Duration::from_millis(500));
    for (_, h, _) in &mut held {
        h.kill();
    }
    let mut findings = Vec::new();
    for (name, h, _) in &held {
        let id = &h.info["shmid"];
        let mut f = watch.wait_finding("orphaned-segment", id);
        // Call sites are symbolized off the hot path: the finding gets them when they come.
        ipcaudit_tests::eventually(Duration::from_secs(20), || {
            f = watch.wait_finding("orphaned-segment", id);
            f["evidence"]
                .as_array()
                .is_some_and(|e| e.iter().all(|e| e["call_site"].is_object()))
        });
        findings.push((*name, id.clone(), f));
    }

    // With frame pointers, and without them (the .eh_frame walk needs none): the whole chain,
    // function and file:line, from the creator's evidence.
    for (name, _, f) in &findings[..2] {
        let site = creator_site(f);
        assert_eq!(site["method"], "eh-frame", "{name}: {site:#}");
        assert!(site["reason"].is_null(), "{name}: {site:#}");
        assert!(
            site["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with(&full)),
            "{name}: {site:#}"
        );
        let frames = site["frames"].as_array().unwrap();
        assert!(frames.len() >= 4, "{name}: {site:#}");
        assert!(
            frames[1]["module"]
                .as_str()
                .is_some_and(|m| m.ends_with(name)),
            "{name}: {site:#}"
        );
        assert!(frames[1]["build_id"].is_string());
        // The attach's call site too.
        let attacher = f["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["role"] == "attacher")
            .unwrap();
        assert!(
            attacher["call_site"]["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("cache_attach (leaky.c:{attach})"))),
            "{name}: {attacher:#}"
        );
    }
    // Neither frame pointers nor unwind tables: the function that made the call is still named
    // (the C library's unwind tables lead to it), and the record says why the stack ends there.
    let (_, _, f) = &findings[2];
    let site = creator_site(f);
    assert_eq!(
        site["summary"],
        format!("cache_init (leaky.c:{create})"),
        "{site:#}"
    );
    assert!(
        site["frame_count"].as_u64().is_some_and(|n| n <= 3),
        "{site:#}"
    );
    assert!(
        site["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no frame pointers") && r.contains("cache_init")),
        "{site:#}"
    );

    // explain and status name it.
    let (_, fp_id, _) = &findings[0];
    let id = fp_id.to_string();
    let (code, text, err) = run_ipcaudit(&["explain", &id, "--type", "shm", "--socket", &socket]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains(&format!("  at {full}")), "{text}");
    assert!(
        text.contains(&format!(
            "from cache_attach (leaky.c:{attach}) ← setup_cache"
        )),
        "{text}"
    );
    let (_, _, nounwind) = &findings[2];
    let (code, text, err) = run_ipcaudit(&[
        "explain",
        &nounwind["object"]["id"].to_string(),
        "--type",
        "shm",
        "--socket",
        &socket,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("(frames: 2, reason: no frame pointers and no unwind tables"),
        "{text}"
    );
    let (code, status, err) = run_ipcaudit(&["status", "--socket", &socket]);
    assert_eq!(code, 0, "{err}");
    assert!(
        status.contains(&format!("created at cache_init (leaky.c:{create})")),
        "{status}"
    );
    let (_, live, _) = run_ipcaudit(&[
        "explain", &id, "--type", "shm", "--json", "--socket", &socket,
    ]);
    let live: Value = serde_json::from_str(&live).unwrap();

    // The recording has the call sites; a replay tells the same story, call sites included.
    let records = watch.ipcaudit.stop();
    let sites: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["action"] == "call-site")
        .collect();
    assert!(sites.len() >= 6, "{} call-site records", sites.len());
    let recording = tmp("leaky.ndjson");
    let mut file = std::fs::File::create(&recording).unwrap();
    for r in &records {
        writeln!(file, "{r}").unwrap();
    }
    drop(file);
    let (code, out, err) = run_ipcaudit(&[
        "explain",
        &id,
        "--type",
        "shm",
        "--json",
        "--replay",
        recording.to_str().unwrap(),
        "--grace",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let replayed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        story(replayed["explanation"].clone()),
        story(live["explanation"].clone())
    );
    assert!(
        replayed["explanation"]["call_site"]["frames"][1]["function"] == "cache_init",
        "{replayed:#}"
    );
    let _ = std::fs::remove_file(&recording);
    let _ = std::fs::remove_dir_all(&dir);
}
