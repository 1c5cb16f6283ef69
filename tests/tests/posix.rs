//! POSIX IPC on the real kernel: shared memory objects and named semaphores in /dev/shm, message
//! queues in the mqueue filesystem. Each test builds its leak (or near miss) with real
//! processes, and checks what `watch` (exact: holders dropped at the exit it traces), `leaks`
//! (a snapshot), `ls` and `reap` say and do. Every object a test makes has a name with the
//! test process's pid and is unlinked on drop; `reap` is only ever run with `--name` on them.

use std::{process::Command, time::Duration};

use ipcaudit_tests::{
    Held, PosixOwned, Watch, eventually, ipcaudit_bin, require_root, run_ipcaudit, workload_with,
};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_ipc-workload");
/// A socket no daemon serves: `leaks` and `reap` judge a snapshot.
const NO_DAEMON: &str = "/nonexistent/ipcaudit-posix.sock";

fn name(what: &str) -> String {
    format!("/ipcaudit-t{}-{what}", std::process::id())
}

fn ok_json(args: &[&str]) -> Value {
    let (code, out, err) = run_ipcaudit(args);
    assert_eq!(code, 0, "ipcaudit {args:?} exited {code}: {err}");
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("ipcaudit {args:?}: not JSON ({e}): {out}"))
}

/// The `ls --json` row of POSIX object `name` in `section`.
fn ls_row(section: &str, ty: &str, name: &str) -> Option<Value> {
    let v = ok_json(&["ls", "--type", ty, "--json"]);
    v[section]
        .as_array()?
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
}

/// The findings a snapshot judgement (no grace) shows on POSIX object `name`, by rule.
fn snapshot_rules(ty: &str, name: &str) -> Vec<String> {
    let v = ok_json(&[
        "leaks",
        "--json",
        "--snapshot",
        "--grace",
        "0",
        "--type",
        ty,
    ]);
    assert_eq!(v["source"], "snapshot");
    v["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["posix"]["name"] == name)
        .filter_map(|f| f["rule"].as_str().map(str::to_owned))
        .collect()
}

fn evidence(f: &Value) -> Vec<(u64, bool, String)> {
    f["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["pid"].as_u64().unwrap_or(0),
                e["alive"].as_bool().unwrap_or(true),
                e["role"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until the watch's model has exactly these holders of `name`.
fn wait_holders(w: &Watch, name: &str, pids: &[u64]) {
    let mut want = pids.to_vec();
    want.sort_unstable();
    let mut got = Vec::new();
    let ok = eventually(Duration::from_secs(10), || {
        got = w.posix_holders(name);
        got.sort_unstable();
        got == want
    });
    assert!(
        ok,
        "the model's holders of {name}: {got:?}, expected {want:?}"
    );
}

/// The records `reap` printed.
fn records(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn record_for<'a>(records: &'a [Value], name: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["ipc"]["name"] == name)
        .unwrap_or_else(|| panic!("no record for {name}: {records:#?}"))
}

/// Files a test made, removed on drop.
struct RemoveOnDrop(Vec<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn a_killed_creator_leaves_an_orphaned_posix_shm() {
    if !require_root() {
        return;
    }
    let shm = name("shm-killed");
    let _owned = PosixOwned::new(&[("pshm", &shm)]);
    let w = Watch::start("2");
    let mut a = Held::start(WORKLOAD, "posix-shm-hold", Some(&shm));
    let pid = u64::from(a.pid());
    wait_holders(&w, &shm, &[pid]);
    // `ls` sees the same: one mapping, no descriptor (the workload closed it).
    let row = ls_row("posix-sharedmemory", "pshm", &shm).expect("listed");
    assert_eq!(row["size"], 8192);
    assert_eq!(row["inode"], a.info["ino"]);
    assert_eq!(row["path"], format!("/dev/shm{shm}"));
    let holders = row["holders"].as_array().expect("holders");
    assert_eq!(holders.len(), 1, "{row:#}");
    assert_eq!(
        (
            holders[0]["pid"].as_u64(),
            holders[0]["maps"].as_u64(),
            holders[0]["fds"].as_u64()
        ),
        (Some(pid), Some(1), Some(0))
    );
    assert!(w.posix_findings("orphaned-posix-shm", &shm).is_empty());
    assert!(snapshot_rules("pshm", &shm).is_empty());

    a.kill();
    let f = w.wait_posix_finding("orphaned-posix-shm", &shm);
    assert_eq!(f["posix"]["type"], "pshm");
    assert_eq!(f["posix"]["ino"], a.info["ino"]);
    assert_eq!(f["posix"]["size"], 8192);
    assert_eq!(f["remedy"], format!("rm /dev/shm{shm}"));
    assert!(
        evidence(&f).contains(&(pid, false, "user".to_owned())),
        "{f:#}"
    );
    // A snapshot judges the same (with no grace: the object is seconds old).
    assert_eq!(snapshot_rules("pshm", &shm), ["orphaned-posix-shm"]);
    // `leaks` asks the watch first: its exact finding.
    let v = ok_json(&[
        "leaks",
        "--json",
        "--type",
        "pshm",
        "--socket",
        &w.socket.to_string_lossy(),
    ]);
    assert_eq!(v["source"], "watch");
    assert!(
        v["findings"]
            .as_array()
            .is_some_and(|l| l.iter().any(|f| f["posix"]["name"] == shm.as_str())),
        "{v:#}"
    );
    let records = w.ipcaudit.stop();
    let alert = records
        .iter()
        .find(|r| r["rule"]["name"] == "orphaned-posix-shm" && r["ipc"]["name"] == shm.as_str())
        .unwrap_or_else(|| panic!("no alert record for {shm}"));
    assert_eq!(alert["event"]["action"], "finding-raised");
    assert_eq!(alert["ipc"]["type"], "pshm");
    assert_eq!(alert["ipc"]["path"], format!("/dev/shm{shm}"));
    assert_eq!(alert["ipc"]["inode"], a.info["ino"]);
}

#[test]
fn a_posix_shm_another_process_still_maps_is_not_orphaned() {
    if !require_root() {
        return;
    }
    let shm = name("shm-shared");
    let _owned = PosixOwned::new(&[("pshm", &shm)]);
    let watch = Watch::start("2");
    let mut first = Held::start(WORKLOAD, "posix-shm-hold", Some(&shm));
    let mut second = Held::start(WORKLOAD, "posix-shm-map", Some(&shm));
    let (pa, pb) = (u64::from(first.pid()), u64::from(second.pid()));
    assert_eq!(first.info["ino"], second.info["ino"]);
    wait_holders(&watch, &shm, &[pa, pb]);
    first.kill();
    wait_holders(&watch, &shm, &[pb]);
    // Well past the grace period and a few resyncs: nothing.
    std::thread::sleep(Duration::from_secs(4));
    assert!(watch.posix_findings("orphaned-posix-shm", &shm).is_empty());
    assert!(snapshot_rules("pshm", &shm).is_empty());
    let row = ls_row("posix-sharedmemory", "pshm", &shm).expect("listed");
    let holders: Vec<u64> = row["holders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["pid"].as_u64())
        .collect();
    assert_eq!(holders, [pb]);
    // The last holder goes: now it is.
    second.kill();
    let f = watch.wait_posix_finding("orphaned-posix-shm", &shm);
    let e = evidence(&f);
    assert!(e.contains(&(pa, false, "user".to_owned())), "{f:#}");
    assert!(e.contains(&(pb, false, "user".to_owned())), "{f:#}");
}

#[test]
fn a_queue_whose_reader_died_is_stalled_then_orphaned() {
    if !require_root() {
        return;
    }
    let mq = name("mq-stalled");
    let _owned = PosixOwned::new(&[("pmsg", &mq)]);
    let w = Watch::start("3");
    let mut reader = Held::start(WORKLOAD, "posix-mq-reader", Some(&mq));
    let pr = u64::from(reader.pid());
    wait_holders(&w, &mq, &[pr]);
    reader.kill();
    // Messages sent now wait: the only process holding the queue opened it write-only.
    let mut cmd = Command::new(WORKLOAD);
    cmd.args(["posix-mq-writer", &mq, "3"]);
    let mut writer = Held::spawn(cmd);
    let pw = u64::from(writer.pid());
    let row = ls_row("posix-messages", "pmsg", &mq).expect("listed");
    assert_eq!(
        (row["msgs"].as_u64(), row["usedbytes"].as_u64()),
        (Some(3), Some(48))
    );
    assert_eq!(
        (row["maxmsg"].as_u64(), row["msgsize"].as_u64()),
        (Some(10), Some(64))
    );
    let holders = row["holders"].as_array().expect("holders").clone();
    assert_eq!(holders.len(), 1, "{row:#}");
    assert_eq!(holders[0]["pid"].as_u64(), Some(pw));
    assert_eq!(
        (holders[0]["read"].as_bool(), holders[0]["write"].as_bool()),
        (Some(false), Some(true))
    );

    let f = w.wait_posix_finding("stalled-posix-queue", &mq);
    let e = evidence(&f);
    assert!(e.contains(&(pw, true, "holder".to_owned())), "{f:#}");
    assert!(e.contains(&(pr, false, "reader".to_owned())), "{f:#}");
    assert!(
        f["description"]
            .as_str()
            .is_some_and(|d| d.contains("3 message(s)")),
        "{f:#}"
    );
    assert!(w.posix_findings("orphaned-posix-queue", &mq).is_empty());
    assert_eq!(snapshot_rules("pmsg", &mq), ["stalled-posix-queue"]);

    // The writer goes too: nobody holds it any more.
    writer.kill();
    w.wait_posix_finding("orphaned-posix-queue", &mq);
    assert!(w.posix_findings("stalled-posix-queue", &mq).is_empty());
    assert_eq!(snapshot_rules("pmsg", &mq), ["orphaned-posix-queue"]);
    let records = w.ipcaudit.stop();
    let cleared = records.iter().any(|r| {
        r["event"]["action"] == "finding-cleared"
            && r["rule"]["name"] == "stalled-posix-queue"
            && r["ipc"]["name"] == mq.as_str()
    });
    assert!(cleared, "the stalled finding was cleared");
}

#[test]
fn a_named_semaphore_left_behind_is_orphaned() {
    if !require_root() {
        return;
    }
    let sem = name("sem-left");
    let _owned = PosixOwned::new(&[("psem", &sem)]);
    let w = Watch::start("2");
    let mut s = Held::start(WORKLOAD, "posix-sem-hold", Some(&sem));
    let pid = u64::from(s.pid());
    wait_holders(&w, &sem, &[pid]);
    let row = ls_row("posix-semaphores", "psem", &sem).expect("listed");
    assert_eq!(row["path"], format!("/dev/shm/sem.{}", &sem[1..]));
    s.kill();
    let f = w.wait_posix_finding("orphaned-posix-semaphore", &sem);
    assert_eq!(f["remedy"], format!("rm /dev/shm/sem.{}", &sem[1..]));
    assert!(
        evidence(&f).contains(&(pid, false, "user".to_owned())),
        "{f:#}"
    );
    assert_eq!(snapshot_rules("psem", &sem), ["orphaned-posix-semaphore"]);
}

#[test]
fn reap_removes_exactly_the_orphans() {
    if !require_root() {
        return;
    }
    let prefix = name("reap");
    let orphans = workload_with(WORKLOAD, "posix-orphans", &prefix);
    let (shm, sem, mq) = (
        orphans["shm"].as_str().expect("shm").to_owned(),
        orphans["sem"].as_str().expect("sem").to_owned(),
        orphans["mq"].as_str().expect("mq").to_owned(),
    );
    let held = format!("{prefix}-held");
    let link = format!("{prefix}-link");
    let _owned = PosixOwned::new(&[
        ("pshm", &shm),
        ("psem", &sem),
        ("pmsg", &mq),
        ("pshm", &held),
    ]);
    let holder = Held::start(WORKLOAD, "posix-shm-hold", Some(&held));
    // A symlink in /dev/shm to a file of ours: never followed, never removed.
    let target = std::env::temp_dir().join(format!("ipcaudit-t{}-target", std::process::id()));
    std::fs::write(&target, b"keep me").expect("target");
    let link_path = format!("/dev/shm{link}");
    let _ = std::fs::remove_file(&link_path);
    std::os::unix::fs::symlink(&target, &link_path).expect("symlink");
    let _cleanup = RemoveOnDrop(vec![std::path::PathBuf::from(&link_path), target.clone()]);

    let queue = ls_row("posix-messages", "pmsg", &mq).expect("the orphaned queue is listed");
    assert_eq!(
        (queue["msgs"].as_u64(), queue["holders"].clone()),
        (Some(1), Value::Array(vec![]))
    );
    let names = [&shm, &sem, &mq, &held, &link];
    let mut args = vec!["reap", "--snapshot", "--grace", "0", "--socket", NO_DAEMON];
    for n in names {
        args.extend(["--name", n.as_str()]);
    }
    // Dry run: the three orphans would go; the held object and the link are refused.
    let (code, out, err) = run_ipcaudit(&args);
    assert_eq!(code, 3, "{out}\n{err}");
    let recs = records(&out);
    recs.iter().for_each(ipcaudit_tests::assert_schema);
    for (n, ty, rule) in [
        (&shm, "pshm", "orphaned-posix-shm"),
        (&sem, "psem", "orphaned-posix-semaphore"),
        (&mq, "pmsg", "orphaned-posix-queue"),
    ] {
        let r = record_for(&recs, n);
        assert_eq!(r["ipcaudit"]["reap"]["code"], "would-remove", "{r:#}");
        assert_eq!(
            (r["ipc"]["type"].as_str(), r["rule"]["name"].as_str()),
            (Some(ty), Some(rule))
        );
    }
    let r = record_for(&recs, &held);
    assert_eq!(r["ipcaudit"]["reap"]["code"], "not-leaked", "{r:#}");
    assert!(
        r["event"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains(&holder.pid().to_string())),
        "{r:#}"
    );
    assert_eq!(record_for(&recs, &link)["ipcaudit"]["reap"]["code"], "gone");

    // For real: exactly the orphans go.
    args.push("--yes");
    let (code, out, err) = run_ipcaudit(&args);
    assert_eq!(code, 3, "{out}\n{err}");
    let recs = records(&out);
    let removed: Vec<&str> = recs
        .iter()
        .filter(|r| r["event"]["action"] == "reap-remove")
        .filter_map(|r| r["ipc"]["name"].as_str())
        .collect();
    assert_eq!(removed.len(), 3, "{recs:#?}");
    for (ty, n) in [("pshm", &shm), ("psem", &sem), ("pmsg", &mq)] {
        assert!(removed.contains(&n.as_str()), "{n} not removed");
        assert!(!PosixOwned::exists(ty, n), "{n} still exists");
    }
    assert!(
        PosixOwned::exists("pshm", &held),
        "the held object was removed"
    );
    assert!(
        std::fs::symlink_metadata(&link_path).is_ok_and(|m| m.file_type().is_symlink()),
        "the symlink was touched"
    );
    assert_eq!(std::fs::read(&target).expect("target"), b"keep me");
}

#[test]
fn reap_never_unlinks_an_object_opened_after_the_plan() {
    if !require_root() {
        return;
    }
    let prefix = name("late");
    let orphans = workload_with(WORKLOAD, "posix-orphans", &prefix);
    let shm = orphans["shm"].as_str().expect("shm").to_owned();
    let _owned = PosixOwned::new(&[
        ("pshm", &shm),
        ("psem", orphans["sem"].as_str().unwrap_or_default()),
        ("pmsg", orphans["mq"].as_str().unwrap_or_default()),
    ]);
    let args = [
        "reap",
        "--snapshot",
        "--grace",
        "0",
        "--socket",
        NO_DAEMON,
        "--name",
        &shm,
    ];
    let (code, out, _) = run_ipcaudit(&args);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        record_for(&records(&out), &shm)["ipcaudit"]["reap"]["code"],
        "would-remove"
    );
    // Between the plan and the removal, someone (this test) opens it.
    let file = std::fs::File::open(format!("/dev/shm{shm}")).expect("open");
    let mut yes = args.to_vec();
    yes.push("--yes");
    let (code, out, _) = run_ipcaudit(&yes);
    assert_eq!(code, 3, "{out}");
    let r = record_for(&records(&out), &shm).clone();
    assert_eq!(r["event"]["action"], "reap-skip", "{r:#}");
    assert!(
        r["event"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains(&std::process::id().to_string())),
        "{r:#}"
    );
    assert!(PosixOwned::exists("pshm", &shm));
    drop(file);
}

#[test]
fn queues_of_another_ipc_namespace_are_listed_through_a_private_mount() {
    if !require_root() {
        return;
    }
    let mq = name("mq-elsewhere");
    let mut cmd = Command::new("unshare");
    cmd.args(["--ipc", WORKLOAD, "posix-mq-reader", &mq]);
    let held = Held::spawn(cmd);
    let pid = held.pid().to_string();
    // Not in our namespace's queues...
    assert!(ls_row("posix-messages", "pmsg", &mq).is_none());
    // ...but in its own, and /dev/shm is not read there (another mount namespace's view).
    let (code, out, err) = run_ipcaudit(&["ls", "--namespace", &pid, "--type", "pmsg", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let row = v["posix-messages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == mq.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{mq} not listed in its namespace: {v:#}"));
    let holders: Vec<u64> = row["holders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["pid"].as_u64())
        .collect();
    assert_eq!(holders, [u64::from(held.pid())]);
    // Nothing was left mounted.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(" mqueue "), "{mounts}");
}

#[test]
fn without_privileges_the_queues_need_a_mount_and_ls_says_how() {
    if !require_root() {
        return;
    }
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .any(|l| l.contains(" /dev/mqueue ") && l.contains(" mqueue "));
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(ipcaudit_bin())
        .args(["ls", "--type", "pmsg", "--type", "pshm"])
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    if !mounted {
        assert!(err.contains("mount -t mqueue none /dev/mqueue"), "{err}");
    }
    // Every note is about what an unprivileged user cannot see.
    assert!(
        err.lines()
            .all(|l| l.contains("mount -t mqueue") || l.contains("holders of POSIX objects")),
        "{err}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("------ POSIX Shared Memory --------"),
        "{text}"
    );
}

/// Runs ipcaudit as user nobody: (exit code, stdout, stderr).
fn as_nobody(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(ipcaudit_bin())
        .args(args)
        .output()
        .expect("run setpriv");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_privileges_nothing_is_judged_unheld_or_unlinked() {
    if !require_root() {
        return;
    }
    // A real orphan (root's), which nobody may judge: root's processes cannot be inspected.
    let prefix = name("blind");
    let orphans = workload_with(WORKLOAD, "posix-orphans", &prefix);
    let shm = orphans["shm"].as_str().expect("shm").to_owned();
    let _owned = PosixOwned::new(&[
        ("pshm", &shm),
        ("psem", orphans["sem"].as_str().unwrap_or_default()),
        ("pmsg", orphans["mq"].as_str().unwrap_or_default()),
    ]);
    assert_eq!(
        snapshot_rules("pshm", &shm),
        ["orphaned-posix-shm"],
        "as root"
    );
    let (code, out, err) = as_nobody(&[
        "leaks",
        "--json",
        "--snapshot",
        "--grace",
        "0",
        "--type",
        "pshm",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("holders of POSIX objects are not all known"),
        "{err}"
    );
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert!(
        !v["findings"]
            .as_array()
            .is_some_and(|l| l.iter().any(|f| f["posix"]["name"] == shm.as_str())),
        "{v:#}"
    );
    let (code, out, _) = as_nobody(&[
        "reap",
        "--yes",
        "--snapshot",
        "--grace",
        "0",
        "--name",
        &shm,
        "--socket",
        NO_DAEMON,
    ]);
    assert_eq!(code, Some(3), "{out}");
    let r = record_for(&records(&out), &shm).clone();
    assert_eq!(r["ipcaudit"]["reap"]["code"], "holders-unknown", "{r:#}");
    assert!(PosixOwned::exists("pshm", &shm));
}

#[test]
fn trace_records_every_queue_call_with_name_inode_and_priority() {
    if !require_root() {
        return;
    }
    let mq = name("mq-trace");
    let _owned = PosixOwned::new(&[("pmsg", &mq)]);
    let tracer = ipcaudit_tests::start(&["trace", "--type", "pmsg"]);
    let w = ipcaudit_tests::workload_with(WORKLOAD, "posix-mq-basic", &mq);
    let all = tracer.stop();
    let pid = w["pid"].as_u64().expect("pid");
    let child = w["child"].as_u64().expect("child");
    let ino = w["ino"].clone();
    // Its event records (not the process-context record about it, written before its first
    // IPC record the first time the collector sees it).
    let mine: Vec<&Value> = all
        .iter()
        .filter(|r| r["process"]["pid"] == pid && !ipcaudit_tests::is_annotation(r))
        .collect();
    let actions: Vec<&str> = mine
        .iter()
        .filter_map(|r| r["event"]["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "mq-create",
            "mq-send",
            "mq-send",
            "mq-send",
            "mq-receive",
            "mq-notify",
            "mq-notify",
            "mq-remove"
        ],
        "{mine:#?}"
    );
    for r in &mine {
        assert_eq!(r["ipc"]["type"], "pmsg", "{r:#}");
        assert_eq!(r["ipc"]["name"], mq.as_str(), "{r:#}");
        assert_eq!(r["event"]["outcome"], "success", "{r:#}");
    }
    let create = mine[0];
    assert_eq!(create["ipc"]["inode"], ino);
    assert_eq!(create["ipc"]["path"], format!("/dev/mqueue{mq}"));
    assert_eq!(create["ipcaudit"]["syscall"]["name"], "mq_open");
    let sends: Vec<(u64, u64)> = mine[1..4]
        .iter()
        .map(|r| {
            assert_eq!(r["ipc"]["inode"], ino);
            (
                r["ipc"]["msg"]["size"].as_u64().unwrap_or(0),
                r["ipc"]["msg"]["priority"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(sends, [(5, 3), (1, 1), (1, 1)]);
    let receive = mine[4];
    assert_eq!(
        (
            receive["ipc"]["msg"]["size"].as_u64(),
            receive["ipc"]["msg"]["priority"].as_u64()
        ),
        (Some(5), Some(3))
    );
    assert_eq!(mine[5]["ipcaudit"]["syscall"]["args"][1], 1, "registered");
    assert_eq!(mine[6]["ipcaudit"]["syscall"]["args"][1], 0, "removed");
    // The child sent through the descriptor it inherited: the same queue, by inode.
    let child_send = all
        .iter()
        .find(|r| r["process"]["pid"] == child && r["event"]["action"] == "mq-send")
        .unwrap_or_else(|| panic!("no mq-send by the child {child}"));
    assert_eq!(child_send["ipc"]["inode"], ino);
    assert_eq!(child_send["ipc"]["name"], mq.as_str());
    assert_eq!(child_send["ipc"]["msg"]["priority"], 2);
}

#[test]
fn watch_follows_a_queue_through_its_events_alone() {
    if !require_root() {
        return;
    }
    let mq = name("mq-events");
    let _owned = PosixOwned::new(&[("pmsg", &mq)]);
    let file = std::env::temp_dir().join(format!("ipcaudit-t{}-mq.ndjson", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let _rm = RemoveOnDrop(vec![file.clone()]);
    let path = file.to_string_lossy().into_owned();
    // No resync in this test's time: holders, depth and deaths come from the traced events.
    let w = Watch::start_with("2", "600", &["--format", "json", "-o", &path]);
    let mut reader = Held::start(WORKLOAD, "posix-mq-reader", Some(&mq));
    let pr = u64::from(reader.pid());
    wait_holders(&w, &mq, &[pr]);
    let o = w.posix_object(&mq).expect("the model has the queue");
    assert_eq!(o["object"]["ino"], reader.info["ino"]);
    assert_eq!(o["holders"][0]["read"], true);
    reader.kill();
    let mut cmd = Command::new(WORKLOAD);
    cmd.args(["posix-mq-writer", &mq, "3"]);
    let mut writer = Held::spawn(cmd);
    let pw = u64::from(writer.pid());
    wait_holders(&w, &mq, &[pw]);
    let f = w.wait_posix_finding("stalled-posix-queue", &mq);
    let e = evidence(&f);
    assert!(e.contains(&(pw, true, "holder".to_owned())), "{f:#}");
    assert!(e.contains(&(pr, false, "reader".to_owned())), "{f:#}");
    // The first send was recorded, the two others counted in the kernel: the depth is exact.
    let o = w.posix_object(&mq).expect("the queue");
    assert_eq!(o["queue"]["messages"], 3, "{o:#}");
    writer.kill();
    w.wait_posix_finding("orphaned-posix-queue", &mq);
    let live = w.ask("findings");
    let _ = w.ipcaudit.stop();
    // The recording replays to the same findings on this queue.
    let (code, out, err) = run_ipcaudit(&["replay", &path, "--grace", "2", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let replayed: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    replayed.iter().for_each(ipcaudit_tests::assert_schema);
    let rules = |records: &[Value], action: &str| -> Vec<String> {
        records
            .iter()
            .filter(|r| r["event"]["action"] == action && r["ipc"]["name"] == mq.as_str())
            .filter_map(|r| r["rule"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    let recorded: Vec<Value> = std::fs::read_to_string(&file)
        .expect("recording")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(
        rules(&replayed, "finding-raised"),
        rules(&recorded, "finding-raised"),
        "live findings: {live:#}"
    );
    assert_eq!(
        rules(&recorded, "finding-raised"),
        ["stalled-posix-queue", "orphaned-posix-queue"]
    );
    // The sends the kernel counted were recorded as totals.
    assert!(
        recorded
            .iter()
            .any(|r| r["event"]["action"] == "mq-totals" && r["ipc"]["inode"] == o["object"]["ino"]),
        "no mq-totals record"
    );
}
