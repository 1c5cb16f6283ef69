//! Each object's story: what happened to it and who did it, kept (bounded) for `explain` and
//! `report`. The model records entries as it applies events and snapshots; nothing here reads a
//! clock or a file, so a replay of a recording tells the same story as the live daemon.
//!
//! Bounds: the first [`HEAD`] and the latest [`TAIL`] entries of an object are kept (the ones in
//! between are counted in `omitted`), operations are summed per process for at most
//! [`MAX_PROCS`] processes, and destroyed objects are archived (at most
//! [`super::ModelConfig::archive`]) once the model forgets them.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{CallSite, ProcessKey};

use super::process::{Character, Process};
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

/// What a [`Kept`] entry says (the rest of a [`What`] is in its other fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Create,
    Appear,
    Open,
    Remove,
    Destroy,
    Attach(AttachHow),
    Detach(DetachHow),
    Raised(Rule, Severity),
    Cleared(Rule),
}

/// [`Small::flags`]: the entry names a process.
const PROCESS: u8 = 1;
/// [`Small::flags`]: `word` is an address.
const ADDRESS: u8 = 2;
/// [`Small::flags`]: `word` is an exit code.
const EXIT_CODE: u8 = 4;

/// An entry in 32 bytes instead of 80, when its values fit (they nearly always do: a
/// process's start time in ticks fits in 32 bits for 497 days of uptime, and an attach or
/// detach moves a few ranges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Small {
    time_ns: u64,
    /// The address of an attach or detach, or the exit code of a detach by exit (`flags`
    /// says which, if any).
    word: u64,
    pid: u32,
    start_ticks: u32,
    ranges: u16,
    left: u16,
    kind: Kind,
    flags: u8,
}

impl Small {
    /// `e` in 32 bytes, if it fits (a call site or a ctl command's name never does).
    fn pack(e: &Entry) -> Option<Self> {
        let mut s = Self {
            time_ns: e.time_ns,
            ..SMALL_NONE
        };
        if let Some(k) = e.process {
            s.pid = k.pid;
            s.start_ticks = u32::try_from(k.start_ticks).ok()?;
            s.flags |= PROCESS;
        }
        s.kind = match &e.what {
            What::Create => Kind::Create,
            What::Appear => Kind::Appear,
            What::Open => Kind::Open,
            What::Remove => Kind::Remove,
            What::Destroy => Kind::Destroy,
            What::FindingRaised { rule, severity } => Kind::Raised(*rule, *severity),
            What::FindingCleared { rule } => Kind::Cleared(*rule),
            What::Attach {
                address,
                how,
                ranges,
                call_site: None,
            } => {
                s.set_word(*address, ADDRESS);
                s.ranges = u16::try_from(*ranges).ok()?;
                Kind::Attach(*how)
            }
            What::Detach {
                address,
                how,
                ranges,
                left,
                exit_code,
            } => {
                match (address, exit_code) {
                    (Some(_), Some(_)) => return None,
                    (_, None) => s.set_word(*address, ADDRESS),
                    (None, Some(c)) => s.set_word(Some(u64::from(*c)), EXIT_CODE),
                }
                s.ranges = u16::try_from(*ranges).ok()?;
                s.left = u16::try_from(*left).ok()?;
                Kind::Detach(*how)
            }
            What::Attach { .. } | What::Control { .. } => return None,
        };
        Some(s)
    }

    fn set_word(&mut self, word: Option<u64>, flag: u8) {
        if let Some(w) = word {
            self.word = w;
            self.flags |= flag;
        }
    }

    /// `word`, if `flag` says it holds that.
    fn word(&self, flag: u8) -> Option<u64> {
        (self.flags & flag != 0).then_some(self.word)
    }

    fn process(&self) -> Option<ProcessKey> {
        (self.flags & PROCESS != 0).then_some(ProcessKey {
            pid: self.pid,
            start_ticks: u64::from(self.start_ticks),
        })
    }

    fn entry(&self) -> Entry {
        let what = match self.kind {
            Kind::Create => What::Create,
            Kind::Appear => What::Appear,
            Kind::Open => What::Open,
            Kind::Remove => What::Remove,
            Kind::Destroy => What::Destroy,
            Kind::Raised(rule, severity) => What::FindingRaised { rule, severity },
            Kind::Cleared(rule) => What::FindingCleared { rule },
            Kind::Attach(how) => What::Attach {
                address: self.word(ADDRESS),
                how,
                ranges: u64::from(self.ranges),
                call_site: None,
            },
            Kind::Detach(how) => What::Detach {
                address: self.word(ADDRESS),
                how,
                ranges: u64::from(self.ranges),
                left: u64::from(self.left),
                exit_code: self.word(EXIT_CODE).and_then(|c| u32::try_from(c).ok()),
            },
        };
        Entry {
            time_ns: self.time_ns,
            process: self.process(),
            what,
        }
    }
}

/// An entry as a story keeps it: [`Small`] when it fits, boxed otherwise (a ctl command, an
/// attach given its call site): 32 bytes instead of the 80 of an [`Entry`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kept {
    Small(Small),
    Big(Box<Entry>),
}

impl Kept {
    fn new(e: Entry) -> Self {
        Small::pack(&e).map_or_else(|| Self::Big(Box::new(e)), Self::Small)
    }

    fn entry(&self) -> Entry {
        match self {
            Self::Small(s) => s.entry(),
            Self::Big(e) => Entry::clone(e),
        }
    }

    /// If this is `process`'s shmat at `address`: whether it has its call site.
    fn shmat_at(&self, process: ProcessKey, address: u64) -> Option<bool> {
        match self {
            Self::Small(s) => (s.process() == Some(process)
                && s.kind == Kind::Attach(AttachHow::Shmat)
                && s.word(ADDRESS) == Some(address))
            .then_some(false),
            Self::Big(e) => match &e.what {
                What::Attach {
                    address: Some(a),
                    how: AttachHow::Shmat,
                    call_site,
                    ..
                } if *a == address && e.process == Some(process) => Some(call_site.is_some()),
                _ => None,
            },
        }
    }

    /// Gives this attach entry its call site (boxed: few attaches get one).
    fn set_call_site(&mut self, site: Arc<CallSite>) {
        let mut e = match std::mem::replace(self, Self::Small(SMALL_NONE)) {
            Self::Small(s) => Box::new(s.entry()),
            Self::Big(e) => e,
        };
        if let What::Attach { call_site, .. } = &mut e.what {
            *call_site = Some(site);
        }
        *self = Self::Big(e);
    }
}

/// A placeholder while an entry is rewritten.
const SMALL_NONE: Small = Small {
    time_ns: 0,
    word: 0,
    pid: 0,
    start_ticks: 0,
    ranges: 0,
    left: 0,
    kind: Kind::Create,
    flags: 0,
};

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

/// The counters of an [`OpSummary`] (signed ones zigzag-encoded), in field order.
const COUNTERS: usize = 15;

/// Zigzag: small magnitudes of either sign give small values.
fn zigzag(v: i64) -> u64 {
    (v << 1 ^ (v >> 63)).cast_unsigned()
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1).cast_signed() ^ -(v & 1).cast_signed()
}

/// The counters in four bits each (the first in the lowest bits), if they all fit.
fn narrow(c: &[u64; COUNTERS]) -> Option<u64> {
    // Without a branch per counter: this runs at every operation.
    let any = c.iter().fold(0, |any, &v| any | v);
    (any < 16).then(|| c.iter().rev().fold(0, |packed, &v| packed << 4 | v))
}

/// `last_ns - first_ns` in 56 bits (2.3 years), if it fits.
fn offset(first_ns: u64, last_ns: u64) -> Option<[u8; 7]> {
    let d = last_ns.checked_sub(first_ns)?.to_le_bytes();
    let (low, high) = d.split_at(7);
    (high == [0]).then(|| low.try_into().ok()).flatten()
}

/// A process's counters on one object and the time of its latest operation there: four bits a
/// counter and the time as an offset from the first operation's while they fit (most processes
/// create, open or attach an object once or twice), widened for good to a boxed [`Wide`] the
/// first time they do not, or when the process's attach site is known. 16 bytes instead of 136
/// for every process of every object.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Counts {
    Narrow { counts: u64, since_first: [u8; 7] },
    Wide(Box<Wide>),
}

/// [`Counts`] at full width.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Wide {
    counts: [u64; COUNTERS],
    last_ns: u64,
    /// Where the process last attached the segment from.
    attach_site: Option<Arc<CallSite>>,
}

/// A process's dealings with one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcOps {
    first_ns: u64,
    counts: Counts,
}

impl ProcOps {
    fn new(now: u64) -> Self {
        Self {
            first_ns: now,
            counts: Counts::Narrow {
                counts: 0,
                since_first: [0; 7],
            },
        }
    }

    /// The time of its latest operation.
    pub fn last_ns(&self) -> u64 {
        match &self.counts {
            Counts::Narrow { since_first, .. } => {
                let mut d = [0; 8];
                d[..7].copy_from_slice(since_first);
                self.first_ns.saturating_add(u64::from_le_bytes(d))
            }
            Counts::Wide(w) => w.last_ns,
        }
    }

    fn counters(&self) -> [u64; COUNTERS] {
        match &self.counts {
            Counts::Narrow { counts, .. } => std::array::from_fn(|i| counts >> (4 * i) & 15),
            Counts::Wide(w) => w.counts,
        }
    }

    /// Sets the counters and the latest time, widening them if they do not fit.
    fn set(&mut self, c: [u64; COUNTERS], last_ns: u64) {
        match &mut self.counts {
            Counts::Wide(w) => {
                w.counts = c;
                w.last_ns = last_ns;
            }
            Counts::Narrow {
                counts,
                since_first,
            } => match (narrow(&c), offset(self.first_ns, last_ns)) {
                (Some(n), Some(d)) => (*counts, *since_first) = (n, d),
                _ => {
                    self.counts = Counts::Wide(Box::new(Wide {
                        counts: c,
                        last_ns,
                        attach_site: None,
                    }));
                }
            },
        }
    }

    /// It operated at `now` (the latest time only grows).
    fn touch(&mut self, now: u64) {
        if now <= self.last_ns() {
            return;
        }
        match (&mut self.counts, offset(self.first_ns, now)) {
            (Counts::Narrow { since_first, .. }, Some(d)) => *since_first = d,
            (Counts::Wide(w), _) => w.last_ns = now,
            (Counts::Narrow { .. }, None) => self.set(self.counters(), now),
        }
    }

    /// Where it last attached the segment from.
    pub fn attach_site(&self) -> Option<&Arc<CallSite>> {
        match &self.counts {
            Counts::Narrow { .. } => None,
            Counts::Wide(w) => w.attach_site.as_ref(),
        }
    }

    /// Sets its attach site (widening its counters: few processes get one).
    pub fn set_attach_site(&mut self, site: Arc<CallSite>) {
        if let Counts::Narrow { .. } = self.counts {
            self.counts = Counts::Wide(Box::new(Wide {
                counts: self.counters(),
                last_ns: self.last_ns(),
                attach_site: None,
            }));
        }
        if let Counts::Wide(w) = &mut self.counts {
            w.attach_site = Some(site);
        }
    }

    /// The operations, summed.
    pub fn summary(&self) -> OpSummary {
        let c = self.counters();
        OpSummary {
            first_ns: self.first_ns,
            last_ns: self.last_ns(),
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
        self.set(c, s.last_ns);
    }
}

/// What a story keeps once it outgrows its common size: the latest entries once its head is
/// full, how many were dropped in between, how many processes' operations were dropped, and
/// where in the code the object was created (known only with call-site capture).
#[derive(Clone, Debug, Default)]
struct Tail {
    entries: VecDeque<Kept>,
    /// Entries dropped between the head and `entries`.
    omitted: u64,
    /// Processes whose operations were dropped (more than [`MAX_PROCS`]).
    procs_dropped: u64,
    create_site: Option<Arc<CallSite>>,
    /// The operations, once the story names [`MAX_PROCS`] processes (moved here from its
    /// members, which keep the names): a segment 5,000 processes attached would otherwise
    /// look for the quietest of at most [`MAX_PROCS`] among all 5,000 at every new process.
    ops: Option<SmallMap<ProcOps>>,
}

/// One slot of a story's head: an entry, or (always the last slot, once the story has one) its
/// [`Tail`]. The tail rides in the head's allocation rather than in a field of its own, so that
/// a story is two fat pointers (32 bytes, in every object) and costs nothing more while most
/// objects never get a tail.
#[derive(Clone, Debug)]
enum Slot {
    Kept(Kept),
    Tail(Box<Tail>),
}

impl Slot {
    /// The entries in this slot, in the order they were recorded.
    fn kept(&self) -> impl DoubleEndedIterator<Item = &Kept> {
        let (one, tail) = match self {
            Self::Kept(k) => (Some(k), None),
            Self::Tail(t) => (None, Some(&t.entries)),
        };
        one.into_iter().chain(tail.into_iter().flatten())
    }

    fn kept_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut Kept> {
        let (one, tail) = match self {
            Self::Kept(k) => (Some(k), None),
            Self::Tail(t) => (None, Some(&mut t.entries)),
        };
        one.into_iter().chain(tail.into_iter().flatten())
    }
}

/// A process in one object's story.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Member {
    /// What the story remembers of the process, as it was at its last entry here (shared with
    /// the process until its names change; [`UNKNOWN`] if the model did not know it then;
    /// `None`: only its operations are summed, and it was unknown whenever they were).
    names: Option<Arc<Character>>,
    /// Its operations on the object (bounded: [`MAX_PROCS`]).
    ops: Option<ProcOps>,
}

/// What a story remembers of a process the model did not know: nothing, shared.
static UNKNOWN: std::sync::LazyLock<Arc<Character>> = std::sync::LazyLock::new(Arc::default);

/// The member for an object's creator while it holds only what the object knows anyway: the
/// creator, the created time and the creator's names at creation (one `created` operation).
/// Most sets and queues are only created, and that member took 48 bytes in each of them; the
/// object keeps it implied until the creator appears in the story again (or the story's bound
/// on processes could see it), then [`Story::materialize`] stores it as it would have been.
/// Every reader of the members takes it, so that it reads the same either way.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Implied<'a> {
    pub key: ProcessKey,
    pub created_ns: u64,
    /// `None`: the model did not know the creator at creation ([`UNKNOWN`]).
    pub names: Option<&'a Arc<Character>>,
}

impl Implied<'_> {
    fn names(self) -> Arc<Character> {
        self.names.unwrap_or(&UNKNOWN).clone()
    }

    /// Its operations: the creation.
    fn ops(self) -> ProcOps {
        let mut o = ProcOps::new(self.created_ns);
        o.update(|s| s.created = 1);
        o
    }
}

/// The story of one object.
#[derive(Clone, Debug, Default)]
pub(crate) struct Story {
    /// The first entries, reallocated one entry larger at each push (a boxed slice: no capacity
    /// field; most objects have one to three entries), then the [`Tail`] if the story has one
    /// (made when the head is full, operations are dropped or the created site is known: most
    /// objects never get there, and every live object carries a story).
    head: Box<[Slot]>,
    /// Its processes: the ones it names and the ones whose operations it sums (mostly the
    /// same: one map, one allocation).
    members: SmallMap<Member>,
}

impl Story {
    /// Appends an entry (the process, if any, is remembered as it is now). A `Create` entry is
    /// not stored: it comes first, from the creator at the created time, which the object keeps
    /// anyway, and [`Self::entries`] puts it back (most sets and queues have no other entry, so
    /// their story allocates nothing for entries).
    pub fn push(
        &mut self,
        time_ns: u64,
        process: Option<(ProcessKey, Option<&Process>)>,
        what: What,
    ) {
        let key = process.map(|(k, p)| {
            self.remember(k, p);
            k
        });
        if what == What::Create {
            return;
        }
        let e = Kept::new(Entry {
            time_ns,
            process: key,
            what,
        });
        let end = self.parts().0.len();
        if end < HEAD {
            super::small_map::insert_exact(&mut self.head, end, Slot::Kept(e));
            return;
        }
        self.with_tail(|tail| {
            tail.entries.push_back(e);
            if tail.entries.len() > TAIL {
                tail.entries.pop_front();
                tail.omitted = tail.omitted.saturating_add(1);
            }
        });
    }

    /// Whether it has neither entries nor processes.
    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.members.is_empty()
    }

    /// The head's entries and the tail, if any.
    fn parts(&self) -> (&[Slot], Option<&Tail>) {
        match &*self.head {
            [head @ .., Slot::Tail(t)] => (head, Some(t)),
            head => (head, None),
        }
    }

    /// Changes the tail through `f` (made if missing: appended to the head).
    fn with_tail<R>(&mut self, f: impl FnOnce(&mut Tail) -> R) -> R {
        if let Some(Slot::Tail(t)) = self.head.last_mut() {
            return f(t);
        }
        let mut t = Box::default();
        let r = f(&mut t);
        let end = self.head.len();
        super::small_map::insert_exact(&mut self.head, end, Slot::Tail(t));
        r
    }

    /// Entries dropped between the head and the tail (`created`: whether the object has its
    /// `Create` entry).
    pub fn omitted(&self, created: bool) -> u64 {
        let stored = self.parts().1.map_or(0, |t| t.omitted);
        stored.saturating_add(u64::from(self.crowded(created)))
    }

    /// Whether the implied `Create` entry crowds the head's last entry out: the head keeps
    /// [`HEAD`] entries with it, so that one belongs to the tail, and is dropped with the
    /// omitted ones once the tail is full (otherwise it is the tail's first: in the same place
    /// in [`Self::kept`]'s order).
    fn crowded(&self, created: bool) -> bool {
        let (head, tail) = self.parts();
        created && head.len() == HEAD && tail.is_some_and(|t| t.entries.len() == TAIL)
    }

    /// Processes whose operations were dropped.
    pub fn procs_dropped(&self) -> u64 {
        self.parts().1.map_or(0, |t| t.procs_dropped)
    }

    /// Where in the code the object was created, if known.
    pub fn create_site(&self) -> Option<&Arc<CallSite>> {
        self.parts().1.and_then(|t| t.create_site.as_ref())
    }

    pub fn set_create_site(&mut self, site: Arc<CallSite>) {
        self.with_tail(|t| t.create_site = Some(site));
    }

    /// The entries kept, in time order (finding entries carry the time their condition started,
    /// so they may have been recorded later than entries that follow them). `created`: the
    /// object's created time and creator if the model saw it created, for its `Create` entry.
    pub fn entries(&self, created: Option<(u64, Option<ProcessKey>)>) -> Vec<Entry> {
        let create = created.map(|(time_ns, process)| Entry {
            time_ns,
            process,
            what: What::Create,
        });
        let crowded = usize::from(self.crowded(created.is_some()));
        let (head, tail) = self.parts();
        let tail = tail.into_iter().flat_map(|t| t.entries.iter());
        let kept = head[..head.len() - crowded]
            .iter()
            .flat_map(Slot::kept)
            .chain(tail);
        let mut all: Vec<Entry> = create.into_iter().chain(kept.map(Kept::entry)).collect();
        all.sort_by_key(|e| e.time_ns);
        all
    }

    /// The entries kept, in the order they were recorded.
    fn kept(&self) -> impl DoubleEndedIterator<Item = &Kept> {
        self.head.iter().flat_map(Slot::kept)
    }

    /// Remembers process `key` as `p` is now (no allocation: this runs on every entry, on the
    /// collector's hot path); a process the model does not know is named all the same (its
    /// names are filled in if it becomes known before the story is archived).
    fn remember(&mut self, key: ProcessKey, p: Option<&Process>) {
        let m = self.members.get_or_insert_with(key, Member::default);
        match p {
            Some(p) => {
                if !m.names.as_ref().is_some_and(|n| Arc::ptr_eq(n, p.names())) {
                    m.names = Some(p.names().clone());
                }
            }
            None => {
                m.names.get_or_insert_with(|| UNKNOWN.clone());
            }
        }
    }

    /// What the story remembers of process `key`, if it names it (`implied`: the object's
    /// implied creator member, if any).
    pub fn character(&self, key: ProcessKey, implied: Option<Implied>) -> Option<Arc<Character>> {
        match implied {
            Some(i) if i.key == key => Some(i.names()),
            _ => self.members.get(&key).and_then(|m| m.names.clone()),
        }
    }

    /// The processes whose operations are summed, with them, in key order (`implied`: the
    /// object's implied creator member, if any).
    pub fn operations<'a>(
        &'a self,
        implied: Option<Implied>,
    ) -> impl Iterator<Item = (ProcessKey, Cow<'a, ProcOps>)> {
        let implied = implied.map(|i| (i.key, i.ops()));
        let at = implied.as_ref().map(|(k, _)| *k);
        let kept = |(k, o): (&ProcessKey, &'a ProcOps)| (*k, Cow::Borrowed(o));
        let before = self
            .stored_operations()
            .filter(move |(k, _)| at.is_none_or(|i| **k < i));
        let after = self
            .stored_operations()
            .filter(move |(k, _)| at.is_some_and(|i| **k > i));
        before
            .map(kept)
            .chain(implied.map(|(k, o)| (k, Cow::Owned(o))))
            .chain(after.map(kept))
    }

    /// The operations the story stores, in key order.
    fn stored_operations(&self) -> impl Iterator<Item = (&ProcessKey, &ProcOps)> {
        let moved = self.moved_ops();
        let members = if moved.is_some() {
            None
        } else {
            Some(&self.members)
        };
        members
            .into_iter()
            .flat_map(|m| m.iter().filter_map(|(k, m)| m.ops.as_ref().map(|o| (k, o))))
            .chain(moved.into_iter().flat_map(SmallMap::iter))
    }

    /// The operations of process `key`, if they are summed (`implied`: the object's implied
    /// creator member, if any).
    pub fn operations_of(
        &self,
        key: ProcessKey,
        implied: Option<Implied>,
    ) -> Option<Cow<'_, ProcOps>> {
        match implied {
            Some(i) if i.key == key => Some(Cow::Owned(i.ops())),
            _ => self.stored_operations_of(key).map(Cow::Borrowed),
        }
    }

    fn stored_operations_of(&self, key: ProcessKey) -> Option<&ProcOps> {
        match self.moved_ops() {
            Some(ops) => ops.get(&key),
            None => self.members.get(&key).and_then(|m| m.ops.as_ref()),
        }
    }

    pub fn operations_of_mut(&mut self, key: ProcessKey) -> Option<&mut ProcOps> {
        match self.head.last_mut() {
            Some(Slot::Tail(t)) if t.ops.is_some() => t.ops.as_mut().and_then(|o| o.get_mut(&key)),
            _ => self.members.get_mut(&key).and_then(|m| m.ops.as_mut()),
        }
    }

    /// The operations, when moved to the tail.
    fn moved_ops(&self) -> Option<&SmallMap<ProcOps>> {
        self.parts().1.and_then(|t| t.ops.as_ref())
    }

    /// Stores the object's implied creator member, if a change by process `by` could see it:
    /// `by` is the creator, or the story is about to reach its bound on processes (which
    /// counts the creator). Returns whether it did (the object then no longer implies it).
    pub fn materialize(&mut self, implied: Implied, by: ProcessKey) -> bool {
        if by != implied.key && self.members.len() + 1 < MAX_PROCS {
            return false;
        }
        self.members.get_or_insert_with(implied.key, || Member {
            names: Some(implied.names()),
            ops: Some(implied.ops()),
        });
        true
    }

    /// Moves the members' operations to the tail (for good).
    fn move_ops(&mut self) {
        let mut ops = SmallMap::default();
        for (k, m) in self.members.iter_mut() {
            if let Some(o) = m.ops.take() {
                ops.insert(*k, o);
            }
        }
        self.with_tail(|t| t.ops = Some(ops));
    }

    /// The operations of process `key` (created on first use; bounded).
    pub fn ops(&mut self, key: ProcessKey, p: Option<&Process>, now: u64) -> &mut ProcOps {
        if self.members.len() >= MAX_PROCS && self.moved_ops().is_none() {
            self.move_ops();
        }
        if self.members.len() >= MAX_PROCS
            && self.stored_operations_of(key).is_none()
            && self.moved_ops().is_some_and(|o| o.len() >= MAX_PROCS)
        {
            self.drop_quietest();
        }
        if p.is_some() {
            self.remember(key, p);
        }
        let m = self.members.get_or_insert_with(key, Member::default);
        let o = match self.head.last_mut() {
            Some(Slot::Tail(t)) if t.ops.is_some() => t
                .ops
                .get_or_insert_default()
                .get_or_insert_with(key, || ProcOps::new(now)),
            _ => m.ops.get_or_insert_with(|| ProcOps::new(now)),
        };
        o.touch(now);
        o
    }

    /// Forgets the operations of the process that has been quiet the longest.
    fn drop_quietest(&mut self) {
        let Some(old) = self
            .stored_operations()
            .min_by_key(|(_, o)| o.last_ns())
            .map(|(k, _)| *k)
        else {
            return;
        };
        if let Some(Slot::Tail(t)) = self.head.last_mut()
            && let Some(ops) = t.ops.as_mut()
        {
            ops.remove(&old);
        }
        if let Some(m) = self.members.get_mut(&old) {
            m.ops = None;
            if m.names.is_none() {
                self.members.remove(&old);
            }
        }
        self.with_tail(|t| t.procs_dropped = t.procs_dropped.saturating_add(1));
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

    /// Gives the latest shmat entry of `process` at `address` its call site. Returns whether
    /// there was one.
    pub fn set_attach_site(
        &mut self,
        process: ProcessKey,
        address: u64,
        site: Arc<CallSite>,
    ) -> bool {
        let latest = self
            .head
            .iter_mut()
            .flat_map(Slot::kept_mut)
            .rev()
            .find(|k| k.shmat_at(process, address).is_some());
        latest.map(|k| k.set_call_site(site)).is_some()
    }

    /// Whether `process`'s shmat at `address` waits for its call site.
    pub fn awaits_attach_site(&self, process: ProcessKey, address: u64) -> bool {
        self.kept()
            .any(|k| k.shmat_at(process, address) == Some(false))
    }

    /// Refreshes what the story remembers of its processes (before the model forgets them).
    pub fn refresh_cast<'a>(&mut self, lookup: impl Fn(ProcessKey) -> Option<&'a Process>) {
        for (k, m) in self.members.iter_mut() {
            if let Some(names) = &mut m.names
                && let Some(p) = lookup(*k)
            {
                names.clone_from(p.names());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_key as key;

    #[test]
    fn keeps_the_head_and_the_tail() {
        let mut s = Story::default();
        for t in 0..1000u64 {
            s.push(t, Some((key(1), None)), What::Open);
        }
        let e = s.entries(None);
        assert_eq!(e.len(), HEAD + TAIL);
        assert_eq!(s.omitted(false), 1000 - (HEAD + TAIL) as u64);
        assert_eq!(e[0].time_ns, 0);
        assert_eq!(e[HEAD - 1].time_ns, HEAD as u64 - 1);
        assert_eq!(e[HEAD].time_ns, 1000 - TAIL as u64);
        assert_eq!(e.last().unwrap().time_ns, 999);
    }

    #[test]
    fn the_create_entry_is_implied() {
        // What the head and the tail kept when the Create entry was stored: the first HEAD
        // entries, the last TAIL of the others, the rest omitted.
        for n in [0u64, 1, 30, 31, 32, 33, 126, 127, 128, 129, 1000] {
            let mut s = Story::default();
            s.push(0, Some((key(1), None)), What::Create);
            for t in 1..=n {
                s.push(t, Some((key(2), None)), What::Open);
            }
            let all: Vec<u64> = (0..=n).collect();
            let head = &all[..all.len().min(HEAD)];
            let rest = &all[head.len()..];
            let tail = &rest[rest.len().saturating_sub(TAIL)..];
            let expected: Vec<u64> = head.iter().chain(tail).copied().collect();
            let e = s.entries(Some((0, Some(key(1)))));
            assert_eq!(e.iter().map(|e| e.time_ns).collect::<Vec<_>>(), expected);
            assert_eq!(e[0].what, What::Create);
            assert_eq!(e[0].process, Some(key(1)));
            assert_eq!(s.omitted(true), (rest.len() - tail.len()) as u64, "{n}");
            assert!(Arc::ptr_eq(&s.character(key(1), None).unwrap(), &UNKNOWN));
        }
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
        let times: Vec<u64> = s
            .entries(Some((10, None)))
            .iter()
            .map(|e| e.time_ns)
            .collect();
        assert_eq!(times, [10, 20, 30]);
    }

    #[test]
    fn operations_are_bounded_per_object() {
        let mut s = Story::default();
        for pid in 0..200u32 {
            s.ops(key(pid), None, u64::from(pid))
                .update(|o| o.sem_ops += 1);
        }
        assert_eq!(s.operations(None).count(), MAX_PROCS);
        assert_eq!(s.procs_dropped(), 200 - MAX_PROCS as u64);
        // The quietest were dropped.
        assert!(s.operations_of(key(199), None).is_some());
        assert!(
            s.members.get(&key(0)).is_none(),
            "neither named nor counted"
        );
        // Named processes stay named.
        let mut s = Story::default();
        for pid in 0..200u32 {
            s.push(u64::from(pid), Some((key(pid), None)), What::Open);
            s.ops(key(pid), None, u64::from(pid))
                .update(|o| o.sem_ops += 1);
        }
        assert_eq!(s.operations(None).count(), MAX_PROCS);
        assert!(s.operations_of(key(0), None).is_none() && s.character(key(0), None).is_some());
        // Past MAX_PROCS named processes the operations live in the tail: same answers.
        let kept: Vec<u32> = s.operations(None).map(|(k, _)| k.pid).collect();
        assert_eq!(
            kept,
            (136..200).collect::<Vec<_>>(),
            "the latest, in key order"
        );
        assert_eq!(s.procs_dropped(), 200 - MAX_PROCS as u64);
        assert_eq!(s.members.len(), 200, "every process stays named");
        s.ops(key(150), None, 500).update(|o| o.sem_ops += 1);
        assert_eq!(
            s.operations_of(key(150), None).map(|o| o.summary().sem_ops),
            Some(2)
        );
        s.ops(key(7), None, 501);
        assert!(
            s.operations_of(key(136), None).is_none(),
            "the quietest made room"
        );
        assert_eq!(s.operations(None).count(), MAX_PROCS);
        assert_eq!(std::mem::size_of::<(ProcessKey, Member)>(), 48);
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        assert_eq!(std::mem::size_of::<Story>(), 32);
    }

    #[test]
    fn operations_widen_exactly() {
        let mut o = ProcOps::new(5);
        o.update(|s| {
            s.created = 1;
            s.net = -3;
            s.undo_net = 2;
        });
        assert!(matches!(o.counts, Counts::Narrow { .. }));
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
        // At the edges of the narrow form: a counter of 15, a latest time 2^56 - 1 after the
        // first; then one step past each, a latest time before the first, and an attach site.
        let edge = |f: fn(&mut OpSummary)| {
            let mut o = ProcOps::new(1 << 40);
            let mut expected = o.summary();
            o.update(f);
            f(&mut expected);
            assert_eq!(o.summary(), expected);
            matches!(o.counts, Counts::Narrow { .. })
        };
        assert!(edge(|s| s.failed = 15));
        assert!(edge(|s| s.last_ns += (1 << 56) - 1));
        assert!(!edge(|s| s.failed = 16));
        assert!(!edge(|s| s.last_ns += 1 << 56));
        assert!(!edge(|s| s.last_ns -= 1));
        let mut o = ProcOps::new(3);
        o.update(|s| s.attached = 2);
        o.touch(7);
        o.touch(5);
        let before = o.summary();
        assert_eq!(before.last_ns, 7);
        o.set_attach_site(Arc::new(CallSite::default()));
        assert!(matches!(o.counts, Counts::Wide(_)) && o.attach_site().is_some());
        assert_eq!(o.summary(), before);
        for v in [0, 1, -1, 127, -128, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    /// Every kind of entry, with values that fit in a [`Small`] and values that do not.
    fn sample_entries() -> Vec<Entry> {
        let site = Arc::new(CallSite::default());
        let big = ProcessKey {
            pid: 3,
            start_ticks: u64::from(u32::MAX) + 1,
        };
        let mut whats = vec![
            What::Create,
            What::Appear,
            What::Open,
            What::Remove,
            What::Destroy,
            What::Control {
                command: "SETVAL #0 = 1".into(),
            },
            What::FindingRaised {
                rule: Rule::StalledQueue,
                severity: Severity::Critical,
            },
            What::FindingCleared {
                rule: Rule::NearLimit,
            },
        ];
        for how in [AttachHow::Shmat, AttachHow::Fork, AttachHow::Snapshot] {
            for (address, ranges) in [(None, 1), (Some(u64::MAX), 65_535), (Some(0), 65_536)] {
                for call_site in [None, Some(site.clone())] {
                    whats.push(What::Attach {
                        address,
                        how,
                        ranges,
                        call_site,
                    });
                }
            }
        }
        for how in [DetachHow::Shmdt, DetachHow::Exit, DetachHow::Unknown] {
            for (address, exit_code) in [(None, None), (Some(7), None), (None, Some(u32::MAX))]
                .into_iter()
                .chain([(Some(1), Some(2))])
            {
                for (ranges, left) in [(1, 0), (65_535, 65_535), (1, 65_536), (u64::MAX, 0)] {
                    whats.push(What::Detach {
                        address,
                        how,
                        ranges,
                        left,
                        exit_code,
                    });
                }
            }
        }
        let mut all = Vec::new();
        for (i, what) in whats.into_iter().enumerate() {
            for process in [None, Some(key(u32::MAX)), Some(big)] {
                all.push(Entry {
                    time_ns: u64::MAX - i as u64,
                    process,
                    what: what.clone(),
                });
            }
        }
        all
    }

    #[test]
    fn kept_entries_are_exact() {
        assert_eq!(std::mem::size_of::<Kept>(), 32);
        let mut small = 0;
        for e in sample_entries() {
            let k = Kept::new(e.clone());
            small += usize::from(matches!(k, Kept::Small(_)));
            assert_eq!(k.entry(), e);
        }
        assert!(small > 50, "most of them fit: {small}");
    }

    #[test]
    fn attach_sites_go_to_the_latest_shmat() {
        let mut s = Story::default();
        let attach = |address| What::Attach {
            address: Some(address),
            how: AttachHow::Shmat,
            ranges: 1,
            call_site: None,
        };
        for t in 0..200 {
            s.push(t, Some((key(1), None)), attach(t % 2));
        }
        assert!(s.awaits_attach_site(key(1), 1));
        assert!(!s.awaits_attach_site(key(2), 1));
        assert!(!s.set_attach_site(key(1), 5, Arc::new(CallSite::default())));
        assert!(s.set_attach_site(key(1), 1, Arc::new(CallSite::default())));
        let sited: Vec<u64> = s
            .entries(None)
            .iter()
            .filter(|e| {
                matches!(
                    e.what,
                    What::Attach {
                        call_site: Some(_),
                        ..
                    }
                )
            })
            .map(|e| e.time_ns)
            .collect();
        assert_eq!(sited, [199]);
        // A head entry when the tail has none.
        let mut s = Story::default();
        s.push(1, Some((key(1), None)), attach(9));
        s.push(2, Some((key(1), None)), attach(8));
        assert!(s.set_attach_site(key(1), 9, Arc::new(CallSite::default())));
        assert!(!s.awaits_attach_site(key(1), 9));
        assert!(s.awaits_attach_site(key(1), 8));
    }

    #[test]
    fn the_tail_follows_the_head_whenever_it_is_made() {
        // Made by the created site (before, among or after the head's entries), by dropped
        // operations, or by a full head: the same entries either way.
        let site = Arc::new(CallSite::default());
        let plain = |n: usize| {
            let mut s = Story::default();
            for t in 0..n as u64 {
                s.push(t, Some((key(1), None)), What::Open);
            }
            s
        };
        for n in [0, 1, 2, 31, 32, 33, 200] {
            for made_at in [0, 1, 5, 40] {
                let mut s = Story::default();
                for t in 0..n as u64 {
                    if t == made_at {
                        s.set_create_site(site.clone());
                        for pid in (100..).take(MAX_PROCS + 1) {
                            s.ops(key(pid), None, t);
                        }
                    }
                    s.push(t, Some((key(1), None)), What::Open);
                }
                let made = made_at < n as u64;
                assert_eq!(s.entries(None), plain(n).entries(None), "{n} {made_at}");
                assert_eq!(s.omitted(true), plain(n).omitted(true));
                assert_eq!(s.create_site().is_some(), made);
                assert_eq!(s.procs_dropped(), u64::from(made));
                assert_eq!(s.parts().0.len(), n.min(HEAD));
            }
        }
    }

    #[test]
    fn the_cast_keeps_each_process_as_at_its_last_entry() {
        let mut proc1 = Process::new(key(1), "before", 0, 0);
        let mut first = Story::default();
        let mut second = Story::default();
        first.push(1, Some((key(1), Some(&proc1))), What::Open);
        second.push(1, Some((key(1), Some(&proc1))), What::Open);
        assert!(
            Arc::ptr_eq(&first.character(key(1), None).unwrap(), proc1.names()),
            "shared"
        );
        proc1.names_mut().comm = "after".into();
        proc1.names_mut().exit_code = Some(9);
        second.push(2, Some((key(1), Some(&proc1))), What::Open);
        assert_eq!(&*first.character(key(1), None).unwrap().comm, "before");
        assert_eq!(first.character(key(1), None).unwrap().exit_code, None);
        assert_eq!(&*second.character(key(1), None).unwrap().comm, "after");
        // Unknown to the model: named, not described, until the story is refreshed.
        first.push(3, Some((key(2), None)), What::Open);
        assert_eq!(
            *first.character(key(2), None).unwrap(),
            Character::default()
        );
        // Only counted while unknown: neither named nor refreshed.
        first.ops(key(3), None, 4);
        assert!(first.character(key(3), None).is_none());
        let late = Process::new(key(2), "late", 0, 0);
        let counted = Process::new(key(3), "counted", 0, 0);
        first.refresh_cast(|k| [&late, &counted].into_iter().find(|p| p.key == k));
        assert!(first.character(key(3), None).is_none());
        assert_eq!(&*first.character(key(2), None).unwrap().comm, "late");
        assert_eq!(&*first.character(key(1), None).unwrap().comm, "before");
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
