//! Property tests: random sequences of process and IPC events, checked against invariants and
//! against a deliberately simple reference model that keeps mappings page by page.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;

use crate::event::{Action, Errno, EventKind, IpcType};

use super::tests::{IPC_CREAT, NS, PAGE, Sim, pk};
use super::{Model, ObjectStatus};

/// Address slots, far apart: attaches in different slots never overlap.
fn slot(n: u8) -> u64 {
    0x1000_0000 + u64::from(n) * 0x10_0000
}

#[derive(Clone, Debug)]
enum Op {
    Create {
        pages: u64,
    },
    Attach {
        proc: usize,
        seg: usize,
        slot: u8,
    },
    AttachFails {
        proc: usize,
        seg: usize,
    },
    Detach {
        proc: usize,
        slot: u8,
        page: u64,
    },
    Munmap {
        proc: usize,
        slot: u8,
        page: u64,
        pages: u64,
    },
    Mremap {
        proc: usize,
        pick: usize,
        from: u64,
        len: u64,
        new_len: u64,
        kind: u8,
        slot: u8,
        page: u64,
    },
    Fork {
        proc: usize,
    },
    Exec {
        proc: usize,
    },
    Exit {
        proc: usize,
    },
    Rmid {
        seg: usize,
    },
    Semop {
        proc: usize,
        num: u16,
        op: i16,
        undo: bool,
    },
    MsgSnd {
        proc: usize,
        size: u64,
    },
    MsgRcv {
        proc: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0usize..8;
    prop_oneof![
        1 => (1u64..=4).prop_map(|pages| Op::Create { pages }),
        4 => (p.clone(), 0usize..4, 0u8..6).prop_map(|(proc, seg, slot)| Op::Attach { proc, seg, slot }),
        1 => (p.clone(), 0usize..4).prop_map(|(proc, seg)| Op::AttachFails { proc, seg }),
        2 => (p.clone(), 0u8..8, 0u64..3).prop_map(|(proc, slot, page)| Op::Detach { proc, slot, page }),
        3 => (p.clone(), 0u8..8, 0u64..5, 1u64..4)
            .prop_map(|(proc, slot, page, pages)| Op::Munmap { proc, slot, page, pages }),
        3 => (p.clone(), 0usize..16, 0u64..4, 1u64..4, 1u64..5, 0u8..4, 0u8..8, 0u64..4).prop_map(
            |(proc, pick, from, len, new_len, kind, slot, page)| Op::Mremap {
                proc, pick, from, len, new_len, kind, slot, page
            }
        ),
        2 => p.clone().prop_map(|proc| Op::Fork { proc }),
        1 => p.clone().prop_map(|proc| Op::Exec { proc }),
        1 => p.clone().prop_map(|proc| Op::Exit { proc }),
        1 => (0usize..4).prop_map(|seg| Op::Rmid { seg }),
        2 => (p.clone(), 0u16..2, -2i16..=2, any::<bool>())
            .prop_map(|(proc, num, op, undo)| Op::Semop { proc, num, op, undo }),
        1 => (p.clone(), 1u64..100).prop_map(|(proc, size)| Op::MsgSnd { proc, size }),
        1 => p.prop_map(|proc| Op::MsgRcv { proc }),
    ]
}

/// One mapped page: segment id, offset in pages, attach.
type PageMap = BTreeMap<(u32, u64), (i32, u64, u64)>;

#[derive(Default)]
struct RefSeg {
    pages: u64,
    removed: bool,
    destroyed: bool,
}

/// The reference: pages, segments, processes, a semaphore set and a queue.
#[derive(Default)]
struct Reference {
    pages: PageMap,
    segs: BTreeMap<i32, RefSeg>,
    procs: Vec<(u32, bool)>,
    next_attach: u64,
    sem: [i64; 2],
    undo: BTreeMap<(u32, u16), i64>,
    queue: VecDeque<u64>,
}

impl Reference {
    fn seg_mapped(&self, id: i32) -> bool {
        self.pages.values().any(|(s, _, _)| *s == id)
    }

    fn unmap(&mut self, pid: u32, start: u64, end: u64) {
        let keys: Vec<(u32, u64)> = self
            .pages
            .range((pid, start)..(pid, end))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.pages.remove(&k);
        }
    }

    fn drop_all(&mut self, pid: u32) {
        self.unmap(pid, 0, u64::MAX);
    }

    /// The run of pages (same attach, contiguous, consecutive offsets) containing `addr`.
    fn run(&self, pid: u32, addr: u64) -> Option<(u64, u64)> {
        let &(seg, off, att) = self.pages.get(&(pid, addr))?;
        let (mut lo, mut lo_off) = (addr, off);
        while lo >= PAGE
            && lo_off > 0
            && self.pages.get(&(pid, lo - PAGE)) == Some(&(seg, lo_off - 1, att))
        {
            lo -= PAGE;
            lo_off -= 1;
        }
        let (mut hi, mut hi_off) = (addr + PAGE, off + 1);
        while self.pages.get(&(pid, hi)) == Some(&(seg, hi_off, att)) {
            hi += PAGE;
            hi_off += 1;
        }
        Some((lo, hi))
    }

    /// Maximal runs of one segment over all processes.
    fn runs(&self, id: i32) -> usize {
        self.pages
            .iter()
            .filter(|((pid, a), (s, off, att))| {
                *s == id
                    && !(*a >= PAGE
                        && *off > 0
                        && self.pages.get(&(*pid, a - PAGE)) == Some(&(id, off - 1, *att)))
            })
            .count()
    }
}

struct Run {
    sim: Sim,
    r: Reference,
    next_pid: u32,
    next_id: i32,
    semid: i32,
    msqid: i32,
    destroyed_seen: BTreeSet<i32>,
}

impl Run {
    fn new() -> Self {
        let mut sim = Sim::new();
        let mut r = Reference {
            procs: vec![(1, true), (2, true), (3, true)],
            ..Reference::default()
        };
        for (pid, _) in &r.procs {
            sim.fork(100, *pid);
        }
        sim.semget(1, 0x5e, 2, IPC_CREAT | 0o600, 1000);
        sim.semctl(1, 1000, 0, 16, 1);
        sim.semctl(1, 1000, 1, 16, 1);
        r.sem = [1, 1];
        sim.msgget(1, 0x5f, IPC_CREAT | 0o600, 1001);
        Self {
            sim,
            r,
            next_pid: 10,
            next_id: 0,
            semid: 1000,
            msqid: 1001,
            destroyed_seen: BTreeSet::new(),
        }
    }

    fn proc(&self, i: usize) -> Option<u32> {
        let (pid, alive) = self.r.procs.get(i % self.r.procs.len())?;
        alive.then_some(*pid)
    }

    fn seg(&self, i: usize) -> Option<i32> {
        if self.r.segs.is_empty() {
            return None;
        }
        self.r.segs.keys().nth(i % self.r.segs.len()).copied()
    }

    #[expect(
        clippy::too_many_lines,
        reason = "the generated operations, each with its reference semantics"
    )]
    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let applied = match *op {
            Op::Create { pages } => {
                let id = self.next_id;
                self.next_id += 1;
                self.r.segs.insert(
                    id,
                    RefSeg {
                        pages,
                        ..RefSeg::default()
                    },
                );
                Some(self.sim.shmget(1, 0, pages * PAGE, IPC_CREAT | 0o600, id))
            }
            Op::Attach { proc, seg, slot: s } => {
                let (Some(pid), Some(id)) = (self.proc(proc), self.seg(seg)) else {
                    return Ok(());
                };
                if self.r.segs[&id].destroyed {
                    return Ok(());
                }
                let pages = self.r.segs[&id].pages;
                let a = slot(s);
                self.r.unmap(pid, a, a + pages * PAGE);
                let att = self.r.next_attach;
                self.r.next_attach += 1;
                for i in 0..pages {
                    self.r.pages.insert((pid, a + i * PAGE), (id, i, att));
                }
                Some(self.sim.shmat(pid, id, a))
            }
            Op::AttachFails { proc, seg } => {
                let (Some(pid), Some(id)) = (self.proc(proc), self.seg(seg)) else {
                    return Ok(());
                };
                let kind = EventKind::ShmAt {
                    shmid: id,
                    addr: 0,
                    flags: 0,
                    result: Err(Errno(22)),
                };
                Some(self.sim.ev(pid, kind))
            }
            Op::Detach {
                proc,
                slot: s,
                page,
            } => {
                let Some(pid) = self.proc(proc) else {
                    return Ok(());
                };
                let addr = slot(s) + page * PAGE;
                let first = self
                    .r
                    .pages
                    .range((pid, addr)..(pid, u64::MAX))
                    .find(|((_, q), (_, off, _))| q - addr == off * PAGE)
                    .map(|(_, v)| *v);
                match first {
                    Some((_, _, att)) => {
                        let gone: Vec<(u32, u64)> = self
                            .r
                            .pages
                            .range((pid, addr)..(pid, u64::MAX))
                            .filter(|((_, q), (_, off, a))| *a == att && q - addr == off * PAGE)
                            .map(|(k, _)| *k)
                            .collect();
                        for k in gone {
                            self.r.pages.remove(&k);
                        }
                        Some(self.sim.shmdt(pid, addr))
                    }
                    // The kernel says EINVAL.
                    None => Some(self.sim.ev(
                        pid,
                        EventKind::ShmDt {
                            addr,
                            result: Err(Errno(22)),
                        },
                    )),
                }
            }
            Op::Munmap {
                proc,
                slot: s,
                page,
                pages,
            } => {
                let Some(pid) = self.proc(proc) else {
                    return Ok(());
                };
                let a = slot(s) + page * PAGE;
                self.r.unmap(pid, a, a + pages * PAGE);
                Some(self.sim.munmap(pid, a, pages * PAGE))
            }
            Op::Mremap {
                proc,
                pick,
                from,
                len,
                new_len,
                kind,
                slot: s,
                page,
            } => {
                let Some(pid) = self.proc(proc) else {
                    return Ok(());
                };
                self.mremap(pid, pick, from, len, new_len, kind, slot(s) + page * PAGE)
            }
            Op::Fork { proc } => {
                let Some(pid) = self.proc(proc) else {
                    return Ok(());
                };
                let child = self.next_pid;
                self.next_pid += 1;
                let copied: Vec<(u64, (i32, u64, u64))> = self
                    .r
                    .pages
                    .range((pid, 0)..(pid, u64::MAX))
                    .map(|((_, a), v)| (*a, *v))
                    .collect();
                for (a, v) in copied {
                    self.r.pages.insert((child, a), v);
                }
                self.r.procs.push((child, true));
                Some(self.sim.fork(pid, child))
            }
            Op::Exec { proc } => {
                let Some(pid) = self.proc(proc) else {
                    return Ok(());
                };
                self.r.drop_all(pid);
                Some(self.sim.exec(pid, "/bin/x"))
            }
            Op::Exit { proc } => {
                let Some(pid) = self.proc(proc) else {
                    return Ok(());
                };
                self.r.drop_all(pid);
                for p in &mut self.r.procs {
                    if p.0 == pid {
                        p.1 = false;
                    }
                }
                for num in 0..2u16 {
                    if let Some(u) = self.r.undo.remove(&(pid, num)) {
                        let i = usize::from(num);
                        self.r.sem[i] = (self.r.sem[i] - u).clamp(0, 32_767);
                    }
                }
                Some(self.sim.exit(pid))
            }
            Op::Rmid { seg } => {
                let Some(id) = self.seg(seg) else {
                    return Ok(());
                };
                let s = self.r.segs.get_mut(&id).expect("seg");
                if s.destroyed {
                    return Ok(());
                }
                s.removed = true;
                Some(self.sim.shmctl(1, id, 0))
            }
            Op::Semop {
                proc,
                num,
                op,
                undo,
            } => {
                let Some(pid) = self.proc(proc) else {
                    return Ok(());
                };
                let i = usize::from(num);
                if self.r.sem[i] + i64::from(op) < 0 {
                    return Ok(()); // would block
                }
                self.r.sem[i] += i64::from(op);
                if undo {
                    *self.r.undo.entry((pid, num)).or_default() += i64::from(op);
                }
                let flags = if undo {
                    crate::event::SemOp::SEM_UNDO
                } else {
                    0
                };
                Some(self.sim.semop(pid, self.semid, &[(num, op, flags)]))
            }
            Op::MsgSnd { proc, size } => {
                let Some(pid) = self.proc(proc) else {
                    return Ok(());
                };
                self.r.queue.push_back(size);
                Some(self.sim.msgsnd(pid, self.msqid, size))
            }
            Op::MsgRcv { proc } => {
                let Some(pid) = self.proc(proc) else {
                    return Ok(());
                };
                let Some(size) = self.r.queue.pop_front() else {
                    return Ok(());
                };
                Some(self.sim.msgrcv(pid, self.msqid, size))
            }
        };
        // Removed segments that lost their last page are destroyed by this very event.
        let mut expect: BTreeSet<i32> = BTreeSet::new();
        let ids: Vec<i32> = self.r.segs.keys().copied().collect();
        for id in ids {
            let mapped = self.r.seg_mapped(id);
            let s = self.r.segs.get_mut(&id).expect("seg");
            if s.removed && !s.destroyed && !mapped {
                s.destroyed = true;
                expect.insert(id);
            }
        }
        let got: Vec<i32> = applied
            .iter()
            .flat_map(|a| a.derived.iter())
            .filter(|(a, _)| *a == Action::ShmDestroy)
            .map(|(_, o)| o.id)
            .collect();
        let got_set: BTreeSet<i32> = got.iter().copied().collect();
        prop_assert_eq!(
            got.len(),
            got_set.len(),
            "a destroy reported twice in one event"
        );
        prop_assert_eq!(&got_set, &expect, "ShmDestroy after {:?}", op);
        for id in &got_set {
            prop_assert!(
                self.destroyed_seen.insert(*id),
                "segment {} destroyed twice",
                id
            );
        }
        self.check()
    }

    #[expect(clippy::too_many_arguments, reason = "the generated mremap parameters")]
    fn mremap(
        &mut self,
        pid: u32,
        pick: usize,
        from: u64,
        len: u64,
        new_len: u64,
        kind: u8,
        target: u64,
    ) -> Option<super::Applied> {
        // A mapped page of the process, and the run around it.
        let mine: Vec<u64> = self
            .r
            .pages
            .range((pid, 0)..(pid, u64::MAX))
            .map(|((_, a), _)| *a)
            .collect();
        let at = *mine.get(pick % mine.len().max(1))?;
        let (lo, hi) = self.r.run(pid, at)?;
        let old = (lo + from * PAGE).min(hi - PAGE);
        let len = len.min((hi - old) / PAGE);
        let (seg, off, att) = self.r.pages[&(pid, old)];
        let seg_pages = self.r.segs[&seg].pages;
        let free = |r: &Reference, a: u64, n: u64| {
            r.pages
                .range((pid, a)..(pid, a + n * PAGE))
                .next()
                .is_none()
        };
        // kind 0: shrink in place; 1: grow in place; 2: move (FIXED); 3: DONTUNMAP.
        let (new_len, flags, result) = match kind {
            0 => (new_len.min(len.saturating_sub(1)), 0, old),
            1 => {
                let grow = new_len.min(seg_pages.saturating_sub(off + len));
                if grow == 0 || old + len * PAGE != hi || !free(&self.r, hi, grow) {
                    return None;
                }
                (len + grow, 1, old)
            }
            2 => {
                let n = new_len.min(len).max(1);
                if target < old + len * PAGE && old < target + n * PAGE {
                    return None;
                }
                (n, 3, target)
            }
            _ => {
                if !free(&self.r, target, len)
                    || (target < old + len * PAGE && old < target + len * PAGE)
                {
                    return None;
                }
                (len, 1 | 4, target)
            }
        };
        if new_len == 0 {
            return None;
        }
        // Page semantics.
        let keep = len.min(new_len);
        let mut moved: Vec<(u64, (i32, u64, u64))> = (0..keep)
            .filter_map(|i| {
                self.r
                    .pages
                    .get(&(pid, old + i * PAGE))
                    .map(|v| (result + i * PAGE, *v))
            })
            .collect();
        if new_len > len {
            for i in len..new_len {
                moved.push((result + i * PAGE, (seg, off + i, att)));
            }
        }
        if flags & 4 == 0 {
            self.r.unmap(pid, old, old + len * PAGE);
        }
        self.r.unmap(pid, result, result + new_len * PAGE);
        for (a, v) in moved {
            self.r.pages.insert((pid, a), v);
        }
        Some(
            self.sim
                .mremap(pid, old, len * PAGE, new_len * PAGE, flags, result),
        )
    }

    /// The model agrees with the reference; the invariants hold.
    fn check(&self) -> Result<(), TestCaseError> {
        let m: &Model = &self.sim.m;
        // Pages, from the model's ranges.
        let mut pages: BTreeMap<(u32, u64), (i32, u64)> = BTreeMap::new();
        for p in m.processes() {
            for r in &p.attachments {
                prop_assert!(p.alive, "dead process {} holds an attachment", p.pid);
                prop_assert!(r.start < r.end);
                let mut addr = r.start;
                while addr < r.end {
                    pages.insert(
                        (p.pid, addr),
                        (r.object.id, (r.offset + (addr - r.start)) / PAGE),
                    );
                    addr += PAGE;
                }
            }
        }
        let want: BTreeMap<(u32, u64), (i32, u64)> = self
            .r
            .pages
            .iter()
            .map(|(k, (s, o, _))| (*k, (*s, *o)))
            .collect();
        prop_assert_eq!(&pages, &want);
        for (id, s) in &self.r.segs {
            let v = m.object(NS, IpcType::Shm, *id).expect("segment known");
            let nattch = v.nattch();
            let npages = want.values().filter(|(x, _)| x == id).count();
            let runs = self.r.runs(*id);
            prop_assert!(
                runs as u64 <= nattch && nattch <= npages as u64,
                "seg {id}: runs {runs} nattch {nattch} pages {npages}"
            );
            let status = match (s.removed, s.destroyed) {
                (_, true) => ObjectStatus::Destroyed,
                (true, false) => ObjectStatus::RemovedPendingDestroy,
                _ => ObjectStatus::Live,
            };
            prop_assert_eq!(v.status, status, "segment {}", id);
            if s.destroyed {
                prop_assert_eq!(nattch, 0);
                prop_assert!(v.shm.as_ref().is_some_and(|x| x.attachments.is_empty()));
            }
        }
        let sem = m.object(NS, IpcType::Sem, self.semid).expect("set");
        let values: Vec<Option<i32>> = sem
            .sem
            .as_ref()
            .expect("sem")
            .values
            .iter()
            .map(|s| s.value)
            .collect();
        let want: Vec<Option<i32>> = self.r.sem.iter().map(|v| i32::try_from(*v).ok()).collect();
        prop_assert_eq!(values, want);
        let q = m.object(NS, IpcType::Msg, self.msqid).expect("queue");
        let q = q.msg.as_ref().expect("msg");
        prop_assert_eq!(q.messages, self.r.queue.len() as u64);
        prop_assert_eq!(q.bytes, self.r.queue.iter().sum::<u64>());
        prop_assert!(!q.depth_uncertain);
        for p in &self.r.procs {
            prop_assert_eq!(m.process(pk(p.0)).map(|v| v.alive), Some(p.1));
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn model_matches_reference(ops in prop::collection::vec(op(), 1..80)) {
        let mut run = Run::new();
        for op in &ops {
            run.step(op)?;
        }
        // Everything dies: no attachment survives, every removed segment got destroyed once.
        let pids: Vec<usize> = (0..run.r.procs.len()).collect();
        for i in pids {
            run.step(&Op::Exit { proc: i })?;
        }
        let ids: Vec<i32> = run.r.segs.keys().copied().collect();
        for (i, _) in ids.iter().enumerate() {
            run.step(&Op::Rmid { seg: i })?;
        }
        prop_assert_eq!(run.destroyed_seen.len(), run.r.segs.len());
    }

    /// Reconciling with a snapshot made from the model's own state changes nothing, and a
    /// reconcile right after a reconcile reports nothing.
    #[test]
    fn reconcile_twice_reports_nothing_the_second_time(ops in prop::collection::vec(op(), 1..60)) {
        let mut run = Run::new();
        for op in &ops {
            run.step(op)?;
        }
        let snap = super::tests::snapshot_of(&run.sim.m, run.sim.now);
        let first = run.sim.m.reconcile(&snap);
        prop_assert_eq!(first.differences, vec![]);
        let again = run.sim.m.reconcile(&snap);
        prop_assert_eq!(again.differences, vec![]);
        run.check()?;
    }
}

// ----- robustness: arbitrary input never panics -----

fn sys<T: std::fmt::Debug + Clone + 'static>(
    ok: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<crate::event::SysResult<T>> {
    prop_oneof![3 => ok.prop_map(Ok), 1 => (1i32..140).prop_map(|e| Err(Errno(e)))].boxed()
}

fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => (0u64..8, 0u64..6).prop_map(|(s, p)| slot(u8::try_from(s).unwrap_or(0)) + p * PAGE),
        1 => any::<u64>(),
        1 => Just(u64::MAX - 1),
    ]
}

fn len() -> impl Strategy<Value = u64> {
    prop_oneof![3 => (0u64..6).prop_map(|p| p * PAGE), 1 => any::<u64>(), 1 => 0u64..5000]
}

#[expect(clippy::too_many_lines, reason = "one strategy per event kind")]
fn any_kind() -> impl Strategy<Value = EventKind> {
    let id = prop_oneof![4 => -1i32..6, 1 => any::<i32>()];
    let cmd =
        prop_oneof![4 => 0i32..22, 1 => (0i32..22).prop_map(|c| c | 0x100), 1 => any::<i32>()];
    let ops = prop::collection::vec(
        (
            prop_oneof![3 => 0u16..3, 1 => 0u16..300],
            any::<i16>(),
            any::<i16>(),
        )
            .prop_map(|(num, op, flags)| crate::event::SemOp { num, op, flags }),
        0..4,
    );
    prop_oneof![
        (id.clone(), len(), any::<i32>(), sys(id.clone())).prop_map(
            |(key, size, flags, result)| EventKind::ShmGet {
                key,
                size,
                flags,
                result
            }
        ),
        (id.clone(), addr(), any::<i32>(), sys(addr())).prop_map(|(shmid, addr, flags, result)| {
            EventKind::ShmAt {
                shmid,
                addr,
                flags,
                result,
            }
        }),
        (addr(), sys(Just(()))).prop_map(|(addr, result)| EventKind::ShmDt { addr, result }),
        (id.clone(), cmd.clone(), sys(any::<i64>()))
            .prop_map(|(shmid, cmd, result)| EventKind::ShmCtl { shmid, cmd, result }),
        (id.clone(), any::<i32>(), any::<i32>(), sys(id.clone())).prop_map(
            |(key, nsems, flags, result)| EventKind::SemGet {
                key,
                nsems,
                flags,
                result
            }
        ),
        (id.clone(), ops, any::<u32>(), sys(Just(()))).prop_map(|(semid, ops, nsops, result)| {
            EventKind::SemOp {
                semid,
                ops,
                nsops,
                timed: false,
                result,
            }
        }),
        (
            id.clone(),
            any::<i32>(),
            cmd.clone(),
            any::<u64>(),
            sys(any::<i64>())
        )
            .prop_map(|(semid, semnum, cmd, arg, result)| EventKind::SemCtl {
                semid,
                semnum,
                cmd,
                arg,
                result
            }),
        (id.clone(), any::<i32>(), sys(id.clone()))
            .prop_map(|(key, flags, result)| EventKind::MsgGet { key, flags, result }),
        (id.clone(), any::<u64>(), any::<i32>(), sys(Just(()))).prop_map(
            |(msqid, size, flags, result)| {
                EventKind::MsgSnd {
                    msqid,
                    size,
                    flags,
                    mtype: None,
                    result,
                }
            }
        ),
        (id.clone(), any::<u64>(), any::<i32>(), sys(any::<u64>())).prop_map(
            |(msqid, max_size, flags, result)| EventKind::MsgRcv {
                msqid,
                max_size,
                want_type: 0,
                flags,
                mtype: None,
                result
            }
        ),
        (id, cmd, sys(any::<i64>())).prop_map(|(msqid, cmd, result)| EventKind::MsgCtl {
            msqid,
            cmd,
            result
        }),
        (addr(), len(), sys(Just(()))).prop_map(|(addr, len, result)| EventKind::Munmap {
            addr,
            len,
            result
        }),
        (addr(), len(), len(), 0u32..8, sys(addr())).prop_map(
            |(old_addr, old_len, new_len, flags, result)| {
                EventKind::Mremap {
                    old_addr,
                    old_len,
                    new_len,
                    flags,
                    result,
                }
            }
        ),
        (0u32..8, 0u64..3).prop_map(|(pid, t)| EventKind::Fork {
            child: crate::event::ProcessKey {
                pid,
                start_ticks: 1000 + u64::from(pid) + t
            }
        }),
        Just(EventKind::Exec {
            filename: "/x".into(),
            old_tid: 1
        }),
        any::<u32>().prop_map(|code| EventKind::Exit { code }),
        any::<u64>().prop_map(|count| EventKind::Lost { count }),
    ]
}

#[expect(clippy::too_many_lines, reason = "one strategy per snapshot part")]
fn any_snapshot() -> impl Strategy<Value = crate::snapshot::Snapshot> {
    use crate::snapshot::{
        Blocked, IpcPerm, Limits, MsgQueue, ProcessInfo, SemSet, SemValue, ShmMapping, ShmSegment,
        Waiter,
    };
    let perm = (-1i32..6, any::<i32>(), any::<u32>()).prop_map(|(id, key, mode)| IpcPerm {
        key,
        id,
        mode,
        uid: 0,
        gid: 0,
        cuid: 0,
        cgid: 0,
    });
    let shm = (perm.clone(), len(), 0u32..8, any::<u64>(), any::<i64>()).prop_map(
        |(perm, size, cpid, nattch, t)| ShmSegment {
            perm,
            size,
            cpid,
            lpid: cpid,
            nattch,
            atime: t,
            dtime: 0,
            ctime: t,
            rss: 0,
            swap: 0,
        },
    );
    let sem = (perm.clone(), 0u32..4, any::<i64>()).prop_map(|(perm, nsems, t)| SemSet {
        perm,
        nsems,
        otime: t,
        ctime: t,
    });
    let msg = (perm, any::<u64>(), any::<u64>(), 0u32..8).prop_map(|(perm, cbytes, qnum, pid)| {
        MsgQueue {
            perm,
            cbytes,
            qnum,
            lspid: pid,
            lrpid: pid,
            stime: 1,
            rtime: 1,
            ctime: 1,
        }
    });
    let values = (
        -1i32..6,
        prop::collection::vec((any::<i32>(), any::<u32>(), 0u32..8), 0..4),
    )
        .prop_map(|(id, v)| {
            (
                id,
                v.into_iter()
                    .map(|(value, ncnt, pid)| SemValue {
                        value,
                        ncnt,
                        zcnt: 0,
                        pid,
                    })
                    .collect(),
            )
        });
    let mapping =
        (0u32..8, -1i32..6, addr(), len(), len()).prop_map(|(pid, shmid, start, l, offset)| {
            ShmMapping {
                pid,
                shmid,
                key: 0,
                start,
                end: start.wrapping_add(l),
                offset,
                writable: true,
            }
        });
    let process =
        (0u32..8, 0u64..2, prop_oneof![Just('S'), Just('Z')]).prop_map(|(pid, t, state)| {
            ProcessInfo {
                key: pk(pid).with_ticks(t),
                ppid: 1,
                comm: String::new(),
                uid: 0,
                state,
                ipc_ns: NS,
            }
        });
    let waiter = (0u32..8, -1i32..6, 0u8..3).prop_map(|(pid, id, w)| Waiter {
        pid,
        tid: pid,
        on: match w {
            0 => Blocked::Sem { semid: id },
            1 => Blocked::MsgRcv { msqid: id },
            _ => Blocked::MsgSnd { msqid: id },
        },
    });
    (
        prop::collection::vec(shm, 0..4),
        prop::collection::vec(sem, 0..3),
        prop::collection::vec(msg, 0..3),
        prop::collection::vec(values, 0..3),
        prop::collection::vec(mapping, 0..6),
        prop::collection::vec(process, 0..6),
        prop::collection::vec(waiter, 0..3),
        any::<[u64; 5]>(),
    )
        .prop_map(
            |(shm, sem, msg, sem_values, mappings, processes, waiters, l)| {
                crate::snapshot::Snapshot {
                    ipc_ns: NS,
                    taken_ns: super::tests::T0,
                    shm,
                    sem,
                    msg,
                    sem_values,
                    mappings,
                    processes,
                    waiters,
                    limits: Limits {
                        shmmni: l[0],
                        shmall: l[1],
                        semmni: l[2],
                        semmns: l[3],
                        msgmni: l[4],
                        ..Limits::default()
                    },
                    ..crate::snapshot::Snapshot::default()
                }
            },
        )
}

trait WithTicks {
    fn with_ticks(self, extra: u64) -> Self;
}

impl WithTicks for crate::event::ProcessKey {
    fn with_ticks(self, extra: u64) -> Self {
        Self {
            start_ticks: self.start_ticks + extra,
            ..self
        }
    }
}

#[derive(Clone, Debug)]
enum Input {
    Event {
        pid: u32,
        ns: u32,
        dt: i64,
        kind: EventKind,
    },
    Tick {
        dt: u64,
    },
    Snapshot(Box<crate::snapshot::Snapshot>),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        20 => (0u32..8, prop_oneof![Just(NS), Just(0), Just(7)], -5i64..1000, any_kind())
            .prop_map(|(pid, ns, dt, kind)| Input::Event { pid, ns, dt, kind }),
        2 => (0u64..200).prop_map(|dt| Input::Tick { dt }),
        1 => any_snapshot().prop_map(|s| Input::Snapshot(Box::new(s))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_never_panics(inputs in prop::collection::vec(input(), 1..60)) {
        let mut sim = Sim::new();
        let mut destroyed = BTreeSet::new();
        for i in inputs {
            match i {
                Input::Event { pid, ns, dt, kind } => {
                    sim.now = sim.now.saturating_add_signed(dt * 1_000_000);
                    let mut e = sim.event(pid, kind);
                    e.ipc_ns = ns;
                    let a = sim.m.apply(&e);
                    for (act, o) in &a.derived {
                        prop_assert_eq!(*act, Action::ShmDestroy);
                        prop_assert!(destroyed.insert(o.object_key()), "destroyed twice: {:?}", o);
                    }
                    serde_json::to_string(&a).expect("serializes");
                }
                Input::Tick { dt } => {
                    sim.now += dt * super::tests::SEC;
                    let _ = sim.m.tick(sim.now);
                }
                Input::Snapshot(mut s) => {
                    s.taken_ns = sim.now;
                    let r = sim.m.reconcile(&s);
                    serde_json::to_string(&r).expect("serializes");
                }
            }
            for p in sim.m.processes() {
                prop_assert!(p.alive || p.attachments.is_empty());
            }
            for v in sim.m.objects() {
                if v.status == ObjectStatus::Destroyed {
                    prop_assert!(v.shm.as_ref().is_none_or(|s| s.attachments.is_empty() && s.nattch == 0));
                }
            }
        }
        for v in sim.m.objects() {
            serde_json::to_string(&v).expect("serializes");
        }
        for f in sim.m.findings() {
            serde_json::to_string(f).expect("serializes");
        }
    }
}
