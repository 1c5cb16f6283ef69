//! `ipcaudit replay` of a stream recorded by a live `watch` implies the same findings.

use std::{collections::BTreeSet, io::Write as _, process::Command, time::Duration};

use ipcaudit_tests::{Held, Watch, ipcaudit_bin, ipcrm, require_root};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_ipc-workload");

/// (action, rule, object type, object id) of every alert record.
fn alerts(records: &[Value]) -> BTreeSet<(String, String, String, String)> {
    records
        .iter()
        .filter(|r| r["event"]["kind"] == "alert")
        .map(|r| {
            (
                r["event"]["action"].to_string(),
                r["rule"]["name"].to_string(),
                r["ipc"]["type"].to_string(),
                r["ipc"]["id"].to_string(),
            )
        })
        .collect()
}

#[test]
fn replay_of_a_live_recording_gives_the_same_findings() {
    if !require_root() {
        return;
    }
    let watch = Watch::start("1");
    let mut holder = Held::start(WORKLOAD, "hold-shm", None);
    let shmid = holder.info["shmid"].clone();
    let parent = Held::start(WORKLOAD, "rmid-child", None);
    let pinned = parent.info["shmid"].clone();
    // Hot paths the kernel aggregates in `watch`: a lock taken by a process that dies, and a
    // queue whose reader dies while a producer keeps sending.
    let mut locker = Held::start(WORKLOAD, "sem-hold", None);
    let lock_semid = locker.info["semid"].clone();
    let mut reader = Held::start(WORKLOAD, "msg-reader", None);
    let msqid = reader.info["msqid"].clone();
    let producer = Held::start(WORKLOAD, "msg-producer", Some(&msqid.to_string()));
    std::thread::sleep(Duration::from_millis(1500));
    holder.kill();
    locker.kill();
    reader.kill();
    watch.wait_finding("orphaned-segment", &shmid);
    watch.wait_finding("removed-segment-still-attached", &pinned);
    watch.wait_finding("semaphore-held-by-dead-process", &lock_semid);
    watch.wait_finding("stalled-queue", &msqid);
    ipcaudit_tests::kill_pid(parent.info["child"].as_u64().unwrap());
    drop(parent);
    drop(producer);
    std::thread::sleep(Duration::from_millis(1500));
    ipcrm("-m", &shmid);
    ipcrm("-s", &lock_semid);
    ipcrm("-q", &msqid);
    std::thread::sleep(Duration::from_millis(500));
    let live = watch.ipcaudit.stop();
    // What the kernel aggregated was recorded (replay needs it to rebuild values and depths).
    for action in ["usage", "sem-totals", "msg-totals"] {
        assert!(
            live.iter().any(|r| r["event"]["action"] == action),
            "no {action} record in the recording"
        );
    }

    let path = std::env::temp_dir().join(format!("ipcaudit-replay-{}.ndjson", std::process::id()));
    let mut file = std::fs::File::create(&path).unwrap();
    for r in &live {
        writeln!(file, "{r}").unwrap();
    }
    drop(file);
    let out = Command::new(ipcaudit_bin())
        .args(["replay", "--grace", "1", "--format", "json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();

    let (live_alerts, replay_alerts) = (alerts(&live), alerts(&replayed));
    let ids = [&shmid, &pinned, &lock_semid, &msqid].map(ToString::to_string);
    let ours = |set: &BTreeSet<(String, String, String, String)>| {
        set.iter()
            .filter(|a| ids.contains(&a.3))
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    for rule in [
        "orphaned-segment",
        "removed-segment-still-attached",
        "semaphore-held-by-dead-process",
        "stalled-queue",
    ] {
        assert!(
            ours(&live_alerts)
                .iter()
                .any(|a| a.1 == format!("{rule:?}")),
            "{rule} not in {live_alerts:?}"
        );
    }
    assert_eq!(ours(&replay_alerts), ours(&live_alerts));
    // Every finding, including those on objects that predate the session, agrees.
    assert_eq!(replay_alerts, live_alerts);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn replay_rejects_bad_input_naming_file_and_line() {
    let dir = std::env::temp_dir().join(format!("ipcaudit-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: [(&str, &[u8], &str); 4] = [
        ("truncated", b"{\"@timestamp\":\"2026-11-23T14:00:00Z\",\"event\":{\"kind\":\"ev", ":1: not JSON"),
        ("not-utf8", b"\n\xff\xfe\n", ":2: not UTF-8"),
        ("wrong-action", b"{\"@timestamp\":\"2026-11-23T14:00:00Z\",\"event\":{\"kind\":\"event\",\"action\":\"shm-explode\"}}\n", "event.action"),
        ("no-kind", b"{}\n", "event.kind"),
    ];
    for (name, content, expect) in cases {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let out = Command::new(ipcaudit_bin())
            .args(["replay", "--format", "json"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(
            err.contains(&path.display().to_string()) && err.contains(expect),
            "{name}: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
