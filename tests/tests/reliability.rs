//! Faults and hostile input on the real kernel: a SIGKILLed collector leaves nothing attached
//! and a restart finds the same leak; a failing output never stops the collector; replay of a
//! 1 GiB line fails cleanly in bounded memory; odd process names stay valid JSON and aligned
//! text; a reused PID is never taken for the dead creator; non-root gets one clear line.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::Duration,
};

use ipcaudit_tests::{
    Held, Watch, assert_schema, eventually, ipcaudit_bin, ipcrm, loaded_bpf_programs, require_root,
    start, workload,
};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_ipc-workload");

fn ours(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| {
            ["sys_exit_", "sys_enter_", "fexit_", "sched_process_"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .cloned()
        .collect()
}

#[test]
fn sigkill_leaves_nothing_attached_and_a_restart_finds_the_same_leak() {
    if !require_root() {
        return;
    }
    // Counted as a difference: another ipcaudit may be running on this machine.
    let count = || ours(&loaded_bpf_programs()).len();
    let before = count();
    let watch = Watch::start("1");
    assert!(
        count() >= before + 17,
        "{before} before: {:?}",
        loaded_bpf_programs()
    );
    let mut holder = Held::start(WORKLOAD, "hold-shm", None);
    let shmid = holder.info["shmid"].clone();
    holder.kill();
    watch.wait_finding("orphaned-segment", &shmid);

    // kill -9: the kernel closes its fds, and with them every link and program.
    watch.ipcaudit.signal(libc::SIGKILL);
    assert!(
        eventually(Duration::from_secs(5), || count() <= before),
        "still loaded after SIGKILL: {:?}",
        loaded_bpf_programs()
    );
    drop(watch);

    // A restart rebuilds the finding from the kernel's truth alone.
    let again = Watch::start("1");
    let finding = again.wait_finding("orphaned-segment", &shmid);
    assert_eq!(finding["evidence"][0]["alive"], false);
    ipcrm("-m", &shmid);
    again.ipcaudit.stop();
    assert!(eventually(Duration::from_secs(5), || count() <= before));
}

#[test]
fn a_full_disk_never_stops_the_collector() {
    if !require_root() {
        return;
    }
    // /dev/full fails every write with ENOSPC.
    let tracer = start(&[
        "trace",
        "--type",
        "shm",
        "-o",
        "/dev/full",
        "--stats-every",
        "0.2",
    ]);
    for _ in 0..3 {
        workload(WORKLOAD, "shm-basic");
    }
    std::thread::sleep(Duration::from_millis(300));
    let stderr = tracer.stderr_text();
    tracer.stop();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("/dev/full")).collect();
    assert_eq!(errors.len(), 1, "reported once: {stderr}");
    assert!(errors[0].contains("No space left on device"), "{stderr}");
}

#[test]
fn replay_of_a_gigabyte_line_fails_cleanly_in_bounded_memory() {
    // Run through `ipc-workload peak-rss`, which reports the replay's own peak RSS (a program
    // spawned straight from this test process would inherit this process's `maxrss` at exec).
    let mut child = Command::new(WORKLOAD)
        .arg("peak-rss")
        .arg(ipcaudit_bin())
        .args(["replay", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..1024 {
            if stdin.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = stdin.write_all(b"\n{}\n");
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some_and(|c| c != 0 && c < 128),
        "{err}"
    );
    assert!(err.contains("-:1: line longer than 64 MiB"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let peak_kib: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak-rss report in: {err}"));
    // Bounded by the 64 MiB line cap (whose buffer may be reallocated once while it fills),
    // not by the 1 GiB of input.
    assert!(peak_kib < 256 * 1024, "peak RSS {peak_kib} KiB");
}

#[test]
fn odd_process_names_stay_valid_json_and_aligned_text() {
    if !require_root() {
        return;
    }
    let names: [&[u8]; 5] = [
        b"quo\"te\\back",
        b"new\nline\ttab",
        b"\x01\x1b[31mred",
        b"bad\xff\xfeutf8",
        b"exactly15bytes!",
    ];
    for name in names {
        let hex = hex(name);
        let tracer = start(&["trace", "--type", "shm"]);
        let w = workload_renamed(&hex);
        let records = tracer.stop();
        let create = records
            .iter()
            .find(|r| r["event"]["action"] == "shm-create" && r["process"]["pid"] == w["pid"])
            .unwrap_or_else(|| panic!("no record for {name:?}"));
        let expect = String::from_utf8_lossy(&name[..name.len().min(15)]).into_owned();
        assert_eq!(create["process"]["name"], Value::from(expect.clone()));
    }
    // Text: the columns after the name start at the same place whatever the name.
    let mut tracer = Command::new(ipcaudit_bin())
        .args(["trace", "--type", "shm", "--format", "text"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Attached once it says so (seconds under emulation or load).
    let stderr = tracer.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ready:") {
                let _ = ready_tx.send(());
            }
        }
    });
    assert!(
        ready_rx.recv_timeout(Duration::from_secs(30)).is_ok(),
        "ipcaudit trace --format text did not become ready in 30 s"
    );
    let mut pids = Vec::new();
    for name in names {
        let hex = hex(name);
        pids.push(workload_renamed(&hex)["pid"].to_string());
    }
    std::thread::sleep(Duration::from_millis(300));
    // SIGINT: it drains the ring buffer and writes everything before exiting.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(tracer.id()).unwrap(), libc::SIGINT) };
    let out = tracer.wait_with_output_text();
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("shm-create") && pids.iter().any(|p| l.contains(&format!(" {p} "))))
        .collect();
    assert_eq!(lines.len(), names.len(), "{out}");
    assert!(
        lines.iter().all(|l| !l.chars().any(char::is_control)),
        "control characters in text: {lines:?}"
    );
    let col: Vec<usize> = lines
        .iter()
        .map(|l| {
            l.chars()
                .collect::<Vec<_>>()
                .windows(4)
                .position(|w| w.iter().collect::<String>() == "shm ")
                .unwrap_or(0)
        })
        .collect();
    assert!(
        col.windows(2).all(|w| w[0] == w[1]),
        "type column not aligned: {col:?}\n{}",
        lines.join("\n")
    );
}

trait WaitText {
    fn wait_with_output_text(self) -> String;
}

impl WaitText for std::process::Child {
    fn wait_with_output_text(self) -> String {
        String::from_utf8_lossy(&self.wait_with_output().unwrap().stdout).into_owned()
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn workload_renamed(hex: &str) -> Value {
    let out = Command::new(WORKLOAD)
        .args(["renamed", hex])
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(out.stdout.split(|&c| c == b'\n').next().unwrap()).unwrap()
}

#[test]
fn a_reused_pid_is_not_the_dead_creator() {
    if !require_root() {
        return;
    }
    let watch = Watch::start("1");
    let mut creator = Held::start(WORKLOAD, "hold-shm", None);
    let shmid = creator.info["shmid"].clone();
    let pid = creator.pid();
    creator.kill();
    watch.wait_finding("orphaned-segment", &shmid);
    // Make the next fork take the dead creator's PID (retry: other forks may race us).
    let mut impostor = None;
    for _ in 0..20 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let held = Held::start(WORKLOAD, "hold-shm", None);
        if held.pid() == pid {
            impostor = Some(held);
            break;
        }
    }
    let impostor = impostor.expect("could not reuse the pid");
    std::thread::sleep(Duration::from_millis(2500));
    // The orphan stays orphaned: the live process with that PID is another process.
    let finding = watch.findings("orphaned-segment", Some(&shmid));
    assert_eq!(finding.len(), 1, "{:#}", watch.ask("findings"));
    let creator_evidence = &finding[0]["evidence"][0];
    assert_eq!(creator_evidence["pid"], pid);
    assert_eq!(creator_evidence["alive"], false);
    // And the impostor's own segment is attached by a live process: no finding for it.
    let theirs = impostor.info["shmid"].clone();
    assert!(watch.findings("orphaned-segment", Some(&theirs)).is_empty());
    let object = watch.object("shm", &theirs);
    assert_ne!(
        object["creator"]["entity"],
        finding[0]["evidence"][0]["entity"]
    );
    drop(impostor);
    ipcrm("-m", &shmid);
    ipcrm("-m", &theirs);
    watch.ipcaudit.stop();
}

#[test]
fn a_user_without_privileges_gets_one_clear_line() {
    if !require_root() {
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(ipcaudit_bin())
        .args(["trace", "--duration", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("needs root (or CAP_BPF and CAP_PERFMON)"),
        "{err}"
    );
}

#[test]
fn an_overload_is_counted_and_a_resync_restores_the_truth() {
    if !require_root() {
        return;
    }
    // A 1 MiB ring buffer against four processes in tight loops: records will be dropped.
    let dir = std::env::temp_dir().join(format!("ipcaudit-storm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (socket, out) = (dir.join("sock"), dir.join("out.ndjson"));
    let tracer = start(&[
        "watch",
        "--ring-mib",
        "1",
        "--resync",
        "1",
        "--grace",
        "60",
        "--socket",
        socket.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let pid = tracer.pid();
    // The collector is stopped while the storm runs, so the ring overflows however fast this
    // machine (or emulator) runs the storm against the reader.
    tracer.signal(libc::SIGSTOP);
    let storm = workload(WORKLOAD, "storm");
    tracer.signal(libc::SIGCONT);
    let storm_end = std::time::SystemTime::now();
    assert!(storm["kiloiterations"].as_u64().unwrap() > 10, "{storm}");
    // Resyncs bring the model back to the kernel's truth; the ones after that find nothing.
    std::thread::sleep(Duration::from_secs(5));
    let peak_kib: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    tracer.stop();
    let records: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lost: u64 = records
        .iter()
        .filter(|r| r["event"]["action"] == "events-lost")
        .map(|r| r["ipcaudit"]["lost"].as_u64().unwrap())
        .sum();
    let summary = records.last().unwrap();
    assert_eq!(summary["event"]["kind"], "metric");
    assert!(lost > 0, "a 1 MiB ring should overflow in this storm");
    // The records of a loss are records like any other.
    records.iter().for_each(assert_schema);
    assert_eq!(
        summary["ipcaudit"]["lost"].as_u64(),
        Some(lost),
        "every lost record is counted once"
    );
    let end_ns = u64::try_from(
        storm_end
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap();
    // Counted from the first correction after the storm: how soon the resumed collector gets
    // to its first resync depends on how fast this machine drains the full ring.
    let corrections: Vec<(u64, &Value)> = records
        .iter()
        .filter(|r| r["event"]["action"] == "model-resync")
        .map(|r| {
            (
                ipcaudit_tests::timestamp_ns(r["@timestamp"].as_str().unwrap()),
                r,
            )
        })
        .filter(|&(t, _)| t > end_ns)
        .collect();
    let first = corrections.first().map_or(end_ns, |&(t, _)| t);
    let late_corrections: Vec<&Value> = corrections
        .iter()
        .filter(|&&(t, _)| t > first + 2_500_000_000)
        .map(|&(_, r)| r)
        .collect();
    let timeline: Vec<String> = corrections
        .iter()
        .map(|(t, r)| {
            format!(
                "+{} ms: {}",
                (t - end_ns) / 1_000_000,
                r["ipcaudit"]["corrections"]
            )
        })
        .collect();
    assert!(
        late_corrections.is_empty(),
        "resyncs still correcting 2.5 s after the first correction ({timeline:?} after the \
         storm): {late_corrections:#?}"
    );
    assert!(peak_kib < 256 * 1024, "collector peak RSS {peak_kib} KiB");
}

#[test]
fn a_reused_ipc_id_is_a_new_object_with_its_own_owner() {
    if !require_root() {
        return;
    }
    let watch = Watch::start("1");
    // In a fresh IPC namespace: a child creates a segment and exits (an orphan), then on
    // SIGUSR1 the parent removes it and creates another under the same id, which it holds.
    let mut cmd = Command::new("unshare");
    cmd.args(["--ipc", WORKLOAD, "reuse-id"]);
    let held = Held::spawn(cmd);
    let shmid = held.info["shmid"].clone();
    let creator = held.info["child"].clone();
    let orphan = watch.wait_finding("orphaned-segment", &shmid);
    assert_eq!(orphan["evidence"][0]["pid"], creator);
    let ns = orphan["object"]["ns"].clone();
    let generation = orphan["object"]["generation"].clone();
    // SAFETY: signalling the workload (unshare execs it, so the pid is the workload's).
    unsafe { libc::kill(i32::try_from(held.pid()).unwrap(), libc::SIGUSR1) };
    // The old object's finding clears; the new one under the same id belongs to the live
    // parent and is not orphaned.
    assert!(eventually(Duration::from_secs(5), || watch
        .findings("orphaned-segment", Some(&shmid))
        .is_empty()));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        watch.findings("orphaned-segment", Some(&shmid)).is_empty(),
        "{:#}",
        watch.ask("findings")
    );
    let objects = watch.ask("status")["objects"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let new = objects
        .iter()
        .find(|o| o["type"] == "shm" && o["id"] == shmid && o["ns"] == ns && o["status"] == "live")
        .unwrap_or_else(|| panic!("no live shm {shmid} in ns {ns}: {objects:#?}"));
    assert_ne!(
        new["generation"], generation,
        "a reused id is a new generation"
    );
    assert_eq!(new["creator"]["pid"], held.pid());
    drop(held);
    watch.ipcaudit.stop();
}

#[test]
fn a_missing_tracefs_is_mounted() {
    if !require_root() {
        return;
    }
    // Fresh boots have no tracefs mount; ipcaudit mounts it (and says so with -v).
    let _ = Command::new("umount").arg("/sys/kernel/tracing").status();
    if std::path::Path::new("/sys/kernel/tracing/events").is_dir() {
        eprintln!(
            "tracefs is busy here (another tracer holds it): checking only that tracing works"
        );
    }
    let out = Command::new(ipcaudit_bin())
        .args(["-v", "trace", "--duration", "1", "--format", "json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // With debugfs mounted, the kernel's own tracefs automount under it is used instead.
    let via_debugfs = std::path::Path::new("/sys/kernel/debug/tracing/events/syscalls").is_dir();
    assert!(
        via_debugfs || std::path::Path::new("/sys/kernel/tracing/events/syscalls").is_dir(),
        "tracefs not mounted: {err}"
    );
}

#[test]
fn a_missing_or_unreadable_btf_is_one_clear_line() {
    if !require_root() {
        return;
    }
    let junk = std::env::temp_dir().join(format!("ipcaudit-junk-btf-{}", std::process::id()));
    std::fs::write(&junk, b"this is not BTF").unwrap();
    let cases = [
        ("/nonexistent/vmlinux".to_owned(), "No such file"),
        (junk.to_string_lossy().into_owned(), "not well-formed BTF"),
    ];
    for (path, why) in &cases {
        let before = ours(&loaded_bpf_programs()).len();
        let out = Command::new(ipcaudit_bin())
            .args(["trace", "--btf", path])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        // It names the file, why, what to do, and what still works.
        assert!(
            lines[0].contains(path.as_str()) && lines[0].contains(why),
            "{err}"
        );
        assert!(
            lines[0].contains("--btf FILE") && lines[0].contains("`leaks`"),
            "{err}"
        );
        // Nothing left loaded by the failed start (a previous test's programs may still be
        // going away: fewer is fine).
        let after = ours(&loaded_bpf_programs()).len();
        assert!(after <= before, "{before} programs before, {after} after");
    }
    let _ = std::fs::remove_file(&junk);
}
