//! `ipcaudit watch` on the real kernel: each scenario builds a leak (or its near miss) with real
//! processes, then checks the findings the daemon reports and compares its model with the
//! kernel's truth (nattch, /proc/PID/maps, GETVAL/GETNCNT, qnum).

use std::time::Duration;

use ipcaudit_tests::{
    Held, Watch, eventually, ipcrm, kernel_at_least, kill_pid, require_root, semctl0, sysvipc,
};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_ipc-workload");

fn evidence_of<'a>(finding: &'a Value, role: &str) -> Vec<&'a Value> {
    finding["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["role"] == role)
        .collect()
}

fn pid_value(pid: u32) -> Value {
    Value::from(pid)
}

/// The model's nattch and the kernel's agree (after the model has had time to see everything).
fn assert_nattch_agrees(watch: &Watch, shmid: &Value) {
    let kernel = sysvipc("shm", shmid, "nattch");
    let mut model = None;
    let agreed = eventually(Duration::from_secs(5), || {
        model = watch.object("shm", shmid)["shm"]["nattch"].as_u64();
        model == kernel
    });
    assert!(
        agreed,
        "shm {shmid}: model nattch {model:?}, kernel {kernel:?}"
    );
}

/// An attachment made before ipcaudit started is known from /proc at start-up, and its process
/// is marked in the kernel as one whose munmap can detach: the munmap is recorded (no resync
/// runs during the test to correct a missed one).
#[test]
fn an_attachment_older_than_the_watch_is_seen_to_go_by_munmap() {
    if !require_root() {
        return;
    }
    let holder = Held::start(WORKLOAD, "hold-shm-munmap", None);
    let shmid = holder.info["shmid"].clone();
    let watch = Watch::start_with("1", "3600", &[]);
    assert_eq!(
        watch.object("shm", &shmid)["shm"]["nattch"].as_u64(),
        Some(1),
        "the model knows the attachment from /proc"
    );
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(i32::try_from(holder.pid()).unwrap_or(0), libc::SIGUSR1);
    }
    assert!(eventually(Duration::from_secs(5), || sysvipc(
        "shm", &shmid, "nattch"
    ) == Some(0)));
    assert_nattch_agrees(&watch, &shmid);
    ipcrm("shm", &shmid);
    let records = watch.ipcaudit.stop();
    let detach = records
        .iter()
        .find(|r| r["event"]["action"] == "shm-detach" && r["ipc"]["id"] == shmid)
        .unwrap_or_else(|| panic!("no shm-detach of {shmid}"));
    assert_eq!(detach["process"]["pid"], pid_value(holder.pid()));
    assert_eq!(detach["ipcaudit"]["syscall"]["name"], "munmap");
    assert_eq!(detach["ipc"]["shm"]["address"], holder.info["addr"]);
}

#[test]
fn killed_creator_leaves_an_orphaned_segment() {
    if !require_root() {
        return;
    }
    let watch = Watch::start("1");
    let mut holder = Held::start(WORKLOAD, "hold-shm", None);
    let shmid = holder.info["shmid"].clone();
    // Near miss: attached by a live process, long past the grace period: no finding.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(watch.findings("orphaned-segment", Some(&shmid)).is_empty());
    assert_nattch_agrees(&watch, &shmid);
    let object = watch.object("shm", &shmid);
    assert_eq!(object["creator"]["pid"], pid_value(holder.pid()));
    assert_eq!(
        object["shm"]["attachments"][0]["process"]["pid"],
        pid_value(holder.pid())
    );

    holder.kill();
    let finding = watch.wait_finding("orphaned-segment", &shmid);
    assert_eq!(finding["remedy"], format!("ipcrm -m {shmid}"));
    let creator = evidence_of(&finding, "creator");
    assert_eq!(creator[0]["pid"], pid_value(holder.pid()));
    assert_eq!(creator[0]["alive"], false);
    assert_nattch_agrees(&watch, &shmid);

    // Removing it clears the finding, once.
    ipcrm("-m", &shmid);
    assert!(eventually(Duration::from_secs(5), || watch
        .findings("orphaned-segment", Some(&shmid))
        .is_empty()));
    let records = watch.ipcaudit.stop();
    let cleared: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["event"]["action"] == "finding-cleared"
                && r["rule"]["name"] == "orphaned-segment"
                && r["ipc"]["id"] == shmid
        })
        .collect();
    assert_eq!(cleared.len(), 1);
}

#[test]
fn a_zombie_creator_is_dead() {
    if !require_root() {
        return;
    }
    let watch = Watch::start("1");
    // The child created the segment and exited; the parent never reaps it.
    let parent = Held::start(WORKLOAD, "zombie-creator", None);
    let shmid = parent.info["shmid"].clone();
    let child = parent.info["child"].as_u64().unwrap();
    let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
    assert!(
        state.contains(") Z "),
        "the creator should be a zombie: {state}"
    );
    let finding = watch.wait_finding("orphaned-segment", &shmid);
    let creator = evidence_of(&finding, "creator");
    assert_eq!(creator[0]["pid"], child);
    assert_eq!(creator[0]["alive"], false);
    drop(parent);
    ipcrm("-m", &shmid);
    watch.ipcaudit.stop();
}

#[test]
fn fork_children_detach_by_shmdt_munmap_and_exec() {
    if !require_root() {
        return;
    }
    let watch = Watch::start("1");
    let parent = Held::start(WORKLOAD, "fork-three", None);
    let shmid = parent.info["shmid"].clone();
    let children: Vec<u64> = parent.info["children"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    // The exec'd child is `sleep` once it has exec'd.
    assert!(eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{}/comm", children[2]))
            .is_ok_and(|c| c.trim() == "sleep")
    }));
    // Only the parent still maps it: the kernel says so (once the other two children have run
    // their shmdt and munmap: nothing orders them before the exec), and so does the model.
    assert!(
        eventually(Duration::from_secs(5), || sysvipc("shm", &shmid, "nattch")
            == Some(1)),
        "nattch {:?}",
        sysvipc("shm", &shmid, "nattch")
    );
    for child in &children {
        let maps = std::fs::read_to_string(format!("/proc/{child}/maps")).unwrap_or_default();
        assert!(!maps.contains("/SYSV"), "child {child} still maps it");
    }
    assert_nattch_agrees(&watch, &shmid);
    let object = watch.object("shm", &shmid);
    let holders: Vec<u64> = object["shm"]["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["process"]["pid"].as_u64())
        .collect();
    assert_eq!(holders, vec![u64::from(parent.pid())]);
    for child in children {
        kill_pid(child);
    }
    drop(parent);
    ipcrm("-m", &shmid);
    watch.ipcaudit.stop();
}

#[test]
fn a_lock_left_taken_by_a_killed_process_is_critical() {
    if !require_root() {
        return;
    }
    let watch = Watch::start("1");
    let mut holder = Held::start(WORKLOAD, "sem-hold", None);
    let semid = holder.info["semid"].clone();
    let semid_arg = semid.to_string();
    let waiter = Held::start(WORKLOAD, "sem-wait", Some(&semid_arg));
    assert!(
        eventually(Duration::from_secs(5), || semctl0(&semid, libc::GETNCNT)
            == 1),
        "the waiter never blocked"
    );
    // Near miss: the holder is alive.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        watch
            .findings("semaphore-held-by-dead-process", Some(&semid))
            .is_empty()
    );

    holder.kill();
    let finding = watch.wait_finding("semaphore-held-by-dead-process", &semid);
    assert_eq!(finding["severity"], "critical");
    let holders = evidence_of(&finding, "holder");
    assert_eq!(holders[0]["pid"], pid_value(holder.pid()));
    assert_eq!(holders[0]["alive"], false);
    // The waiter is named once a resync has seen it blocked.
    let mut named = false;
    eventually(Duration::from_secs(5), || {
        let f = watch.findings("semaphore-held-by-dead-process", Some(&semid));
        named = f.first().is_some_and(|f| {
            evidence_of(f, "waiter")
                .iter()
                .any(|w| w["pid"] == pid_value(waiter.pid()))
        });
        named
    });
    assert!(
        named,
        "waiter {} not named: {:#}",
        waiter.pid(),
        watch.ask("findings")
    );
    // Model and kernel agree on the value (0: the unit was never given back) and the waiter.
    assert_eq!(semctl0(&semid, libc::GETVAL), 0);
    assert_eq!(semctl0(&semid, libc::GETNCNT), 1);
    let object = watch.object("sem", &semid);
    assert_eq!(object["sem"]["values"][0]["value"], 0, "{object:#}");
    drop(waiter);
    ipcrm("-s", &semid);
    watch.ipcaudit.stop();
}

#[test]
fn a_sem_undo_holder_gives_its_unit_back() {
    if !require_root() {
        return;
    }
    let watch = Watch::start("1");
    let mut holder = Held::start(WORKLOAD, "sem-hold-undo", None);
    let semid = holder.info["semid"].clone();
    let semid_arg = semid.to_string();
    let mut waiter = Held::start(WORKLOAD, "sem-wait", Some(&semid_arg));
    assert!(eventually(Duration::from_secs(5), || semctl0(
        &semid,
        libc::GETNCNT
    ) == 1));
    holder.kill();
    // The kernel undoes the adjustment: the waiter gets the unit, gives it back and exits.
    assert!(eventually(Duration::from_secs(5), || waiter
        .child
        .try_wait()
        .ok()
        .flatten()
        .is_some()));
    assert_eq!(semctl0(&semid, libc::GETVAL), 1);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        watch
            .findings("semaphore-held-by-dead-process", Some(&semid))
            .is_empty()
    );
    let object = watch.object("sem", &semid);
    assert!(
        eventually(
            Duration::from_secs(3),
            || watch.object("sem", &semid)["sem"]["values"][0]["value"] == 1
        ),
        "{object:#}"
    );
    ipcrm("-s", &semid);
    watch.ipcaudit.stop();
}

#[test]
fn a_queue_whose_reader_was_killed_stalls() {
    if !require_root() {
        return;
    }
    let watch = Watch::start("1");
    let mut reader = Held::start(WORKLOAD, "msg-reader", None);
    let msqid = reader.info["msqid"].clone();
    let msqid_arg = msqid.to_string();
    let producer = Held::start(WORKLOAD, "msg-producer", Some(&msqid_arg));
    // Near miss: the reader keeps up.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(watch.findings("stalled-queue", Some(&msqid)).is_empty());

    reader.kill();
    let finding = watch.wait_finding("stalled-queue", &msqid);
    assert_eq!(
        evidence_of(&finding, "last-sender")[0]["pid"],
        pid_value(producer.pid())
    );
    let readers = evidence_of(&finding, "reader");
    assert!(
        readers
            .iter()
            .any(|r| r["pid"] == pid_value(reader.pid()) && r["alive"] == false),
        "{finding:#}"
    );
    drop(producer);
    // The model's depth matches the kernel's once the producer is gone.
    let kernel = sysvipc("msg", &msqid, "qnum");
    assert!(kernel.unwrap_or(0) > 0);
    assert!(
        eventually(
            Duration::from_secs(5),
            || watch.object("msg", &msqid)["msg"]["messages"].as_u64() == kernel
        ),
        "model {:#}, kernel qnum {kernel:?}",
        watch.object("msg", &msqid)
    );
    ipcrm("-q", &msqid);
    watch.ipcaudit.stop();
}

#[test]
fn a_removed_segment_pinned_by_a_child_is_reported_until_it_goes() {
    if !require_root() {
        return;
    }
    let watch = Watch::start("1");
    let parent = Held::start(WORKLOAD, "rmid-child", None);
    let shmid = parent.info["shmid"].clone();
    let child = parent.info["child"].as_u64().unwrap();
    let finding = watch.wait_finding("removed-segment-still-attached", &shmid);
    let holders = evidence_of(&finding, "holder");
    assert_eq!(holders[0]["pid"], child);
    assert_eq!(holders[0]["alive"], true);
    assert_eq!(
        watch.object("shm", &shmid)["status"],
        "removed-pending-destroy"
    );
    assert_nattch_agrees(&watch, &shmid);
    // The holder dies: the segment is destroyed and the finding clears.
    kill_pid(child);
    assert!(eventually(Duration::from_secs(5), || watch
        .findings("removed-segment-still-attached", Some(&shmid))
        .is_empty()));
    assert_eq!(
        sysvipc("shm", &shmid, "nattch"),
        None,
        "the kernel freed it"
    );
    drop(parent);
    let records = watch.ipcaudit.stop();
    assert!(
        records
            .iter()
            .any(|r| r["event"]["action"] == "shm-destroy" && r["ipc"]["id"] == shmid)
    );
}

/// `/proc/PID/stat` (or a thread's): state, ppid, start time in ticks, comm.
fn proc_stat(path: &str) -> (String, u64, u64, String) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (head, rest) = text.rsplit_once(") ").expect("stat's comm");
    let comm = head.split_once(" (").expect("stat's pid").1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); ppid is field 4, starttime field 22.
    (
        fields[0].to_owned(),
        fields[1].parse().expect("ppid"),
        fields[19].parse().expect("starttime"),
        comm,
    )
}

/// The System V lines of a maps file: (start, end, offset, inode, writable).
fn proc_sysv_maps(path: &str) -> Vec<(u64, u64, u64, u64, bool)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| l.contains(" /SYSV"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (start, end) = f[0].split_once('-').expect("range");
            let hex = |s: &str| u64::from_str_radix(s, 16).expect("hex");
            (
                hex(start),
                hex(end),
                hex(f[2]),
                f[4].parse().expect("inode"),
                f[1].as_bytes()[1] == b'w',
            )
        })
        .collect()
}

/// Whether `v` holds, at any depth, an object whose `field` is `value`.
fn mentions(v: &Value, field: &str, value: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.get(field) == Some(value) || m.values().any(|x| mentions(x, field, value))
        }
        Value::Array(a) => a.iter().any(|x| mentions(x, field, value)),
        _ => false,
    }
}

/// The start-up snapshot that the kernel's iterators read (Linux 5.12+) is the one /proc
/// shows: read-write,
/// read-only and partly unmapped attachments, a process whose main thread exited while another
/// thread holds its attachment (its live thread's state stands for it, as /proc's scan takes
/// it), a zombie; and the resyncs find nothing of them to correct.
#[test]
fn the_start_up_scan_reads_what_proc_shows() {
    if !require_root() {
        return;
    }
    let holder = Held::start(WORKLOAD, "scan-shapes", None);
    let info = holder.info.clone();
    let pid = u64::from(holder.pid());
    let leader_exited = info["leader_exited"].as_u64().expect("leader_exited");
    let zombie = info["zombie"].as_u64().expect("zombie");
    let watch = Watch::start_with("1", "1", &["-v"]);
    // A few resyncs.
    std::thread::sleep(Duration::from_millis(2500));
    let thread = std::fs::read_dir(format!("/proc/{leader_exited}/task"))
        .expect("task dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .find(|&tid| tid != leader_exited)
        .expect("the live thread");
    let stat_paths = [
        (
            pid,
            format!("/proc/{pid}/stat"),
            format!("/proc/{pid}/stat"),
        ),
        (
            leader_exited,
            format!("/proc/{leader_exited}/stat"),
            format!("/proc/{leader_exited}/task/{thread}/stat"),
        ),
        (
            zombie,
            format!("/proc/{zombie}/stat"),
            format!("/proc/{zombie}/stat"),
        ),
    ];
    let truth: Vec<_> = stat_paths
        .iter()
        .map(|(p, leader, live)| {
            let (_, parent, start, comm) = proc_stat(leader);
            (*p, proc_stat(live).0, parent, start, comm)
        })
        .collect();
    let maps = [
        (pid, proc_sysv_maps(&format!("/proc/{pid}/maps"))),
        (
            leader_exited,
            proc_sysv_maps(&format!("/proc/{leader_exited}/task/{thread}/maps")),
        ),
    ];
    kill_pid(leader_exited);
    let stderr = watch.ipcaudit.stderr_text();
    let records = watch.ipcaudit.stop();
    // The vma iterator is Linux 5.12+; before, /proc is read (and must give the same).
    assert_eq!(
        stderr.contains("bootstrap: processes and mappings read by the kernel's iterators"),
        kernel_at_least(5, 12),
        "which scan read the snapshot: {stderr}"
    );
    let snapshot = &records
        .iter()
        .find(|r| r["event"]["kind"] == "state" && r["event"]["action"] == "snapshot")
        .expect("a snapshot record")["ipcaudit"]["snapshot"];
    let processes = snapshot["processes"].as_array().expect("processes");
    for (p, state, ppid, start, comm) in &truth {
        let got = processes
            .iter()
            .find(|x| x["key"]["pid"] == *p)
            .unwrap_or_else(|| panic!("process {p} is not in the snapshot"));
        assert_eq!(
            (
                &got["state"],
                &got["key"]["start_ticks"],
                &got["ppid"],
                &got["comm"]
            ),
            (
                &Value::from(state.as_str()),
                &Value::from(*start),
                &Value::from(*ppid),
                &Value::from(comm.as_str())
            ),
            "process {p}"
        );
    }
    assert_eq!(truth[1].1, "S", "the exited leader's live thread sleeps");
    assert_eq!(truth[2].1, "Z");
    for (p, want) in &maps {
        let got: Vec<_> = snapshot["mappings"]
            .as_array()
            .expect("mappings")
            .iter()
            .filter(|m| m["pid"] == *p)
            .map(|m| {
                (
                    m["start"].as_u64().unwrap_or(0),
                    m["end"].as_u64().unwrap_or(0),
                    m["offset"].as_u64().unwrap_or(0),
                    m["shmid"].as_u64().unwrap_or(0),
                    m["writable"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        assert_eq!(&got, want, "mappings of {p}");
    }
    // The shapes: read-write, read-only, one page in; the child's (inherited at fork, and its own).
    let shapes: Vec<(u64, bool)> = maps[0].1.iter().map(|m| (m.2, m.4)).collect();
    assert_eq!(shapes.len(), 3, "{maps:?}");
    assert!(
        shapes.contains(&(0, false)) && shapes.contains(&(4096, true)),
        "{maps:?}"
    );
    assert_eq!(maps[1].1.len(), 4, "{maps:?}");
    for r in records
        .iter()
        .filter(|r| r["event"]["action"] == "model-resync")
    {
        for p in [pid, leader_exited, zombie] {
            assert!(
                !mentions(&r["ipcaudit"], "pid", &Value::from(p)),
                "a resync corrected process {p}: {r:#}"
            );
        }
        assert!(
            !mentions(&r["ipcaudit"], "id", &info["shmid"]),
            "a resync corrected the segment: {r:#}"
        );
    }
}
