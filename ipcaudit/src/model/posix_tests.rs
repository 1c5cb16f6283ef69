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
}
