//! The ownership model: a pure, in-memory account of every System V IPC object, which
//! processes hold or use it, and what leaked. No IO, no clock: time comes in through
//! `Event::time_ns`, `Snapshot::taken_ns` and the `now_ns` argument of [`Model::tick`].
//!
//! # Feeding it
//!
//! * [`Model::bootstrap`] with a [`Snapshot`] of each IPC namespace: objects that predate the
//!   model, the processes, their mappings, semaphore values, waiters and limits. The findings it
//!   implies come out of the next [`Model::tick`].
//! * [`Model::apply`] for every [`Event`], in order: returns the `event.action` the event
//!   gets, the object it concerned, the actions it caused (a segment destroyed by the detach,
//!   munmap, exit or exec that dropped its last attachment) and the findings it raised or
//!   cleared.
//! * [`Model::tick`] periodically: grace periods expire there, the `leaky-process` window slides,
//!   and (once per grace period) dead processes nothing refers to and destroyed objects older
//!   than the grace period are forgotten.
//! * [`Model::reconcile`] with a fresh snapshot: corrects the model and reports what differed.
//!
//! # Objects
//!
//! Objects are keyed by [`ObjectKey`] (namespace, type, id, generation): the kernel reuses ids,
//! so every object the model learns of gets a new generation (from one counter: unique in the
//! model). An event for an id the model never saw creates the object lazily with unknown
//! fields (a segment of unknown size is assumed one page long when attached).
//!
//! A get is a create when the key is `IPC_PRIVATE` (the kernel creates for it whatever the
//! flags), or `IPC_CREAT|IPC_EXCL` succeeded, or `IPC_CREAT` returned an id that was not a live
//! object the model knew; otherwise an open. A failed get is a create when `IPC_CREAT` was
//! asked (or the key was private).
//!
//! Shared memory attachments are kept as the kernel's vmas: mapped ranges with their offset
//! into the segment (`shm.rs`). An experiment on Linux 6.18 (shmat 4 pages, munmap the middle
//! one, read `shm_nattch`) showed nattch go from 1 to 2: nattch counts vmas, so the model's
//! nattch is the number of mapped ranges. The same experiment confirmed: `shmdt(addr)` detaches
//! every fragment of the attach made at `addr` (even when the first page was unmapped; and
//! `shmdt(addr + PAGE)` on an intact attach is EINVAL), a fork copies every vma (nattch of a
//! split attach goes 3 → 6), `mremap` moves/shrinks/grows a range (moving a fragment back next to
//! its left neighbour merges them, a three-way merge does not happen), `MREMAP_DONTUNMAP` leaves
//! the old range mapped (nattch + 1), `SHM_REMAP` splits what it lands on, and a segment removed
//! while attached can still be attached by id.
//!
//! # What events cannot show
//!
//! Blocked tasks (semop / msgrcv / msgsnd waiters) are only known from snapshots: `reconcile`
//! stores them, a completed semop or msgrcv by a waiter removes it, and the
//! `semaphore-held-by-dead-process` rule uses them for its critical case. mmap or mprotect over
//! an attachment, `IPC_SET` (new mode/owner) and `SETALL` values are not in the event stream
//! either: the next reconcile corrects them. Lost records set [`Model::needs_reconcile`].
//!
//! # Findings
//!
//! See [`Rule`]. A finding is raised once and cleared once; while active, a
//! `semaphore-held-by-dead-process` finding is kept up to date (holders, waiters, severity)
//! without a new change. Evidence names processes with their role; a process known only by pid
//! (a creator that predates the model) has no `entity`.

mod aggregate;
mod apply;
mod core;
mod explain;
mod leaky;
mod object;
mod posix;
mod process;
mod reconcile;
mod related;
mod rules;
mod shm;
mod small_map;
mod story;
mod table;
mod view;

#[cfg(test)]
mod aggregate_tests;
#[cfg(test)]
mod explain_tests;
#[cfg(test)]
mod posix_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

/// The model's hash maps and sets: foldhash (seeded per process) instead of SipHash, which was a
/// tenth of the model's time per record. Keys are pids, ids and object keys.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// See [`HashMap`].
pub type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
use std::sync::Arc;

use serde::Serialize;

use crate::event::{Action, Event, IpcType, ProcessDetails, ProcessKey};
use crate::snapshot::{Limits, Snapshot};

pub use aggregate::{
    Aggregate, MqueueTotals, MsgSlotTotals, QueueTotals, SemSlotTotals, SetTotals, Usage,
};
pub use explain::{
    ExplainError, Explanation, HeldBy, Operations, OtherFinding, Person, ProgramTotals, Report,
    Target, Verdict, VerdictFinding, ended,
};
pub use object::{ObjectKey, ObjectRef, ObjectStatus, Peer, SemAdj, SemSlot};
pub use posix::{Holding, PosixHolderView, PosixKey, PosixRef, PosixView, QueueState, shell_quote};
pub use reconcile::{Difference, MappedRange, Reconciled};
pub use rules::{Finding, FindingChange, LimitKind, ProcessEvidence, Role, Rule, Severity};
pub use story::{AttachHow, DetachHow, Entry as StoryEntry, OpSummary, What};
pub use view::{
    AttachmentView, MappingView, MsgView, ObjectView, PeerView, ProcessRef, ProcessView,
    SemHoldingView, SemView, ShmView,
};

use leaky::Program;
use object::Object;
use process::Process;
use rules::FindingKey;

/// Tunables. `Default` gives the documented defaults (boot time 0: set it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ModelConfig {
    /// How long a leak condition must hold before it is reported (default 60 s).
    pub grace_ns: u64,
    /// Wall-clock time of boot, ns since the epoch: converts process start ticks to wall time.
    pub boot_time_ns: u64,
    /// `USER_HZ` (100).
    pub ticks_per_sec: u64,
    /// `leaky-process`: more than this many objects created and not removed ... (default 100)
    pub leaky_threshold: u32,
    /// ... within this window (default 60 s).
    pub leaky_window_ns: u64,
    /// Page size (4096).
    pub page_size: u64,
    /// Bounded memory: at most this many processes are tracked (default 262,144). Beyond it,
    /// dead processes are forgotten oldest first, then live ones that hold and use nothing.
    pub max_processes: usize,
    /// At most this many objects are tracked (default 131,072). Beyond it, destroyed objects
    /// are forgotten oldest first. Live objects are never evicted (the kernel bounds them:
    /// shmmni, semmni, msgmni per namespace).
    pub max_objects: usize,
    /// How many destroyed objects' stories are kept for `explain` and `report` once the model
    /// forgets the objects themselves.
    pub archive: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            grace_ns: 60 * NS_PER_SEC,
            boot_time_ns: 0,
            ticks_per_sec: 100,
            leaky_threshold: 100,
            leaky_window_ns: 60 * NS_PER_SEC,
            page_size: 4096,
            max_processes: 1 << 18,
            max_objects: 1 << 17,
            archive: 256,
        }
    }
}

pub(crate) const NS_PER_SEC: u64 = 1_000_000_000;

/// A process for the model's unit tests: pid `pid`, started at tick 1.
#[cfg(test)]
pub(crate) fn test_key(pid: u32) -> ProcessKey {
    ProcessKey {
        pid,
        start_ticks: 1,
    }
}

/// What [`Model::apply`] returns: what the sinks need about one event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// The `event.action` of this event. Always `Some` for IPC syscalls and process lifecycle
    /// events; for munmap `Some(ShmDetach)` when it unmapped (part of) an attachment, else
    /// `None`; `None` for mremap.
    pub action: Option<Action>,
    /// The object the event concerned (for `ipc.*` fields: key, id, size/nsems).
    pub object: Option<ObjectRef>,
    /// Further actions the event caused: `ShmDestroy` for each removed segment whose last
    /// attachment it dropped (or an `IPC_RMID` of an unattached segment).
    pub derived: Vec<(Action, ObjectRef)>,
    pub findings: Vec<FindingChange>,
    /// The POSIX object the event concerned (POSIX message queue events: name, inode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posix: Option<PosixRef>,
}

/// Per-namespace usage and limits (for `near-limit`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Namespace {
    pub limits: Option<Limits>,
    /// Segments that exist (live or removed-but-attached).
    pub shm_count: u64,
    /// Their pages.
    pub shm_pages: u64,
    pub sem_sets: u64,
    pub sem_total: u64,
    pub msg_count: u64,
}

/// What one call produces besides its return value.
#[derive(Debug)]
pub(crate) struct Cx {
    /// Time of the event / snapshot.
    pub now: u64,
    pub derived: Vec<(Action, ObjectRef)>,
    pub findings: Vec<FindingChange>,
    /// Inside a reconcile: the kernel decides statuses, no derived destroys.
    pub sync: bool,
    /// The POSIX object a POSIX event concerned.
    pub posix: Option<PosixRef>,
    /// What is changing attachments (for the objects' stories).
    pub cause: story::Cause,
}

impl Cx {
    pub fn new(now: u64) -> Self {
        Self {
            now,
            derived: Vec::new(),
            findings: Vec::new(),
            sync: false,
            posix: None,
            cause: story::Cause::Unknown,
        }
    }
}

/// The model. See the module documentation.
#[derive(Debug)]
pub struct Model {
    cfg: ModelConfig,
    /// Hashed, not ordered: every event looks objects up several times, and a B-tree's key
    /// comparisons were the largest share of the model's time. What lists objects sorts them
    /// ([`Model::objects_in_order`]). Also finds the latest object of an id ([`Model::latest`]).
    objects: table::ObjectTable,
    /// Live objects by (ns, type, IPC key), private keys excluded.
    by_key: HashMap<(u32, IpcType, i32), ObjectKey>,
    processes: HashMap<ProcessKey, Process>,
    /// Live processes by pid.
    live_by_pid: HashMap<u32, ProcessKey>,
    next_attach: u64,
    findings: BTreeMap<FindingKey, Finding>,
    /// Conditions that hold and wait for their grace period: since when.
    pending: HashMap<FindingKey, u64>,
    /// Findings produced outside apply/tick/reconcile (bootstrap), returned by the next tick.
    outbox: Vec<FindingChange>,
    namespaces: HashMap<u32, Namespace>,
    /// The sequence number of the next creation charged to a program (`leaky-process`;
    /// never 0: an object keeps its own in 4 bytes, as an `Option<NonZeroU32>`).
    next_leak_seq: std::num::NonZeroU32,
    programs: HashMap<String, Program>,
    now_ns: u64,
    last_sweep_ns: u64,
    lost_events: u64,
    needs_reconcile: bool,
    evicted: Evicted,
    /// The POSIX objects (`posix.rs`).
    posix: posix::PosixTable,
    /// Destroyed objects the model forgot, with their stories (oldest first).
    archive: VecDeque<Box<object::Object>>,
    /// Details of processes described before the model saw them.
    pending_details: HashMap<ProcessKey, Arc<ProcessDetails>>,
    /// Objects each program created and removed, since the model started.
    program_totals: BTreeMap<String, ProgramTotals>,
}

/// What the caps made the model forget (counted in the session summary).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Evicted {
    pub processes: u64,
    pub objects: u64,
}

impl Model {
    pub fn new(cfg: ModelConfig) -> Self {
        Self {
            cfg,
            objects: table::ObjectTable::default(),
            by_key: HashMap::default(),
            processes: HashMap::default(),
            live_by_pid: HashMap::default(),
            next_attach: 0,
            findings: BTreeMap::new(),
            pending: HashMap::default(),
            outbox: Vec::new(),
            namespaces: HashMap::default(),
            programs: HashMap::default(),
            next_leak_seq: std::num::NonZeroU32::MIN,
            now_ns: 0,
            last_sweep_ns: 0,
            lost_events: 0,
            needs_reconcile: false,
            evicted: Evicted::default(),
            posix: posix::PosixTable::default(),
            archive: VecDeque::new(),
            pending_details: HashMap::default(),
            program_totals: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Initial state from the kernel's truth (one namespace per call): objects that predate
    /// the model get an unknown creator unless the snapshot's `cpid` is a process whose start
    /// precedes the object's `ctime`. Findings it implies come out of the next [`Self::tick`].
    pub fn bootstrap(&mut self, snap: &Snapshot) {
        let mut cx = Cx::new(snap.taken_ns);
        cx.sync = true;
        self.sync(snap, None, &mut cx);
        self.outbox.append(&mut cx.findings);
        self.enforce_caps();
    }

    /// Applies one event; returns what the sinks need.
    pub fn apply(&mut self, ev: &Event) -> Applied {
        let applied = self.apply_event(ev);
        self.enforce_caps();
        applied
    }

    /// Applies totals the kernel aggregated (`watch`): the operations they add since the
    /// previous totals of the same kernel entry. Returns the findings they raised or cleared
    /// (no action: aggregated operations are not events).
    pub fn apply_aggregate(&mut self, agg: &Aggregate) -> Applied {
        self.apply_aggregate_inner(agg)
    }

    /// Time-driven rules: conditions that held for their grace period are raised, the
    /// `leaky-process` window slides, and (at most once per grace period) dead processes and
    /// destroyed objects nothing refers to are forgotten. Call periodically with the current
    /// time (or, replaying, with event times).
    pub fn tick(&mut self, now_ns: u64) -> Vec<FindingChange> {
        self.tick_inner(now_ns)
    }

    /// Compares the model with a fresh snapshot of namespace `snap.ipc_ns`, corrects it and
    /// reports the differences (a second reconcile with the same snapshot reports none).
    pub fn reconcile(&mut self, snap: &Snapshot) -> Reconciled {
        let mut cx = Cx::new(snap.taken_ns);
        cx.sync = true;
        let mut differences = Vec::new();
        let posix_changed = self.sync(snap, Some(&mut differences), &mut cx);
        let mut findings = cx.findings;
        findings.extend(self.tick_inner(snap.taken_ns));
        self.needs_reconcile = false;
        self.enforce_caps();
        Reconciled {
            differences,
            findings,
            posix_changed,
        }
    }

    /// Every object the model holds (destroyed ones until they are forgotten), in key order.
    pub fn objects(&self) -> impl Iterator<Item = ObjectView<'_>> {
        self.objects_in_order().into_iter().map(|o| self.view(o))
    }

    /// The objects the model holds, in key order (namespace, type, id, generation).
    pub(crate) fn objects_in_order(&self) -> Vec<&Object> {
        let mut objects: Vec<&Object> = self.objects.values().collect();
        objects.sort_unstable_by_key(|o| o.key);
        objects
    }

    /// The latest object with this id.
    pub fn object(&self, ns: u32, ty: IpcType, id: i32) -> Option<ObjectView<'_>> {
        let key = self.latest(ns, ty, id)?;
        self.objects.get(&key).map(|o| self.view(o))
    }

    /// One object by its full key.
    pub fn object_by_key(&self, key: ObjectKey) -> Option<ObjectView<'_>> {
        self.objects.get(&key).map(|o| self.view(o))
    }

    /// Active findings.
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.values()
    }

    /// Every process the model remembers (live ones, and dead ones still referred to).
    pub fn processes(&self) -> impl Iterator<Item = ProcessView<'_>> {
        self.processes.values().map(|p| self.process_view(p))
    }

    pub fn process(&self, key: ProcessKey) -> Option<ProcessView<'_>> {
        self.processes.get(&key).map(|p| self.process_view(p))
    }

    /// Records the kernel could not deliver, in total.
    /// What the caps ([`ModelConfig::max_processes`], [`ModelConfig::max_objects`]) evicted.
    pub fn evicted(&self) -> Evicted {
        self.evicted
    }

    /// Processes and objects tracked now.
    pub fn tracked(&self) -> (usize, usize) {
        (self.processes.len(), self.objects.len())
    }

    pub fn lost_events(&self) -> u64 {
        self.lost_events
    }

    /// Whether events were lost since the last reconcile (the model may be wrong).
    pub fn needs_reconcile(&self) -> bool {
        self.needs_reconcile
    }

    /// What is known about a process beyond its identity (executable, command line, parent
    /// chain, unit, container): kept with the process and named in findings and stories. A
    /// process the model does not know yet gets it when it appears.
    pub fn describe_process(&mut self, key: ProcessKey, details: Arc<ProcessDetails>) {
        if let Some(p) = self.processes.get_mut(&key) {
            p.describe(details);
        } else {
            if self.pending_details.len() >= 4096 {
                self.pending_details.clear();
            }
            self.pending_details.insert(key, details);
        }
    }

    /// The newest time the model has seen.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }
}
