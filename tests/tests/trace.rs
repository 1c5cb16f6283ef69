//! `ipcaudit trace` on the real kernel: a workload does real IPC in a child process and each
//! test expects the exact records from that PID.

use std::{
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    process::{Child, Command, Stdio},
    time::Duration,
};

use ipcaudit_tests::{actions, eventually, of_pid, require_root, start, workload};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_ipc-workload");
/// The uid of `nobody`.
const NOBODY: u32 = 65534;

fn pid_of(v: &Value) -> u64 {
    v["pid"].as_u64().expect("workload pid")
}

fn find<'a>(records: &'a [Value], action: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["event"]["action"] == action)
        .unwrap_or_else(|| panic!("no {action} in {:#?}", actions(records)))
}

#[test]
fn shm_lifecycle_has_ids_and_addresses() {
    if !require_root() {
        return;
    }
    let tracer = start(&["trace"]);
    let w = workload(WORKLOAD, "shm-basic");
    let all = tracer.stop();
    let pid = pid_of(&w);
    let records = of_pid(&all, pid);
    let shmid = w["shmid"].as_i64().unwrap();
    assert_eq!(
        actions(&records)
            .into_iter()
            .filter(|a| a.starts_with("shm"))
            .collect::<Vec<_>>(),
        [
            "shm-create",
            "shm-attach",
            "shm-detach",
            "shm-remove",
            "shm-destroy"
        ],
        "{records:#?}"
    );
    let create = find(&records, "shm-create");
    assert_eq!(create["ipc"]["id"], shmid);
    assert_eq!(create["ipc"]["key"], "0x00000000");
    assert_eq!(create["ipc"]["shm"]["size"], 8192);
    assert_eq!(create["event"]["outcome"], "success");
    assert_eq!(create["process"]["name"], "ipc-workload");
    assert!(
        create["process"]["entity_id"]
            .as_str()
            .unwrap()
            .contains(&format!("-{pid}-"))
    );
    assert!(create["@timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(create["ipc"]["namespace"].as_u64().unwrap() > 0);
    let attach = find(&records, "shm-attach");
    assert_eq!(attach["ipc"]["id"], shmid);
    assert_eq!(attach["ipc"]["shm"]["address"], w["addr"]);
    assert_eq!(attach["ipc"]["shm"]["size"], 8192);
    let detach = find(&records, "shm-detach");
    assert_eq!(detach["ipc"]["shm"]["address"], w["addr"]);
    assert_eq!(detach["ipc"]["id"], shmid);
    let remove = find(&records, "shm-remove");
    assert_eq!(remove["ipc"]["command"], "IPC_RMID");
    assert_eq!(find(&records, "shm-destroy")["ipc"]["id"], shmid);
    // Where in the workload it was created and attached (`trace` records call sites too).
    let annotated = ipcaudit_tests::all_of_pid(&all, pid);
    let mut sites = ipcaudit_tests::call_sites(&annotated);
    sites.sort();
    assert_eq!(sites.len(), 2, "{records:#?}");
    if !ipcaudit_tests::kernel_at_least(5, 15) {
        // No user registers for BPF programs before 5.15 (bpf_task_pt_regs): the kernel's
        // frame-pointer walk only, through a workload built without frame pointers. The
        // records say so instead of naming a wrong function.
        for r in annotated
            .iter()
            .filter(|r| r["event"]["action"] == "call-site")
        {
            let site = &r["ipcaudit"]["call_site"];
            assert_eq!(site["method"], "frame-pointers", "{r:#}");
            assert!(
                site["reason"]
                    .as_str()
                    .is_some_and(|why| why.contains("no user registers")),
                "{r:#}"
            );
        }
        return;
    }
    assert_eq!(sites[0].0, "shm-attach");
    assert!(
        sites[0]
            .1
            .starts_with("ipc_workload::shmat (ipc-workload.rs:"),
        "{sites:?}"
    );
    assert_eq!(sites[1].0, "shm-create");
    assert!(
        sites[1]
            .1
            .starts_with("ipc_workload::shmget (ipc-workload.rs:")
            && sites[1].1.contains("ipc_workload::shm_basic"),
        "{sites:?}"
    );
    // The session ends with a metric record counting what it saw.
    let metric = all.last().unwrap();
    assert_eq!(metric["event"]["kind"], "metric");
    assert!(
        metric["ipcaudit"]["records"]["by_action"]["shm-create"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

#[test]
fn rmid_while_attached_destroys_at_last_detach() {
    if !require_root() {
        return;
    }
    let tracer = start(&["trace", "--type", "shm"]);
    let w = workload(WORKLOAD, "shm-rmid-attached");
    let records = of_pid(&tracer.stop(), pid_of(&w));
    assert_eq!(
        actions(&records),
        [
            "shm-create",
            "shm-attach",
            "shm-remove",
            "shm-detach",
            "shm-destroy"
        ]
    );
}

#[test]
fn fork_inherits_and_munmap_detaches() {
    if !require_root() {
        return;
    }
    let tracer = start(&["trace"]);
    let w = workload(WORKLOAD, "shm-fork-munmap");
    let all = tracer.stop();
    let (pid, child) = (pid_of(&w), w["child"].as_u64().unwrap());
    let fork = of_pid(&all, pid)
        .into_iter()
        .find(|r| r["event"]["action"] == "process-fork" && r["process"]["pid"] == child)
        .unwrap_or_else(|| panic!("no fork of {child}"));
    assert_eq!(fork["process"]["parent"]["pid"], pid);
    let parent_entity = fork["process"]["parent"]["entity_id"].as_str().unwrap();
    let child_entity = fork["process"]["entity_id"].as_str().unwrap();
    assert_ne!(parent_entity, child_entity);
    assert!(child_entity.contains(&format!("-{child}-")));
    // The parent's own records carry the same entity id as the fork's parent.
    let create = find(&of_pid(&all, pid), "shm-create").clone();
    assert_eq!(create["process"]["entity_id"], parent_entity);
    // The child never called shmdt: its munmap detached the inherited attachment.
    let child_records: Vec<Value> = all
        .iter()
        .filter(|r| r["process"]["pid"] == child && r["event"]["action"] != "process-fork")
        .cloned()
        .collect();
    assert_eq!(
        actions(&child_records),
        ["shm-detach", "process-exit"],
        "{child_records:#?}"
    );
    let detach = child_records
        .iter()
        .find(|r| r["event"]["action"] == "shm-detach")
        .unwrap();
    assert_eq!(detach["ipc"]["id"], w["shmid"]);
    assert_eq!(detach["ipc"]["shm"]["address"], w["addr"]);
    assert_eq!(detach["ipcaudit"]["syscall"]["name"], "munmap");
    assert_eq!(detach["process"]["entity_id"], child_entity);
}

#[test]
fn exec_drops_attachments() {
    if !require_root() {
        return;
    }
    let tracer = start(&["trace"]);
    let w = workload(WORKLOAD, "exec-child");
    let all = tracer.stop();
    let child = w["child"].as_u64().unwrap();
    let exec = all
        .iter()
        .find(|r| r["event"]["action"] == "process-exec" && r["process"]["pid"] == child)
        .unwrap_or_else(|| panic!("no exec of {child}"));
    assert_eq!(exec["process"]["executable"], "/bin/true");
    assert_eq!(exec["process"]["name"], "true");
    // The parent's shmdt then RMID destroys the segment: the child's copy was dropped at exec.
    let records = of_pid(&all, pid_of(&w));
    assert_eq!(
        actions(&records)
            .into_iter()
            .filter(|a| a.starts_with("shm"))
            .collect::<Vec<_>>(),
        [
            "shm-create",
            "shm-attach",
            "shm-detach",
            "shm-remove",
            "shm-destroy"
        ]
    );
}

#[test]
fn semop_through_glibc_is_seen_with_its_ops() {
    if !require_root() {
        return;
    }
    let tracer = start(&["trace", "--type", "sem"]);
    let w = workload(WORKLOAD, "sem-basic");
    let records = of_pid(&tracer.stop(), pid_of(&w));
    assert_eq!(
        actions(&records),
        ["sem-create", "sem-control", "sem-op", "sem-remove"]
    );
    let semid = w["semid"].as_i64().unwrap();
    assert!(records.iter().all(|r| r["ipc"]["id"] == semid));
    assert_eq!(records[1]["ipc"]["command"], "SETVAL");
    let op = &records[2];
    assert_eq!(
        op["ipc"]["sem"]["ops"],
        serde_json::json!([{"num": 1, "op": -1, "flags": ["undo"]}, {"num": 0, "op": 1, "flags": []}])
    );
    // glibc's semop() is the semtimedop syscall.
    assert_eq!(op["ipcaudit"]["syscall"]["name"], "semtimedop");
}

#[test]
fn msgsnd_and_msgrcv_carry_type_and_size() {
    if !require_root() {
        return;
    }
    let tracer = start(&["trace", "--type", "msg"]);
    let w = workload(WORKLOAD, "msg-basic");
    let records = of_pid(&tracer.stop(), pid_of(&w));
    assert_eq!(
        actions(&records),
        ["msg-create", "msg-send", "msg-receive", "msg-remove"]
    );
    assert_eq!(
        records[1]["ipc"]["msg"],
        serde_json::json!({"type": 7, "size": 16})
    );
    assert_eq!(
        records[2]["ipc"]["msg"],
        serde_json::json!({"type": 7, "size": 16})
    );
    assert!(records.iter().all(|r| r["ipc"]["id"] == w["msqid"]));
}

#[test]
fn failed_shmat_is_a_failure_with_einval() {
    if !require_root() {
        return;
    }
    let tracer = start(&["trace", "--type", "shm"]);
    let w = workload(WORKLOAD, "bad-shmat");
    assert_eq!(w["failed"], true);
    let records = of_pid(&tracer.stop(), pid_of(&w));
    assert_eq!(actions(&records), ["shm-attach"]);
    assert_eq!(records[0]["event"]["outcome"], "failure");
    assert_eq!(records[0]["error"]["code"], "EINVAL");
    assert_eq!(records[0]["ipc"]["id"], 0x7fff_fff0);
}

#[test]
fn pid_filter_keeps_only_that_process() {
    if !require_root() {
        return;
    }
    // Our own pid: the workload's records must not appear.
    let me = std::process::id().to_string();
    let tracer = start(&["trace", "--pid", &me]);
    let w = workload(WORKLOAD, "shm-basic");
    let all = tracer.stop();
    // Only our own fork of the workload names it (as the child of the fork).
    assert_eq!(actions(&of_pid(&all, pid_of(&w))), ["process-fork"]);
    for r in all.iter().filter(|r| r["event"]["kind"] == "event") {
        let actor = if r["event"]["action"] == "process-fork" {
            &r["process"]["parent"]["pid"]
        } else {
            &r["process"]["pid"]
        };
        assert_eq!(actor.to_string(), me, "{r}");
    }
}

#[test]
fn ecs_and_ocsf_formats_match_the_schema() {
    if !require_root() {
        return;
    }
    // ECS: strict, non-ECS fields under ipcaudit.*; `stop` validates every record.
    let tracer = start(&["trace", "--format", "ecs"]);
    let w = workload(WORKLOAD, "sem-basic");
    let records = of_pid(&tracer.stop(), pid_of(&w));
    let op = find(&records, "sem-op");
    assert_eq!(op["event"]["category"], serde_json::json!(["process"]));
    assert_eq!(op["event"]["type"], serde_json::json!(["access"]));
    assert_eq!(op["ipcaudit"]["ipc"]["id"], w["semid"]);
    assert!(op.get("ipc").is_none());
    assert_eq!(
        find(&records, "sem-create")["event"]["type"],
        serde_json::json!(["creation"])
    );

    // OCSF: no ECS names at all; pick the workload's records by actor pid.
    let tracer = start(&["trace", "--format", "ocsf"]);
    let w = workload(WORKLOAD, "shm-basic");
    let pid = pid_of(&w);
    let all = tracer.stop();
    let ours: Vec<&Value> = all
        .iter()
        .filter(|r| r["actor"]["process"]["pid"] == pid || r["process"]["pid"] == pid)
        .collect();
    let create = ours
        .iter()
        .find(|r| r["unmapped"]["event"]["action"] == "shm-create")
        .expect("shm-create");
    assert_eq!(create["class_uid"], 1003);
    assert_eq!(create["type_uid"], 100_301);
    assert_eq!(create["kernel"]["name"], format!("shm:{}", w["shmid"]));
    assert!(create["time"].as_u64().unwrap() > 1_700_000_000_000);
    let exit = ours
        .iter()
        .find(|r| r["class_uid"] == 1007 && r["activity_id"] == 2)
        .expect("process exit");
    assert_eq!(exit["process"]["pid"], pid);
}

/// A workload that stopped itself before doing anything (`IPC_WORKLOAD_STOP`), so that its pid
/// can be given to the tracer first; `uid` runs it as that user.
fn stopped(bin: &str, scenario: &str, arg: Option<&str>, uid: Option<u32>) -> Child {
    let mut cmd = Command::new(bin);
    cmd.arg(scenario)
        .args(arg)
        .env("IPC_WORKLOAD_STOP", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let child = cmd.spawn().expect("spawn ipc-workload");
    let stat = format!("/proc/{}/stat", child.id());
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_to_string(&stat)
            .is_ok_and(|s| s.contains(") T "))),
        "{scenario} did not stop"
    );
    child
}

/// Lets a stopped workload run to its end; returns what it printed (one JSON object).
fn resume(child: Child) -> Value {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGCONT) };
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "workload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default(),
    )
    .expect("workload JSON")
}

/// Records the session read from the ring buffer (its summary's `received`).
fn received(records: &[Value]) -> u64 {
    let summary = records
        .iter()
        .rfind(|r| r["event"]["action"] == "session-summary")
        .expect("session summary");
    summary["ipcaudit"]["received"].as_u64().expect("received")
}

#[test]
fn several_pids_are_filtered_in_the_kernel() {
    if !require_root() {
        return;
    }
    let a = stopped(WORKLOAD, "sem-basic", None, None);
    let b = stopped(WORKLOAD, "msg-basic", None, None);
    // A storm of semop and shmget/shmat loops that is not asked for.
    let storm = stopped(WORKLOAD, "storm", Some("1"), None);
    let (pa, pb) = (a.id().to_string(), b.id().to_string());
    let tracer = start(&["trace", "--pid", &pa, "--pid", &pb]);
    let (wa, wb, ws) = (resume(a), resume(b), resume(storm));
    let all = tracer.stop();
    let sem: Vec<String> = actions(&of_pid(&all, pid_of(&wa)))
        .into_iter()
        .filter(|a| a.starts_with("sem"))
        .collect();
    assert!(sem.contains(&"sem-create".to_owned()), "{sem:?}");
    assert!(sem.contains(&"sem-op".to_owned()), "{sem:?}");
    let msg = actions(&of_pid(&all, pid_of(&wb)));
    assert!(msg.contains(&"msg-send".to_owned()), "{msg:?}");
    assert!(of_pid(&all, pid_of(&ws)).is_empty());
    // The storm made hundreds of thousands of calls; none of them reached the collector.
    assert!(
        ws["kiloiterations"].as_u64().unwrap() > 10,
        "the storm did not run: {ws}"
    );
    let received = received(&all);
    assert!(received < 200, "{received} records crossed the ring buffer");
}

#[test]
fn uid_and_type_are_filtered_in_the_kernel() {
    if !require_root() {
        return;
    }
    // The workload must be executable by `nobody`: a copy in a world-readable directory.
    let dir = std::env::temp_dir().join(format!("ipcaudit-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("ipc-workload");
    std::fs::copy(WORKLOAD, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = bin.to_str().unwrap();

    let sem = stopped(bin, "sem-basic", None, Some(NOBODY));
    let shm = stopped(bin, "shm-basic", None, Some(NOBODY));
    let storm = stopped(WORKLOAD, "storm", Some("1"), None);
    let tracer = start(&["trace", "--uid", "65534", "--type", "sem"]);
    let (ws, wm, wstorm) = (resume(sem), resume(shm), resume(storm));
    let all = tracer.stop();
    let _ = std::fs::remove_dir_all(&dir);

    let theirs = of_pid(&all, pid_of(&ws));
    assert!(
        actions(&theirs).contains(&"sem-create".to_owned()),
        "{:?}",
        actions(&theirs)
    );
    assert!(
        theirs
            .iter()
            .all(|r| r["user"]["id"].as_str() == Some("65534"))
    );
    // The shm workload ran as nobody too, but its type is filtered out.
    assert!(
        of_pid(&all, pid_of(&wm)).is_empty(),
        "{:?}",
        actions(&of_pid(&all, pid_of(&wm)))
    );
    assert!(all.iter().all(|r| r["ipc"]["type"] != "shm"));
    assert!(of_pid(&all, pid_of(&wstorm)).is_empty());
    let received = received(&all);
    assert!(received < 200, "{received} records crossed the ring buffer");
}
