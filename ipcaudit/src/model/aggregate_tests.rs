//! The model fed with what the kernel aggregates (`watch`) against the model fed with every
//! event: the same holdings, values, depths, users and findings wherever the aggregated stream
//! has been flushed (a doorbell, an exit). A small simulation of the kernel side produces the
//! aggregated stream with the kernel's protocol: a process's first operation on a semaphore or
//! queue is an event and makes a slot; later ones add to the slot and to the object's totals;
//! an object's totals are written before any event on it; a process's objects' totals and its
//! usage before its exit; SETVAL/SETALL/IPC_RMID drop the object's totals entry (slots on it go
//! stale and start again with an event).

use std::{collections::BTreeMap, fmt::Write as _};

use proptest::prelude::*;

use crate::event::{Event, EventKind, IpcType, SemOp, Task};

use super::tests::{IPC_CREAT, NS, SEC, T0, pk};
use super::{Aggregate, Model, MsgSlotTotals, QueueTotals, Rule, SemSlotTotals, SetTotals, Usage};

const SETVAL: i32 = 16;
const IPC_RMID: i32 = 0;

fn task(pid: u32) -> Task {
    Task {
        process: pk(pid),
        tid: pid,
        comm: format!("p{pid}"),
        uid: 1000,
    }
}

fn event(now: u64, pid: u32, kind: EventKind) -> Event {
    Event {
        time_ns: now,
        ipc_ns: NS,
        task: task(pid),
        kind,
    }
}

#[derive(Clone, Debug, Default)]
struct SemSlot {
    first_ns: u64,
    entry: u64,
    last_ns: u64,
    calls: u64,
    net: i64,
    undo: i64,
    took: u64,
    gave: u64,
}

#[derive(Clone, Debug, Default)]
struct MsgSlot {
    first_ns: u64,
    entry: u64,
    last_ns: u64,
    calls: u64,
    sent: u64,
    sent_bytes: u64,
    received: u64,
    received_bytes: u64,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    first_ns: u64,
    ops: u64,
    written: u64,
    /// sem: delta per semnum; msg: sent, sent bytes, received, received bytes.
    counts: Vec<i64>,
}

/// Both models, and the kernel's aggregation state for the second one.
struct Twin {
    full: Model,
    agg: Model,
    now: u64,
    sem_slots: BTreeMap<(u32, i32, u16), SemSlot>,
    msg_slots: BTreeMap<(u32, i32), MsgSlot>,
    sets: BTreeMap<i32, Entry>,
    queues: BTreeMap<i32, Entry>,
    /// The last totals written, to replay as stale copies.
    written: Vec<Aggregate>,
    /// True sem values and queue depths (what the kernel has), and each process's SEM_UNDO
    /// adjustments (the kernel gives them back at exit).
    values: BTreeMap<(i32, u16), i64>,
    depth: BTreeMap<i32, u64>,
    undo: BTreeMap<(u32, i32, u16), i64>,
}

impl Twin {
    fn new() -> Self {
        let cfg = super::tests::cfg();
        Self {
            full: Model::new(cfg),
            agg: Model::new(cfg),
            now: T0,
            sem_slots: BTreeMap::new(),
            msg_slots: BTreeMap::new(),
            sets: BTreeMap::new(),
            queues: BTreeMap::new(),
            written: Vec::new(),
            values: BTreeMap::new(),
            depth: BTreeMap::new(),
            undo: BTreeMap::new(),
        }
    }

    fn tick(&mut self) -> u64 {
        self.now += 1_000_000;
        self.now
    }

    /// An event both models see.
    fn both(&mut self, pid: u32, kind: EventKind) {
        let ev = event(self.tick(), pid, kind);
        self.full.apply(&ev);
        self.agg.apply(&ev);
    }

    fn agg_apply(&mut self, a: Aggregate) {
        self.agg.apply_aggregate(&a);
        self.written.push(a);
    }

    fn write_set(&mut self, semid: i32, always: bool) {
        let now = self.tick();
        let Some(e) = self.sets.get_mut(&semid) else {
            return;
        };
        if !always && e.ops == e.written {
            return;
        }
        e.written = e.ops;
        let a = Aggregate::Set(SetTotals {
            time_ns: now,
            ns: NS,
            semid,
            first_ns: e.first_ns,
            ops: e.ops,
            delta: e.counts.clone(),
        });
        self.agg_apply(a);
    }

    fn write_queue(&mut self, msqid: i32) {
        let now = self.tick();
        let Some(e) = self.queues.get_mut(&msqid) else {
            return;
        };
        if e.ops == e.written {
            return;
        }
        e.written = e.ops;
        let c: Vec<u64> = e.counts.iter().map(|v| v.unsigned_abs()).collect();
        let a = Aggregate::Queue(QueueTotals {
            time_ns: now,
            ns: NS,
            msqid,
            first_ns: e.first_ns,
            ops: e.ops,
            sent: c[0],
            sent_bytes: c[1],
            received: c[2],
            received_bytes: c[3],
        });
        self.agg_apply(a);
    }

    fn write_usage(&mut self, pid: u32) {
        let sem: Vec<SemSlotTotals> = self
            .sem_slots
            .iter()
            .filter(|((p, _, _), _)| *p == pid)
            .map(|(&(_, semid, semnum), s)| SemSlotTotals {
                ns: NS,
                semid,
                semnum,
                first_ns: s.first_ns,
                last_ns: s.last_ns,
                calls: s.calls,
                net: s.net,
                undo: s.undo,
                took: s.took,
                gave: s.gave,
            })
            .collect();
        let msg: Vec<MsgSlotTotals> = self
            .msg_slots
            .iter()
            .filter(|((p, _), _)| *p == pid)
            .map(|(&(_, msqid), s)| MsgSlotTotals {
                ns: NS,
                msqid,
                first_ns: s.first_ns,
                last_ns: s.last_ns,
                calls: s.calls,
                sent: s.sent,
                sent_bytes: s.sent_bytes,
                received: s.received,
                received_bytes: s.received_bytes,
            })
            .collect();
        if sem.is_empty() && msg.is_empty() {
            return;
        }
        let a = Aggregate::Usage(Usage {
            time_ns: self.tick(),
            ns: NS,
            task: task(pid),
            sem,
            msg,
        });
        self.agg_apply(a);
    }

    fn semget(&mut self, pid: u32, semid: i32, nsems: u16) {
        self.both(
            pid,
            EventKind::SemGet {
                key: 0,
                nsems: i32::from(nsems),
                flags: IPC_CREAT | 0o600,
                result: Ok(semid),
            },
        );
        for n in 0..nsems {
            self.values.insert((semid, n), 0);
        }
    }

    fn setval(&mut self, pid: u32, semid: i32, semnum: u16, v: i32) {
        self.write_set(semid, false);
        self.both(
            pid,
            EventKind::SemCtl {
                semid,
                semnum: i32::from(semnum),
                cmd: SETVAL,
                arg: u64::from(v.cast_unsigned()),
                result: Ok(0),
            },
        );
        self.sets.remove(&semid);
        self.values.insert((semid, semnum), i64::from(v));
        // SETVAL clears every process's undo adjustment of that semaphore.
        self.undo
            .retain(|(_, id, n), _| (*id, *n) != (semid, semnum));
    }

    /// One successful semop of one operation: aggregated when the process has a current slot.
    fn semop(&mut self, pid: u32, semid: i32, num: u16, op: i16, undo: bool) {
        let entry = self.sets.get(&semid).map(|e| e.first_ns);
        let now = self.tick();
        *self.values.entry((semid, num)).or_default() += i64::from(op);
        if undo {
            *self.undo.entry((pid, semid, num)).or_default() += i64::from(op);
        }
        let current = self
            .sem_slots
            .get(&(pid, semid, num))
            .is_some_and(|s| Some(s.entry) == entry);
        let ev = EventKind::SemOp {
            semid,
            ops: vec![SemOp {
                num,
                op,
                flags: if undo { SemOp::SEM_UNDO } else { 0 },
            }],
            nsops: 1,
            timed: true,
            result: Ok(()),
        };
        self.full.apply(&event(now, pid, ev.clone()));
        if current {
            let s = self.sem_slots.get_mut(&(pid, semid, num)).expect("slot");
            if undo {
                s.undo += i64::from(op);
            } else {
                s.net += i64::from(op);
            }
            s.took += u64::from(op < 0);
            s.gave += u64::from(op > 0);
            s.last_ns = now;
            s.calls += 1;
            let e = self.sets.get_mut(&semid).expect("entry");
            e.counts[usize::from(num)] += i64::from(op);
            e.ops += 1;
            return;
        }
        // In full, after the set's totals; then a slot.
        self.write_set(semid, false);
        self.agg.apply(&event(now, pid, ev));
        let first_ns = self.tick();
        let entry = self.sets.entry(semid).or_insert_with(|| Entry {
            first_ns,
            counts: vec![0; ipcaudit_ebpf::AGG_SEMNUMS],
            ..Entry::default()
        });
        let entry_ts = entry.first_ns;
        if self.sem_slots.contains_key(&(pid, semid, num)) {
            // A stale slot: what it counted goes out first.
            self.write_usage(pid);
        }
        self.sem_slots.insert(
            (pid, semid, num),
            SemSlot {
                first_ns,
                entry: entry_ts,
                last_ns: first_ns,
                ..SemSlot::default()
            },
        );
    }

    fn msgget(&mut self, pid: u32, msqid: i32) {
        self.both(
            pid,
            EventKind::MsgGet {
                key: 0,
                flags: IPC_CREAT | 0o600,
                result: Ok(msqid),
            },
        );
        self.depth.insert(msqid, 0);
    }

    fn transfer(&mut self, pid: u32, msqid: i32, send: bool, bytes: u64) {
        let entry = self.queues.get(&msqid).map(|e| e.first_ns);
        let now = self.tick();
        let d = self.depth.entry(msqid).or_default();
        if send {
            *d += 1;
        } else {
            *d -= 1;
        }
        let current = self
            .msg_slots
            .get(&(pid, msqid))
            .is_some_and(|s| Some(s.entry) == entry);
        let ev = if send {
            EventKind::MsgSnd {
                msqid,
                size: bytes,
                flags: 0,
                mtype: Some(1),
                result: Ok(()),
            }
        } else {
            EventKind::MsgRcv {
                msqid,
                max_size: 8192,
                want_type: 0,
                flags: 0,
                mtype: Some(1),
                result: Ok(bytes),
            }
        };
        self.full.apply(&event(now, pid, ev.clone()));
        if current {
            let s = self.msg_slots.get_mut(&(pid, msqid)).expect("slot");
            let e = self.queues.get_mut(&msqid).expect("entry");
            if send {
                s.sent += 1;
                s.sent_bytes += bytes;
                e.counts[0] += 1;
                e.counts[1] += i64::try_from(bytes).expect("small");
            } else {
                s.received += 1;
                s.received_bytes += bytes;
                e.counts[2] += 1;
                e.counts[3] += i64::try_from(bytes).expect("small");
            }
            s.last_ns = now;
            s.calls += 1;
            e.ops += 1;
            return;
        }
        self.write_queue(msqid);
        self.agg.apply(&event(now, pid, ev));
        let first_ns = self.tick();
        let entry = self.queues.entry(msqid).or_insert_with(|| Entry {
            first_ns,
            counts: vec![0; 4],
            ..Entry::default()
        });
        let entry_ts = entry.first_ns;
        if self.msg_slots.contains_key(&(pid, msqid)) {
            self.write_usage(pid);
        }
        self.msg_slots.insert(
            (pid, msqid),
            MsgSlot {
                first_ns,
                entry: entry_ts,
                last_ns: first_ns,
                ..MsgSlot::default()
            },
        );
    }

    fn rmid_sem(&mut self, pid: u32, semid: i32) {
        self.both(
            pid,
            EventKind::SemCtl {
                semid,
                semnum: 0,
                cmd: IPC_RMID,
                arg: 0,
                result: Ok(0),
            },
        );
        self.sets.remove(&semid);
        self.values.retain(|(id, _), _| *id != semid);
    }

    /// The process leaves: its objects' totals, its usage, then its exit.
    fn exit(&mut self, pid: u32) {
        let sets: Vec<i32> = self
            .sem_slots
            .keys()
            .filter(|(p, _, _)| *p == pid)
            .map(|(_, id, _)| *id)
            .collect();
        for semid in sets {
            self.write_set(semid, false);
        }
        let queues: Vec<i32> = self
            .msg_slots
            .keys()
            .filter(|(p, _)| *p == pid)
            .map(|(_, id)| *id)
            .collect();
        for msqid in queues {
            self.write_queue(msqid);
        }
        self.write_usage(pid);
        self.sem_slots.retain(|(p, _, _), _| *p != pid);
        self.msg_slots.retain(|(p, _), _| *p != pid);
        self.both(pid, EventKind::Exit { code: 9 });
        // The kernel gives the process's SEM_UNDO adjustments back.
        let undone: Vec<((u32, i32, u16), i64)> = self
            .undo
            .iter()
            .filter(|((p, _, _), _)| *p == pid)
            .map(|(k, v)| (*k, *v))
            .collect();
        for ((_, semid, num), v) in undone {
            // ... within the semaphore's range (the kernel clamps, as the model does).
            if let Some(value) = self.values.get_mut(&(semid, num)) {
                *value = (*value - v).clamp(0, 32_767);
            }
            self.undo.remove(&(pid, semid, num));
        }
    }

    /// The collector rings: every object's totals, every process's usage.
    fn doorbell(&mut self) {
        let sets: Vec<i32> = self.sets.keys().copied().collect();
        for semid in sets {
            self.write_set(semid, false);
        }
        let queues: Vec<i32> = self.queues.keys().copied().collect();
        for msqid in queues {
            self.write_queue(msqid);
        }
        let mut pids: Vec<u32> = self.sem_slots.keys().map(|k| k.0).collect();
        pids.extend(self.msg_slots.keys().map(|k| k.0));
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            self.write_usage(pid);
        }
    }

    /// Re-applies old totals: stale copies change nothing.
    fn replay_stale(&mut self) {
        for a in self.written.clone() {
            self.agg.apply_aggregate(&a);
        }
    }

    /// The sets and queues a process has slots on.
    fn used_by(&self, pid: u32) -> (Vec<i32>, Vec<i32>) {
        let mut sets: Vec<i32> = self
            .sem_slots
            .keys()
            .filter(|k| k.0 == pid)
            .map(|k| k.1)
            .collect();
        sets.dedup();
        let queues = self
            .msg_slots
            .keys()
            .filter(|k| k.0 == pid)
            .map(|k| k.1)
            .collect();
        (sets, queues)
    }

    /// After an exit: the dead process's holdings agree, and so do the values and depths of
    /// the objects it used.
    fn assert_exit_agrees(&self, pid: u32, sets: &[i32], queues: &[i32]) {
        let holdings = |m: &Model| -> Vec<String> {
            let mut v: Vec<String> = m
                .objects()
                .filter(|o| o.status != super::ObjectStatus::Destroyed)
                .filter_map(|o| o.sem.map(|s| (o.object.id, s)))
                .flat_map(|(id, s)| {
                    s.adjustments
                        .iter()
                        .filter(|h| h.process.pid == pid)
                        .map(|h| format!("{id}#{} {:?}", h.semnum, h.adj))
                        .collect::<Vec<_>>()
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            holdings(&self.agg),
            holdings(&self.full),
            "holdings of {pid}"
        );
        for (&(semid, num), &v) in &self.values {
            if !sets.contains(&semid) {
                continue;
            }
            let value = self
                .agg
                .object(NS, IpcType::Sem, semid)
                .and_then(|o| o.sem.and_then(|s| s.values.get(usize::from(num)).copied()))
                .and_then(|s| s.value);
            assert_eq!(
                value.map(i64::from),
                Some(v),
                "sem {semid}#{num} after {pid} exited"
            );
        }
        for q in queues {
            let depth = self
                .agg
                .object(NS, IpcType::Msg, *q)
                .and_then(|o| o.msg.map(|m| m.messages));
            assert_eq!(
                depth,
                self.depth.get(q).copied(),
                "queue {q} after {pid} exited"
            );
        }
    }

    /// What must agree between the two models (and, for values and depths, with the kernel).
    fn assert_agree(&self) {
        let objects = |m: &Model| -> Vec<String> {
            m.objects()
                .filter(|o| o.status != super::ObjectStatus::Destroyed)
                .map(|o| {
                    let mut s = format!("{} {}", o.object.ty, o.object.id);
                    if let Some(sem) = &o.sem {
                        let values: Vec<Option<i32>> = sem.values.iter().map(|v| v.value).collect();
                        let mut adj: Vec<String> = sem
                            .adjustments
                            .iter()
                            .map(|h| {
                                format!(
                                    "{}#{} net {} undo {} took {} gave {}",
                                    h.process.pid,
                                    h.semnum,
                                    h.adj.net,
                                    h.adj.undo,
                                    h.adj.took,
                                    h.adj.gave
                                )
                            })
                            .collect();
                        adj.sort();
                        let mut users: Vec<String> = sem
                            .users
                            .iter()
                            .map(|u| {
                                // (`last_ns` of an aggregated semaphore use is the flush's time:
                                // the hot path reads no clock.)
                                format!(
                                    "{} alive {} count {}",
                                    u.process.pid, u.process.alive, u.peer.count
                                )
                            })
                            .collect();
                        users.sort();
                        let _ = write!(s, " values {values:?} adj {adj:?} users {users:?}");
                    }
                    if let Some(msg) = &o.msg {
                        let peers = |v: &[super::PeerView<'_>]| {
                            let mut p: Vec<String> = v
                                .iter()
                                .map(|u| {
                                    format!(
                                        "{} alive {} count {} bytes {}",
                                        u.process.pid, u.process.alive, u.peer.count, u.peer.bytes
                                    )
                                })
                                .collect();
                            p.sort();
                            p
                        };
                        let _ = write!(
                            s,
                            " depth {} bytes {} uncertain {} senders {:?} receivers {:?}",
                            msg.messages,
                            msg.bytes,
                            msg.depth_uncertain,
                            peers(&msg.senders),
                            peers(&msg.receivers)
                        );
                    }
                    s
                })
                .collect()
        };
        assert_eq!(objects(&self.agg), objects(&self.full));
        let findings = |m: &Model| -> Vec<String> {
            let mut f: Vec<String> = m
                .findings()
                .map(|f| {
                    let mut ev: Vec<String> = f
                        .evidence
                        .iter()
                        .map(|e| format!("{}:{}:{}", e.pid, e.role.as_str(), e.alive))
                        .collect();
                    ev.sort();
                    format!(
                        "{} {:?} {} {ev:?}",
                        f.rule,
                        f.object.map(|o| o.id),
                        f.severity.as_str()
                    )
                })
                .collect();
            f.sort();
            f
        };
        assert_eq!(findings(&self.agg), findings(&self.full));
        // And both agree with the kernel's values and depths.
        for (&(semid, num), &v) in &self.values {
            let value = self
                .agg
                .object(NS, IpcType::Sem, semid)
                .and_then(|o| o.sem.and_then(|s| s.values.get(usize::from(num)).copied()))
                .and_then(|s| s.value);
            assert_eq!(value.map(i64::from), Some(v), "sem {semid}#{num}");
        }
        for (&msqid, &d) in &self.depth {
            let depth = self
                .agg
                .object(NS, IpcType::Msg, msqid)
                .and_then(|o| o.msg.map(|m| m.messages));
            assert_eq!(depth, Some(d), "queue {msqid}");
        }
    }
}

#[test]
fn a_lock_holder_that_dies_is_found_from_aggregated_operations() {
    let mut t = Twin::new();
    t.semget(1, 3, 1);
    t.setval(1, 3, 0, 1);
    // The first operation is an event; the rest (a lock taken and given back many times, then
    // taken) only counts in the kernel.
    for _ in 0..50 {
        t.semop(2, 3, 0, -1, false);
        t.semop(2, 3, 0, 1, false);
    }
    t.semop(2, 3, 0, -1, false);
    // Before anything is written out the aggregated model lags; the exit brings it up to date
    // before the death is judged.
    t.exit(2);
    t.assert_agree();
    let held: Vec<_> = t
        .agg
        .findings()
        .filter(|f| f.rule == Rule::SemaphoreHeldByDeadProcess)
        .collect();
    assert_eq!(held.len(), 1);
    assert!(
        held[0]
            .evidence
            .iter()
            .any(|e| e.pid == 2 && e.role.as_str() == "holder")
    );
}

#[test]
fn sem_undo_and_counting_use_are_not_held_locks() {
    let mut t = Twin::new();
    t.semget(1, 3, 2);
    t.setval(1, 3, 0, 1);
    t.setval(1, 3, 1, 5);
    for _ in 0..10 {
        t.semop(2, 3, 0, -1, true);
        t.semop(2, 3, 0, 1, true);
    }
    t.semop(2, 3, 0, -1, true);
    // A consumer of a counting semaphore: only took.
    t.semop(4, 3, 1, -1, false);
    t.semop(4, 3, 1, -1, false);
    t.exit(2);
    t.exit(4);
    t.assert_agree();
    assert_eq!(
        t.agg
            .findings()
            .filter(|f| f.rule == Rule::SemaphoreHeldByDeadProcess)
            .count(),
        0
    );
}

#[test]
fn totals_count_once_however_often_and_late_they_arrive() {
    let mut t = Twin::new();
    t.semget(1, 3, 1);
    t.setval(1, 3, 0, 3);
    t.semop(2, 3, 0, -1, false);
    t.semop(2, 3, 0, -1, false);
    t.doorbell();
    t.semop(2, 3, 0, 1, false);
    t.doorbell();
    t.doorbell();
    t.replay_stale();
    t.assert_agree();
    let adj = t
        .agg
        .object(NS, IpcType::Sem, 3)
        .and_then(|o| o.sem)
        .map(|s| s.adjustments.iter().map(|h| h.adj.net).sum::<i64>());
    assert_eq!(adj, Some(-1));
}

#[test]
fn setval_voids_what_was_counted_before_it() {
    let mut t = Twin::new();
    t.semget(1, 3, 2);
    t.setval(1, 3, 0, 1);
    t.setval(1, 3, 1, 1);
    t.semop(2, 3, 0, -1, false);
    t.semop(2, 3, 0, 1, false);
    t.semop(2, 3, 0, -1, false);
    t.semop(2, 3, 1, -1, false);
    t.semop(2, 3, 1, 1, false);
    t.semop(2, 3, 1, -1, false);
    // SETVAL of #0 resets #0's adjustments; #1's count on.
    t.setval(1, 3, 0, 1);
    t.semop(2, 3, 1, 1, false);
    t.doorbell();
    t.assert_agree();
    t.semop(2, 3, 0, -1, false);
    t.semop(2, 3, 0, 1, false);
    t.exit(2);
    t.assert_agree();
}

#[test]
fn a_queue_whose_reader_died_stalls_with_the_aggregated_depth() {
    let mut t = Twin::new();
    t.msgget(1, 7);
    // A producer and a reader that keeps up, both aggregated after their first message.
    for _ in 0..20 {
        t.transfer(2, 7, true, 16);
        t.transfer(3, 7, false, 16);
    }
    t.transfer(2, 7, true, 16);
    t.transfer(2, 7, true, 16);
    t.doorbell();
    t.assert_agree();
    t.exit(3);
    t.assert_agree();
    t.now += 120 * SEC;
    let (a, f) = (t.agg.tick(t.now), t.full.tick(t.now));
    assert_eq!(a.len(), f.len());
    assert_eq!(
        t.agg
            .findings()
            .filter(|f| f.rule == Rule::StalledQueue)
            .count(),
        1
    );
    let depth = t
        .agg
        .object(NS, IpcType::Msg, 7)
        .and_then(|o| o.msg.map(|m| m.messages));
    assert_eq!(depth, Some(2));
}

#[test]
fn totals_of_an_earlier_object_with_the_same_id_are_ignored() {
    let mut t = Twin::new();
    t.semget(1, 3, 1);
    t.setval(1, 3, 0, 2);
    t.semop(2, 3, 0, -1, false);
    t.semop(2, 3, 0, -1, false);
    let old = t.sets.get(&3).cloned().expect("entry");
    t.rmid_sem(1, 3);
    // The id comes back as another set; the old set's totals arrive late.
    t.semget(1, 3, 1);
    t.setval(1, 3, 0, 1);
    t.agg.apply_aggregate(&Aggregate::Set(SetTotals {
        time_ns: t.now,
        ns: NS,
        semid: 3,
        first_ns: old.first_ns,
        ops: old.ops,
        delta: old.counts,
    }));
    t.write_usage(2);
    t.assert_agree();
    let value = t
        .agg
        .object(NS, IpcType::Sem, 3)
        .and_then(|o| o.sem.and_then(|s| s.values.first().and_then(|v| v.value)));
    assert_eq!(value, Some(1));
}

#[derive(Clone, Debug)]
enum Step {
    Sem {
        pid: u32,
        set: usize,
        num: u16,
        take: bool,
        undo: bool,
    },
    Msg {
        pid: u32,
        queue: usize,
        send: bool,
    },
    Setval {
        set: usize,
        num: u16,
        value: i32,
    },
    Exit {
        pid: u32,
    },
    Doorbell,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (2u32..6, 0usize..2, 0u16..2, any::<bool>(), any::<bool>())
            .prop_map(|(pid, set, num, take, undo)| Step::Sem { pid, set, num, take, undo }),
        4 => (2u32..6, 0usize..2, any::<bool>())
            .prop_map(|(pid, queue, send)| Step::Msg { pid, queue, send }),
        1 => (0usize..2, 0u16..2, 0i32..4).prop_map(|(set, num, value)| Step::Setval { set, num, value }),
        1 => (2u32..6).prop_map(|pid| Step::Exit { pid }),
        2 => Just(Step::Doorbell),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random semops, messages, SETVALs and exits of a few processes: wherever the aggregated
    /// stream is flushed, the aggregated model agrees with the model that saw every event.
    #[test]
    fn aggregated_stream_agrees_with_every_event(steps in proptest::collection::vec(step(), 1..120)) {
        const SETS: [i32; 2] = [10, 11];
        const QUEUES: [i32; 2] = [20, 21];
        let mut t = Twin::new();
        for set in SETS {
            t.semget(1, set, 2);
            t.setval(1, set, 0, 2);
            t.setval(1, set, 1, 1);
        }
        for q in QUEUES {
            t.msgget(1, q);
        }
        // Processes that exited do not come back (their pids are not reused here).
        let mut dead = [false; 8];
        for s in steps {
            match s {
                Step::Sem { pid, set, num, take, undo } => {
                    let semid = SETS[set];
                    let v = t.values.get(&(semid, num)).copied().unwrap_or(0);
                    // The kernel would block a take of an empty semaphore: skip it.
                    if dead[pid as usize] || (take && v == 0) || (!take && v >= 100) {
                        continue;
                    }
                    t.semop(pid, semid, num, if take { -1 } else { 1 }, undo);
                }
                Step::Msg { pid, queue, send } => {
                    let msqid = QUEUES[queue];
                    if dead[pid as usize] || (!send && t.depth.get(&msqid).copied().unwrap_or(0) == 0) {
                        continue;
                    }
                    // A receive takes the oldest message: one size per queue keeps the bytes
                    // the simulation receives true.
                    t.transfer(pid, msqid, send, 16 * (queue as u64 + 1));
                }
                Step::Setval { set, num, value } => t.setval(1, SETS[set], num, value),
                Step::Exit { pid } => {
                    if !dead[pid as usize] {
                        dead[pid as usize] = true;
                        let (sets, queues) = t.used_by(pid);
                        t.exit(pid);
                        // What the exit wrote out: the process's own holdings, and the values
                        // and depths of the objects it used (others may still be counting).
                        t.assert_exit_agrees(pid, &sets, &queues);
                    }
                }
                Step::Doorbell => {
                    t.doorbell();
                    t.assert_agree();
                    t.replay_stale();
                    t.assert_agree();
                }
            }
        }
        t.doorbell();
        t.assert_agree();
    }
}
