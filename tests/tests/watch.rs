//! `ipcaudit watch` on the real kernel: each scenario builds a leak (or its near miss) with real
//! processes, then checks the findings the daemon reports and compares its model with the
//! kernel's truth (nattch, /proc/PID/maps, GETVAL/GETNCNT, qnum).

use std::time::Duration;

use ipcaudit_tests::{Held, Watch, eventually, ipcrm, kill_pid, require_root, semctl0, sysvipc};
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
