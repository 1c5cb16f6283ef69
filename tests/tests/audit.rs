//! `ipcaudit ls`, `limits`, `leaks` and `reap` on the real kernel (and `watch --reap-policy`):
//! each test builds its leak (or near miss) with real processes, runs the command, and checks
//! rows and removals against `lsipc`, `ipcs`, /proc/sysvipc and semctl. Every object a test makes
//! is its own (private or random keys) and is removed on drop while still the same object.

#![expect(
    clippy::similar_names,
    reason = "shmid, semid and msqid are the kernel's names for the three kinds of id"
)]

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ipcaudit_tests::{
    Held, Owned, Watch, assert_schema, eventually, ipcaudit_bin, kill_pid, require_root,
    run_ipcaudit, semctl0, start, sysvipc, workload_with,
};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_ipc-workload");
/// A socket no daemon serves: `leaks` and `reap` judge a snapshot.
const NO_DAEMON: &str = "/nonexistent/ipcaudit-audit.sock";

fn ok_json(args: &[&str]) -> Value {
    let (code, out, err) = run_ipcaudit(args);
    assert_eq!(code, 0, "ipcaudit {args:?} exited {code}: {err}");
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("ipcaudit {args:?}: not JSON ({e}): {out}"))
}

fn row(doc: &Value, section: &str, id: &Value) -> Option<Value> {
    doc[section]
        .as_array()?
        .iter()
        .find(|r| &r["id"] == id)
        .cloned()
}

/// `lsipc FLAG -J -b -i ID`: the row lsipc shows (every value a string or null).
fn lsipc_row(flag: &str, section: &str, id: &Value) -> Value {
    let out = Command::new("lsipc")
        .args([flag, "-J", "-b", "-i", &id.to_string()])
        .output()
        .expect("run lsipc");
    assert!(
        out.status.success(),
        "lsipc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("lsipc JSON");
    v[section][0].clone()
}

/// Our value as lsipc prints it (a string, or null).
fn as_lsipc(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::String(s) => Value::String(s.clone()),
        other => Value::String(other.to_string()),
    }
}

/// Every field lsipc shows for the object (but its short-format ctime) equals ours.
fn assert_like_lsipc(ours: &Value, lsipc: &Value) {
    let fields = lsipc.as_object().expect("lsipc row");
    assert!(!fields.is_empty());
    for (key, theirs) in fields {
        if key == "ctime" {
            continue; // lsipc's short time format ("14:53").
        }
        assert_eq!(&as_lsipc(&ours[key]), theirs, "field {key}: ours {ours:#}");
    }
}

fn findings<'a>(doc: &'a Value, rule: &str, id: &Value) -> Vec<&'a Value> {
    doc["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["rule"] == rule && &f["object"]["id"] == id)
        .collect()
}

fn evidence<'a>(finding: &'a Value, role: &str) -> Vec<&'a Value> {
    finding["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["role"] == role)
        .collect()
}

/// The NDJSON records `reap` printed.
fn records(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn record_for<'a>(records: &'a [Value], id: &Value) -> &'a Value {
    records
        .iter()
        .find(|r| &r["ipc"]["id"] == id)
        .unwrap_or_else(|| panic!("no record for {id}: {records:#?}"))
}

fn exists(table: &str, id: &Value) -> bool {
    sysvipc(table, id, "ctime").is_some()
}

/// `ipcs -m|-s|-q -i ID` shows the object (it exits 0 either way; "not found" tells).
fn ipcs_has(flag: &str, id: &Value) -> bool {
    Command::new("ipcs")
        .args([flag, "-i", &id.to_string()])
        .output()
        .is_ok_and(|o| {
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            o.status.success() && !all.contains("not found") && all.contains(&id.to_string())
        })
}

fn pid_value(pid: u32) -> Value {
    Value::from(pid)
}

fn ns_of(pid: u32) -> u64 {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/ipc")).expect("ns link");
    let text = link.to_string_lossy();
    text.trim_start_matches("ipc:[")
        .trim_end_matches(']')
        .parse()
        .expect("ns inode")
}

/// A key nobody else uses: high bits fixed, low bits from the pid and the clock.
fn random_key() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    0x5a00_0000 | ((std::process::id() & 0xfff) << 12) | ((nanos >> 8) & 0xff0)
}

/// The workload under `unshare --ipc`: in a fresh IPC namespace.
fn in_new_namespace(scenario: &str) -> Held {
    let mut cmd = Command::new("unshare");
    cmd.args(["--ipc", WORKLOAD, scenario]);
    Held::spawn(cmd)
}

#[test]
fn ls_shows_owners_users_and_waiters_like_lsipc() {
    if !require_root() {
        return;
    }
    let holder = Held::start(WORKLOAD, "hold-shm", None);
    let shmid = holder.info["shmid"].clone();
    let _shm = Owned::new("shm", &shmid);
    let sem_holder = Held::start(WORKLOAD, "sem-hold", None);
    let semid = sem_holder.info["semid"].clone();
    let _sem = Owned::new("sem", &semid);
    let semid_arg = semid.to_string();
    let sem_waiter = Held::start(WORKLOAD, "sem-wait", Some(&semid_arg));
    assert!(
        eventually(Duration::from_secs(5), || semctl0(&semid, libc::GETNCNT)
            == 1),
        "the waiter never blocked"
    );
    let reader = Held::start(WORKLOAD, "msg-reader", None);
    let msqid = reader.info["msqid"].clone();
    let _msg = Owned::new("msg", &msqid);

    // The reader shows as a waiter once it is blocked in msgrcv.
    let mut ls = Value::Null;
    let blocked = eventually(Duration::from_secs(5), || {
        ls = ok_json(&["ls", "--json"]);
        row(&ls, "messages", &msqid).is_some_and(|r| {
            r["waiters"]
                .as_array()
                .is_some_and(|w| w.iter().any(|w| w["pid"] == pid_value(reader.pid())))
        })
    });
    assert!(blocked, "no msgrcv waiter on {msqid}: {ls:#}");

    // Shared memory: what lsipc shows, plus creator, users and attachments.
    let shm = row(&ls, "sharedmemory", &shmid).expect("our segment is listed");
    assert_like_lsipc(&shm, &lsipc_row("-m", "sharedmemory", &shmid));
    assert_eq!(shm["cpid"], pid_value(holder.pid()));
    assert_eq!(shm["calive"], true);
    assert_eq!(shm["lalive"], true);
    assert_eq!(shm["mode"], "0600");
    assert_eq!(shm["size"], 8192);
    assert_eq!(
        shm["attached"],
        serde_json::json!([{"pid": holder.pid(), "command": "ipc-workload"}])
    );
    assert_eq!(shm["namespace"], ns_of(std::process::id()));
    assert!(shm["age"].as_u64().is_some_and(|a| a < 600), "{shm:#}");
    assert!(shm["ctime"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(sysvipc("shm", &shmid, "nattch"), shm["nattch"].as_u64());

    // Semaphores: values, counts, last operator, waiters.
    let sem = row(&ls, "semaphores", &semid).expect("our set is listed");
    assert_like_lsipc(
        &sem,
        &serde_json::json!({"key": "0x00000000", "id": semid.to_string(), "nsems": "1", "owner": "root", "perms": "rw-------"}),
    );
    assert_eq!(
        sem["values"],
        serde_json::json!([semctl0(&semid, libc::GETVAL)])
    );
    assert_eq!(sem["ncount"], serde_json::json!([1]));
    assert_eq!(sem["zcount"], serde_json::json!([0]));
    assert_eq!(
        sem["sempid"],
        serde_json::json!([{"pid": sem_holder.pid(), "alive": true}])
    );
    let waiters = sem["waiters"].as_array().expect("waiters");
    assert!(
        waiters
            .iter()
            .any(|w| w["pid"] == pid_value(sem_waiter.pid()) && w["op"] == "semop"),
        "{sem:#}"
    );
    assert_eq!(sysvipc("sem", &semid, "nsems"), sem["nsems"].as_u64());

    // Queues: lsipc's columns, capacity, last sender/receiver.
    let msg = row(&ls, "messages", &msqid).expect("our queue is listed");
    assert_like_lsipc(&msg, &lsipc_row("-q", "messages", &msqid));
    let msgmnb: u64 = std::fs::read_to_string("/proc/sys/kernel/msgmnb")
        .expect("msgmnb")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(msg["qbytes"], msgmnb);
    assert_eq!(msg["lsalive"], Value::Null, "never sent to");
    assert!(
        msg["waiters"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["op"] == "msgrcv"))
    );

    // The table: a section per type, our rows, the holder's command.
    let (code, text, err) = run_ipcaudit(&["ls"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("------ Shared Memory Segments --------"),
        "{text}"
    );
    assert!(text.contains("------ Semaphore Arrays --------"));
    assert!(text.contains("------ Message Queues --------"));
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(&shmid.to_string()))
        .unwrap_or_else(|| panic!("no row for {shmid}:\n{text}"));
    assert!(
        line.contains(&format!("{}(ipc-workload)", holder.pid())),
        "{line}"
    );
    assert!(
        line.contains("rw-------") && line.contains("0600"),
        "{line}"
    );
    drop(reader); // Before its queue goes.
}

#[test]
fn ls_columns_types_and_errors() {
    if !require_root() {
        return;
    }
    let holder = Held::start(WORKLOAD, "hold-shm", None);
    let shmid = holder.info["shmid"].clone();
    let _shm = Owned::new("shm", &shmid);
    let v = ok_json(&["ls", "--type", "shm", "-o", "ID,NATTCH,CALIVE", "--json"]);
    let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["sharedmemory"]);
    let r = row(&v, "sharedmemory", &shmid).expect("our segment");
    let cols: Vec<&String> = r.as_object().expect("row").keys().collect();
    assert_eq!(cols.len(), 3, "{r}");
    assert_eq!(
        (r["nattch"].as_u64(), r["calive"].as_bool()),
        (Some(1), Some(true))
    );

    let (code, _, err) = run_ipcaudit(&["ls", "--type", "shm", "-o", "NSEMS"]);
    assert_eq!(code, 1);
    assert!(err.contains("column NSEMS does not apply to shm"), "{err}");
    let (code, _, err) = run_ipcaudit(&["ls", "-o", "BOGUS"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown column"), "{err}");
    let (code, _, err) = run_ipcaudit(&["ls", "--namespace", "0"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn leaks_from_a_snapshot_orphans_and_zombie_creators() {
    if !require_root() {
        return;
    }
    let mut dead = Held::start(WORKLOAD, "hold-shm", None);
    let orphan = dead.info["shmid"].clone();
    let _a = Owned::new("shm", &orphan);
    let zombie_parent = Held::start(WORKLOAD, "zombie-creator", None);
    let zombied = zombie_parent.info["shmid"].clone();
    let _b = Owned::new("shm", &zombied);
    let zombie = zombie_parent.info["child"].as_u64().expect("child pid");
    let live = Held::start(WORKLOAD, "hold-shm", None);
    let alive = live.info["shmid"].clone();
    let _c = Owned::new("shm", &alive);
    dead.kill();
    assert!(eventually(Duration::from_secs(5), || sysvipc(
        "shm", &orphan, "nattch"
    ) == Some(0)));

    let v = ok_json(&["leaks", "--json", "--socket", NO_DAEMON]);
    assert_eq!(v["source"], "snapshot");
    assert!(
        v["reason"].as_str().is_some_and(|r| r.contains(NO_DAEMON)),
        "{v}"
    );
    let f = findings(&v, "orphaned-segment", &orphan);
    assert_eq!(f.len(), 1, "{v:#}");
    assert_eq!(f[0]["remedy"], format!("ipcrm -m {orphan}"));
    let creator = evidence(f[0], "creator");
    assert_eq!(creator[0]["pid"], pid_value(dead.pid()));
    assert_eq!(creator[0]["alive"], false);

    // A zombie is dead; its name is still known.
    let f = findings(&v, "orphaned-segment", &zombied);
    assert_eq!(f.len(), 1, "{v:#}");
    let creator = evidence(f[0], "creator");
    assert_eq!(creator[0]["pid"], zombie);
    assert_eq!(creator[0]["alive"], false);
    assert_eq!(creator[0]["name"], "ipc-workload");
    assert!(creator[0]["entity"].is_object());

    // Near miss: attached by a live process.
    assert!(findings(&v, "orphaned-segment", &alive).is_empty());

    let (code, text, err) = run_ipcaudit(&["leaks", "--socket", NO_DAEMON]);
    assert_eq!(code, 0, "{err}");
    assert!(text.starts_with("source: snapshot"), "{text}");
    assert!(
        text.contains(&format!("orphaned-segment shm {orphan}")),
        "{text}"
    );
}

#[test]
fn leaks_removed_attached_held_semaphores_and_stalled_queues() {
    if !require_root() {
        return;
    }
    // Removed while a child keeps it attached.
    let rmid = Held::start(WORKLOAD, "rmid-child", None);
    let removed = rmid.info["shmid"].clone();
    let child = rmid.info["child"].as_u64().expect("child");
    // A lock taken by a process that is then killed, a waiter blocked on it.
    let mut holder = Held::start(WORKLOAD, "sem-hold", None);
    let semid = holder.info["semid"].clone();
    let _sem = Owned::new("sem", &semid);
    let semid_arg = semid.to_string();
    let waiter = Held::start(WORKLOAD, "sem-wait", Some(&semid_arg));
    assert!(eventually(Duration::from_secs(5), || semctl0(
        &semid,
        libc::GETNCNT
    ) == 1));
    holder.kill();
    // A queue whose reader is killed while a producer goes on.
    let mut reader = Held::start(WORKLOAD, "msg-reader", None);
    let msqid = reader.info["msqid"].clone();
    let _msg = Owned::new("msg", &msqid);
    let msqid_arg = msqid.to_string();
    let producer = Held::start(WORKLOAD, "msg-producer", Some(&msqid_arg));
    assert!(eventually(Duration::from_secs(5), || sysvipc(
        "msg", &msqid, "lrpid"
    )
    .is_some_and(|p| p != 0)));
    reader.kill();
    assert!(eventually(Duration::from_secs(5), || sysvipc(
        "msg", &msqid, "qnum"
    )
    .is_some_and(|n| n > 0)));

    let v = ok_json(&["leaks", "--json", "--socket", NO_DAEMON]);
    let f = findings(&v, "removed-segment-still-attached", &removed);
    assert_eq!(f.len(), 1, "{v:#}");
    let holders = evidence(f[0], "holder");
    assert_eq!(holders.len(), 1);
    assert_eq!(
        (&holders[0]["pid"], &holders[0]["alive"]),
        (&Value::from(child), &Value::Bool(true))
    );
    assert_eq!(f[0]["remedy"], Value::Null);

    let f = findings(&v, "semaphore-held-by-dead-process", &semid);
    assert_eq!(f.len(), 1, "{v:#}");
    assert_eq!(f[0]["severity"], "critical");
    assert_eq!(evidence(f[0], "holder")[0]["pid"], pid_value(holder.pid()));
    assert_eq!(evidence(f[0], "holder")[0]["alive"], false);
    assert_eq!(evidence(f[0], "waiter")[0]["pid"], pid_value(waiter.pid()));
    assert_eq!(evidence(f[0], "waiter")[0]["alive"], true);

    let f = findings(&v, "stalled-queue", &msqid);
    assert_eq!(f.len(), 1, "{v:#}");
    assert_eq!(evidence(f[0], "reader")[0]["pid"], pid_value(reader.pid()));
    assert_eq!(evidence(f[0], "reader")[0]["alive"], false);
    assert_eq!(
        evidence(f[0], "last-sender")[0]["pid"],
        pid_value(producer.pid())
    );
    assert_eq!(evidence(f[0], "last-sender")[0]["alive"], true);

    kill_pid(child);
    drop(rmid);
}

#[test]
fn leaks_asks_a_running_watch() {
    if !require_root() {
        return;
    }
    let watch = Watch::start("1");
    let socket = watch.socket.to_string_lossy().into_owned();
    let mut holder = Held::start(WORKLOAD, "hold-shm", None);
    let shmid = holder.info["shmid"].clone();
    let _shm = Owned::new("shm", &shmid);
    holder.kill();
    let mut v = Value::Null;
    let found = eventually(Duration::from_secs(15), || {
        v = ok_json(&["leaks", "--json", "--socket", &socket]);
        !findings(&v, "orphaned-segment", &shmid).is_empty()
    });
    assert!(found, "{v:#}");
    assert_eq!(v["source"], "watch");
    assert_eq!(v["socket"], socket);
    // The daemon's evidence is exact: the creator with its entity (pid and start time).
    let f = findings(&v, "orphaned-segment", &shmid);
    let creator = evidence(f[0], "creator");
    assert_eq!(creator[0]["pid"], pid_value(holder.pid()));
    assert!(creator[0]["entity"]["start_ticks"].is_u64());

    let (code, text, _) = run_ipcaudit(&["leaks", "--socket", &socket]);
    assert_eq!(code, 0);
    assert!(text.starts_with("source: watch daemon at"), "{text}");
    let forced = ok_json(&["leaks", "--json", "--socket", &socket, "--snapshot"]);
    assert_eq!(forced["source"], "snapshot");
    assert_eq!(findings(&forced, "orphaned-segment", &shmid).len(), 1);
    watch.ipcaudit.stop();
}

#[test]
fn reap_dry_run_then_removal_agrees_with_ipcs() {
    if !require_root() {
        return;
    }
    let key = format!("{:08x}", random_key());
    let orphan = workload_with(WORKLOAD, "orphan-shm", &key);
    let shmid = orphan["shmid"].clone();
    let id = shmid.to_string();
    let _shm = Owned::new("shm", &shmid);
    assert_eq!(orphan["key"], format!("0x{key}"));

    // Dry run: what would go, and why; nothing goes.
    let (code, out, err) = run_ipcaudit(&["reap", "--id", &id, "--socket", NO_DAEMON]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("dry run: 1 would be removed, 0 refused"),
        "{err}"
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 1, "{out}");
    let r = &recs[0];
    assert_schema(r);
    assert_eq!(r["event"]["action"], "reap-remove");
    assert_eq!(r["event"]["outcome"], "unknown");
    assert_eq!(r["ipcaudit"]["reap"]["dry_run"], true);
    assert_eq!(r["ipcaudit"]["reap"]["code"], "would-remove");
    assert_eq!(r["rule"]["name"], "orphaned-segment");
    assert_eq!(r["ipc"]["key"], format!("0x{key}"));
    assert!(
        r["event"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("creator")),
        "{r}"
    );
    assert!(exists("shm", &shmid) && ipcs_has("-m", &shmid));

    // Selected by key: the same object.
    let (code, out, _) =
        run_ipcaudit(&["reap", "--key", &format!("0x{key}"), "--socket", NO_DAEMON]);
    assert_eq!(code, 0);
    let recs = records(&out);
    assert_eq!(recs.len(), 1, "{out}");
    assert_eq!(recs[0]["ipc"]["id"], shmid);
    let (code, _, err) = run_ipcaudit(&["reap", "--key", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("IPC_PRIVATE"), "{err}");

    // Removal, logged to a file; a line for people on stdout.
    let log = std::env::temp_dir().join(format!("ipcaudit-reap-{}.ndjson", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log_arg = log.to_string_lossy().into_owned();
    let (code, out, err) = run_ipcaudit(&[
        "reap", "--yes", "--id", &id, "--socket", NO_DAEMON, "--log", &log_arg,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("reap-remove shm"), "{out}");
    let logged = records(&std::fs::read_to_string(&log).expect("the log"));
    let _ = std::fs::remove_file(&log);
    assert_eq!(logged.len(), 1);
    let r = &logged[0];
    assert_eq!(r["event"]["action"], "reap-remove");
    assert_eq!(r["event"]["outcome"], "success");
    assert_eq!(r["ipcaudit"]["reap"]["code"], "removed");
    assert_eq!(r["ipcaudit"]["reap"]["dry_run"], false);
    assert_eq!(
        r["ipcaudit"]["reap"]["object"]["shm"]["cpid"],
        orphan["child"]
    );
    assert!(!exists("shm", &shmid));
    assert!(!ipcs_has("-m", &shmid), "ipcs still shows {shmid}");
}

#[test]
fn reap_refuses_live_and_waited_objects() {
    if !require_root() {
        return;
    }
    // A live, attached segment.
    let live = Held::start(WORKLOAD, "hold-shm", None);
    let shmid = live.info["shmid"].clone();
    let _shm = Owned::new("shm", &shmid);
    let (code, out, _) = run_ipcaudit(&[
        "reap",
        "--yes",
        "--id",
        &shmid.to_string(),
        "--socket",
        NO_DAEMON,
    ]);
    assert_eq!(code, 3, "refusals exit 3: {out}");
    let recs = records(&out);
    let r = record_for(&recs, &shmid);
    assert_schema(r);
    assert_eq!(r["event"]["action"], "reap-skip");
    assert_eq!(r["ipcaudit"]["reap"]["code"], "not-leaked");
    assert!(
        r["event"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("attached")),
        "{r}"
    );
    assert!(exists("shm", &shmid));

    // A set held by a dead process with a waiter: refused unless --force-waiters.
    let mut holder = Held::start(WORKLOAD, "sem-hold", None);
    let semid = holder.info["semid"].clone();
    let _sem = Owned::new("sem", &semid);
    let semid_arg = semid.to_string();
    let mut waiter = Held::start(WORKLOAD, "sem-wait", Some(&semid_arg));
    assert!(eventually(Duration::from_secs(5), || semctl0(
        &semid,
        libc::GETNCNT
    ) == 1));
    holder.kill();
    let args = [
        "reap", "--yes", "--type", "sem", "--id", &semid_arg, "--socket", NO_DAEMON,
    ];
    let (code, out, _) = run_ipcaudit(&args);
    assert_eq!(code, 3, "{out}");
    let recs = records(&out);
    let r = record_for(&recs, &semid);
    assert_eq!(r["ipcaudit"]["reap"]["code"], "waiters");
    assert_eq!(r["rule"]["name"], "semaphore-held-by-dead-process");
    assert!(exists("sem", &semid));
    let mut forced = args.to_vec();
    forced.push("--force-waiters");
    let (code, out, err) = run_ipcaudit(&forced);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        record_for(&records(&out), &semid)["ipcaudit"]["reap"]["code"],
        "removed"
    );
    assert!(!exists("sem", &semid));
    // The waiter was woken (EIDRM) and left.
    assert!(eventually(Duration::from_secs(5), || waiter
        .child
        .try_wait()
        .is_ok_and(|s| s.is_some())));

    // A stalled queue a live producer still sends to: its last sender is alive.
    let mut reader = Held::start(WORKLOAD, "msg-reader", None);
    let msqid = reader.info["msqid"].clone();
    let _msg = Owned::new("msg", &msqid);
    let msqid_arg = msqid.to_string();
    let mut producer = Held::start(WORKLOAD, "msg-producer", Some(&msqid_arg));
    assert!(eventually(Duration::from_secs(5), || sysvipc(
        "msg", &msqid, "lrpid"
    )
    .is_some_and(|p| p != 0)));
    reader.kill();
    assert!(eventually(Duration::from_secs(5), || sysvipc(
        "msg", &msqid, "qnum"
    )
    .is_some_and(|n| n > 0)));
    let args = ["reap", "--yes", "--id", &msqid_arg, "--socket", NO_DAEMON];
    let (code, out, _) = run_ipcaudit(&args);
    assert_eq!(code, 3, "{out}");
    let r = records(&out);
    let r = record_for(&r, &msqid);
    assert_eq!(r["ipcaudit"]["reap"]["code"], "user-alive");
    assert!(
        r["event"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("last-sender")),
        "{r}"
    );
    assert!(exists("msg", &msqid));
    producer.kill();
    let (code, out, err) = run_ipcaudit(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        record_for(&records(&out), &msqid)["rule"]["name"],
        "stalled-queue"
    );
    assert!(!exists("msg", &msqid) && !ipcs_has("-q", &msqid));
}

#[test]
fn reap_never_removes_a_segment_attached_after_the_plan() {
    if !require_root() {
        return;
    }
    let orphan = workload_with(WORKLOAD, "orphan-shm", "0");
    let shmid = orphan["shmid"].clone();
    let id = shmid.to_string();
    let _shm = Owned::new("shm", &shmid);
    let (code, out, _) = run_ipcaudit(&["reap", "--id", &id, "--socket", NO_DAEMON]);
    assert_eq!(code, 0);
    assert_eq!(
        record_for(&records(&out), &shmid)["ipcaudit"]["reap"]["code"],
        "would-remove"
    );

    // Between the plan and the removal, someone (this test) attaches it.
    let raw = i32::try_from(shmid.as_i64().expect("id")).expect("id");
    // SAFETY: attaching a segment we made; detached below.
    let addr = unsafe { libc::shmat(raw, std::ptr::null(), 0) };
    assert_ne!(addr as isize, -1, "shmat");
    let (code, out, _) = run_ipcaudit(&["reap", "--yes", "--id", &id, "--socket", NO_DAEMON]);
    let recs = records(&out);
    let r = record_for(&recs, &shmid);
    assert_eq!(code, 3, "{out}");
    assert_eq!(r["event"]["action"], "reap-skip");
    assert!(
        r["event"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("attached")),
        "{r}"
    );
    assert_eq!(sysvipc("shm", &shmid, "nattch"), Some(1));
    assert!(exists("shm", &shmid));
    // SAFETY: our attachment.
    unsafe { libc::shmdt(addr) };
}

#[test]
fn reap_never_removes_an_id_reused_after_the_plan() {
    if !require_root() {
        return;
    }
    // In a namespace of its own (so that steering the next id disturbs no one).
    let held = in_new_namespace("reuse-id");
    let pid = held.pid();
    let pid_arg = pid.to_string();
    let shmid = held.info["shmid"].clone();
    let id = shmid.to_string();
    let (code, out, err) = run_ipcaudit(&["reap", "--namespace", &pid_arg, "--id", &id]);
    assert_eq!(code, 0, "{err}");
    let r = record_for(&records(&out), &shmid).clone();
    assert_eq!(r["ipcaudit"]["reap"]["code"], "would-remove");
    assert_eq!(r["ipc"]["namespace"], ns_of(pid));

    // The leaked segment is removed and a live one made under the same id.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(pid).expect("pid"), libc::SIGUSR1) };
    let mut ls = Value::Null;
    let replaced = eventually(Duration::from_secs(5), || {
        ls = ok_json(&["ls", "--namespace", &pid_arg, "--json"]);
        row(&ls, "sharedmemory", &shmid).is_some_and(|r| r["cpid"] == pid_value(pid))
    });
    assert!(replaced, "{ls:#}");

    let (code, out, _) = run_ipcaudit(&["reap", "--yes", "--namespace", &pid_arg, "--id", &id]);
    assert_eq!(code, 3, "{out}");
    let r = record_for(&records(&out), &shmid).clone();
    assert_eq!(r["event"]["action"], "reap-skip");
    assert!(
        r["event"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("alive")),
        "{r}"
    );
    let ls = ok_json(&["ls", "--namespace", &pid_arg, "--json"]);
    let now = row(&ls, "sharedmemory", &shmid).expect("the new segment is still there");
    assert_eq!(now["cpid"], pid_value(pid));
    assert_eq!(now["calive"], true);
}

#[test]
fn ls_limits_and_reap_in_another_namespace() {
    if !require_root() {
        return;
    }
    let held = in_new_namespace("hold-shm");
    let pid = held.pid();
    let pid_arg = pid.to_string();
    let shmid = held.info["shmid"].clone();
    let inode = ns_of(pid);
    assert_ne!(inode, ns_of(std::process::id()));

    let theirs = ok_json(&["ls", "--namespace", &pid_arg, "--json"]);
    let r = row(&theirs, "sharedmemory", &shmid).expect("the segment in its namespace");
    assert_eq!(r["namespace"], inode);
    assert_eq!(r["cpid"], pid_value(pid));
    assert_eq!(r["calive"], true);
    assert_eq!(r["nattch"], 1);
    assert_eq!(theirs["sharedmemory"].as_array().map(Vec::len), Some(1));
    // Our own namespace does not show it; `all` shows it, labelled.
    let ours = ok_json(&["ls", "--json"]);
    assert!(
        ours["sharedmemory"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|r| r["namespace"] != inode)
    );
    let all = ok_json(&["ls", "--namespace", "all", "--json", "--type", "shm"]);
    assert!(
        all["sharedmemory"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["namespace"] == inode && r["id"] == shmid),
        "{all:#}"
    );
    let (code, text, _) = run_ipcaudit(&["ls", "--namespace", &pid_arg, "--type", "shm"]);
    assert_eq!(code, 0);
    assert!(
        text.lines().nth(1).is_some_and(|h| h.contains("NAMESPACE")),
        "{text}"
    );
    assert!(text.contains(&inode.to_string()));

    let limits = ok_json(&["limits", "--namespace", &pid_arg, "--json"]);
    let shmmni = limits["ipclimits"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["resource"] == "SHMMNI")
        .expect("SHMMNI");
    assert_eq!(
        (shmmni["namespace"].as_u64(), shmmni["used"].as_u64()),
        (Some(inode), Some(1))
    );
    drop(held);

    // A leak inside another namespace is rechecked and removed there.
    let zombies = in_new_namespace("zombie-creator");
    let zpid = zombies.pid().to_string();
    let leaked = zombies.info["shmid"].clone();
    let (code, out, err) = run_ipcaudit(&["reap", "--namespace", &zpid, "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    let r = record_for(&records(&out), &leaked).clone();
    assert_eq!(r["ipcaudit"]["reap"]["code"], "removed");
    assert_eq!(r["ipc"]["namespace"], ns_of(zombies.pid()));
    let after = ok_json(&["ls", "--namespace", &zpid, "--json"]);
    assert_eq!(after["sharedmemory"], serde_json::json!([]));
}

#[test]
fn unprivileged_ls_and_leaks_show_what_nobody_may_see() {
    if !require_root() {
        return;
    }
    let holder = Held::start(WORKLOAD, "hold-shm", None);
    let shmid = holder.info["shmid"].clone();
    let _shm = Owned::new("shm", &shmid);
    let sem = Held::start(WORKLOAD, "sem-hold", None);
    let semid = sem.info["semid"].clone();
    let _sem = Owned::new("sem", &semid);
    let bin = ipcaudit_bin();
    let as_nobody = |args: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(args)
            .output()
            .expect("run setpriv");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The only notes an unprivileged user may get are about POSIX IPC: queues cannot be listed
    // when the mqueue filesystem is not mounted (mounting it needs CAP_SYS_ADMIN), and other
    // users' descriptors and mappings cannot be read.
    let only_mqueue_notes = |err: &str| {
        err.lines()
            .all(|l| l.contains("mount -t mqueue") || l.contains("holders of POSIX objects"))
    };
    let (code, out, err) = as_nobody(&["ls", "--json"]);
    assert!(code == Some(0) && only_mqueue_notes(&err), "{err}\n{out}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    // /proc/sysvipc shows every object; the values of a 0600 set are not ours to read.
    let r = row(&v, "sharedmemory", &shmid).expect("the root segment is listed");
    assert_eq!(r["cpid"], pid_value(holder.pid()));
    let s = row(&v, "semaphores", &semid).expect("the root set is listed");
    assert_eq!(s["values"], Value::Null);
    let (code, out, err) = as_nobody(&["leaks", "--json"]);
    assert!(code == Some(0) && only_mqueue_notes(&err), "{err}\n{out}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["source"], "snapshot");
    let (code, out, err) = as_nobody(&["ls"]);
    assert!(code == Some(0) && only_mqueue_notes(&err), "{err}\n{out}");
    let (code, _, err) = as_nobody(&["limits", "--json"]);
    assert_eq!((code, err.as_str()), (Some(0), ""));
}

#[test]
fn limits_agree_with_lsipc_g() {
    if !require_root() {
        return;
    }
    let lsipc = || -> Value {
        let out = Command::new("lsipc")
            .args(["-g", "-J", "-b"])
            .output()
            .expect("run lsipc");
        serde_json::from_slice(&out.stdout).expect("lsipc JSON")
    };
    let find = |doc: &Value, name: &str| -> Value {
        doc["ipclimits"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["resource"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}: {doc:#}"))
    };
    // Other tests create and remove objects meanwhile: retry until lsipc reads the same before
    // and after ours.
    let mut agreed = false;
    for _ in 0..20 {
        let before = lsipc();
        let ours = ok_json(&["limits", "--json"]);
        let after = lsipc();
        for name in [
            "MSGMNI", "MSGMAX", "MSGMNB", "SHMMNI", "SHMALL", "SHMMAX", "SHMMIN", "SEMMNI",
            "SEMMNS", "SEMMSL", "SEMOPM", "SEMVMX",
        ] {
            let o = find(&ours, name);
            let l = find(&before, name);
            assert_eq!(as_lsipc(&o["limit"]), l["limit"], "{name} limit");
            assert_eq!(o["description"], l["description"], "{name}");
        }
        if before != after {
            continue;
        }
        for name in ["MSGMNI", "SHMMNI", "SHMALL", "SEMMNI", "SEMMNS"] {
            let o = find(&ours, name);
            assert_eq!(
                as_lsipc(&o["used"]),
                find(&before, name)["used"],
                "{name} used"
            );
        }
        agreed = true;
        break;
    }
    assert!(agreed, "the IPC tables never held still");
}

#[test]
fn watch_reap_policy_removes_only_what_it_covers() {
    if !require_root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ipcaudit-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // A policy with an error names the file, the line and the field, before anything loads.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[rule]]\nname = \"x\"\ngrace = \"soon\"\n").expect("write");
    let (code, _, err) = run_ipcaudit(&["watch", "--reap-policy", &bad.to_string_lossy()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{}:3: field `rule[1].grace`", bad.display())),
        "{err}"
    );

    // Two keys the policy covers (one removal per hour at most), one it does not.
    let base = random_key();
    let policy = dir.join("reap.toml");
    std::fs::write(
        &policy,
        format!(
            "[[rule]]\nname = \"audit-test\"\ntype = \"shm\"\nfinding = \"orphaned-segment\"\n\
             key = \"0x{base:08x}-0x{:08x}\"\ngrace = \"1s\"\nrate = \"1/h\"\n",
            base + 1
        ),
    )
    .expect("write policy");
    let out: PathBuf = dir.join("watch.ndjson");
    let _ = std::fs::remove_file(&out);
    let socket = dir.join("watch.sock");
    let watch = start(&[
        "watch",
        "--grace",
        "1",
        "--resync",
        "1",
        "--socket",
        &socket.to_string_lossy(),
        "--reap-policy",
        &policy.to_string_lossy(),
        "-o",
        &out.to_string_lossy(),
    ]);
    let objects: Vec<Value> = [base, base + 1, base + 2]
        .iter()
        .map(|k| workload_with(WORKLOAD, "orphan-shm", &format!("{k:08x}"))["shmid"].clone())
        .collect();
    let _guards: Vec<Owned> = objects.iter().map(|id| Owned::new("shm", id)).collect();
    let read = || records(&std::fs::read_to_string(&out).unwrap_or_default());
    let reap_records = |all: &[Value]| -> Vec<Value> {
        all.iter()
            .filter(|r| {
                r["event"]["action"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("reap-"))
            })
            .cloned()
            .collect()
    };
    let done = eventually(Duration::from_secs(20), || reap_records(&read()).len() >= 2);
    // The third is reported, never removed.
    let reported = eventually(Duration::from_secs(10), || {
        read().iter().any(|r| {
            r["event"]["action"] == "finding-raised"
                && r["rule"]["name"] == "orphaned-segment"
                && r["ipc"]["id"] == objects[2]
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    watch.stop();
    let all = read();
    let reaps = reap_records(&all);
    assert!(done && reported, "records: {all:#?}");
    assert_eq!(reaps.len(), 2, "{reaps:#?}");
    let removed: Vec<&Value> = reaps
        .iter()
        .filter(|r| r["event"]["action"] == "reap-remove")
        .collect();
    let capped: Vec<&Value> = reaps
        .iter()
        .filter(|r| r["ipcaudit"]["reap"]["code"] == "rate-capped")
        .collect();
    assert_eq!((removed.len(), capped.len()), (1, 1), "{reaps:#?}");
    assert_eq!(removed[0]["ipcaudit"]["reap"]["policy"], "audit-test");
    assert_eq!(removed[0]["ipcaudit"]["reap"]["source"], "policy");
    assert_eq!(removed[0]["rule"]["name"], "orphaned-segment");
    assert_eq!(removed[0]["event"]["outcome"], "success");
    let gone = &removed[0]["ipc"]["id"];
    let kept = &capped[0]["ipc"]["id"];
    assert!(objects[..2].contains(gone) && objects[..2].contains(kept) && gone != kept);
    assert!(!exists("shm", gone));
    assert!(exists("shm", kept), "the rate cap keeps the second");
    assert!(exists("shm", &objects[2]), "not covered: only reported");
    assert!(
        !reaps.iter().any(|r| r["ipc"]["id"] == objects[2]),
        "{reaps:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
