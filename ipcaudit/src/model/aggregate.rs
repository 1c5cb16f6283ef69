//! Totals the kernel aggregated (`watch`): what hot operations did, without one event each.
//!
//! The kernel records a process's first operation on a semaphore (or queue) as an event, then
//! only counts its later ones, per process ([`Usage`]: adjustments with and without SEM_UNDO,
//! units taken and given back, messages sent and received) and per object ([`SetTotals`]: the
//! sum of the operations per semaphore; [`QueueTotals`]: messages and bytes in and out). Every
//! counter is cumulative for the life of its kernel entry, identified by when it was made
//! (`first_ns`), so the model keeps what it consumed of each entry and applies the difference:
//! totals may be written out more than once, or a stale copy after a newer one, without
//! counting anything twice. The kernel writes an object's totals before any event on it, and a
//! process's usage (and its objects' totals) before its exit event, so the model has seen, in
//! order, everything that matters when it judges a death; values and depths are also brought up
//! to date before every grace tick, and everything before a query or a reconcile.
//!
//! What stays exact: per process and semaphore, the net adjustment with and without SEM_UNDO and
//! whether units were taken and given back (who holds what, and whether it was a lock); each
//! semaphore's value; each queue's depth; who used, sent and received. What is coarser: a
//! peer's `count`/`bytes`/`last_ns` arrive with the totals, and operations between two flushes
//! are applied at once (so a transient value in between is never seen).

use serde::{Deserialize, Serialize};

use crate::event::{IpcType, ProcessKey, Task};

use super::object::{ObjectKey, ObjectStatus};
use super::{Applied, Cx, Model};

/// One usage slot of a process on a semaphore: cumulative since `first_ns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemSlotTotals {
    pub ns: u32,
    pub semid: i32,
    pub semnum: u16,
    /// When the slot was made (which generation of the id it counts for).
    pub first_ns: u64,
    pub last_ns: u64,
    pub calls: u64,
    /// Sum of the operations without SEM_UNDO.
    pub net: i64,
    /// Sum of the operations with SEM_UNDO.
    pub undo: i64,
    /// Operations < 0, > 0.
    pub took: u64,
    pub gave: u64,
}

/// One usage slot of a process on a queue: cumulative since `first_ns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgSlotTotals {
    pub ns: u32,
    pub msqid: i32,
    pub first_ns: u64,
    pub last_ns: u64,
    pub calls: u64,
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub received_bytes: u64,
}

/// A process's usage slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// When the kernel wrote it out.
    pub time_ns: u64,
    /// The process's IPC namespace when its entry was made.
    pub ns: u32,
    pub task: Task,
    pub sem: Vec<SemSlotTotals>,
    pub msg: Vec<MsgSlotTotals>,
}

/// A semaphore set's aggregated operations: cumulative since `first_ns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTotals {
    pub time_ns: u64,
    pub ns: u32,
    pub semid: i32,
    pub first_ns: u64,
    pub ops: u64,
    /// Sum of the operations per semaphore number.
    pub delta: Vec<i64>,
}

/// A queue's aggregated messages: cumulative since `first_ns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTotals {
    pub time_ns: u64,
    pub ns: u32,
    pub msqid: i32,
    pub first_ns: u64,
    pub ops: u64,
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub received_bytes: u64,
}

/// Totals the kernel aggregated. Recorded (`ipcaudit.aggregate` of a `usage`, `sem-totals` or
/// `msg-totals` metric record) so that `replay` rebuilds what the live model had.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregate {
    Usage(Usage),
    Set(SetTotals),
    Queue(QueueTotals),
    /// A POSIX message queue's totals.
    Mqueue(MqueueTotals),
}

/// A POSIX message queue's aggregated messages: cumulative since `first_ns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqueueTotals {
    pub time_ns: u64,
    /// The queue's IPC namespace and inode.
    pub ns: u32,
    pub ino: u64,
    pub first_ns: u64,
    pub ops: u64,
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub received_bytes: u64,
}

impl Aggregate {
    /// The record's `event.action`.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Usage(_) => "usage",
            Self::Set(_) => "sem-totals",
            Self::Queue(_) => "msg-totals",
            Self::Mqueue(_) => "mq-totals",
        }
    }

    /// When the kernel wrote the totals out.
    pub fn time_ns(&self) -> u64 {
        match self {
            Self::Usage(u) => u.time_ns,
            Self::Set(t) => t.time_ns,
            Self::Queue(t) => t.time_ns,
            Self::Mqueue(t) => t.time_ns,
        }
    }
}

/// Identity of one kernel usage slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotId {
    ty: IpcType,
    ns: u32,
    id: i32,
    semnum: u16,
    first_ns: u64,
}

/// What the model consumed of a slot: `calls` first (the version), then the counters
/// (sem: net, undo, took, gave; msg: sent, sent bytes, received, received bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SlotCounts([i64; 5]);

/// What the model consumed of a set's kernel entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SetConsumed {
    first_ns: u64,
    ops: u64,
    delta: Vec<i64>,
}

/// What the model consumed of a queue's kernel entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueueConsumed {
    first_ns: u64,
    ops: u64,
    /// sent, sent bytes, received, received bytes.
    counts: [u64; 4],
}

/// Consumed slot totals kept per process (the kernel has 12 slots per process).
const KEPT_SLOTS: usize = 32;

#[expect(
    clippy::cast_possible_wrap,
    reason = "kernel counters are far below 2^63; differences are taken wrapping"
)]
fn signed(v: u64) -> i64 {
    v as i64
}

#[expect(
    clippy::cast_sign_loss,
    reason = "only called on non-negative differences"
)]
fn unsigned(v: i64) -> u64 {
    v.max(0) as u64
}

impl Model {
    pub(crate) fn apply_aggregate_inner(&mut self, agg: &Aggregate) -> Applied {
        let time = agg.time_ns();
        self.now_ns = self.now_ns.max(time);
        let mut cx = Cx::new(time);
        match agg {
            Aggregate::Usage(u) => self.apply_usage(u, &mut cx),
            Aggregate::Set(t) => self.apply_set_totals(t, &mut cx),
            Aggregate::Queue(t) => self.apply_queue_totals(t, &mut cx),
            Aggregate::Mqueue(t) => self.apply_mqueue_totals(t, &mut cx),
        }
        Applied {
            action: None,
            object: None,
            derived: cx.derived,
            findings: cx.findings,
            posix: None,
        }
    }

    /// The object a kernel entry made at `first_ns` counts for: the current one with this id,
    /// unless it was created after the entry was made (then the entry counted for an earlier
    /// generation, destroyed since: nothing to apply).
    fn counted_object(&self, ns: u32, ty: IpcType, id: i32, first_ns: u64) -> Option<ObjectKey> {
        let key = self.lookup(ns, ty, id)?;
        let o = self.objects.get(&key)?;
        (o.status != ObjectStatus::Destroyed && o.times.created().is_none_or(|c| c <= first_ns))
            .then_some(key)
    }

    fn apply_set_totals(&mut self, t: &SetTotals, cx: &mut Cx) {
        let Some(okey) = self.counted_object(t.ns, IpcType::Sem, t.semid, t.first_ns) else {
            return;
        };
        let Some((s, nsems)) = self
            .objects
            .get_mut(&okey)
            .and_then(super::Object::sem_sized_mut)
        else {
            return;
        };
        let mut consumed = match s.totals.take() {
            Some(c) if c.first_ns == t.first_ns => c,
            // An entry older than the one consumed: it was dropped (IPC_RMID, SETVAL, SETALL)
            // after its totals were written; a late copy adds nothing.
            Some(c) if c.first_ns > t.first_ns => {
                s.totals = Some(c);
                return;
            }
            _ => Box::new(SetConsumed {
                first_ns: t.first_ns,
                ..SetConsumed::default()
            }),
        };
        if t.ops < consumed.ops {
            // A stale copy: what it holds was consumed already.
            s.totals = Some(consumed);
            return;
        }
        consumed.delta.resize(t.delta.len(), 0);
        for (i, (&now, before)) in t.delta.iter().zip(consumed.delta.iter_mut()).enumerate() {
            let d = now.wrapping_sub(*before);
            *before = now;
            let Ok(num) = u16::try_from(i) else { break };
            if d == 0 || t.first_ns < s.reset_of(num) {
                continue;
            }
            if let Some(slot) = s.slot_mut(num, nsems)
                && let Some(v) = slot.value
            {
                let nv = i64::from(v).saturating_add(d);
                slot.value = if (0..=i64::from(i16::MAX)).contains(&nv) {
                    i32::try_from(nv).ok()
                } else {
                    None
                };
            }
        }
        consumed.ops = t.ops;
        s.totals = Some(consumed);
        let now = cx.now;
        self.evaluate_object(okey, now, cx);
    }

    fn apply_queue_totals(&mut self, t: &QueueTotals, cx: &mut Cx) {
        let Some(okey) = self.counted_object(t.ns, IpcType::Msg, t.msqid, t.first_ns) else {
            return;
        };
        let Some(s) = self.objects.get_mut(&okey).and_then(|o| o.msg_mut()) else {
            return;
        };
        let mut consumed = match s.totals.take() {
            Some(c) if c.first_ns == t.first_ns => c,
            // An entry older than the one consumed: it was dropped (IPC_RMID, SETVAL, SETALL)
            // after its totals were written; a late copy adds nothing.
            Some(c) if c.first_ns > t.first_ns => {
                s.totals = Some(c);
                return;
            }
            _ => Box::new(QueueConsumed {
                first_ns: t.first_ns,
                ..QueueConsumed::default()
            }),
        };
        if t.ops < consumed.ops {
            s.totals = Some(consumed);
            return;
        }
        let now = [t.sent, t.sent_bytes, t.received, t.received_bytes];
        let mut d = [0u64; 4];
        for ((d, now), before) in d.iter_mut().zip(now).zip(consumed.counts) {
            *d = now.saturating_sub(before);
        }
        consumed.counts = now;
        consumed.ops = t.ops;
        s.totals = Some(consumed);
        // Sends first: the queue held them before the receives that followed could take them.
        s.messages = s.messages.saturating_add(d[0]);
        s.bytes = s.bytes.saturating_add(d[1]);
        if s.messages < d[2] {
            s.uncertain = true;
            s.messages = 0;
        } else {
            s.messages -= d[2];
        }
        if s.bytes < d[3] {
            s.uncertain = true;
            s.bytes = 0;
        } else {
            s.bytes -= d[3];
        }
        let now = cx.now;
        self.evaluate_object(okey, now, cx);
    }

    fn apply_usage(&mut self, usage: &Usage, cx: &mut Cx) {
        let task = &usage.task;
        let alive = self.ensure_process(task.process, &task.comm, task.uid, usage.ns, cx);
        let pkey = task.process;
        let mut touched: Vec<ObjectKey> = Vec::new();
        for slot in &usage.sem {
            let id = SlotId {
                ty: IpcType::Sem,
                ns: slot.ns,
                id: slot.semid,
                semnum: slot.semnum,
                first_ns: slot.first_ns,
            };
            let now = SlotCounts([
                signed(slot.calls),
                slot.net,
                slot.undo,
                signed(slot.took),
                signed(slot.gave),
            ]);
            let Some(diff) = self.consume_slot(pkey, id, now) else {
                continue;
            };
            let Some(okey) = self.counted_object(slot.ns, IpcType::Sem, slot.semid, slot.first_ns)
            else {
                continue;
            };
            let Some(sem) = self.objects.get_mut(&okey).and_then(|o| o.sem_mut()) else {
                continue;
            };
            // The kernel reads no clock on this path: new calls were made by this flush.
            let last = if diff.0[0] > 0 {
                usage.time_ns
            } else {
                slot.last_ns
            };
            sem.activity
                .make()
                .users
                .touch(pkey, alive, last, unsigned(diff.0[0]), 0);
            if alive {
                let reset = slot.first_ns < sem.reset_of(slot.semnum);
                let adj = sem
                    .activity
                    .make()
                    .adjs
                    .entry(pkey)
                    .or_default()
                    .entry(slot.semnum)
                    .or_default();
                // Adjustments made before a SETVAL/SETALL of this semaphore were reset by it
                // (whether it was used as a lock stays known).
                if !reset {
                    adj.net = adj.net.saturating_add(diff.0[1]);
                    adj.undo = adj.undo.saturating_add(diff.0[2]);
                }
                adj.took |= slot.took > 0;
                adj.gave |= slot.gave > 0;
            }
            // The object's story: this process's operations, summed.
            let [calls, net, undo, took, gave] = diff.0;
            self.story_ops(okey, pkey, last, |o| {
                o.sem_ops = o.sem_ops.saturating_add(unsigned(calls));
                o.takes = o.takes.saturating_add(unsigned(took));
                o.gives = o.gives.saturating_add(unsigned(gave));
                o.net = o.net.saturating_add(net);
                o.undo_net = o.undo_net.saturating_add(undo);
            });
            if !touched.contains(&okey) {
                touched.push(okey);
            }
        }
        for slot in &usage.msg {
            let id = SlotId {
                ty: IpcType::Msg,
                ns: slot.ns,
                id: slot.msqid,
                semnum: 0,
                first_ns: slot.first_ns,
            };
            let now = SlotCounts([
                signed(slot.calls),
                signed(slot.sent),
                signed(slot.sent_bytes),
                signed(slot.received),
                signed(slot.received_bytes),
            ]);
            let Some(diff) = self.consume_slot(pkey, id, now) else {
                continue;
            };
            let Some(okey) = self.counted_object(slot.ns, IpcType::Msg, slot.msqid, slot.first_ns)
            else {
                continue;
            };
            let Some(msg) = self.objects.get_mut(&okey).and_then(|o| o.msg_mut()) else {
                continue;
            };
            let [_, sent, sent_bytes, received, received_bytes] = diff.0.map(unsigned);
            if sent > 0 {
                msg.peers
                    .make()
                    .senders
                    .touch(pkey, alive, slot.last_ns, sent, sent_bytes);
                msg.not_waiting(true, &pkey);
            }
            if received > 0 {
                msg.peers.make().receivers.touch(
                    pkey,
                    alive,
                    slot.last_ns,
                    received,
                    received_bytes,
                );
                msg.not_waiting(false, &pkey);
            }
            self.story_ops(okey, pkey, slot.last_ns, |o| {
                o.sent = o.sent.saturating_add(sent);
                o.sent_bytes = o.sent_bytes.saturating_add(sent_bytes);
                o.received = o.received.saturating_add(received);
                o.received_bytes = o.received_bytes.saturating_add(received_bytes);
            });
            if !touched.contains(&okey) {
                touched.push(okey);
            }
        }
        // Slots the kernel started again (stale, evicted) are forgotten, oldest first, once
        // there are more than it could still write out (a stale copy of one this old never
        // comes; a record that merely lacks a slot is no proof: it may be the stale one).
        if let Some(p) = self.processes.get_mut(&pkey)
            && p.usage.len() > KEPT_SLOTS
        {
            p.usage
                .sort_by_key(|(id, _)| std::cmp::Reverse(id.first_ns));
            p.usage.truncate(KEPT_SLOTS);
        }
        for okey in touched {
            self.relate(pkey, okey);
            let now = cx.now;
            self.evaluate_object(okey, now, cx);
        }
    }

    /// Records what was consumed of a slot; returns the difference, or `None` when there is
    /// nothing new (or the copy is stale).
    fn consume_slot(
        &mut self,
        pkey: ProcessKey,
        id: SlotId,
        now: SlotCounts,
    ) -> Option<SlotCounts> {
        let p = self.processes.get_mut(&pkey)?;
        // A copy of a slot the kernel has started again since: nothing new.
        let same_slot =
            |i: &SlotId| (i.ty, i.ns, i.id, i.semnum) == (id.ty, id.ns, id.id, id.semnum);
        if p.usage
            .iter()
            .any(|(i, _)| same_slot(i) && i.first_ns > id.first_ns)
        {
            return None;
        }
        if !p.usage.iter().any(|(i, _)| *i == id) {
            p.usage.push((id, SlotCounts::default()));
        }
        let (_, before) = p.usage.iter_mut().find(|(i, _)| *i == id)?;
        if now.0[0] < before.0[0] {
            return None;
        }
        let mut d = SlotCounts::default();
        for ((d, now), before) in d.0.iter_mut().zip(now.0).zip(before.0) {
            *d = now.wrapping_sub(before);
        }
        *before = now;
        (d != SlotCounts::default()).then_some(d)
    }
}
