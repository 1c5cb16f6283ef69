//! Stories, explanations and reports, from synthetic events.

use std::sync::Arc;

use crate::event::{Ancestor, CallSite, EventKind, Frame, IpcType, ProcessDetails};

use super::tests::{IPC_CREAT, NS, SEC, Sim, pk};
use super::*;

const IPC_RMID: i32 = 0;
const SEM_UNDO: i16 = 0x1000;

fn shm(id: i32) -> Target {
    Target {
        ty: Some(IpcType::Shm),
        id: Some(id),
        ..Target::default()
    }
}

fn whats(e: &Explanation) -> Vec<&'static str> {
    e.timeline
        .iter()
        .map(|t| match &t.what {
            What::Create => "create",
            What::Appear => "appear",
            What::Open => "open",
            What::Attach { .. } => "attach",
            What::Detach { .. } => "detach",
            What::Control { .. } => "control",
            What::Remove => "remove",
            What::Destroy => "destroy",
            What::FindingRaised { .. } => "finding-raised",
            What::FindingCleared { .. } => "finding-cleared",
        })
        .collect()
}

fn site(function: &str, line: u32) -> CallSite {
    CallSite {
        frames: vec![
            Frame {
                function: Some("shmget".into()),
                module: Some("/usr/lib/x86_64-linux-gnu/libc.so.6".into()),
                address: 0x10_b66a,
                ..Frame::default()
            },
            Frame {
                function: Some(function.into()),
                file: Some("src/cache.c".into()),
                line: Some(line),
                module: Some("/usr/bin/cache".into()),
                address: 0x1155,
                ..Frame::default()
            },
            Frame {
                function: Some("main".into()),
                file: Some("src/main.c".into()),
                line: Some(40),
                module: Some("/usr/bin/cache".into()),
                address: 0x1190,
                ..Frame::default()
            },
        ],
        method: "eh-frame".into(),
        reason: None,
    }
}

#[test]
fn a_killed_creator_s_segment_tells_its_story() {
    let mut s = Sim::new();
    s.shmget(10, 0x1234, 8192, IPC_CREAT | 0o600, 7);
    s.shmat(10, 7, 0x7000_0000);
    s.shmat(11, 7, 0x7100_0000);
    s.shmdt(11, 0x7100_0000);
    s.exit(11);
    s.ev(10, EventKind::Exit { code: 9 });
    s.advance(61);
    let e = s.m.explain(&shm(7)).unwrap();
    assert_eq!(
        whats(&e),
        [
            "create",
            "attach",
            "attach",
            "detach",
            "detach",
            "finding-raised"
        ]
    );
    let exit = &e.timeline[4];
    assert_eq!(exit.process, Some(pk(10)));
    assert!(matches!(
        exit.what,
        What::Detach {
            how: DetachHow::Exit,
            exit_code: Some(9),
            left: 0,
            ..
        }
    ));
    assert!(matches!(
        e.timeline[3].what,
        What::Detach {
            how: DetachHow::Shmdt,
            address: Some(0x7100_0000),
            ..
        }
    ));
    assert_eq!(e.verdict.state, "leaked");
    assert_eq!(e.verdict.remedy.as_deref(), Some("ipcrm -m 7"));
    let f = &e.verdict.findings[0];
    assert_eq!(f.rule, Rule::OrphanedSegment);
    assert!(!f.pending);
    assert_eq!(
        f.why,
        [
            "not attached (nattch 0)",
            "not removed (no IPC_RMID)",
            "its creator 10 (p10) (killed by SIGKILL) is gone",
            "every process that attached it is dead: 11 (p11) (exited with status 0), 10 (p10) (killed by SIGKILL)"
        ]
    );
    // The finding entry is when the condition began, not when the grace period ended.
    assert_eq!(e.timeline[5].time_ns, e.timeline[4].time_ns);
    let ops: Vec<(u32, u64, u64, u64)> = e
        .operations
        .iter()
        .map(|o| (o.process.pid, o.ops.created, o.ops.attached, o.ops.detached))
        .collect();
    assert_eq!(ops, [(10, 1, 1, 1), (11, 0, 1, 1)]);
    assert!(e.holders.is_empty());
    let p10 = e.person(pk(10)).unwrap();
    assert_eq!(
        (p10.alive, p10.ended.as_deref()),
        (false, Some("killed by SIGKILL"))
    );
    // The text names it all.
    let text = crate::explain::render(&e);
    for expected in [
        "shm 7 · key 0x00001234 · 8192 bytes",
        "verdict: LEAKED — orphaned-segment",
        "created ",
        "by 10 p10 †",
        "shmat at 0x70000000",
        "the process ended: killed by SIGKILL",
        "fix: ipcrm -m 7",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
}

#[test]
fn a_condition_within_its_grace_is_suspect_and_clears() {
    let mut s = Sim::new();
    s.shmget(10, 0, 4096, IPC_CREAT | 0o600, 3);
    s.exit(10);
    let e = s.m.explain(&shm(3)).unwrap();
    assert_eq!(e.verdict.state, "suspect");
    let f = &e.verdict.findings[0];
    assert!(f.pending);
    assert_eq!(f.due_ns, Some(f.since_ns + 60 * SEC));
    // Someone else attaches before the grace period ends: nothing was raised, nothing is said.
    s.shmat(12, 3, 0x5000);
    let e = s.m.explain(&shm(3)).unwrap();
    assert_eq!(e.verdict.state, "live");
    assert!(e.verdict.findings.is_empty());
    assert_eq!(whats(&e), ["create", "attach"]);
    assert_eq!(e.holders.len(), 1);
    assert!(e.holders[0].how.starts_with("attached at 0x5000-0x6000"));
}

#[test]
fn semaphore_units_taken_and_given_back_per_process() {
    let mut s = Sim::new();
    s.semget(10, 0x77, 2, IPC_CREAT | 0o600, 4);
    s.semctl(10, 4, 0, 16, 1); // SETVAL #0 = 1
    s.semop(10, 4, &[(0, -1, 0)]);
    s.semop(10, 4, &[(0, 1, 0)]);
    s.semop(11, 4, &[(0, -1, 0), (1, -2, SEM_UNDO)]);
    s.semop(11, 4, &[(0, 1, 0)]);
    s.semop(11, 4, &[(0, -1, 0)]);
    s.ev(11, EventKind::Exit { code: 9 });
    let e =
        s.m.explain(&Target {
            id: Some(4),
            ..Target::default()
        })
        .unwrap();
    assert_eq!(whats(&e), ["create", "control", "finding-raised"]);
    assert!(matches!(&e.timeline[1].what, What::Control { command } if command == "SETVAL #0 = 1"));
    let by = |pid: u32| {
        e.operations
            .iter()
            .find(|o| o.process == pk(pid))
            .unwrap()
            .ops
    };
    let a = by(10);
    assert_eq!(
        (a.sem_ops, a.takes, a.gives, a.net, a.controls),
        (2, 1, 1, 0, 1)
    );
    let b = by(11);
    assert_eq!(
        (b.sem_ops, b.takes, b.gives, b.net, b.undo_net),
        (3, 3, 1, -1, -2)
    );
    assert_eq!(e.verdict.state, "leaked");
    assert_eq!(e.verdict.findings[0].rule, Rule::SemaphoreHeldByDeadProcess);
    assert_eq!(
        e.verdict.findings[0].why,
        [
            "11 (p11) (killed by SIGKILL) took 1 unit(s) of semaphore #0 without SEM_UNDO and never gave it back"
        ]
    );
    assert_eq!(e.holders.len(), 1);
    assert_eq!(e.holders[0].process, Some(pk(11)));
    let text = crate::explain::render(&e);
    assert!(
        text.contains(
            "semop ×3: 3 take(s), 1 give-back(s); net -1 unit(s) without SEM_UNDO, -2 with SEM_UNDO"
        ),
        "{text}"
    );
}

#[test]
fn messages_sent_and_received_per_process() {
    let mut s = Sim::new();
    s.msgget(10, 0x99, IPC_CREAT | 0o600, 6);
    s.msgsnd(10, 6, 100);
    s.msgsnd(10, 6, 50);
    s.msgget(11, 0x99, 0, 6);
    s.msgrcv(11, 6, 100);
    let e =
        s.m.explain(&Target {
            key: Some(0x99),
            ..Target::default()
        })
        .unwrap();
    assert_eq!(whats(&e), ["create", "open"]);
    let ops: Vec<(u32, u64, u64, u64, u64)> = e
        .operations
        .iter()
        .map(|o| {
            (
                o.process.pid,
                o.ops.sent,
                o.ops.sent_bytes,
                o.ops.received,
                o.ops.received_bytes,
            )
        })
        .collect();
    assert_eq!(ops, [(10, 2, 150, 0, 0), (11, 0, 0, 1, 100)]);
    assert_eq!(e.holders[0].how, "1 message(s), 50 bytes queued");
}

#[test]
fn removed_objects_are_remembered_after_the_model_forgets_them() {
    let mut s = Sim::new();
    s.shmget(10, 0, 4096, IPC_CREAT | 0o600, 8);
    s.shmctl(10, 8, IPC_RMID);
    s.advance(61);
    s.advance(61);
    assert!(s.m.object(NS, IpcType::Shm, 8).is_none(), "swept");
    let e = s.m.explain(&shm(8)).unwrap();
    assert_eq!(whats(&e), ["create", "remove", "destroy"]);
    assert_eq!(e.verdict.state, "destroyed");
    assert_eq!(e.people[0].name, "p10");
    // A new segment with the same id is the one explained; the report has both.
    s.shmget(11, 0, 4096, IPC_CREAT | 0o600, 8);
    let e = s.m.explain(&shm(8)).unwrap();
    assert_eq!(e.creator, Some(pk(11)));
    let r = s.m.report();
    assert_eq!(r.objects.len(), 2);
    assert_eq!(
        r.programs["p10"],
        ProgramTotals {
            created: 1,
            removed: 1
        }
    );
    assert_eq!(
        r.programs["p11"],
        ProgramTotals {
            created: 1,
            removed: 0
        }
    );
    // Bounded.
    let mut s = Sim::with(ModelConfig {
        archive: 2,
        ..super::tests::cfg()
    });
    for id in 0..5 {
        s.shmget(10, 0, 4096, IPC_CREAT | 0o600, id);
        s.shmctl(10, id, IPC_RMID);
    }
    s.advance(61);
    s.advance(61);
    assert_eq!(s.m.report().objects.len(), 2);
}

#[test]
fn targets_that_are_missing_or_ambiguous() {
    let mut s = Sim::new();
    s.shmget(10, 0x5, 4096, IPC_CREAT | 0o600, 5);
    s.semget(10, 0x5, 1, IPC_CREAT | 0o600, 5);
    let id5 = Target {
        id: Some(5),
        ..Target::default()
    };
    assert!(matches!(
        s.m.explain(&id5),
        Err(ExplainError::Ambiguous { .. })
    ));
    let err = s.m.explain(&id5).unwrap_err().to_string();
    assert!(
        err.contains("shm 5 in namespace") && err.contains("sem 5 in namespace"),
        "{err}"
    );
    assert_eq!(s.m.explain(&shm(5)).unwrap().object.ty, IpcType::Shm);
    assert_eq!(
        s.m.explain(&shm(6)).unwrap_err().to_string(),
        "the model knows no shm 6 (it knows objects that exist, and removed ones it still remembers)"
    );
    assert_eq!(s.m.explain(&Target::default()), Err(ExplainError::NoTarget));
}

#[test]
fn processes_are_described_and_call_sites_reach_findings_and_status() {
    let mut s = Sim::new();
    let details = Arc::new(ProcessDetails {
        executable: Some("/usr/bin/cache".into()),
        command_line: Some("/usr/bin/cache --size 8192".into()),
        ancestors: vec![
            Ancestor {
                pid: 5,
                name: "bash".into(),
                executable: Some("/usr/bin/bash".into()),
            },
            Ancestor {
                pid: 1,
                name: "systemd".into(),
                executable: None,
            },
        ],
        unit: Some("cache.service".into()),
        container_id: None,
    });
    // Described before the model sees the process (its first event).
    s.m.describe_process(pk(10), details.clone());
    s.shmget(10, 0, 4096, IPC_CREAT | 0o600, 9);
    s.shmat(10, 9, 0x4000);
    assert!(
        s.m.set_call_site(NS, IpcType::Shm, 9, pk(10), None, site("cache_init", 120))
            .is_some()
    );
    assert!(
        s.m.set_call_site(
            NS,
            IpcType::Shm,
            9,
            pk(10),
            Some(0x4000),
            site("cache_attach", 140)
        )
        .is_some()
    );
    // Not the creator; no such attach.
    assert!(
        s.m.set_call_site(NS, IpcType::Shm, 9, pk(11), None, site("x", 1))
            .is_none()
    );
    assert!(
        s.m.set_call_site(NS, IpcType::Shm, 9, pk(10), Some(0x9000), site("x", 1))
            .is_none()
    );
    let view = s.m.object(NS, IpcType::Shm, 9).unwrap();
    assert_eq!(
        view.call_site.map(|c| c.summary(2)).as_deref(),
        Some("cache_init (src/cache.c:120) ← main (src/main.c:40)")
    );
    s.ev(10, EventKind::Exit { code: 9 });
    s.advance(61);
    let finding = s.active(Rule::OrphanedSegment)[0].clone();
    assert_eq!(finding.service.as_deref(), Some("cache.service"));
    let creator = finding
        .evidence
        .iter()
        .find(|e| e.role == Role::Creator)
        .unwrap();
    assert_eq!(creator.details, details);
    assert_eq!(
        creator.call_site.as_ref().unwrap().summary(1),
        "cache_init (src/cache.c:120) ← … (1 more)"
    );
    let attacher = finding
        .evidence
        .iter()
        .find(|e| e.role == Role::Attacher)
        .unwrap();
    assert_eq!(
        attacher.call_site.as_ref().unwrap().frames[1]
            .function
            .as_deref(),
        Some("cache_attach")
    );
    let explained = s.m.explain(&shm(9)).unwrap();
    assert_eq!(explained.service.as_deref(), Some("cache.service"));
    assert_eq!(explained.program.as_deref(), Some("/usr/bin/cache"));
    assert!(matches!(
        &explained.timeline[1].what,
        What::Attach { call_site: Some(c), .. } if c.frames[1].line == Some(140)
    ));
    let text = crate::explain::render(&explained);
    for expected in [
        "  at cache_init (src/cache.c:120) ← main (src/main.c:40)",
        "    parents     5 bash (/usr/bin/bash) ← 1 systemd",
        "    unit        cache.service",
        "service: cache.service",
        "from cache_attach (src/cache.c:140) ← main (src/main.c:40)",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
    // The explanation survives JSON (the daemon sends it over the socket).
    let json = serde_json::to_value(&explained).unwrap();
    assert_eq!(
        serde_json::from_value::<Explanation>(json).unwrap(),
        explained
    );
}

#[test]
fn a_created_only_object_keeps_its_creator_as_at_creation() {
    let mut s = Sim::new();
    s.msgget(10, 0x30, IPC_CREAT | 0o600, 3);
    s.semget(10, 0x40, 1, IPC_CREAT | 0o600, 4);
    let created = s.now;
    s.exec(10, "/usr/bin/after");
    // The program charged at creation is the one credited at removal (the creator came back
    // to the queue's story; not to the set's).
    s.msgctl(10, 3, IPC_RMID);
    assert_eq!(
        s.m.program_totals().get("p10"),
        Some(&ProgramTotals {
            created: 2,
            removed: 1
        })
    );
    assert!(!s.m.program_totals().contains_key("/usr/bin/after"));
    s.semctl(11, 4, 0, IPC_RMID, 0);
    assert_eq!(s.m.program_totals()["p10"].removed, 2);
    // The creator exits and is forgotten; the set's story, archived, still names it (as it
    // was when the set was archived) and counts its creation.
    s.exit(10);
    s.advance(61);
    s.advance(61);
    assert!(s.m.process(pk(10)).is_none());
    let sem = Target {
        ty: Some(IpcType::Sem),
        id: Some(4),
        ..Target::default()
    };
    let e = s.m.explain(&sem).unwrap();
    assert_eq!(e.creator, Some(pk(10)));
    let creator = e.person(pk(10)).unwrap();
    assert!(!creator.alive);
    assert_eq!(
        creator.details.executable.as_deref(),
        Some("/usr/bin/after")
    );
    assert_eq!(e.program.as_deref(), Some("/usr/bin/after"));
    let ops: Vec<_> = e.operations.iter().map(|o| (o.process, o.ops)).collect();
    assert_eq!(
        ops[0],
        (
            pk(10),
            OpSummary {
                first_ns: created,
                last_ns: created,
                created: 1,
                ..OpSummary::default()
            }
        )
    );
    assert_eq!(ops.len(), 2, "the creator and the remover");
    assert_eq!(whats(&e), ["create", "remove", "destroy"]);
}
