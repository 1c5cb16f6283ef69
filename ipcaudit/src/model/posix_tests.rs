//! The POSIX part of the model, fed by synthetic snapshots and lifecycle events.

use crate::event::{PosixType, ProcessKey};
use crate::snapshot::{Hold, MqState, PosixHolder, PosixObject, Snapshot};

use super::tests::{NS, SEC, Sim, cleared, pinfo, pk, raised, snap};
use super::*;

fn object(ty: PosixType, name: &str, ino: u64, changed_secs: u64) -> PosixObject {
    let t = i64::try_from(changed_secs).unwrap();
    PosixObject {
        ty,
        name: name.into(),
        dev: 27,
        ino,
        mode: 0o600,
        uid: 1000,
        gid: 1000,
        size: 8192,
        memory: 8192,
        atime: t,
        mtime: t,
        ctime: t,
        queue: (ty == PosixType::Pmsg).then_some(MqState {
            qsize: 0,
            messages: 0,
            max_messages: 10,
            message_size: 64,
            notify_pid: 0,
            notify: 0,
            signo: 0,
        }),
    }
}

fn holder(pid: u32, ino: u64, hold: Hold) -> PosixHolder {
    PosixHolder {
        process: pk(pid),
        comm: format!("p{pid}"),
        uid: 1000,
        ipc_ns: NS,
        dev: 27,
        ino,
        hold,
    }
}

const MAP: Hold = Hold::Map {
    start: 0x1000,
    end: 0x3000,
    writable: true,
};
const READ_FD: Hold = Hold::Fd {
    fd: 3,
    read: true,
    write: false,
};
const WRITE_FD: Hold = Hold::Fd {
    fd: 4,
    read: false,
    write: true,
};

/// A snapshot now with these POSIX objects and holders, and processes `alive`.
fn posix_snap(
    s: &Sim,
    objects: Vec<PosixObject>,
    holders: Vec<PosixHolder>,
    alive: &[u32],
) -> Snapshot {
    Snapshot {
        posix: objects,
        posix_holders: holders,
        posix_listed: PosixType::ALL.to_vec(),
        processes: alive.iter().map(|&p| pinfo(p, 'S')).collect(),
        ..snap(s.now)
    }
}

fn secs_now(s: &Sim) -> u64 {
    s.now / SEC
}

fn posix_findings(m: &Model, rule: Rule) -> Vec<Finding> {
    m.findings()
        .filter(|f| f.rule == rule && f.posix.is_some())
        .cloned()
        .collect()
}

#[test]
fn an_unheld_object_is_orphaned_once_unchanged_for_the_grace_period() {
    let mut s = Sim::new();
    let now = secs_now(&s);
    // Unchanged for an hour: raised at the first tick. Changed 10 s ago: 50 s later.
    let snap = posix_snap(
        &s,
        vec![
            object(PosixType::Pshm, "/old", 9, now - 3600),
            object(PosixType::Psem, "/fresh", 10, now - 10),
        ],
        vec![],
        &[],
    );
    s.m.bootstrap(&snap);
    let ch = s.advance(1);
    assert_eq!(raised(&ch, Rule::OrphanedPosixShm), 1, "{ch:?}");
    assert_eq!(raised(&ch, Rule::OrphanedPosixSemaphore), 0, "{ch:?}");
    let f = &posix_findings(&s.m, Rule::OrphanedPosixShm)[0];
    let r = f.posix.as_ref().unwrap();
    assert_eq!(
        (r.ty, r.name.as_str(), r.ino, r.size),
        (PosixType::Pshm, "/old", 9, Some(8192))
    );
    assert_eq!(f.remedy.as_deref(), Some("rm /dev/shm/old"));
    assert_eq!(f.object, None);
    assert_eq!(raised(&s.advance(40), Rule::OrphanedPosixSemaphore), 0);
    let ch = s.advance(10);
    assert_eq!(raised(&ch, Rule::OrphanedPosixSemaphore), 1, "{ch:?}");
    let f = &posix_findings(&s.m, Rule::OrphanedPosixSemaphore)[0];
    assert_eq!(f.remedy.as_deref(), Some("rm /dev/shm/sem.fresh"));
}

#[test]
fn a_holder_killed_leaves_an_orphan_but_another_holder_keeps_it() {
    let mut s = Sim::new();
    let old = secs_now(&s) - 3600;
    let snap = posix_snap(
        &s,
        vec![
            object(PosixType::Pshm, "/alone", 9, old),
            object(PosixType::Pshm, "/shared", 11, old),
        ],
        vec![
            holder(2, 9, MAP),
            holder(2, 11, MAP),
            holder(3, 11, READ_FD),
        ],
        &[2, 3],
    );
    s.m.bootstrap(&snap);
    assert!(s.advance(120).is_empty());
    let ex = s.exit(2);
    assert!(ex.findings.is_empty(), "{ex:?}");
    // Pending since the exit: raised a grace period later, for /alone only.
    assert_eq!(raised(&s.advance(30), Rule::OrphanedPosixShm), 0);
    let ch = s.advance(31);
    assert_eq!(raised(&ch, Rule::OrphanedPosixShm), 1, "{ch:?}");
    let f = &posix_findings(&s.m, Rule::OrphanedPosixShm)[0];
    assert_eq!(f.posix.as_ref().unwrap().name, "/alone");
    let e: Vec<(u32, bool, Role)> = f
        .evidence
        .iter()
        .map(|e| (e.pid, e.alive, e.role))
        .collect();
    assert_eq!(e, vec![(2, false, Role::User)]);
    assert_eq!(f.since_ns, s.now - 61 * SEC);
    // The second holder exits: /shared goes too.
    s.exit(3);
    assert_eq!(raised(&s.advance(61), Rule::OrphanedPosixShm), 1);
}

#[test]
fn holdings_follow_fork_and_exec() {
    let mut s = Sim::new();
    let old = secs_now(&s) - 3600;
    let snap = posix_snap(
        &s,
        vec![object(PosixType::Psem, "/lock", 9, old)],
        vec![holder(2, 9, MAP)],
        &[2],
    );
    s.m.bootstrap(&snap);
    s.fork(2, 5);
    s.exit(2);
    assert!(s.advance(120).is_empty(), "the child maps it");
    let v: Vec<PosixView<'_>> = s.m.posix_objects().collect();
    assert_eq!(v[0].holders.len(), 1);
    assert_eq!(v[0].holders[0].process.pid, 5);
    // Exec replaces the memory: nobody holds it.
    s.exec(5, "/bin/true");
    assert_eq!(raised(&s.advance(61), Rule::OrphanedPosixSemaphore), 1);
}

#[test]
fn reconcile_replaces_holders_and_objects() {
    let mut s = Sim::new();
    let old = secs_now(&s) - 3600;
    s.m.bootstrap(&posix_snap(
        &s,
        vec![object(PosixType::Pshm, "/a", 9, old)],
        vec![],
        &[2],
    ));
    assert_eq!(raised(&s.advance(1), Rule::OrphanedPosixShm), 1);
    // Process 2 opened it meanwhile (not traced): the next snapshot shows it; cleared, and
    // not a correction.
    s.now += SEC;
    let r = s.m.reconcile(&posix_snap(
        &s,
        vec![object(PosixType::Pshm, "/a", 9, old)],
        vec![holder(2, 9, READ_FD)],
        &[2],
    ));
    assert_eq!(cleared(&r.findings, Rule::OrphanedPosixShm), 1, "{r:?}");
    assert!(r.differences.is_empty(), "{r:?}");
    assert!(r.posix_changed);
    // Nothing changed: nothing to record.
    s.now += SEC;
    let r = s.m.reconcile(&posix_snap(
        &s,
        vec![object(PosixType::Pshm, "/a", 9, old)],
        vec![holder(2, 9, READ_FD)],
        &[2],
    ));
    assert!(!r.posix_changed && r.findings.is_empty(), "{r:?}");
    // The name now is another file, which nobody holds: a new object (generation), pending.
    s.now += SEC;
    let r = s.m.reconcile(&posix_snap(
        &s,
        vec![object(PosixType::Pshm, "/a", 12, old)],
        vec![holder(2, 9, READ_FD)],
        &[2],
    ));
    assert!(r.posix_changed);
    let v: Vec<PosixView<'_>> = s.m.posix_objects().collect();
    assert_eq!((v.len(), v[0].object.ino, v[0].holders.len()), (1, 12, 0));
    // Unchanged for an hour, and unheld: raised at once (the reconcile ticks).
    assert_eq!(raised(&r.findings, Rule::OrphanedPosixShm), 1, "{r:?}");
    assert_eq!(
        posix_findings(&s.m, Rule::OrphanedPosixShm)[0]
            .posix
            .as_ref()
            .map(|p| (p.ino, p.generation)),
        Some((12, 1))
    );
    // A snapshot that could not list /dev/shm keeps what the model had.
    s.now += SEC;
    let mut blind = posix_snap(&s, vec![], vec![], &[2]);
    blind.posix_listed = vec![PosixType::Pmsg];
    let r = s.m.reconcile(&blind);
    assert!(r.findings.is_empty() && !r.posix_changed, "{r:?}");
    // Unlinked: gone, its finding cleared.
    s.now += SEC;
    let r = s.m.reconcile(&posix_snap(&s, vec![], vec![], &[2]));
    assert_eq!(cleared(&r.findings, Rule::OrphanedPosixShm), 1, "{r:?}");
    assert_eq!(s.m.posix_objects().count(), 0);
}

#[test]
fn a_queue_whose_reader_died_is_stalled_then_orphaned() {
    let mut s = Sim::new();
    let old = secs_now(&s) - 3600;
    let mut q = object(PosixType::Pmsg, "/jobs", 3, old);
    if let Some(st) = q.queue.as_mut() {
        st.messages = 3;
        st.qsize = 48;
    }
    s.m.bootstrap(&posix_snap(
        &s,
        vec![q],
        vec![holder(2, 3, WRITE_FD), holder(3, 3, READ_FD)],
        &[2, 3],
    ));
    assert!(s.advance(120).is_empty());
    s.exit(3);
    let ch = s.advance(61);
    assert_eq!(raised(&ch, Rule::StalledPosixQueue), 1, "{ch:?}");
    assert_eq!(raised(&ch, Rule::OrphanedPosixQueue), 0, "{ch:?}");
    let f = &posix_findings(&s.m, Rule::StalledPosixQueue)[0];
    let e: Vec<(u32, bool, Role)> = f
        .evidence
        .iter()
        .map(|e| (e.pid, e.alive, e.role))
        .collect();
    assert_eq!(e, vec![(2, true, Role::Holder), (3, false, Role::Reader)]);
    assert!(
        f.description.contains("3 message(s) (48 bytes)"),
        "{}",
        f.description
    );
    assert_eq!(f.remedy.as_deref(), Some("rm /dev/mqueue/jobs"));
    // The writer goes too: no longer stalled (nobody holds it), orphaned after the grace.
    let ex = s.exit(2);
    assert_eq!(cleared(&ex.findings, Rule::StalledPosixQueue), 1);
    let ch = s.advance(61);
    assert_eq!(raised(&ch, Rule::OrphanedPosixQueue), 1, "{ch:?}");
}

#[test]
fn a_live_notify_registration_is_a_reader() {
    let mut s = Sim::new();
    let old = secs_now(&s) - 3600;
    let mut q = object(PosixType::Pmsg, "/n", 3, old);
    if let Some(st) = q.queue.as_mut() {
        st.messages = 1;
        st.notify_pid = 4;
    }
    s.m.bootstrap(&posix_snap(
        &s,
        vec![q],
        vec![holder(2, 3, WRITE_FD)],
        &[2, 4],
    ));
    assert_eq!(raised(&s.advance(61), Rule::StalledPosixQueue), 0);
    s.exit(4);
    assert_eq!(raised(&s.advance(61), Rule::StalledPosixQueue), 1);
}

#[test]
fn holders_from_other_namespaces_are_known_processes() {
    let mut s = Sim::new();
    let old = secs_now(&s) - 3600;
    let mut h = holder(77, 9, MAP);
    h.ipc_ns = NS + 1;
    s.m.bootstrap(&posix_snap(
        &s,
        vec![object(PosixType::Pshm, "/x", 9, old)],
        vec![h],
        &[],
    ));
    assert!(s.advance(61).is_empty());
    assert!(s.m.process(pk(77)).is_some_and(|p| p.alive));
    // A reconcile of our namespace does not kill it (it is not ours to list).
    s.now += SEC;
    let mut h = holder(77, 9, MAP);
    h.ipc_ns = NS + 1;
    let r = s.m.reconcile(&posix_snap(
        &s,
        vec![object(PosixType::Pshm, "/x", 9, old)],
        vec![h],
        &[],
    ));
    assert!(r.findings.is_empty(), "{r:?}");
    let _: ProcessKey = pk(77);
}

#[test]
fn every_rule_is_in_the_record_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../schema/ipcaudit-event.schema.json"))
            .expect("schema");
    let names: Vec<&str> = schema["$defs"]["rule"]["enum"]
        .as_array()
        .expect("rule enum")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let ours: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names, ours);
    let types: Vec<&str> = schema["$defs"]["ipc"]["properties"]["type"]["enum"]
        .as_array()
        .expect("type enum")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let ours: Vec<&str> = crate::event::ObjectType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    assert_eq!(types, ours);
    let actions: Vec<&str> = schema["$defs"]["action"]["enum"]
        .as_array()
        .expect("action enum")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    for a in crate::event::Action::ALL {
        assert!(actions.contains(&a.as_str()), "{a} is not in the schema");
    }
    assert!(actions.contains(&"mq-totals"));
}

// ----- traced POSIX message queues -----

use crate::event::{Action, EventKind, MqId};

const O_RDONLY: i32 = 0;
const O_WRONLY: i32 = 1;
const O_CREAT: i32 = 0o100;
const O_EXCL: i32 = 0o200;

fn mq(ino: u64) -> Option<MqId> {
    let id = MqId { ns: NS, ino };
    (ino != 0).then_some(id)
}

fn mq_open(s: &mut Sim, pid: u32, name: &str, flags: i32, ino: u64) -> Applied {
    s.ev(
        pid,
        EventKind::MqOpen {
            name: name.into(),
            flags,
            mode: 0o600,
            queue: mq(ino),
            result: Ok(3),
        },
    )
}

fn mq_send(s: &mut Sim, pid: u32, ino: u64) -> Applied {
    s.ev(
        pid,
        EventKind::MqSend {
            fd: 3,
            queue: mq(ino),
            size: 16,
            prio: 0,
            result: Ok(()),
        },
    )
}

fn mq_receive(s: &mut Sim, pid: u32, ino: u64) -> Applied {
    s.ev(
        pid,
        EventKind::MqReceive {
            fd: 3,
            queue: mq(ino),
            max_size: 64,
            prio: Some(0),
            result: Ok(16),
        },
    )
}

fn queue_state(m: &Model, name: &str) -> Option<QueueState> {
    m.posix_objects()
        .find(|v| v.object.name == name)
        .and_then(|v| v.queue)
}

#[test]
#[expect(
    clippy::many_single_char_names,
    reason = "s(imulator), a, b, r, u: applied events"
)]
fn traced_queues_have_creators_holders_and_depth_without_a_snapshot() {
    let mut s = Sim::new();
    s.m.bootstrap(&posix_snap(&s, vec![], vec![], &[]));
    let a = mq_open(&mut s, 2, "/jobs", O_CREAT | O_EXCL | O_RDONLY, 40);
    assert_eq!(a.action, Some(Action::MqCreate));
    let p = a.posix.expect("the queue");
    assert_eq!(
        (p.name.as_str(), p.ino, p.ty),
        ("/jobs", 40, PosixType::Pmsg)
    );
    // Another process opens it: an open (the model knows the inode), write-only.
    let b = mq_open(&mut s, 3, "/jobs", O_CREAT | O_WRONLY, 40);
    assert_eq!(b.action, Some(Action::MqOpen));
    for _ in 0..3 {
        assert_eq!(mq_send(&mut s, 3, 40).action, Some(Action::MqSend));
    }
    let r = mq_receive(&mut s, 2, 40);
    assert_eq!(
        (r.action, r.posix.map(|p| p.name)),
        (Some(Action::MqReceive), Some("/jobs".into()))
    );
    assert_eq!(
        queue_state(&s.m, "/jobs").map(|q| (q.messages, q.bytes)),
        Some((2, 32))
    );
    assert!(s.advance(120).is_empty());
    // The reader (the creator) dies: stalled, naming the writer and the dead reader.
    s.exit(2);
    let ch = s.advance(61);
    assert_eq!(raised(&ch, Rule::StalledPosixQueue), 1, "{ch:?}");
    let f = &posix_findings(&s.m, Rule::StalledPosixQueue)[0];
    let e: Vec<(u32, bool, Role)> = f
        .evidence
        .iter()
        .map(|e| (e.pid, e.alive, e.role))
        .collect();
    assert_eq!(e, vec![(3, true, Role::Holder), (2, false, Role::Reader)]);
    // The writer goes: orphaned, the creator named.
    s.exit(3);
    let ch = s.advance(61);
    assert_eq!(raised(&ch, Rule::OrphanedPosixQueue), 1, "{ch:?}");
    let f = &posix_findings(&s.m, Rule::OrphanedPosixQueue)[0];
    assert_eq!(f.evidence[0].role, Role::Creator);
    assert_eq!(f.evidence[0].pid, 2);
    // Unlinked: gone, cleared.
    let u = s.ev(
        4,
        EventKind::MqUnlink {
            name: "/jobs".into(),
            result: Ok(()),
        },
    );
    assert_eq!(u.action, Some(Action::MqRemove));
    assert_eq!(cleared(&u.findings, Rule::OrphanedPosixQueue), 1, "{u:?}");
    assert_eq!(s.m.posix_objects().count(), 0);
}

#[test]
#[expect(clippy::many_single_char_names, reason = "s(imulator), q, a, b, f, v")]
fn a_name_created_again_is_another_queue() {
    let mut s = Sim::new();
    let old = secs_now(&s) - 3600;
    let mut q = object(PosixType::Pmsg, "/q", 40, old);
    q.dev = 20;
    s.m.bootstrap(&posix_snap(&s, vec![q], vec![], &[]));
    assert_eq!(raised(&s.advance(1), Rule::OrphanedPosixQueue), 1);
    // Opened by name without O_CREAT, same inode: the known queue, now held.
    let a = mq_open(&mut s, 2, "/q", O_RDONLY, 40);
    assert_eq!(a.action, Some(Action::MqOpen));
    assert_eq!(cleared(&a.findings, Rule::OrphanedPosixQueue), 1);
    // O_CREAT gave another inode: the old queue was unlinked unseen; this one is new.
    let b = mq_open(&mut s, 2, "/q", O_CREAT | O_RDONLY, 41);
    assert_eq!(b.action, Some(Action::MqCreate));
    let v: Vec<PosixView<'_>> = s.m.posix_objects().collect();
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].object.ino, v[0].object.generation), (41, 1));
    // A failed open names the queue by name.
    let f = s.ev(
        3,
        EventKind::MqOpen {
            name: "/none".into(),
            flags: 0,
            mode: 0,
            queue: None,
            result: Err(crate::event::Errno(2)),
        },
    );
    assert_eq!(f.action, Some(Action::MqOpen));
    assert_eq!(f.posix.map(|p| (p.name, p.ino)), Some(("/none".into(), 0)));
}

#[test]
fn aggregated_queue_totals_count_once() {
    let mut s = Sim::new();
    s.m.bootstrap(&posix_snap(&s, vec![], vec![], &[]));
    mq_open(&mut s, 2, "/t", O_CREAT | O_EXCL | O_WRONLY, 50);
    mq_send(&mut s, 2, 50);
    let created = s.now;
    let totals = |ops: u64, sent: u64, received: u64| {
        Aggregate::Mqueue(MqueueTotals {
            time_ns: created + ops,
            ns: NS,
            ino: 50,
            first_ns: created,
            ops,
            sent,
            sent_bytes: sent * 16,
            received,
            received_bytes: received * 16,
        })
    };
    s.m.apply_aggregate(&totals(5, 5, 0));
    assert_eq!(queue_state(&s.m, "/t").map(|q| q.messages), Some(6));
    // The same totals again, and a stale copy: nothing more.
    s.m.apply_aggregate(&totals(5, 5, 0));
    s.m.apply_aggregate(&totals(3, 3, 0));
    assert_eq!(queue_state(&s.m, "/t").map(|q| q.messages), Some(6));
    s.m.apply_aggregate(&totals(9, 5, 4));
    assert_eq!(
        queue_state(&s.m, "/t").map(|q| (q.messages, q.bytes)),
        Some((2, 32))
    );
    // Totals of an entry made before the queue was created counted for an earlier one.
    let early = Aggregate::Mqueue(MqueueTotals {
        time_ns: created + 20,
        ns: NS,
        ino: 50,
        first_ns: created - 10 * SEC,
        ops: 100,
        sent: 100,
        sent_bytes: 0,
        received: 0,
        received_bytes: 0,
    });
    s.m.apply_aggregate(&early);
    assert_eq!(queue_state(&s.m, "/t").map(|q| q.messages), Some(2));
}

#[test]
fn mq_notify_registers_a_reader() {
    let mut s = Sim::new();
    s.m.bootstrap(&posix_snap(&s, vec![], vec![], &[]));
    mq_open(&mut s, 2, "/n", O_CREAT | O_EXCL | O_WRONLY, 60);
    mq_send(&mut s, 2, 60);
    let n = s.ev(
        3,
        EventKind::MqNotify {
            fd: 4,
            queue: mq(60),
            register: true,
            result: Ok(()),
        },
    );
    assert_eq!(n.action, Some(Action::MqNotify));
    assert_eq!(queue_state(&s.m, "/n").map(|q| q.notify_pid), Some(3));
    assert_eq!(raised(&s.advance(61), Rule::StalledPosixQueue), 0);
    s.exit(3);
    assert_eq!(raised(&s.advance(61), Rule::StalledPosixQueue), 1);
}
