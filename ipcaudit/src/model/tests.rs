//! Unit tests: synthetic events through a small simulator.

use crate::event::{Action, Errno, Event, EventKind, IpcType, ProcessKey, SemOp, Task};
use crate::snapshot::{
    Blocked, IpcPerm, Limits, MsgQueue, ProcessInfo, SHM_DEST, SemSet, SemValue, ShmMapping,
    ShmSegment, Snapshot, Waiter,
};

use super::*;

pub(super) const NS: u32 = 4_026_531_839;
pub(super) const PAGE: u64 = 4096;
/// Boot at 1 700 000 000 s; events start 10 000 s later.
pub(super) const BOOT_NS: u64 = 1_700_000_000 * NS_PER_SEC;
pub(super) const T0: u64 = BOOT_NS + 10_000 * NS_PER_SEC;
pub(super) const SEC: u64 = NS_PER_SEC;
pub(super) const IPC_CREAT: i32 = 0o1000;
pub(super) const IPC_EXCL: i32 = 0o2000;
pub(super) const EINVAL: Errno = Errno(22);

/// Process `pid` (started 1000 + pid ticks after boot).
pub(super) fn pk(pid: u32) -> ProcessKey {
    ProcessKey {
        pid,
        start_ticks: 1000 + u64::from(pid),
    }
}

pub(super) fn cfg() -> ModelConfig {
    ModelConfig {
        boot_time_ns: BOOT_NS,
        ..ModelConfig::default()
    }
}

/// A model and a clock that advances 1 ms per event.
pub(super) struct Sim {
    pub m: Model,
    pub now: u64,
}

impl Sim {
    pub fn new() -> Self {
        Self {
            m: Model::new(cfg()),
            now: T0,
        }
    }

    pub fn with(cfg: ModelConfig) -> Self {
        Self {
            m: Model::new(cfg),
            now: T0,
        }
    }

    pub fn event(&mut self, pid: u32, kind: EventKind) -> Event {
        self.now += 1_000_000;
        Event {
            time_ns: self.now,
            ipc_ns: NS,
            task: Task {
                process: pk(pid),
                tid: pid,
                comm: format!("p{pid}"),
                uid: 1000,
            },
            kind,
        }
    }

    pub fn ev(&mut self, pid: u32, kind: EventKind) -> Applied {
        let e = self.event(pid, kind);
        self.m.apply(&e)
    }

    /// Advances the clock and ticks.
    pub fn advance(&mut self, secs: u64) -> Vec<FindingChange> {
        self.now += secs * SEC;
        self.m.tick(self.now)
    }

    pub fn shmget(&mut self, pid: u32, key: i32, size: u64, flags: i32, id: i32) -> Applied {
        self.ev(
            pid,
            EventKind::ShmGet {
                key,
                size,
                flags,
                result: Ok(id),
            },
        )
    }

    pub fn shmat(&mut self, pid: u32, shmid: i32, addr: u64) -> Applied {
        self.ev(
            pid,
            EventKind::ShmAt {
                shmid,
                addr: 0,
                flags: 0,
                result: Ok(addr),
            },
        )
    }

    pub fn shmdt(&mut self, pid: u32, addr: u64) -> Applied {
        self.ev(
            pid,
            EventKind::ShmDt {
                addr,
                result: Ok(()),
            },
        )
    }

    pub fn shmctl(&mut self, pid: u32, shmid: i32, cmd: i32) -> Applied {
        self.ev(
            pid,
            EventKind::ShmCtl {
                shmid,
                cmd,
                result: Ok(0),
            },
        )
    }

    pub fn munmap(&mut self, pid: u32, addr: u64, len: u64) -> Applied {
        self.ev(
            pid,
            EventKind::Munmap {
                addr,
                len,
                result: Ok(()),
            },
        )
    }

    pub fn mremap(
        &mut self,
        pid: u32,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: u32,
        to: u64,
    ) -> Applied {
        self.ev(
            pid,
            EventKind::Mremap {
                old_addr: old,
                old_len,
                new_len,
                flags,
                result: Ok(to),
            },
        )
    }

    pub fn semget(&mut self, pid: u32, key: i32, nsems: i32, flags: i32, id: i32) -> Applied {
        self.ev(
            pid,
            EventKind::SemGet {
                key,
                nsems,
                flags,
                result: Ok(id),
            },
        )
    }

    pub fn semop(&mut self, pid: u32, semid: i32, ops: &[(u16, i16, i16)]) -> Applied {
        let ops: Vec<SemOp> = ops
            .iter()
            .map(|&(num, op, flags)| SemOp { num, op, flags })
            .collect();
        let nsops = u32::try_from(ops.len()).unwrap_or(0);
        self.ev(
            pid,
            EventKind::SemOp {
                semid,
                ops,
                nsops,
                timed: false,
                result: Ok(()),
            },
        )
    }

    pub fn semctl(&mut self, pid: u32, semid: i32, semnum: i32, cmd: i32, arg: u64) -> Applied {
        self.ev(
            pid,
            EventKind::SemCtl {
                semid,
                semnum,
                cmd,
                arg,
                result: Ok(0),
            },
        )
    }

    pub fn msgget(&mut self, pid: u32, key: i32, flags: i32, id: i32) -> Applied {
        self.ev(
            pid,
            EventKind::MsgGet {
                key,
                flags,
                result: Ok(id),
            },
        )
    }

    pub fn msgsnd(&mut self, pid: u32, msqid: i32, size: u64) -> Applied {
        self.ev(
            pid,
            EventKind::MsgSnd {
                msqid,
                size,
                flags: 0,
                mtype: Some(1),
                result: Ok(()),
            },
        )
    }

    pub fn msgrcv(&mut self, pid: u32, msqid: i32, size: u64) -> Applied {
        self.ev(
            pid,
            EventKind::MsgRcv {
                msqid,
                max_size: 8192,
                want_type: 0,
                flags: 0,
                mtype: Some(1),
                result: Ok(size),
            },
        )
    }

    pub fn msgctl(&mut self, pid: u32, msqid: i32, cmd: i32) -> Applied {
        self.ev(
            pid,
            EventKind::MsgCtl {
                msqid,
                cmd,
                result: Ok(0),
            },
        )
    }

    pub fn fork(&mut self, parent: u32, child: u32) -> Applied {
        self.ev(parent, EventKind::Fork { child: pk(child) })
    }

    pub fn exec(&mut self, pid: u32, file: &str) -> Applied {
        self.ev(
            pid,
            EventKind::Exec {
                filename: file.into(),
                old_tid: pid,
            },
        )
    }

    pub fn exit(&mut self, pid: u32) -> Applied {
        self.ev(pid, EventKind::Exit { code: 0 })
    }

    pub fn nattch(&self, id: i32) -> u64 {
        self.m
            .object(NS, IpcType::Shm, id)
            .map_or(0, |v| v.nattch())
    }

    pub fn status(&self, ty: IpcType, id: i32) -> Option<ObjectStatus> {
        self.m.object(NS, ty, id).map(|v| v.status)
    }

    pub fn ranges(&self, pid: u32) -> Vec<(u64, u64, u64)> {
        let mut r: Vec<(u64, u64, u64)> = self
            .m
            .process(pk(pid))
            .map(|p| {
                p.attachments
                    .iter()
                    .map(|a| (a.start, a.end, a.offset))
                    .collect()
            })
            .unwrap_or_default();
        r.sort_unstable();
        r
    }

    pub fn active(&self, rule: Rule) -> Vec<&Finding> {
        self.m.findings().filter(|f| f.rule == rule).collect()
    }
}

pub(super) fn raised(ch: &[FindingChange], rule: Rule) -> usize {
    ch.iter()
        .filter(|c| c.is_raised() && c.finding().rule == rule)
        .count()
}

pub(super) fn cleared(ch: &[FindingChange], rule: Rule) -> usize {
    ch.iter()
        .filter(|c| !c.is_raised() && c.finding().rule == rule)
        .count()
}

fn destroys(a: &Applied) -> usize {
    a.derived
        .iter()
        .filter(|(x, _)| *x == Action::ShmDestroy)
        .count()
}

const A: u64 = 0x7000_0000_0000;

// ----- shm -----

#[test]
fn shm_lifecycle_actions_and_nattch() {
    let mut s = Sim::new();
    let a = s.shmget(1, 0x1234, 4 * PAGE, IPC_CREAT | 0o600, 7);
    assert_eq!(a.action, Some(Action::ShmCreate));
    let r = a.object.unwrap();
    assert_eq!(
        (r.id, r.key, r.size, r.ty),
        (7, Some(0x1234), Some(4 * PAGE), IpcType::Shm)
    );
    let a = s.shmat(1, 7, A);
    assert_eq!(a.action, Some(Action::ShmAttach));
    assert_eq!(a.object.unwrap().size, Some(4 * PAGE));
    assert_eq!(s.nattch(7), 1);
    assert_eq!(s.ranges(1), vec![(A, A + 4 * PAGE, 0)]);
    let a = s.shmdt(1, A);
    assert_eq!(a.action, Some(Action::ShmDetach));
    assert_eq!(a.object.unwrap().id, 7);
    assert_eq!(s.nattch(7), 0);
    let a = s.shmctl(1, 7, 0);
    assert_eq!(a.action, Some(Action::ShmRemove));
    assert_eq!(destroys(&a), 1);
    assert_eq!(s.status(IpcType::Shm, 7), Some(ObjectStatus::Destroyed));
}

#[test]
fn get_classification() {
    let mut s = Sim::new();
    assert_eq!(
        s.shmget(1, 0x10, PAGE, IPC_CREAT | 0o600, 1).action,
        Some(Action::ShmCreate)
    );
    // Same key, IPC_CREAT, the live object comes back: open.
    assert_eq!(
        s.shmget(2, 0x10, PAGE, IPC_CREAT | 0o600, 1).action,
        Some(Action::ShmOpen)
    );
    // Without IPC_CREAT: always open.
    assert_eq!(s.shmget(2, 0x10, 0, 0, 1).action, Some(Action::ShmOpen));
    // IPC_CREAT|IPC_EXCL success: a create, even with an id the model thought live.
    let a = s.shmget(2, 0x11, PAGE, IPC_CREAT | IPC_EXCL | 0o600, 1);
    assert_eq!(a.action, Some(Action::ShmCreate));
    assert_eq!(a.object.unwrap().generation, 1);
    // IPC_PRIVATE creates.
    assert_eq!(
        s.shmget(2, 0, PAGE, 0o600, 2).action,
        Some(Action::ShmCreate)
    );
    // An unknown id returned for IPC_CREAT: created.
    assert_eq!(
        s.shmget(2, 0x12, PAGE, IPC_CREAT, 3).action,
        Some(Action::ShmCreate)
    );
    // An unknown id opened without IPC_CREAT: open, the object is made up lazily.
    let a = s.shmget(2, 0x13, 0, 0, 4);
    assert_eq!(a.action, Some(Action::ShmOpen));
    assert_eq!(s.m.object(NS, IpcType::Shm, 4).unwrap().creator, None);
    // Failures.
    let fail = |key, flags| EventKind::SemGet {
        key,
        nsems: 1,
        flags,
        result: Err(EINVAL),
    };
    assert_eq!(s.ev(1, fail(5, IPC_CREAT)).action, Some(Action::SemCreate));
    assert_eq!(s.ev(1, fail(5, 0)).action, Some(Action::SemOpen));
    let f = s.ev(
        1,
        EventKind::MsgGet {
            key: 9,
            flags: 0,
            result: Err(Errno(2)),
        },
    );
    assert_eq!((f.action, f.object), (Some(Action::MsgOpen), None));
    assert_eq!(
        s.msgget(1, 9, IPC_CREAT | 0o600, 3).action,
        Some(Action::MsgCreate)
    );
    assert_eq!(s.msgget(3, 9, 0, 3).action, Some(Action::MsgOpen));
    assert_eq!(
        s.semget(1, 9, 2, IPC_CREAT | 0o600, 3).action,
        Some(Action::SemCreate)
    );
    assert_eq!(
        s.semget(3, 9, 0, IPC_CREAT | 0o600, 3).action,
        Some(Action::SemOpen)
    );
}

#[test]
fn ctl_classification() {
    let mut s = Sim::new();
    s.shmget(1, 0x10, PAGE, IPC_CREAT | 0o600, 5);
    let a = s.shmctl(1, 5, 2 | 0x100); // IPC_STAT | IPC_64
    assert_eq!(
        (a.action, a.object.map(|o| o.id)),
        (Some(Action::ShmControl), Some(5))
    );
    let a = s.shmctl(1, 5, 14); // SHM_INFO: no object
    assert_eq!((a.action, a.object), (Some(Action::ShmControl), None));
    let a = s.shmctl(1, 0, 3 | 0x100); // IPC_INFO
    assert_eq!((a.action, a.object), (Some(Action::ShmControl), None));
    // SHM_STAT takes an index and returns the id.
    let a = s.ev(
        1,
        EventKind::ShmCtl {
            shmid: 0,
            cmd: 13,
            result: Ok(5),
        },
    );
    assert_eq!(
        (a.action, a.object.map(|o| o.id)),
        (Some(Action::ShmControl), Some(5))
    );
    // RMID with IPC_64 masked.
    let a = s.shmctl(1, 5, 0x100);
    assert_eq!(a.action, Some(Action::ShmRemove));
    assert_eq!(destroys(&a), 1);
    // A failed RMID is still a remove, changes nothing.
    let a = s.ev(
        1,
        EventKind::ShmCtl {
            shmid: 5,
            cmd: 0,
            result: Err(EINVAL),
        },
    );
    assert_eq!((a.action, a.derived.len()), (Some(Action::ShmRemove), 0));
    s.semget(1, 0x20, 2, IPC_CREAT | 0o600, 6);
    for (cmd, obj) in [
        (12, true),
        (19, false),
        (3, false),
        (16, true),
        (0x100 | 0x11, true),
    ] {
        let a = s.semctl(1, 6, 0, cmd, 1);
        assert_eq!(a.action, Some(Action::SemControl), "cmd {cmd}");
        assert_eq!(a.object.is_some(), obj, "cmd {cmd}");
    }
    let a = s.ev(
        1,
        EventKind::SemCtl {
            semid: 0,
            semnum: 0,
            cmd: 18,
            arg: 0,
            result: Ok(6),
        },
    );
    assert_eq!(a.object.map(|o| o.id), Some(6));
    assert_eq!(s.semctl(1, 6, 0, 0, 0).action, Some(Action::SemRemove));
    assert_eq!(s.status(IpcType::Sem, 6), Some(ObjectStatus::Destroyed));
    s.msgget(1, 0x30, IPC_CREAT | 0o600, 8);
    assert_eq!(s.msgctl(1, 8, 12).object, None); // MSG_INFO
    assert_eq!(s.msgctl(1, 8, 2).object.map(|o| o.id), Some(8));
    assert_eq!(s.msgctl(1, 8, 0).action, Some(Action::MsgRemove));
    assert_eq!(s.status(IpcType::Msg, 8), Some(ObjectStatus::Destroyed));
}

#[test]
fn lazy_object_for_unknown_id() {
    let mut s = Sim::new();
    let a = s.shmat(1, 99, A);
    assert_eq!(a.action, Some(Action::ShmAttach));
    let r = a.object.unwrap();
    assert_eq!((r.id, r.key, r.size), (99, None, None));
    assert_eq!(s.nattch(99), 1);
    // Unknown size: one page is assumed.
    assert_eq!(s.ranges(1), vec![(A, A + PAGE, 0)]);
    let a = s.ev(
        1,
        EventKind::ShmAt {
            shmid: 98,
            addr: 0,
            flags: 0,
            result: Err(EINVAL),
        },
    );
    assert_eq!((a.action, a.object), (Some(Action::ShmAttach), None));
    assert!(s.m.object(NS, IpcType::Shm, 98).is_none());
}

#[test]
fn id_reuse_gets_a_new_generation() {
    let mut s = Sim::new();
    let g0 = s
        .shmget(1, 0x10, PAGE, IPC_CREAT | 0o600, 5)
        .object
        .unwrap()
        .generation;
    s.shmctl(1, 5, 0);
    let g1 = s
        .shmget(1, 0x10, PAGE, IPC_CREAT | 0o600, 5)
        .object
        .unwrap()
        .generation;
    assert_ne!(g0, g1);
    assert_eq!(s.status(IpcType::Shm, 5), Some(ObjectStatus::Live));
    assert_eq!(s.m.objects().filter(|o| o.object.id == 5).count(), 2);
}

#[test]
fn rmid_while_attached_destroys_on_last_detach_exactly_once() {
    let mut s = Sim::new();
    s.shmget(1, 0x10, 2 * PAGE, IPC_CREAT | 0o600, 5);
    s.shmat(1, 5, A);
    s.fork(1, 2);
    assert_eq!(s.nattch(5), 2);
    let a = s.shmctl(1, 5, 0);
    assert_eq!((a.action, destroys(&a)), (Some(Action::ShmRemove), 0));
    assert_eq!(
        s.status(IpcType::Shm, 5),
        Some(ObjectStatus::RemovedPendingDestroy)
    );
    // The model keeps the key for the records (the kernel shows 0), but a get of the key
    // creates a new segment.
    assert_eq!(
        s.m.object(NS, IpcType::Shm, 5).unwrap().object.key,
        Some(0x10)
    );
    let a = s.shmget(3, 0x10, PAGE, IPC_CREAT | 0o600, 6);
    assert_eq!(a.action, Some(Action::ShmCreate));
    assert_eq!(
        s.status(IpcType::Shm, 5),
        Some(ObjectStatus::RemovedPendingDestroy)
    );
    // Attaching a removed segment by id still works.
    s.shmat(1, 5, A + 0x10_0000);
    assert_eq!(s.nattch(5), 3);
    assert_eq!(destroys(&s.shmdt(1, A)), 0);
    assert_eq!(destroys(&s.exit(1)), 0);
    let a = s.exit(2);
    assert_eq!(a.action, Some(Action::ProcessExit));
    assert_eq!(destroys(&a), 1);
    assert_eq!(a.derived[0].1.id, 5);
    assert_eq!(s.status(IpcType::Shm, 5), Some(ObjectStatus::Destroyed));
    assert_eq!(destroys(&s.exit(2)), 0);
}

#[test]
fn munmap_in_the_middle_splits_the_attachment() {
    let mut s = Sim::new();
    s.shmget(1, 0x10, 4 * PAGE, IPC_CREAT | 0o600, 5);
    s.shmat(1, 5, A);
    let a = s.munmap(1, A + PAGE, PAGE);
    assert_eq!(a.action, Some(Action::ShmDetach));
    assert_eq!(s.nattch(5), 2);
    assert_eq!(
        s.ranges(1),
        vec![(A, A + PAGE, 0), (A + 2 * PAGE, A + 4 * PAGE, 2 * PAGE)]
    );
    // shmdt at the attach address detaches both fragments.
    s.shmdt(1, A);
    assert_eq!(s.nattch(5), 0);
    assert!(s.ranges(1).is_empty());
    // munmap of something else: no action.
    assert_eq!(s.munmap(1, A, PAGE).action, None);
}

#[test]
fn shmdt_when_the_first_page_is_gone() {
    let mut s = Sim::new();
    s.shmget(1, 0x10, 4 * PAGE, IPC_CREAT | 0o600, 5);
    s.shmat(1, 5, A);
    s.munmap(1, A, PAGE);
    assert_eq!(s.nattch(5), 1);
    // shmdt(A + PAGE) does not match (the vma maps offset 1 page at A + PAGE).
    let a = s.shmdt(1, A + PAGE);
    assert!(a.object.is_none());
    assert_eq!(s.nattch(5), 1);
    let a = s.shmdt(1, A);
    assert_eq!(a.object.map(|o| o.id), Some(5));
    assert_eq!(s.nattch(5), 0);
}

#[test]
fn partial_munmap_keeps_a_removed_segment_until_the_last_page() {
    let mut s = Sim::new();
    s.shmget(1, 0x10, 4 * PAGE, IPC_CREAT | 0o600, 5);
    s.shmat(1, 5, A);
    s.shmctl(1, 5, 0);
    assert_eq!(destroys(&s.munmap(1, A, 3 * PAGE)), 0);
    assert_eq!(
        s.status(IpcType::Shm, 5),
        Some(ObjectStatus::RemovedPendingDestroy)
    );
    let a = s.munmap(1, A + 3 * PAGE, 100);
    assert_eq!(destroys(&a), 1);
    assert_eq!(s.status(IpcType::Shm, 5), Some(ObjectStatus::Destroyed));
}

#[test]
fn fork_copies_and_exec_drops_attachments() {
    let mut s = Sim::new();
    s.shmget(1, 0x10, 4 * PAGE, IPC_CREAT | 0o600, 5);
    s.shmat(1, 5, A);
    s.munmap(1, A + PAGE, PAGE);
    s.fork(1, 2);
    assert_eq!(s.nattch(5), 4); // two vmas each
    assert_eq!(s.ranges(2), s.ranges(1));
    let a = s.exec(2, "/bin/true");
    assert_eq!(a.action, Some(Action::ProcessExec));
    assert_eq!(s.nattch(5), 2);
    assert!(s.ranges(2).is_empty());
    assert_eq!(s.m.process(pk(2)).unwrap().exe, Some("/bin/true"));
    assert_eq!(s.m.process(pk(2)).unwrap().parent, Some(pk(1)));
}

#[test]
fn mremap_as_the_kernel_does() {
    // Mirrors the experiment on Linux 6.18.
    let mut s = Sim::new();
    let b = 0x7100_0000_0000;
    s.shmget(1, 0x10, 4 * PAGE, IPC_CREAT | 0o600, 5);
    s.shmat(1, 5, A);
    // Move the middle page away: three vmas.
    s.mremap(1, A + PAGE, PAGE, PAGE, 3, b);
    assert_eq!(s.nattch(5), 3);
    // Move it back: it merges with its left neighbour only.
    s.mremap(1, b, PAGE, PAGE, 3, A + PAGE);
    assert_eq!(s.nattch(5), 2);
    assert_eq!(
        s.ranges(1),
        vec![(A, A + 2 * PAGE, 0), (A + 2 * PAGE, A + 4 * PAGE, 2 * PAGE)]
    );
    s.shmdt(1, A);
    assert_eq!(s.nattch(5), 0);
    // Move, shrink, grow, DONTUNMAP.
    s.shmat(1, 5, A);
    s.mremap(1, A, 4 * PAGE, 4 * PAGE, 3, b);
    assert_eq!(s.ranges(1), vec![(b, b + 4 * PAGE, 0)]);
    s.mremap(1, b, 4 * PAGE, 2 * PAGE, 0, b);
    assert_eq!(s.ranges(1), vec![(b, b + 2 * PAGE, 0)]);
    s.mremap(1, b, 2 * PAGE, 4 * PAGE, 1, b);
    assert_eq!(s.ranges(1), vec![(b, b + 4 * PAGE, 0)]);
    assert_eq!(s.nattch(5), 1);
    s.mremap(1, b, 4 * PAGE, 4 * PAGE, 1 | 4, A);
    assert_eq!(s.nattch(5), 2);
    assert_eq!(
        s.ranges(1),
        vec![(A, A + 4 * PAGE, 0), (b, b + 4 * PAGE, 0)]
    );
    // Both are detached by shmdt at their own address.
    s.shmdt(1, b);
    assert_eq!(s.nattch(5), 1);
    s.shmdt(1, A);
    assert_eq!(s.nattch(5), 0);
    // A shrink in the middle of a vma splits it.
    s.shmat(1, 5, A);
    s.mremap(1, A + PAGE, 2 * PAGE, PAGE, 0, A + PAGE);
    assert_eq!(
        s.ranges(1),
        vec![(A, A + 2 * PAGE, 0), (A + 3 * PAGE, A + 4 * PAGE, 3 * PAGE)]
    );
    assert_eq!(s.nattch(5), 2);
}

#[test]
fn shm_remap_replaces_another_segment() {
    let mut s = Sim::new();
    s.shmget(1, 0x10, 4 * PAGE, IPC_CREAT | 0o600, 5);
    s.shmget(1, 0x11, PAGE, IPC_CREAT | 0o600, 6);
    s.shmat(1, 5, A);
    s.shmctl(1, 5, 0);
    s.shmat(1, 6, A + PAGE);
    assert_eq!((s.nattch(5), s.nattch(6)), (2, 1));
    // A SHM_REMAP attach over everything of segment 5: destroyed.
    s.shmget(1, 0x12, 8 * PAGE, IPC_CREAT | 0o600, 7);
    let a = s.shmat(1, 7, A);
    assert_eq!(destroys(&a), 1);
    assert_eq!((s.nattch(5), s.nattch(6), s.nattch(7)), (0, 0, 1));
}

#[test]
fn pid_reuse_never_merges_processes() {
    let mut s = Sim::new();
    s.shmget(1, 0x10, PAGE, IPC_CREAT | 0o600, 5);
    s.shmat(1, 5, A);
    // A new process with pid 1 (different start time) forks from 2: the old one is gone.
    let newer = ProcessKey {
        pid: 1,
        start_ticks: 99_999,
    };
    s.ev(2, EventKind::Fork { child: newer });
    assert!(!s.m.process(pk(1)).unwrap().alive);
    assert!(s.m.process(newer).unwrap().alive);
    assert_eq!(s.nattch(5), 0);
}

#[test]
fn lost_events_and_lifecycle_actions() {
    let mut s = Sim::new();
    let a = s.ev(1, EventKind::Lost { count: 3 });
    assert_eq!(a.action, Some(Action::EventsLost));
    assert!(s.m.needs_reconcile());
    assert_eq!(s.m.lost_events(), 3);
    assert_eq!(s.fork(1, 2).action, Some(Action::ProcessFork));
    assert_eq!(s.exit(2).action, Some(Action::ProcessExit));
    assert!(!s.m.process(pk(2)).unwrap().alive);
}

// ----- semaphores and queues -----

#[test]
fn sem_adjustments_and_setval_reset() {
    let mut s = Sim::new();
    s.semget(1, 0x20, 2, IPC_CREAT | 0o600, 3);
    s.semop(1, 3, &[(0, -1, 0), (1, 1, SemOp::SEM_UNDO)]);
    let v = s.m.object(NS, IpcType::Sem, 3).unwrap();
    let adj = &v.sem.as_ref().unwrap().adjustments;
    let a0 = adj.iter().find(|h| h.semnum == 0).unwrap().adj;
    let a1 = adj.iter().find(|h| h.semnum == 1).unwrap().adj;
    assert_eq!((a0.net, a0.undo, a0.took, a0.gave), (-1, 0, true, false));
    assert_eq!((a1.net, a1.undo), (0, 1));
    s.semctl(2, 3, 0, 16, 1); // SETVAL
    let v = s.m.object(NS, IpcType::Sem, 3).unwrap();
    let sem = v.sem.as_ref().unwrap();
    assert!(
        sem.adjustments
            .iter()
            .all(|h| h.adj.net == 0 && h.adj.undo == 0 || h.semnum == 1)
    );
    assert_eq!(sem.values[0].value, Some(1));
}

#[test]
fn queue_depth_is_clamped_and_marked_uncertain() {
    let mut s = Sim::new();
    s.msgget(1, 0x30, IPC_CREAT | 0o600, 4);
    s.msgsnd(1, 4, 100);
    s.msgsnd(1, 4, 50);
    s.msgrcv(2, 4, 100);
    let q = |s: &Sim| {
        let v = s.m.object(NS, IpcType::Msg, 4).unwrap();
        let m = v.msg.unwrap();
        (m.messages, m.bytes, m.depth_uncertain)
    };
    assert_eq!(q(&s), (1, 50, false));
    s.msgrcv(2, 4, 50);
    s.msgrcv(2, 4, 70);
    assert_eq!(q(&s), (0, 0, true));
}

// ----- findings -----

#[test]
fn orphaned_segment_fires_after_grace_and_clears_once() {
    let mut s = Sim::new();
    s.shmget(1, 0x10, PAGE, IPC_CREAT | 0o600, 5);
    s.shmat(2, 5, A);
    s.shmdt(2, A);
    s.exit(1);
    assert!(s.advance(120).is_empty(), "an attacher is alive");
    s.exit(2);
    assert!(s.advance(30).is_empty(), "grace not over");
    let ch = s.advance(31);
    assert_eq!(raised(&ch, Rule::OrphanedSegment), 1);
    let f = s.active(Rule::OrphanedSegment)[0].clone();
    assert_eq!(f.remedy.as_deref(), Some("ipcrm -m 5"));
    assert!(
        f.evidence
            .iter()
            .any(|e| e.role == Role::Creator && e.pid == 1 && !e.alive)
    );
    assert!(
        f.evidence
            .iter()
            .any(|e| e.role == Role::Attacher && e.pid == 2)
    );
    assert!(s.advance(100).is_empty(), "raised once");
    let a = s.shmctl(3, 5, 0);
    assert_eq!(cleared(&a.findings, Rule::OrphanedSegment), 1);
    assert!(s.active(Rule::OrphanedSegment).is_empty());
    assert!(s.advance(100).is_empty());
}

#[test]
fn orphaned_segment_near_miss_attached_by_a_live_process() {
    let mut s = Sim::new();
    s.shmget(1, 0x10, PAGE, IPC_CREAT | 0o600, 5);
    s.shmat(2, 5, A);
    s.exit(1);
    assert_eq!(raised(&s.advance(600), Rule::OrphanedSegment), 0);
    // A segment attached by a (later dead) process whose child still holds it.
    s.fork(2, 3);
    s.exit(2);
    assert_eq!(raised(&s.advance(600), Rule::OrphanedSegment), 0);
}

#[test]
fn removed_segment_still_attached() {
    let mut s = Sim::new();
    s.shmget(1, 0x10, 2 * PAGE, IPC_CREAT | 0o600, 5);
    s.shmat(2, 5, A);
    s.shmctl(1, 5, 0);
    assert!(s.advance(30).is_empty());
    let ch = s.advance(31);
    assert_eq!(raised(&ch, Rule::RemovedSegmentStillAttached), 1);
    let f = &s.active(Rule::RemovedSegmentStillAttached)[0];
    assert_eq!(f.evidence.len(), 1);
    assert_eq!(
        (f.evidence[0].pid, f.evidence[0].role, f.evidence[0].alive),
        (2, Role::Holder, true)
    );
    let a = s.shmdt(2, A);
    assert_eq!(destroys(&a), 1);
    assert_eq!(cleared(&a.findings, Rule::RemovedSegmentStillAttached), 1);
}

#[test]
fn removed_segment_near_miss_detached_within_grace() {
    let mut s = Sim::new();
    s.shmget(1, 0x10, 2 * PAGE, IPC_CREAT | 0o600, 5);
    s.shmat(2, 5, A);
    s.shmctl(1, 5, 0);
    s.advance(10);
    s.shmdt(2, A);
    assert!(s.advance(120).is_empty());
}

fn lock_scenario(s: &mut Sim, holder_ops: &[&[(u16, i16, i16)]]) {
    s.semget(1, 0x20, 1, IPC_CREAT | 0o600, 3);
    s.semctl(1, 3, 0, 16, 1);
    for ops in holder_ops {
        s.semop(2, 3, ops);
    }
}

#[test]
fn semaphore_held_by_a_dead_lock_user() {
    let mut s = Sim::new();
    // Took, gave back, took again, died.
    lock_scenario(&mut s, &[&[(0, -1, 0)], &[(0, 1, 0)], &[(0, -1, 0)]]);
    let a = s.exit(2);
    assert_eq!(raised(&a.findings, Rule::SemaphoreHeldByDeadProcess), 1);
    let f = s.active(Rule::SemaphoreHeldByDeadProcess)[0].clone();
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.evidence[0].pid, 2);
    assert_eq!(f.evidence[0].role, Role::Holder);
    assert_eq!(f.remedy.as_deref(), Some("ipcrm -s 3"));
    // SETVAL resets the adjustments: cleared, once.
    let a = s.semctl(1, 3, 0, 16, 1);
    assert_eq!(cleared(&a.findings, Rule::SemaphoreHeldByDeadProcess), 1);
    let a = s.semctl(1, 3, 0, 16, 1);
    assert!(a.findings.is_empty());
}

#[test]
fn semaphore_held_near_misses() {
    // SEM_UNDO: the kernel gives it back.
    let mut s = Sim::new();
    lock_scenario(
        &mut s,
        &[
            &[(0, -1, SemOp::SEM_UNDO)],
            &[(0, 1, SemOp::SEM_UNDO)],
            &[(0, -1, SemOp::SEM_UNDO)],
        ],
    );
    assert_eq!(
        raised(&s.exit(2).findings, Rule::SemaphoreHeldByDeadProcess),
        0
    );
    // A consumer of a counting semaphore (only ever took).
    let mut s = Sim::new();
    s.semget(1, 0x20, 1, IPC_CREAT | 0o600, 3);
    s.semop(1, 3, &[(0, 5, 0)]);
    s.semop(2, 3, &[(0, -1, 0)]);
    s.semop(2, 3, &[(0, -1, 0)]);
    assert_eq!(
        raised(&s.exit(2).findings, Rule::SemaphoreHeldByDeadProcess),
        0
    );
    assert_eq!(raised(&s.advance(30), Rule::SemaphoreHeldByDeadProcess), 0);
    // A lock user that gave everything back.
    let mut s = Sim::new();
    lock_scenario(&mut s, &[&[(0, -1, 0)], &[(0, 1, 0)]]);
    assert_eq!(
        raised(&s.exit(2).findings, Rule::SemaphoreHeldByDeadProcess),
        0
    );
}

/// A snapshot of the simulator's namespace with the given objects and processes.
pub(super) fn snap(now: u64) -> Snapshot {
    Snapshot {
        ipc_ns: NS,
        taken_ns: now,
        limits: Limits {
            shmmni: 4096,
            shmall: 1 << 40,
            semmni: 32_000,
            semmns: 1 << 30,
            msgmni: 32_000,
            ..Limits::default()
        },
        ..Snapshot::default()
    }
}

pub(super) fn pinfo(pid: u32, state: char) -> ProcessInfo {
    ProcessInfo {
        key: pk(pid),
        ppid: 1,
        comm: format!("p{pid}"),
        uid: 1000,
        state,
        ipc_ns: NS,
    }
}

fn perm(id: i32, key: i32, mode: u32) -> IpcPerm {
    IpcPerm {
        key,
        id,
        mode,
        uid: 1000,
        gid: 1000,
        cuid: 1000,
        cgid: 1000,
    }
}

fn secs(t: u64) -> i64 {
    i64::try_from(t / SEC).unwrap()
}

#[test]
fn semaphore_held_with_waiters_is_critical() {
    // A process took the only unit (never used it as a lock before) and died; another waits.
    let mut s = Sim::new();
    lock_scenario(&mut s, &[&[(0, -1, 0)]]);
    s.semget(4, 0x20, 0, 0, 3);
    assert_eq!(
        raised(&s.exit(2).findings, Rule::SemaphoreHeldByDeadProcess),
        0
    );
    let mut sn = snap(s.now);
    sn.processes = vec![pinfo(1, 'S'), pinfo(4, 'S')];
    sn.sem = vec![SemSet {
        perm: perm(3, 0x20, 0o600),
        nsems: 1,
        otime: secs(s.now),
        ctime: secs(T0),
    }];
    sn.sem_values = vec![(
        3,
        vec![SemValue {
            value: 0,
            ncnt: 1,
            zcnt: 0,
            pid: 2,
        }],
    )];
    sn.waiters = vec![Waiter {
        pid: 4,
        tid: 4,
        on: Blocked::Sem { semid: 3 },
    }];
    let r = s.m.reconcile(&sn);
    assert_eq!(raised(&r.findings, Rule::SemaphoreHeldByDeadProcess), 1);
    let f = s.active(Rule::SemaphoreHeldByDeadProcess)[0].clone();
    assert_eq!(f.severity, Severity::Critical);
    assert!(
        f.evidence
            .iter()
            .any(|e| e.role == Role::Holder && e.pid == 2 && !e.alive)
    );
    assert!(
        f.evidence
            .iter()
            .any(|e| e.role == Role::Waiter && e.pid == 4 && e.alive)
    );
    // The set is removed: cleared once.
    let a = s.semctl(1, 3, 0, 0, 0);
    assert_eq!(cleared(&a.findings, Rule::SemaphoreHeldByDeadProcess), 1);
}

#[test]
fn stalled_queue_and_near_miss() {
    let mut s = Sim::new();
    s.msgget(1, 0x30, IPC_CREAT | 0o600, 4);
    s.msgsnd(1, 4, 10);
    s.msgrcv(2, 4, 10);
    s.msgsnd(1, 4, 10);
    // Reader alive: silent.
    assert_eq!(raised(&s.advance(120), Rule::StalledQueue), 0);
    s.exit(2);
    assert_eq!(raised(&s.advance(30), Rule::StalledQueue), 0);
    let ch = s.advance(31);
    assert_eq!(raised(&ch, Rule::StalledQueue), 1);
    let f = s.active(Rule::StalledQueue)[0].clone();
    assert!(
        f.evidence
            .iter()
            .any(|e| e.role == Role::LastSender && e.pid == 1 && e.alive)
    );
    assert!(
        f.evidence
            .iter()
            .any(|e| e.role == Role::Reader && e.pid == 2 && !e.alive)
    );
    assert_eq!(f.remedy.as_deref(), Some("ipcrm -q 4"));
    // A new reader drains it: cleared once.
    let a = s.msgrcv(3, 4, 10);
    assert_eq!(cleared(&a.findings, Rule::StalledQueue), 1);
    assert_eq!(cleared(&s.msgrcv(3, 4, 10).findings, Rule::StalledQueue), 0);
}

#[test]
fn orphaned_semaphore_set_and_queue() {
    let mut s = Sim::new();
    s.semget(1, 0x20, 1, IPC_CREAT | 0o600, 3);
    s.msgget(1, 0x30, IPC_CREAT | 0o600, 4);
    s.semget(2, 0x20, 0, 0, 3);
    s.msgget(2, 0x30, 0, 4);
    s.exit(1);
    // Near miss: a live user (the opener).
    assert!(s.advance(120).is_empty());
    s.exit(2);
    let ch = s.advance(61);
    assert_eq!(raised(&ch, Rule::OrphanedSemaphoreSet), 1);
    assert_eq!(raised(&ch, Rule::OrphanedQueue), 1);
    assert_eq!(raised(&ch, Rule::StalledQueue), 0, "empty queue");
    let f = s.active(Rule::OrphanedQueue)[0].clone();
    assert!(
        f.evidence
            .iter()
            .any(|e| e.role == Role::Creator && e.pid == 1)
    );
    assert!(
        f.evidence
            .iter()
            .any(|e| e.role == Role::User && e.pid == 2)
    );
    let a = s.semctl(3, 3, 0, 0, 0);
    assert_eq!(cleared(&a.findings, Rule::OrphanedSemaphoreSet), 1);
}

#[test]
fn leaky_process_and_near_miss() {
    let mut s = Sim::with(ModelConfig {
        leaky_threshold: 10,
        ..cfg()
    });
    s.exec(1, "/usr/bin/leaker");
    for id in 0..10 {
        s.semget(1, 0, 1, 0o600, id);
    }
    assert!(
        s.active(Rule::LeakyProcess).is_empty(),
        "exactly the threshold"
    );
    // A child of the same program counts for it too.
    s.fork(1, 2);
    let a = s.semget(2, 0, 1, 0o600, 10);
    assert_eq!(raised(&a.findings, Rule::LeakyProcess), 1);
    let f = s.active(Rule::LeakyProcess)[0].clone();
    assert!(f.description.contains("/usr/bin/leaker"));
    assert!(f.evidence.iter().any(|e| e.pid == 2));
    // Removing one brings it back to the threshold: cleared.
    let a = s.semctl(1, 0, 0, 0, 0);
    assert_eq!(cleared(&a.findings, Rule::LeakyProcess), 1);
    // A program that removes what it creates never fires.
    let mut s = Sim::with(ModelConfig {
        leaky_threshold: 10,
        ..cfg()
    });
    for id in 0..50 {
        s.semget(1, 0, 1, 0o600, id);
        s.semctl(1, id, 0, 0, 0);
    }
    assert!(s.active(Rule::LeakyProcess).is_empty());
    // Creations spread beyond the window do not add up.
    let mut s = Sim::with(ModelConfig {
        leaky_threshold: 10,
        ..cfg()
    });
    for id in 0..30 {
        s.semget(1, 0, 1, 0o600, id);
        s.advance(10);
    }
    assert!(s.active(Rule::LeakyProcess).is_empty());
}

#[test]
fn near_limit() {
    let mut s = Sim::new();
    let mut sn = snap(s.now);
    sn.limits.msgmni = 10;
    s.m.bootstrap(&sn);
    for id in 0..9 {
        s.msgget(1, 0, 0o600, id);
    }
    assert!(s.active(Rule::NearLimit).is_empty(), "90% is not above 90%");
    let a = s.msgget(1, 0, 0o600, 9);
    assert_eq!(raised(&a.findings, Rule::NearLimit), 1);
    assert!(s.active(Rule::NearLimit)[0].description.contains("msgmni"));
    let a = s.msgctl(1, 9, 0);
    assert_eq!(cleared(&a.findings, Rule::NearLimit), 1);
}

#[test]
fn world_accessible() {
    let mut s = Sim::new();
    let a = s.shmget(1, 0x10, PAGE, IPC_CREAT | 0o666, 5);
    assert_eq!(raised(&a.findings, Rule::WorldAccessible), 1);
    let a = s.shmget(1, 0x11, PAGE, IPC_CREAT | 0o660, 6);
    assert_eq!(raised(&a.findings, Rule::WorldAccessible), 0);
    let a = s.shmctl(1, 5, 0);
    assert_eq!(cleared(&a.findings, Rule::WorldAccessible), 1);
    // From a snapshot (IPC_SET is not in the event stream).
    let mut sn = snap(s.now);
    sn.processes = vec![pinfo(1, 'S')];
    sn.shm = vec![seg(6, 0x11, 0o604, PAGE, 1, 0, s.now)];
    let r = s.m.reconcile(&sn);
    assert_eq!(raised(&r.findings, Rule::WorldAccessible), 1);
    assert!(r.differences.iter().any(|d| matches!(
        d,
        Difference::Mode {
            model: 0o660,
            kernel: 0o604,
            ..
        }
    )));
}

fn seg(id: i32, key: i32, mode: u32, size: u64, cpid: u32, nattch: u64, now: u64) -> ShmSegment {
    ShmSegment {
        perm: perm(id, key, mode),
        size,
        cpid,
        lpid: cpid,
        nattch,
        atime: 0,
        dtime: 0,
        ctime: secs(now) - 5,
        rss: 0,
        swap: 0,
    }
}

fn mapping(pid: u32, shmid: i32, start: u64, end: u64, offset: u64) -> ShmMapping {
    ShmMapping {
        pid,
        shmid,
        key: 0,
        start,
        end,
        offset,
        writable: true,
    }
}

// ----- bootstrap and reconcile -----

#[test]
fn bootstrap_creator_rule_and_orphans() {
    let mut s = Sim::new();
    let mut sn = snap(s.now);
    // 1 alive, started before ctime: creator. 2 zombie: creator, dead. 3 started after the
    // segment's ctime (pid reuse): unknown.
    let late = ProcessKey {
        pid: 3,
        start_ticks: 2_000_000,
    };
    sn.processes = vec![
        pinfo(1, 'S'),
        pinfo(2, 'Z'),
        ProcessInfo {
            key: late,
            ..pinfo(3, 'S')
        },
    ];
    sn.shm = vec![
        seg(10, 0x10, 0o600, PAGE, 1, 0, s.now),
        seg(11, 0x11, 0o600, PAGE, 2, 0, s.now),
        seg(12, 0x12, 0o600, PAGE, 3, 0, s.now),
        seg(13, 0x13, 0o600, 2 * PAGE, 9, 1, s.now),
    ];
    sn.mappings = vec![mapping(1, 13, A, A + 2 * PAGE, 0)];
    s.m.bootstrap(&sn);
    let creator = |s: &Sim, id| {
        s.m.object(NS, IpcType::Shm, id)
            .unwrap()
            .creator
            .map(|c| c.entity)
    };
    assert_eq!(creator(&s, 10), Some(pk(1)));
    assert_eq!(creator(&s, 11), Some(pk(2)));
    assert_eq!(creator(&s, 12), None);
    assert_eq!(creator(&s, 13), None);
    assert_eq!(s.nattch(13), 1);
    assert_eq!(s.ranges(1), vec![(A, A + 2 * PAGE, 0)]);
    // The first tick: segment 11 (dead creator) and 12 (unknown creator) were idle long before.
    let ch = s.advance(61);
    let mut ids: Vec<i32> = ch
        .iter()
        .filter(|c| c.is_raised() && c.finding().rule == Rule::OrphanedSegment)
        .map(|c| c.finding().object.unwrap().id)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![11, 12]);
    let f = s
        .active(Rule::OrphanedSegment)
        .into_iter()
        .find(|f| f.object.unwrap().id == 12)
        .unwrap()
        .clone();
    assert!(
        f.evidence
            .iter()
            .any(|e| e.role == Role::Creator && e.pid == 3 && e.entity.is_none())
    );
}

#[test]
fn reconcile_corrects_and_is_idempotent() {
    let mut s = Sim::new();
    s.m.bootstrap(&snap(s.now));
    s.shmget(1, 0x10, 4 * PAGE, IPC_CREAT | 0o600, 5);
    s.shmat(1, 5, A);
    s.shmget(1, 0x11, PAGE, IPC_CREAT | 0o600, 6);
    s.semget(1, 0x20, 2, IPC_CREAT | 0o600, 3);
    s.semctl(1, 3, 0, 16, 1);
    s.msgget(1, 0x30, IPC_CREAT | 0o600, 4);
    s.msgsnd(1, 4, 10);
    s.fork(1, 2);
    // The kernel: 2 vanished (missed exit), 1 mprotect-split its attachment (and a process
    // outside the namespace attached segment 5 too), segment 6 is gone,
    // segment 8 appeared, the semaphore was changed by someone unseen, the queue has 3
    // messages.
    let mut sn = snap(s.now + SEC);
    sn.processes = vec![pinfo(1, 'S')];
    sn.shm = vec![
        seg(5, 0x10, 0o600, 4 * PAGE, 1, 3, s.now),
        seg(8, 0x18, 0o600, PAGE, 1, 0, s.now),
    ];
    sn.mappings = vec![
        mapping(1, 5, A, A + PAGE, 0),
        mapping(1, 5, A + PAGE, A + 4 * PAGE, PAGE),
    ];
    sn.sem = vec![SemSet {
        perm: perm(3, 0x20, 0o600),
        nsems: 2,
        otime: 0,
        ctime: secs(T0),
    }];
    sn.sem_values = vec![(
        3,
        vec![
            SemValue {
                value: 0,
                ncnt: 0,
                zcnt: 0,
                pid: 1,
            },
            SemValue {
                value: 0,
                ncnt: 0,
                zcnt: 0,
                pid: 0,
            },
        ],
    )];
    sn.msg = vec![MsgQueue {
        perm: perm(4, 0x30, 0o600),
        cbytes: 30,
        qnum: 3,
        lspid: 1,
        lrpid: 0,
        stime: 0,
        rtime: 0,
        ctime: secs(T0),
    }];
    let r = s.m.reconcile(&sn);
    let has = |f: &dyn Fn(&Difference) -> bool| r.differences.iter().any(f);
    assert!(has(
        &|d| matches!(d, Difference::ProcessVanished { process } if *process == pk(2))
    ));
    assert!(has(
        &|d| matches!(d, Difference::ObjectVanished { object, .. } if object.id == 6)
    ));
    assert!(has(
        &|d| matches!(d, Difference::ObjectAppeared { object } if object.id == 8)
    ));
    assert!(has(
        &|d| matches!(d, Difference::Nattch { object, model: 2, kernel: 3 } if object.id == 5)
    ));
    assert!(has(
        &|d| matches!(d, Difference::Mappings { object, .. } if object.id == 5)
    ));
    assert!(has(&|d| matches!(
        d,
        Difference::SemValue {
            semnum: 0,
            model: 1,
            kernel: 0,
            ..
        }
    )));
    assert!(has(&|d| matches!(
        d,
        Difference::QueueDepth {
            model_messages: 1,
            kernel_messages: 3,
            ..
        }
    )));
    assert_eq!(s.nattch(5), 3);
    assert_eq!(s.status(IpcType::Shm, 6), Some(ObjectStatus::Destroyed));
    assert!(!s.m.process(pk(2)).unwrap().alive);
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"kind\":\"nattch\""));
    // The same snapshot again: nothing differs.
    let r2 = s.m.reconcile(&sn);
    assert_eq!(r2.differences, vec![]);
    assert!(r2.findings.is_empty());
    // shmdt at A detaches both fragments the kernel reported; the outside one stays.
    s.shmdt(1, A);
    assert_eq!(s.nattch(5), 1);
}

#[test]
fn reconcile_sees_rmid_and_unknown_holders() {
    let mut s = Sim::new();
    s.m.bootstrap(&snap(s.now));
    s.shmget(1, 0x10, PAGE, IPC_CREAT | 0o600, 5);
    // The kernel: removed and attached by something outside the namespace.
    let mut sn = snap(s.now);
    sn.processes = vec![pinfo(1, 'S')];
    sn.shm = vec![seg(5, 0, 0o600 | SHM_DEST, PAGE, 1, 1, s.now)];
    let r = s.m.reconcile(&sn);
    assert!(
        r.differences
            .iter()
            .any(|d| matches!(d, Difference::Status { .. }))
    );
    assert!(r.differences.iter().any(|d| matches!(
        d,
        Difference::Nattch {
            model: 0,
            kernel: 1,
            ..
        }
    )));
    assert_eq!(
        s.status(IpcType::Shm, 5),
        Some(ObjectStatus::RemovedPendingDestroy)
    );
    assert_eq!(s.nattch(5), 1);
    assert!(s.m.reconcile(&sn).differences.is_empty());
    // Unknown holders keep it pinned: removed-segment-still-attached after grace.
    assert_eq!(raised(&s.advance(61), Rule::RemovedSegmentStillAttached), 1);
    // The kernel destroyed it: vanished, cleared.
    let mut sn2 = snap(s.now);
    sn2.processes = vec![pinfo(1, 'S')];
    let r = s.m.reconcile(&sn2);
    assert!(
        r.differences
            .iter()
            .any(|d| matches!(d, Difference::ObjectVanished { .. }))
    );
    assert_eq!(cleared(&r.findings, Rule::RemovedSegmentStillAttached), 1);
}

#[test]
fn reconcile_resurrects_and_replaces_reused_ids() {
    let mut s = Sim::new();
    s.m.bootstrap(&snap(s.now));
    s.shmget(1, 0x10, PAGE, IPC_CREAT | 0o600, 5);
    s.exit(2);
    let mut sn = snap(s.now);
    sn.processes = vec![pinfo(1, 'S'), pinfo(2, 'S')];
    // Same id, other key and size: another object.
    sn.shm = vec![seg(5, 0x99, 0o600, 2 * PAGE, 1, 0, s.now)];
    let r = s.m.reconcile(&sn);
    assert!(
        r.differences
            .iter()
            .any(|d| matches!(d, Difference::ProcessRevived { process } if *process == pk(2)))
    );
    assert!(
        r.differences
            .iter()
            .any(|d| matches!(d, Difference::ObjectVanished { .. }))
    );
    assert!(
        r.differences
            .iter()
            .any(|d| matches!(d, Difference::ObjectAppeared { .. }))
    );
    assert!(s.m.process(pk(2)).unwrap().alive);
    assert_eq!(
        s.m.object(NS, IpcType::Shm, 5).unwrap().object.size,
        Some(2 * PAGE)
    );
    assert!(s.m.reconcile(&sn).differences.is_empty());
}

#[test]
fn bootstrap_findings_come_out_of_the_next_tick() {
    let mut s = Sim::new();
    let mut sn = snap(s.now);
    sn.shm = vec![seg(5, 0x10, 0o666, PAGE, 1, 0, s.now)];
    s.m.bootstrap(&sn);
    let ch = s.advance(1);
    assert_eq!(raised(&ch, Rule::WorldAccessible), 1);
}

#[test]
fn dead_processes_are_forgotten_unless_referenced() {
    let mut s = Sim::new();
    s.shmget(1, 0x10, PAGE, IPC_CREAT | 0o600, 5);
    for pid in 10..20 {
        s.fork(1, pid);
        s.exit(pid);
    }
    s.exit(1);
    s.advance(61);
    s.advance(61);
    // The creator is kept (the segment and its finding name it); the others went.
    assert!(s.m.process(pk(1)).is_some());
    assert!(s.m.process(pk(10)).is_none());
    assert_eq!(s.active(Rule::OrphanedSegment).len(), 1);
    // Destroyed objects are forgotten after the grace period.
    s.shmctl(2, 5, 0);
    s.advance(61);
    s.advance(61);
    assert!(s.m.object(NS, IpcType::Shm, 5).is_none());
    assert!(s.m.process(pk(1)).is_none());
}

#[test]
fn caps_evict_idle_processes_and_destroyed_objects_never_holders() {
    let mut s = Sim::with(ModelConfig {
        max_processes: 16,
        max_objects: 8,
        ..cfg()
    });
    // A holder: attached to a segment it created; it must survive every eviction.
    s.shmget(1, 0x10, PAGE, IPC_CREAT | 0o600, 5);
    s.shmat(1, 5, A);
    for pid in 100..200 {
        s.fork(1, pid);
        s.ev(
            pid,
            EventKind::Exec {
                filename: "/bin/true".into(),
                old_tid: pid,
            },
        );
        // The child inherited the attachment and dropped it at exec: it holds nothing.
        s.exit(pid);
    }
    let (processes, _) = s.m.tracked();
    assert!(processes <= 16, "{processes} processes tracked");
    assert!(s.m.evicted().processes >= 84, "{:?}", s.m.evicted());
    assert!(s.m.process(pk(1)).is_some_and(|p| p.alive));
    // Destroyed objects go, oldest first; the live one stays.
    for id in 10..40 {
        s.shmget(1, 0, PAGE, IPC_CREAT | 0o600, id);
        s.shmctl(1, id, 0);
    }
    let (_, objects) = s.m.tracked();
    assert!(objects <= 8, "{objects} objects tracked");
    assert!(s.m.evicted().objects >= 22, "{:?}", s.m.evicted());
    assert!(s.m.object(NS, IpcType::Shm, 5).is_some());
    assert!(s.m.object(NS, IpcType::Shm, 39).is_some());
    assert!(s.m.object(NS, IpcType::Shm, 10).is_none());
    // Nothing the caps dropped was needed: the holder still holds, and its death is seen.
    s.exit(1);
    s.advance(61);
    assert_eq!(s.active(Rule::OrphanedSegment).len(), 1);
}

#[test]
fn views_serialize() {
    let mut s = Sim::new();
    s.shmget(1, 0x10, PAGE, IPC_CREAT | 0o600, 5);
    s.shmat(1, 5, A);
    s.semget(1, 0x20, 1, IPC_CREAT | 0o600, 3);
    s.semop(1, 3, &[(0, 1, 0)]);
    s.msgget(1, 0x30, IPC_CREAT | 0o666, 4);
    s.msgsnd(1, 4, 5);
    for v in s.m.objects() {
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["id"], v.object.id);
        assert_eq!(j["status"], "live");
    }
    for p in s.m.processes() {
        serde_json::to_string(&p).unwrap();
    }
    let f = serde_json::to_value(s.m.findings().next().unwrap()).unwrap();
    assert_eq!(f["rule"], "world-accessible");
    assert_eq!(Rule::parse("stalled-queue"), Some(Rule::StalledQueue));
    for r in Rule::ALL {
        assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        assert!(!r.description().is_empty());
    }
}

/// A snapshot that says exactly what the model believes (for reconcile round trips).
pub(super) fn snapshot_of(m: &Model, now: u64) -> Snapshot {
    let mut sn = snap(now);
    for p in m.processes().filter(|p| p.alive && p.ipc_ns == NS) {
        sn.processes.push(ProcessInfo {
            key: p.entity,
            ppid: 1,
            comm: p.comm.to_owned(),
            uid: p.uid,
            state: 'S',
            ipc_ns: NS,
        });
        for a in &p.attachments {
            sn.mappings
                .push(mapping(p.pid, a.object.id, a.start, a.end, a.offset));
        }
    }
    for v in m
        .objects()
        .filter(|v| v.status != ObjectStatus::Destroyed && v.object.ns == NS)
    {
        let mode = v.mode.unwrap_or(0o600)
            | if v.status == ObjectStatus::RemovedPendingDestroy {
                SHM_DEST
            } else {
                0
            };
        let p = perm(v.object.id, v.object.key.unwrap_or(0), mode);
        let p = IpcPerm {
            uid: v.owner_uid.unwrap_or(1000),
            ..p
        };
        match v.object.ty {
            IpcType::Shm => sn.shm.push(ShmSegment {
                perm: p,
                size: v.object.size.unwrap_or(PAGE),
                cpid: v.creator_pid.unwrap_or(0),
                lpid: 0,
                nattch: v.nattch(),
                atime: 0,
                dtime: 0,
                ctime: secs(now),
                rss: 0,
                swap: 0,
            }),
            IpcType::Sem => {
                let sem = v.sem.as_ref().unwrap();
                let values: Vec<SemValue> = sem
                    .values
                    .iter()
                    .map(|s| SemValue {
                        value: s.value.unwrap_or(0),
                        ncnt: s.ncnt,
                        zcnt: s.zcnt,
                        pid: s.pid,
                    })
                    .collect();
                let nsems = sem.nsems.unwrap_or(u32::try_from(values.len()).unwrap());
                sn.sem.push(SemSet {
                    perm: p,
                    nsems,
                    otime: 0,
                    ctime: secs(now),
                });
                sn.sem_values.push((v.object.id, values));
            }
            IpcType::Msg => {
                let q = v.msg.as_ref().unwrap();
                sn.msg.push(MsgQueue {
                    perm: p,
                    cbytes: q.bytes,
                    qnum: q.messages,
                    lspid: 0,
                    lrpid: 0,
                    stime: 0,
                    rtime: 0,
                    ctime: secs(now),
                });
            }
        }
    }
    sn
}

#[test]
fn reconcile_reports_a_stale_key_holder_as_vanished() {
    let mut s = Sim::new();
    s.m.bootstrap(&snap(s.now));
    s.shmget(1, 0x10, PAGE, IPC_CREAT | 0o600, 1);
    // Missed: id 1 was removed and the key now names id 2.
    let mut sn = snap(s.now);
    sn.processes = vec![pinfo(1, 'S')];
    sn.shm = vec![seg(2, 0x10, 0o600, PAGE, 1, 0, s.now)];
    let r = s.m.reconcile(&sn);
    assert!(
        r.differences
            .iter()
            .any(|d| matches!(d, Difference::ObjectVanished { object, .. } if object.id == 1))
    );
    assert!(
        r.differences
            .iter()
            .any(|d| matches!(d, Difference::ObjectAppeared { object } if object.id == 2))
    );
    assert_eq!(s.status(IpcType::Shm, 1), Some(ObjectStatus::Destroyed));
    // A get of the key now opens id 2.
    assert_eq!(
        s.shmget(3, 0x10, PAGE, IPC_CREAT | 0o600, 2).action,
        Some(Action::ShmOpen)
    );
}
