//! Each object's story: what happened to it and who did it, kept (bounded) for `explain` and
//! `report`. The model records entries as it applies events and snapshots; nothing here reads a
//! clock or a file, so a replay of a recording tells the same story as the live daemon.
//!
//! Bounds: the first [`HEAD`] and the latest [`TAIL`] entries of an object are kept (the ones in
//! between are counted in `omitted`), operations are summed per process for at most
//! [`MAX_PROCS`] processes, and destroyed objects are archived (at most
//! [`super::ModelConfig::archive`]) once the model forgets them.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{CallSite, ProcessDetails, ProcessKey};

use super::process::Process;
use super::rules::{Rule, Severity};
use super::small_map::SmallMap;

/// Entries kept from the start of an object's life.
pub(crate) const HEAD: usize = 32;
/// Latest entries kept.
pub(crate) const TAIL: usize = 96;
/// Processes whose operations are summed per object.
pub(crate) const MAX_PROCS: usize = 64;

/// Why attachments changed (what the event in progress was).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Cause {
    #[default]
    Unknown,
    Shmat {
        addr: u64,
    },
    Shmdt {
        addr: u64,
    },
    Munmap {
        addr: u64,
    },
    Mremap {
        addr: u64,
    },
    Fork,
    Exec,
    Exit {
        code: Option<u32>,
    },
    /// A snapshot (bootstrap or resync) said so.
    Snapshot,
}

/// How an attachment came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachHow {
    Shmat,
    /// Inherited from the parent at fork.
    Fork,
    /// Already mapped when the model learned of it (bootstrap or resync).
    Snapshot,
}

/// How an attachment went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DetachHow {
    Shmdt,
    Munmap,
    Mremap,
    /// `shmat(SHM_REMAP)` mapped something else over it.
    Replaced,
    Exec,
    Exit,
    /// A snapshot no longer shows it.
    Snapshot,
    Unknown,
}

/// What one entry says happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "kebab-case")]
pub enum What {
    /// The object was created (by the entry's process).
    Create,
    /// The model learned of an object that already existed (a snapshot, or an event on an id it
    /// never saw created).
    Appear,
    /// A get that found the existing object.
    Open,
    Attach {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        address: Option<u64>,
        how: AttachHow,
        /// Mapped ranges added.
        ranges: u64,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        call_site: Option<Arc<CallSite>>,
    },
    Detach {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        address: Option<u64>,
        how: DetachHow,
        /// Mapped ranges removed, and how many the process still has.
        ranges: u64,
        left: u64,
        /// For a detach by exit: `task->exit_code`.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        exit_code: Option<u32>,
    },
    /// A ctl command that changes the object (SETVAL, SETALL, IPC_SET, SHM_LOCK, ...).
    Control {
        command: String,
    },
    /// `IPC_RMID`.
    Remove,
    /// The kernel freed it (a segment at its last detach after removal; every type at removal
    /// otherwise; or a snapshot no longer listing it).
    Destroy,
    /// A rule's condition started to hold (the time is when it started; grace rules are reported
    /// once it held for the grace period).
    FindingRaised {
        rule: Rule,
        severity: Severity,
    },
    FindingCleared {
        rule: Rule,
    },
}

/// One thing that happened to an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub time_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub process: Option<ProcessKey>,
    #[serde(flatten)]
    pub what: What,
}

/// A process's operations on one object, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpSummary {
    pub first_ns: u64,
    pub last_ns: u64,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub created: u64,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub opened: u64,
    /// Mapped ranges gained (shmat, fork) and lost (shmdt, munmap, exit, exec).
    #[serde(skip_serializing_if = "is_zero", default)]
    pub attached: u64,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub detached: u64,
    /// Successful semop calls (per semaphore they touched).
    #[serde(skip_serializing_if = "is_zero", default)]
    pub sem_ops: u64,
    /// Operations that took units (op < 0) and that gave units back (op > 0).
    #[serde(skip_serializing_if = "is_zero", default)]
    pub takes: u64,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub gives: u64,
    /// Units given back minus units taken, without SEM_UNDO (negative: units still held) and
    /// with SEM_UNDO (the kernel gives those back at exit).
    #[serde(skip_serializing_if = "is_zero_i", default)]
    pub net: i64,
    #[serde(skip_serializing_if = "is_zero_i", default)]
    pub undo_net: i64,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub sent: u64,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub sent_bytes: u64,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub received: u64,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub received_bytes: u64,
    /// ctl commands.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub controls: u64,
    /// Calls on the object that failed.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub failed: u64,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero_i(v: &i64) -> bool {
    *v == 0
}

/// A process as a story remembers it (the model may forget the process itself). Whether it is
/// alive is not kept: the model only forgets dead processes, so a story's character is read
/// only for a dead one (48 bytes, with the key 64: mimalloc's class below 80).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Character {
    /// The process's own names, shared.
    pub comm: Arc<str>,
    pub exe: Option<Arc<str>>,
    pub details: Option<Arc<ProcessDetails>>,
    pub exit_code: Option<u32>,
}

impl Character {
    pub fn of(p: &Process) -> Self {
        Self {
            comm: p.comm.clone(),
            exe: p.exe.clone(),
            details: p.details.clone(),
            exit_code: p.exit_code,
        }
    }

    /// Remembers `p` as it is now, in place: no allocation (this runs on every story entry, on
    /// the collector's hot path).
    fn refresh(&mut self, p: &Process) {
        self.comm.clone_from(&p.comm);
        self.exe.clone_from(&p.exe);
        self.details.clone_from(&p.details);
        self.exit_code = p.exit_code;
    }
}

/// Remembers process `key` as `p` is now.
fn remember(cast: &mut SmallMap<Character>, key: ProcessKey, p: &Process) {
    match cast.get_mut(&key) {
        Some(c) => c.refresh(p),
        None => {
            cast.insert(key, Character::of(p));
        }
    }
}

/// The counters of an [`OpSummary`] (signed ones zigzag-encoded), in field order.
const COUNTERS: usize = 15;

/// Zigzag: small magnitudes of either sign give small values.
fn zigzag(v: i64) -> u64 {
    (v << 1 ^ (v >> 63)).cast_unsigned()
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1).cast_signed() ^ -(v & 1).cast_signed()
}

/// The counters in a byte each, if they all fit.
fn narrow(c: [u64; COUNTERS]) -> Option<[u8; COUNTERS]> {
    let mut out = [0; COUNTERS];
    for (o, v) in out.iter_mut().zip(c) {
        *o = u8::try_from(v).ok()?;
    }
    Some(out)
}

/// A process's counters on one object: a byte each while they are small (most processes
/// create, open or attach an object once or twice), widened for good to a boxed `[u64; 15]` the
/// first time one does not fit. 16 bytes instead of 120 for every process of every object.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Counts {
    Narrow([u8; COUNTERS]),
    Wide(Box<[u64; COUNTERS]>),
}

impl Default for Counts {
    fn default() -> Self {
        Self::Narrow([0; COUNTERS])
    }
}

/// A process's dealings with one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProcOps {
    pub first_ns: u64,
    pub last_ns: u64,
    counts: Counts,
    /// Where it last attached the segment from.
    pub attach_site: Option<Arc<CallSite>>,
}

impl ProcOps {
    fn new(now: u64) -> Self {
        Self {
            first_ns: now,
            last_ns: now,
            ..Self::default()
        }
    }

    /// The operations, summed.
    pub fn summary(&self) -> OpSummary {
        let c = match &self.counts {
            Counts::Narrow(n) => n.map(u64::from),
            Counts::Wide(w) => **w,
        };
        OpSummary {
            first_ns: self.first_ns,
            last_ns: self.last_ns,
            created: c[0],
            opened: c[1],
            attached: c[2],
            detached: c[3],
            sem_ops: c[4],
            takes: c[5],
            gives: c[6],
            net: unzigzag(c[7]),
            undo_net: unzigzag(c[8]),
            sent: c[9],
            sent_bytes: c[10],
            received: c[11],
            received_bytes: c[12],
            controls: c[13],
            failed: c[14],
        }
    }

    /// Changes the operations through `f`.
    pub fn update(&mut self, f: impl FnOnce(&mut OpSummary)) {
        let mut s = self.summary();
        f(&mut s);
        self.first_ns = s.first_ns;
        self.last_ns = s.last_ns;
        let c = [
            s.created,
            s.opened,
            s.attached,
            s.detached,
            s.sem_ops,
            s.takes,
            s.gives,
            zigzag(s.net),
            zigzag(s.undo_net),
            s.sent,
            s.sent_bytes,
            s.received,
            s.received_bytes,
            s.controls,
            s.failed,
        ];
        match &mut self.counts {
            Counts::Wide(w) => **w = c,
            Counts::Narrow(n) => match narrow(c) {
                Some(bytes) => *n = bytes,
                None => self.counts = Counts::Wide(Box::new(c)),
            },
        }
    }
}

/// What a story keeps once it outgrows its common size: the latest entries once its head is
/// full, how many were dropped in between, and how many processes' operations were dropped.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tail {
    pub entries: VecDeque<Entry>,
    /// Entries dropped between `head` and `entries`.
    pub omitted: u64,
    /// Processes whose operations were dropped (more than [`MAX_PROCS`]).
    pub procs_dropped: u64,
}

/// The story of one object.
#[derive(Clone, Debug, Default)]
pub(crate) struct Story {
    /// The first entries, reallocated one entry larger at each push (a boxed slice: no capacity
    /// field; most objects have one to three entries).
    pub head: Box<[Entry]>,
    /// Made when the head is full or operations are dropped: most objects never get there, and
    /// every live object carries a story.
    pub tail: Option<Box<Tail>>,
    pub procs: SmallMap<ProcOps>,
    pub cast: SmallMap<Character>,
    /// Where in the code it was created.
    pub create_site: Option<Arc<CallSite>>,
}

impl Story {
    /// Appends an entry (the process, if any, is remembered as it is now).
    pub fn push(
        &mut self,
        time_ns: u64,
        process: Option<(ProcessKey, Option<&Process>)>,
        what: What,
    ) {
        let key = process.map(|(k, p)| {
            if let Some(p) = p {
                remember(&mut self.cast, k, p);
            } else {
                self.cast.get_or_insert_with(k, Character::default);
            }
            k
        });
        let e = Entry {
            time_ns,
            process: key,
            what,
        };
        if self.head.len() < HEAD {
            let end = self.head.len();
            super::small_map::insert_exact(&mut self.head, end, e);
            return;
        }
        let tail = self.tail.get_or_insert_default();
        tail.entries.push_back(e);
        if tail.entries.len() > TAIL {
            tail.entries.pop_front();
            tail.omitted = tail.omitted.saturating_add(1);
        }
    }

    /// Entries dropped between the head and the tail.
    pub fn omitted(&self) -> u64 {
        self.tail.as_ref().map_or(0, |t| t.omitted)
    }

    /// Processes whose operations were dropped.
    pub fn procs_dropped(&self) -> u64 {
        self.tail.as_ref().map_or(0, |t| t.procs_dropped)
    }

    /// The entries kept, in time order (finding entries carry the time their condition started,
    /// so they may have been recorded later than entries that follow them).
    pub fn entries(&self) -> Vec<&Entry> {
        let tail = self.tail.iter().flat_map(|t| t.entries.iter());
        let mut all: Vec<&Entry> = self.head.iter().chain(tail).collect();
        all.sort_by_key(|e| e.time_ns);
        all
    }

    /// The operations of process `key` (created on first use; bounded).
    pub fn ops(&mut self, key: ProcessKey, p: Option<&Process>, now: u64) -> &mut ProcOps {
        if !self.procs.contains_key(&key) && self.procs.len() >= MAX_PROCS {
            // Forget the process that has been quiet the longest.
            if let Some(old) = self
                .procs
                .iter()
                .min_by_key(|(_, o)| o.last_ns)
                .map(|(k, _)| *k)
            {
                self.procs.remove(&old);
                let tail = self.tail.get_or_insert_default();
                tail.procs_dropped = tail.procs_dropped.saturating_add(1);
            }
        }
        if let Some(p) = p {
            remember(&mut self.cast, key, p);
        }
        let o = self.procs.get_or_insert_with(key, || ProcOps::new(now));
        o.last_ns = o.last_ns.max(now);
        o
    }

    /// Process `key`'s mapped ranges of the segment changed by `d` (it has `left` now), because
    /// of `cause`.
    pub fn mapped(
        &mut self,
        key: ProcessKey,
        p: Option<&Process>,
        d: i64,
        left: u64,
        cause: Cause,
        now: u64,
    ) {
        let n = d.unsigned_abs();
        if d > 0 {
            let (how, address) = match cause {
                Cause::Shmat { addr } => (AttachHow::Shmat, Some(addr)),
                Cause::Fork => (AttachHow::Fork, None),
                Cause::Snapshot => (AttachHow::Snapshot, None),
                // A munmap or mremap that split a range adds one; nothing was attached.
                _ => return,
            };
            self.ops(key, p, now)
                .update(|o| o.attached = o.attached.saturating_add(n));
            self.push(
                now,
                Some((key, p)),
                What::Attach {
                    address,
                    how,
                    ranges: n,
                    call_site: None,
                },
            );
            return;
        }
        let (how, address, exit_code) = match cause {
            Cause::Shmdt { addr } => (DetachHow::Shmdt, Some(addr), None),
            Cause::Munmap { addr } => (DetachHow::Munmap, Some(addr), None),
            Cause::Mremap { addr } => (DetachHow::Mremap, Some(addr), None),
            Cause::Shmat { addr } => (DetachHow::Replaced, Some(addr), None),
            Cause::Exec => (DetachHow::Exec, None, None),
            Cause::Exit { code } => (DetachHow::Exit, None, code),
            Cause::Snapshot => (DetachHow::Snapshot, None, None),
            Cause::Fork | Cause::Unknown => (DetachHow::Unknown, None, None),
        };
        self.ops(key, p, now)
            .update(|o| o.detached = o.detached.saturating_add(n));
        self.push(
            now,
            Some((key, p)),
            What::Detach {
                address,
                how,
                ranges: n,
                left,
                exit_code,
            },
        );
    }

    /// The latest attach entry of `process` at `address` (newest first), to give it its call
    /// site.
    pub fn attach_entry(&mut self, process: ProcessKey, address: u64) -> Option<&mut Entry> {
        let matches = |e: &Entry| {
            e.process == Some(process)
                && matches!(e.what, What::Attach { address: Some(a), how: AttachHow::Shmat, .. } if a == address)
        };
        if let Some(t) = self.tail.as_deref_mut()
            && let Some(e) = t.entries.iter_mut().rev().find(|e| matches(e))
        {
            return Some(e);
        }
        self.head.iter_mut().rev().find(|e| matches(e))
    }

    /// Refreshes what the story remembers of its processes (before the model forgets them).
    pub fn refresh_cast<'a>(&mut self, lookup: impl Fn(ProcessKey) -> Option<&'a Process>) {
        for (k, c) in self.cast.iter_mut() {
            if let Some(p) = lookup(*k) {
                *c = Character::of(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: u32) -> ProcessKey {
        ProcessKey {
            pid,
            start_ticks: 1,
        }
    }

    #[test]
    fn keeps_the_head_and_the_tail() {
        let mut s = Story::default();
        for t in 0..1000u64 {
            s.push(t, Some((key(1), None)), What::Open);
        }
        let e = s.entries();
        assert_eq!(e.len(), HEAD + TAIL);
        assert_eq!(s.omitted(), 1000 - (HEAD + TAIL) as u64);
        assert_eq!(e[0].time_ns, 0);
        assert_eq!(e[HEAD - 1].time_ns, HEAD as u64 - 1);
        assert_eq!(e[HEAD].time_ns, 1000 - TAIL as u64);
        assert_eq!(e.last().unwrap().time_ns, 999);
    }

    #[test]
    fn entries_come_out_in_time_order() {
        let mut s = Story::default();
        s.push(10, None, What::Create);
        s.push(30, None, What::Destroy);
        s.push(
            20,
            None,
            What::FindingRaised {
                rule: Rule::OrphanedSegment,
                severity: Severity::Warning,
            },
        );
        let times: Vec<u64> = s.entries().iter().map(|e| e.time_ns).collect();
        assert_eq!(times, [10, 20, 30]);
    }

    #[test]
    fn operations_are_bounded_per_object() {
        let mut s = Story::default();
        for pid in 0..200u32 {
            s.ops(key(pid), None, u64::from(pid))
                .update(|o| o.sem_ops += 1);
        }
        assert_eq!(s.procs.len(), MAX_PROCS);
        assert_eq!(s.procs_dropped(), 200 - MAX_PROCS as u64);
        // The quietest were dropped.
        assert!(s.procs.contains_key(&key(199)));
        assert!(!s.procs.contains_key(&key(0)));
    }

    #[test]
    fn operations_widen_exactly() {
        let mut o = ProcOps::new(5);
        o.update(|s| {
            s.created = 1;
            s.net = -3;
            s.undo_net = 2;
        });
        assert!(matches!(o.counts, Counts::Narrow(_)));
        assert_eq!((o.summary().created, o.summary().net), (1, -3));
        o.update(|s| {
            s.sent_bytes = u64::MAX;
            s.net = i64::MIN;
            s.last_ns = 9;
        });
        assert!(matches!(o.counts, Counts::Wide(_)));
        let s = o.summary();
        assert_eq!((s.first_ns, s.last_ns, s.created), (5, 9, 1));
        assert_eq!((s.sent_bytes, s.net, s.undo_net), (u64::MAX, i64::MIN, 2));
        o.update(|s| s.sent_bytes = 0);
        assert_eq!(o.summary().sent_bytes, 0, "stays wide, still exact");
        for v in [0, 1, -1, 127, -128, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn entries_serialize_flat() {
        let e = Entry {
            time_ns: 5,
            process: Some(key(7)),
            what: What::Detach {
                address: Some(0x1000),
                how: DetachHow::Exit,
                ranges: 1,
                left: 0,
                exit_code: Some(9),
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["what"], "detach");
        assert_eq!(v["how"], "exit");
        assert_eq!(v["exit_code"], 9);
        assert_eq!(serde_json::from_value::<Entry>(v).unwrap(), e);
    }
}
