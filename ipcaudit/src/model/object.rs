//! One System V IPC object (a segment, a semaphore set or a queue) and what the model knows
//! about the processes around it.

use super::process::{Character, Process};
use super::story::{Implied, ProcOps, Story};
use super::{HashMap, small_map::SmallMap};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{IpcType, ProcessKey};

/// Identity of an object across id reuse: the kernel reuses ids, so each object the model
/// creates gets a fresh `generation` (unique within one model).
///
/// Packed (13 bytes, not 16): every object, relation and index carries one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[repr(C, packed)]
pub struct ObjectKey {
    /// Inode of the IPC namespace.
    pub ns: u32,
    #[serde(rename = "type")]
    pub ty: IpcType,
    pub id: i32,
    pub generation: u32,
}

/// Where an object is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectStatus {
    Live,
    /// Shared memory only: `IPC_RMID` was done while attached; the segment goes with its last
    /// attachment.
    RemovedPendingDestroy,
    Destroyed,
}

impl ObjectStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::RemovedPendingDestroy => "removed-pending-destroy",
            Self::Destroyed => "destroyed",
        }
    }
}

/// What the sinks print about an object: identity plus the few fields an event record shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub ns: u32,
    #[serde(rename = "type")]
    pub ty: IpcType,
    pub id: i32,
    pub generation: u32,
    /// The IPC key it was created with (0 = `IPC_PRIVATE`), if known. (The kernel shows 0 for
    /// a segment removed while attached; the model keeps the original for the records.)
    pub key: Option<i32>,
    /// Segment size in bytes (shm), if known.
    pub size: Option<u64>,
    /// Number of semaphores (sem), if known.
    pub nsems: Option<u32>,
}

impl ObjectRef {
    /// The model's identity of this object.
    pub fn object_key(&self) -> ObjectKey {
        ObjectKey {
            ns: self.ns,
            ty: self.ty,
            id: self.id,
            generation: self.generation,
        }
    }

    /// Segment size (shm) or number of semaphores (sem): what `sink::ObjectInfo::size` holds.
    pub fn size_or_nsems(&self) -> Option<u64> {
        match self.ty {
            IpcType::Shm => self.size,
            IpcType::Sem => self.nsems.map(u64::from),
            IpcType::Msg => None,
        }
    }

    /// The command that removes the object: `ipcrm -m 123`.
    pub fn ipcrm(&self) -> String {
        format!("ipcrm {} {}", self.ty.ipcrm_flag(), self.id)
    }
}

/// How many dead processes an object remembers per role (evidence for findings); older ones
/// are forgotten so that memory stays bounded.
pub(crate) const DEAD_KEPT: usize = 16;

/// One process's dealings with an object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Peer {
    pub first_ns: u64,
    pub last_ns: u64,
    /// Operations (attaches, semops, messages).
    pub count: u64,
    /// Bytes (messages).
    pub bytes: u64,
}

/// The processes that did something with an object: all live ones, and the most recent dead
/// ones (at most [`DEAD_KEPT`]). The dead are boxed, made at the first death: most objects'
/// peers all live, and an object has up to three `Peers`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Peers {
    pub live: SmallMap<Peer>,
    #[expect(
        clippy::box_collection,
        reason = "one pointer in every object's peers instead of a 32-byte VecDeque header"
    )]
    dead: Option<Box<VecDeque<(ProcessKey, Peer)>>>,
}

impl Peers {
    /// Records one operation by `key`.
    pub fn touch(&mut self, key: ProcessKey, alive: bool, now: u64, count: u64, bytes: u64) {
        let bump = |p: &mut Peer| {
            p.last_ns = p.last_ns.max(now);
            p.count = p.count.saturating_add(count);
            p.bytes = p.bytes.saturating_add(bytes);
        };
        if let Some(p) = self.live.get_mut(&key) {
            bump(p);
            return;
        }
        if alive {
            let mut p = Peer {
                first_ns: now,
                last_ns: now,
                ..Peer::default()
            };
            bump(&mut p);
            self.live.insert(key, p);
        } else if let Some((_, p)) = self.dead_iter_mut().find(|(k, _)| *k == key) {
            bump(p);
        } else {
            let mut p = Peer {
                first_ns: now,
                last_ns: now,
                ..Peer::default()
            };
            bump(&mut p);
            self.push_dead(key, p);
        }
    }

    /// `key` died: moves it to the dead.
    pub fn died(&mut self, key: ProcessKey) {
        if let Some(p) = self.live.remove(&key) {
            self.push_dead(key, p);
        }
    }

    /// `key` was wrongly thought dead.
    pub fn revive(&mut self, key: ProcessKey) {
        let Some(dead) = self.dead.as_deref_mut() else {
            return;
        };
        if let Some(pos) = dead.iter().position(|(k, _)| *k == key)
            && let Some((k, p)) = dead.remove(pos)
        {
            self.live.insert(k, p);
        }
    }

    fn push_dead(&mut self, key: ProcessKey, p: Peer) {
        let dead = self.dead.get_or_insert_default();
        dead.retain(|(k, _)| *k != key);
        dead.push_back((key, p));
        while dead.len() > DEAD_KEPT {
            dead.pop_front();
        }
    }

    fn dead_iter_mut(&mut self) -> impl Iterator<Item = &mut (ProcessKey, Peer)> {
        self.dead.iter_mut().flat_map(|d| d.iter_mut())
    }

    /// Every process remembered, live first.
    pub fn iter(&self) -> impl Iterator<Item = (&ProcessKey, &Peer)> {
        self.live
            .iter()
            .chain(self.dead.iter().flat_map(|d| d.iter()).map(|(k, p)| (k, p)))
    }

    /// The most recent operation's process.
    pub fn latest(&self) -> Option<ProcessKey> {
        self.iter().max_by_key(|(_, p)| p.last_ns).map(|(k, _)| *k)
    }
}

/// Shared memory state.
#[derive(Clone, Debug, Default)]
pub(crate) struct ShmState {
    pub size: Option<u64>,
    /// Mapped ranges (vmas) per process; the kernel's `shm_nattch` is their total. (A sorted
    /// vector: most segments have one or two attachers, which a hash map would give a table of
    /// its own, ~100 bytes more per segment.)
    pub attached: Attached,
    /// Total of `attached`.
    pub vmas: u64,
    /// Attachments the kernel counted at the last reconcile that no known process maps
    /// (processes outside the namespace, races): `kernel nattch - mapped ranges`.
    pub external: i64,
    /// Every process that attached (live ones, and the most recent dead ones).
    pub attachers: Peers,
}

/// Mapped ranges per process: most segments have one attaching process, kept inline (a
/// one-entry map took a 24-byte allocation of its own for every attached segment).
#[derive(Clone, Debug)]
pub(crate) enum Attached {
    One(ProcessKey, u32),
    Many(SmallMap<u32>),
}

impl Default for Attached {
    fn default() -> Self {
        Self::Many(SmallMap::default())
    }
}

impl Attached {
    /// The count of `key`, made with `make` when missing.
    pub fn get_or_insert_with(&mut self, key: ProcessKey, make: impl FnOnce() -> u32) -> &mut u32 {
        let mut once = Some(make);
        let mut value = || once.take().map_or(0, |f| f());
        match self {
            Self::Many(m) if m.is_empty() => *self = Self::One(key, value()),
            Self::One(k, v) if *k != key => {
                let mut m = SmallMap::default();
                m.insert(*k, *v);
                *self = Self::Many(m);
            }
            Self::One(..) | Self::Many(_) => {}
        }
        match self {
            Self::One(_, v) => v,
            Self::Many(m) => m.get_or_insert_with(key, value),
        }
    }

    pub fn remove(&mut self, key: &ProcessKey) {
        match self {
            Self::One(k, _) if k == key => self.clear(),
            Self::Many(m) => {
                m.remove(key);
                let last = if m.len() == 1 {
                    m.iter().next().map(|(k, v)| (*k, *v))
                } else {
                    None
                };
                if let Some((k, v)) = last {
                    *self = Self::One(k, v);
                }
            }
            Self::One(..) => {}
        }
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The processes, in key order.
    pub fn keys(&self) -> impl Iterator<Item = &ProcessKey> {
        let (one, many) = match self {
            Self::One(k, _) => (Some(k), None),
            Self::Many(m) => (None, Some(m.keys())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl ShmState {
    /// `shm_nattch` as the model sees it.
    pub fn nattch(&self) -> u64 {
        let n = i64::try_from(self.vmas)
            .unwrap_or(i64::MAX)
            .saturating_add(self.external);
        u64::try_from(n).unwrap_or(0)
    }

    /// Whether anything keeps the segment attached.
    pub fn attached_any(&self) -> bool {
        self.vmas > 0 || self.external > 0
    }
}

/// One semaphore as last seen (snapshot, GETVAL...) and tracked through semops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SemSlot {
    /// The value, when the model knows it.
    pub value: Option<i32>,
    /// Processes waiting for an increase (from the last snapshot, lowered by completed semops).
    pub ncnt: u32,
    /// Processes waiting for zero.
    pub zcnt: u32,
    /// The last process that operated on it (0 = none / unknown).
    pub pid: u32,
}

/// A process's adjustments of one semaphore.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SemAdj {
    /// Net of the successful operations made without `SEM_UNDO`: negative = units taken and
    /// not given back.
    pub net: i64,
    /// Net of the operations made with `SEM_UNDO` (the kernel reverts them at exit).
    pub undo: i64,
    /// Ever took units (op < 0).
    pub took: bool,
    /// Ever gave units (op > 0).
    pub gave: bool,
}

/// Semaphore set state: 48 bytes, what a set nobody operates on needs.
#[derive(Clone, Debug, Default)]
pub(crate) struct SemState {
    pub slots: Box<[SemSlot]>,
    /// Who opened or operated on the set and what they hold (made at the first open or
    /// operation).
    pub activity: Rare<SemActivity>,
    /// Dead holders, waiters, resets.
    pub rare: Rare<SemRare>,
    /// The kernel's aggregated totals of this set consumed so far (boxed: a set nobody
    /// operates on has none, and every set carries the field).
    pub totals: Option<Box<super::aggregate::SetConsumed>>,
}

/// The processes around a set (behind [`Rare`]: a set only created or only seen in a snapshot
/// has none, and these took 56 bytes inline).
#[derive(Clone, Debug, Default)]
pub(crate) struct SemActivity {
    /// Per process, per semaphore number.
    pub adjs: HashMap<ProcessKey, BTreeMap<u16, SemAdj>>,
    /// Processes that opened or operated on the set.
    pub users: Peers,
}

static SEM_ACTIVITY: std::sync::LazyLock<SemActivity> =
    std::sync::LazyLock::new(SemActivity::default);

impl Empty for SemActivity {
    fn empty() -> &'static Self {
        &SEM_ACTIVITY
    }
}

/// What few semaphore sets need (behind [`Rare`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct SemRare {
    /// Dead processes kept in `adjs` (they hold units), oldest first, at most [`DEAD_KEPT`].
    pub dead_adj: VecDeque<ProcessKey>,
    /// Processes blocked in semop on the set (from the last snapshot).
    pub waiters: BTreeSet<ProcessKey>,
    /// When adjustments were last reset (SETVAL of one semaphore, SETALL of all): aggregated
    /// totals counted before that are void for them (`aggregate.rs`).
    pub reset_all_ns: u64,
    pub reset_ns: BTreeMap<u16, u64>,
}

static SEM_RARE: SemRare = SemRare {
    dead_adj: VecDeque::new(),
    waiters: BTreeSet::new(),
    reset_all_ns: 0,
    reset_ns: BTreeMap::new(),
};

impl Empty for SemRare {
    fn empty() -> &'static Self {
        &SEM_RARE
    }
}

impl SemState {
    /// When adjustments of semaphore `num` were last reset.
    pub fn reset_of(&self, num: u16) -> u64 {
        self.rare
            .reset_ns
            .get(&num)
            .copied()
            .unwrap_or(0)
            .max(self.rare.reset_all_ns)
    }

    /// The slot of semaphore `num`, grown on demand (up to the set's `nsems` when known).
    pub fn slot_mut(&mut self, num: u16, nsems: Option<u32>) -> Option<&mut SemSlot> {
        let i = usize::from(num);
        if let Some(n) = nsems
            && u64::from(num) >= u64::from(n)
        {
            return None;
        }
        if self.slots.len() <= i {
            super::small_map::resize_exact(&mut self.slots, i + 1, SemSlot::default());
        }
        self.slots.get_mut(i)
    }

    pub fn slot(&self, num: u16) -> SemSlot {
        self.slots
            .get(usize::from(num))
            .copied()
            .unwrap_or_default()
    }

    /// The units `key` holds on a semaphore (net negative non-undo adjustments), by number.
    pub fn holdings(&self, key: ProcessKey) -> impl Iterator<Item = (u16, SemAdj)> + '_ {
        self.activity
            .adjs
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|(_, a)| a.net < 0)
            .map(|(n, a)| (*n, *a))
    }

    /// Whether a dead process's holding of semaphore `num` is a stuck lock: processes wait
    /// on it, or the process itself used it as a lock (took and gave back) before.
    pub fn stuck(&self, num: u16, adj: &SemAdj) -> bool {
        adj.net < 0 && (self.slot(num).ncnt > 0 || (adj.took && adj.gave))
    }

    /// Forgets adjustments that no longer matter for dead processes.
    pub fn prune_dead(&mut self) {
        let (Some(rare), Some(activity)) = (self.rare.made(), self.activity.made()) else {
            return;
        };
        let adjs = &mut activity.adjs;
        rare.dead_adj.retain(|k| {
            let keep = adjs.get(k).is_some_and(|m| m.values().any(|a| a.net < 0));
            if !keep {
                adjs.remove(k);
            }
            keep
        });
        while rare.dead_adj.len() > DEAD_KEPT {
            if let Some(k) = rare.dead_adj.pop_front() {
                adjs.remove(&k);
            }
        }
    }
}

/// Fields most objects never use, behind one pointer that stays null until the first write
/// (reads of a missing one see the type's empty value): a set or queue carried them inline
/// whether it used them or not, 64 to 88 bytes each.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rare<T>(Option<Box<T>>);

/// A type with a shared empty value (what a [`Rare`] never written reads as).
pub(crate) trait Empty: Default + 'static {
    fn empty() -> &'static Self;
}

impl<T: Empty> std::ops::Deref for Rare<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match &self.0 {
            Some(t) => t,
            None => T::empty(),
        }
    }
}

impl<T: Empty> Rare<T> {
    /// For a write: made on first use.
    pub fn make(&mut self) -> &mut T {
        self.0.get_or_insert_default()
    }

    /// For a change that only takes away: none when never written.
    pub fn made(&mut self) -> Option<&mut T> {
        self.0.as_deref_mut()
    }
}

/// Message queue state: 48 bytes, what a queue nobody uses needs.
#[derive(Clone, Debug, Default)]
pub(crate) struct MsgState {
    /// Messages queued (`qnum`), as far as events show.
    pub messages: u64,
    /// Bytes queued (`cbytes`).
    pub bytes: u64,
    /// A receive found fewer messages or bytes than the model counted, or events were cut:
    /// the depth is a guess until the next reconcile.
    pub uncertain: bool,
    /// Who sent, received, opened (made at the first of these).
    pub peers: Rare<MsgPeers>,
    /// Last sender and receiver by pid, waiters.
    pub rare: Rare<MsgRare>,
    /// The kernel's aggregated totals of this queue consumed so far (boxed, as a set's).
    pub totals: Option<Box<super::aggregate::QueueConsumed>>,
}

/// The processes around a queue (behind [`Rare`]: 72 bytes inline in every queue before).
#[derive(Clone, Debug, Default)]
pub(crate) struct MsgPeers {
    pub senders: Peers,
    pub receivers: Peers,
    /// Processes that opened the queue.
    pub users: Peers,
}

static MSG_PEERS: std::sync::LazyLock<MsgPeers> = std::sync::LazyLock::new(MsgPeers::default);

impl Empty for MsgPeers {
    fn empty() -> &'static Self {
        &MSG_PEERS
    }
}

impl MsgPeers {
    fn died(&mut self, key: ProcessKey) {
        self.senders.died(key);
        self.receivers.died(key);
        self.users.died(key);
    }

    fn revive(&mut self, key: ProcessKey) {
        self.senders.revive(key);
        self.receivers.revive(key);
        self.users.revive(key);
    }
}

/// What few queues need (behind [`Rare`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct MsgRare {
    /// From the snapshot, when the last sender / receiver is not a known process.
    pub last_sender_pid: Option<u32>,
    pub last_receiver_pid: Option<u32>,
    /// Processes blocked in msgrcv / msgsnd (from the last snapshot).
    pub recv_waiters: BTreeSet<ProcessKey>,
    pub send_waiters: BTreeSet<ProcessKey>,
}

static MSG_RARE: MsgRare = MsgRare {
    last_sender_pid: None,
    last_receiver_pid: None,
    recv_waiters: BTreeSet::new(),
    send_waiters: BTreeSet::new(),
};

impl Empty for MsgRare {
    fn empty() -> &'static Self {
        &MSG_RARE
    }
}

impl MsgState {
    /// `key` no longer waits on the queue to send (`send`) or to receive.
    pub fn not_waiting(&mut self, send: bool, key: &ProcessKey) {
        if let Some(r) = self.rare.made() {
            if send {
                r.send_waiters.remove(key);
            } else {
                r.recv_waiters.remove(key);
            }
        }
    }

    /// Remembers the pid (0: none) a snapshot gave as the queue's last sender (`send`) or
    /// receiver when it is not a known process.
    pub fn set_last_pid(&mut self, send: bool, pid: u32) {
        let pid = (pid != 0).then_some(pid);
        let Some(r) = (if pid.is_some() {
            Some(self.rare.make())
        } else {
            self.rare.made()
        }) else {
            return;
        };
        if send {
            r.last_sender_pid = pid;
        } else {
            r.last_receiver_pid = pid;
        }
    }
}

/// Per type state. An object keeps it boxed, with its story ([`Detail`]), and makes it at its
/// first write ([`Object::body_mut`]): a set or queue that is only created (or only seen in a
/// snapshot) has nothing to keep there, and reads of a state never made see the type's empty
/// one ([`Object::body`]).
#[derive(Clone, Debug)]
pub(crate) enum Body {
    Shm(ShmState),
    Sem(SemState),
    Msg(MsgState),
}

static EMPTY_BODIES: std::sync::LazyLock<[Body; 3]> = std::sync::LazyLock::new(|| {
    [
        Body::new(IpcType::Shm),
        Body::new(IpcType::Sem),
        Body::new(IpcType::Msg),
    ]
});

impl Body {
    fn new(ty: IpcType) -> Self {
        match ty {
            IpcType::Shm => Self::Shm(ShmState::default()),
            IpcType::Sem => Self::Sem(SemState::default()),
            IpcType::Msg => Self::Msg(MsgState::default()),
        }
    }

    fn empty(ty: IpcType) -> &'static Self {
        let [shm, sem, msg] = &*EMPTY_BODIES;
        match ty {
            IpcType::Shm => shm,
            IpcType::Sem => sem,
            IpcType::Msg => msg,
        }
    }
}

/// What an object keeps out of line, made at the first write to either: its type's state and
/// its story. A set or queue that is only created (or only seen in a snapshot) has neither
/// (its creation is implied: [`Object::implied`]), and an object that has one mostly has the
/// other, so they share one allocation: 80 bytes an object instead of 112 for most sets and
/// queues, the same 192 with the state as before for the others.
#[derive(Clone, Debug)]
struct Detail {
    body: Body,
    story: Story,
}

static EMPTY_STORY: std::sync::LazyLock<Story> = std::sync::LazyLock::new(Story::default);

impl Detail {
    /// `detail`, made (for an object of type `ty`) when missing.
    fn made(detail: &mut Option<Box<Self>>, ty: IpcType) -> &mut Self {
        detail.get_or_insert_with(|| {
            Box::new(Self {
                body: Body::new(ty),
                story: Story::default(),
            })
        })
    }
}

/// An object's creator as the model knows it: a process, only a pid (a snapshot's `cpid` that
/// is no known process), or nothing. 13 bytes where an `Option<ProcessKey>` and the pid as an
/// `Option<u32>` took 32 (the pid of a known creator is its key's); packed, so that the object
/// puts it beside its other small fields instead of padding it to 16.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, packed)]
pub(crate) struct Creator {
    start_ticks: u64,
    pid: u32,
    known: CreatorKnown,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum CreatorKnown {
    #[default]
    Nothing,
    Pid,
    Process,
}

impl Creator {
    /// The process `key` when known, else the pid when known.
    pub fn new(key: Option<ProcessKey>, pid: Option<u32>) -> Self {
        match (key, pid) {
            (Some(k), _) => Self::process(k),
            (None, Some(pid)) => Self {
                start_ticks: 0,
                pid,
                known: CreatorKnown::Pid,
            },
            (None, None) => Self::default(),
        }
    }

    /// A known creating process.
    pub fn process(k: ProcessKey) -> Self {
        Self {
            start_ticks: k.start_ticks,
            pid: k.pid,
            known: CreatorKnown::Process,
        }
    }

    /// The creating process, if known.
    pub fn key(self) -> Option<ProcessKey> {
        (self.known == CreatorKnown::Process).then_some(ProcessKey {
            pid: self.pid,
            start_ticks: self.start_ticks,
        })
    }

    /// The creator's pid, if known (with or without the process).
    pub fn pid(self) -> Option<u32> {
        (self.known != CreatorKnown::Nothing).then_some(self.pid)
    }
}

/// When an object was created, removed and destroyed, as far as the model knows: 16 bytes where
/// three `Option<u64>` took 48. An unknown time is `u64::MAX` (a time that far off, year 2554,
/// is kept one nanosecond earlier). The removal and destruction times are boxed, made at the
/// first of them: most live objects have neither, and every object carries the field.
#[derive(Clone, Debug)]
pub(crate) struct Times {
    created: u64,
    ends: Option<Box<Ends>>,
}

/// [`Times`] of the end of an object's life.
#[derive(Clone, Copy, Debug)]
struct Ends {
    removed: u64,
    destroyed: u64,
}

impl Default for Times {
    fn default() -> Self {
        Self {
            created: Self::UNKNOWN,
            ends: None,
        }
    }
}

impl Times {
    const UNKNOWN: u64 = u64::MAX;

    fn get(v: u64) -> Option<u64> {
        (v != Self::UNKNOWN).then_some(v)
    }

    fn known(ns: u64) -> u64 {
        ns.min(Self::UNKNOWN - 1)
    }

    pub fn created(&self) -> Option<u64> {
        Self::get(self.created)
    }

    pub fn removed(&self) -> Option<u64> {
        self.ends.as_ref().and_then(|e| Self::get(e.removed))
    }

    pub fn destroyed(&self) -> Option<u64> {
        self.ends.as_ref().and_then(|e| Self::get(e.destroyed))
    }

    pub fn set_created(&mut self, ns: u64) {
        self.created = Self::known(ns);
    }

    pub fn set_removed(&mut self, ns: u64) {
        self.ends_mut().removed = Self::known(ns);
    }

    pub fn set_destroyed(&mut self, ns: u64) {
        self.ends_mut().destroyed = Self::known(ns);
    }

    fn ends_mut(&mut self) -> &mut Ends {
        self.ends.get_or_insert_with(|| {
            Box::new(Ends {
                removed: Self::UNKNOWN,
                destroyed: Self::UNKNOWN,
            })
        })
    }
}

/// One object (one generation of an id).
#[derive(Clone, Debug)]
pub(crate) struct Object {
    pub key: ObjectKey,
    /// The IPC key ([`Self::ipc_key`]).
    ipc_key: i32,
    /// The creating process, or only its pid, if known.
    pub creator: Creator,
    /// [`Self::owner_uid`].
    owner_uid: u32,
    /// [`Self::mode`].
    mode: u32,
    /// [`Self::nsems`].
    nsems: u32,
    /// Which of `ipc_key`, `owner_uid`, `mode` are known (`KNOWN_*` bits): three `Option`s
    /// took 24 bytes, these 13.
    known: u8,
    pub times: Times,
    pub status: ObjectStatus,
    /// While [`Self::creator_program`] is still charged with creating it (`leaky-process`),
    /// until its removal: its creation's sequence number in the program's window.
    pub leak_seq: Option<std::num::NonZeroU32>,
    /// The creating process's names as they were at creation, when the model knew it (shared
    /// copy-on-write with the process): the program charged with creating it, and the names of
    /// its story's implied creator member ([`Self::implied`]).
    creator_names: Option<Arc<Character>>,
    /// Its type's state ([`Self::body`]) and what happened to it (`explain`, `report`:
    /// [`Self::story`], [`Self::story_mut`]).
    detail: Option<Box<Detail>>,
}

impl Object {
    pub fn new(key: ObjectKey) -> Self {
        Self {
            key,
            ipc_key: 0,
            creator: Creator::default(),
            owner_uid: 0,
            mode: 0,
            nsems: 0,
            known: 0,
            times: Times::default(),
            status: ObjectStatus::Live,
            leak_seq: None,
            creator_names: None,
            detail: None,
        }
    }

    const KNOWN_IPC_KEY: u8 = 1;
    const KNOWN_OWNER_UID: u8 = 2;
    const KNOWN_MODE: u8 = 4;
    const KNOWN_NSEMS: u8 = 8;
    /// Not a field: the story's creator member is implied ([`Self::implied`]).
    const IMPLIED_CREATOR: u8 = 16;

    /// The type's state (its empty one when never written).
    pub fn body(&self) -> &Body {
        match &self.detail {
            Some(d) => &d.body,
            None => Body::empty(self.key.ty),
        }
    }

    /// The type's state for a write: made on first use.
    pub fn body_mut(&mut self) -> &mut Body {
        &mut Detail::made(&mut self.detail, self.key.ty).body
    }

    /// The type's state for a change that only takes away: none when never written.
    pub fn body_made(&mut self) -> Option<&mut Body> {
        self.detail.as_deref_mut().map(|d| &mut d.body)
    }

    /// Number of semaphores (sets), if known.
    pub fn nsems(&self) -> Option<u32> {
        self.known(Self::KNOWN_NSEMS, self.nsems)
    }

    pub fn set_nsems(&mut self, nsems: Option<u32>) {
        self.nsems = self.set_known(Self::KNOWN_NSEMS, nsems);
    }

    fn known(&self, bit: u8, v: u32) -> Option<u32> {
        (self.known & bit != 0).then_some(v)
    }

    /// Marks the field of `bit` known or not; returns the value to store (0 when unknown).
    fn set_known(&mut self, bit: u8, v: Option<u32>) -> u32 {
        if v.is_some() {
            self.known |= bit;
        } else {
            self.known &= !bit;
        }
        v.unwrap_or(0)
    }

    /// The IPC key, if known.
    pub fn ipc_key(&self) -> Option<i32> {
        self.known(Self::KNOWN_IPC_KEY, self.ipc_key.cast_unsigned())
            .map(u32::cast_signed)
    }

    pub fn owner_uid(&self) -> Option<u32> {
        self.known(Self::KNOWN_OWNER_UID, self.owner_uid)
    }

    /// Permission bits, plus `SHM_DEST` / `SHM_LOCKED` for shm, if known.
    pub fn mode(&self) -> Option<u32> {
        self.known(Self::KNOWN_MODE, self.mode)
    }

    pub fn set_ipc_key(&mut self, key: i32) {
        self.ipc_key = self
            .set_known(Self::KNOWN_IPC_KEY, Some(key.cast_unsigned()))
            .cast_signed();
    }

    pub fn set_owner_uid(&mut self, uid: u32) {
        self.owner_uid = self.set_known(Self::KNOWN_OWNER_UID, Some(uid));
    }

    /// Sets the mode (`None`: unknown).
    pub fn set_mode(&mut self, mode: Option<u32>) {
        self.mode = self.set_known(Self::KNOWN_MODE, mode);
    }

    /// Changes the mode through `f`, when it is known.
    pub fn update_mode(&mut self, f: impl FnOnce(u32) -> u32) {
        if self.known & Self::KNOWN_MODE != 0 {
            self.mode = f(self.mode);
        }
    }

    pub fn object_ref(&self) -> ObjectRef {
        let (size, nsems) = match self.body() {
            Body::Shm(s) => (s.size, None),
            Body::Sem(_) => (None, self.nsems()),
            Body::Msg(_) => (None, None),
        };
        ObjectRef {
            ns: self.key.ns,
            ty: self.key.ty,
            id: self.key.id,
            generation: self.key.generation,
            key: self.ipc_key(),
            size,
            nsems,
        }
    }

    pub fn shm(&self) -> Option<&ShmState> {
        match self.body() {
            Body::Shm(s) => Some(s),
            _ => None,
        }
    }

    /// For a write (the state is made when the object is a shm).
    pub fn shm_mut(&mut self) -> Option<&mut ShmState> {
        if self.key.ty != IpcType::Shm {
            return None;
        }
        match self.body_mut() {
            Body::Shm(s) => Some(s),
            _ => None,
        }
    }

    pub fn sem(&self) -> Option<&SemState> {
        match self.body() {
            Body::Sem(s) => Some(s),
            _ => None,
        }
    }

    /// For a write to a set's state, with the set's `nsems` (which bounds its slots).
    pub fn sem_sized_mut(&mut self) -> Option<(&mut SemState, Option<u32>)> {
        let nsems = self.nsems();
        self.sem_mut().map(|s| (s, nsems))
    }

    /// For a write (the state is made when the object is a sem).
    pub fn sem_mut(&mut self) -> Option<&mut SemState> {
        if self.key.ty != IpcType::Sem {
            return None;
        }
        match self.body_mut() {
            Body::Sem(s) => Some(s),
            _ => None,
        }
    }

    pub fn msg(&self) -> Option<&MsgState> {
        match self.body() {
            Body::Msg(s) => Some(s),
            _ => None,
        }
    }

    /// For a write (the state is made when the object is a msg).
    pub fn msg_mut(&mut self) -> Option<&mut MsgState> {
        if self.key.ty != IpcType::Msg {
            return None;
        }
        match self.body_mut() {
            Body::Msg(s) => Some(s),
            _ => None,
        }
    }

    /// `key` created it at `now`, named `names` then (`None`: a process the model does not
    /// know). Returns whether its story implies the creator's member; if not (a created time
    /// the object cannot keep exactly), the caller tells the story as for any process.
    pub fn set_created(
        &mut self,
        key: ProcessKey,
        now: u64,
        names: Option<Arc<Character>>,
    ) -> bool {
        self.creator = Creator::process(key);
        self.times.set_created(now);
        self.creator_names = names;
        let implied = self.times.created() == Some(now) && self.story().is_empty();
        if implied {
            self.known |= Self::IMPLIED_CREATOR;
        }
        implied
    }

    /// The program charged with creating it: the creator's executable, else its `comm`, at
    /// creation ([`Character::program`]), when the model knew the creator.
    pub fn creator_program(&self) -> Option<&str> {
        self.creator_names.as_deref().map(Character::program)
    }

    /// The creator's names at creation, when the model knew the creator.
    pub fn creator_names(&self) -> Option<&Arc<Character>> {
        self.creator_names.as_ref()
    }

    /// Its story's creator member, while implied.
    pub fn implied(&self) -> Option<Implied<'_>> {
        Self::implied_of(
            self.known,
            self.creator,
            self.times.created(),
            self.creator_names.as_ref(),
        )
    }

    /// [`Self::implied`] from the fields it reads (borrowed apart from the story).
    fn implied_of(
        known: u8,
        creator: Creator,
        created: Option<u64>,
        names: Option<&Arc<Character>>,
    ) -> Option<Implied<'_>> {
        if known & Self::IMPLIED_CREATOR == 0 {
            return None;
        }
        Some(Implied {
            key: creator.key()?,
            created_ns: created?,
            names,
        })
    }

    /// Its story, to read (the readers of its processes take [`Self::implied`]).
    pub fn story(&self) -> &Story {
        match &self.detail {
            Some(d) => &d.story,
            None => &EMPTY_STORY,
        }
    }

    /// Its story, for a change made by process `by` (`None`: by none): the implied creator
    /// member is stored first when the change could see it.
    pub fn story_mut(&mut self, by: Option<ProcessKey>) -> &mut Story {
        let implied = Self::implied_of(
            self.known,
            self.creator,
            self.times.created(),
            self.creator_names.as_ref(),
        );
        let story = &mut Detail::made(&mut self.detail, self.key.ty).story;
        if let (Some(by), Some(i)) = (by, implied)
            && story.materialize(i, by)
        {
            self.known &= !Self::IMPLIED_CREATOR;
        }
        story
    }

    /// What its story remembers of process `key`, if it names it.
    pub fn character(&self, key: ProcessKey) -> Option<Arc<Character>> {
        self.story().character(key, self.implied())
    }

    /// The processes whose operations its story sums, with them, in key order.
    pub fn operations(&self) -> impl Iterator<Item = (ProcessKey, Cow<'_, ProcOps>)> {
        self.story().operations(self.implied())
    }

    /// The operations of process `key` its story sums, if any.
    pub fn operations_of(&self, key: ProcessKey) -> Option<Cow<'_, ProcOps>> {
        self.story().operations_of(key, self.implied())
    }

    /// Refreshes what its story remembers of its processes (before the model forgets them).
    pub fn refresh_cast<'a>(&mut self, lookup: impl Fn(ProcessKey) -> Option<&'a Process>) {
        if let Some(i) = self.implied()
            && lookup(i.key).is_some_and(|p| i.names.is_none_or(|n| !Arc::ptr_eq(n, p.names())))
        {
            self.story_mut(Some(i.key));
        }
        if let Some(d) = self.detail.as_deref_mut() {
            d.story.refresh_cast(lookup);
        }
    }

    /// Whether the kernel still has the object (live or removed-but-attached).
    pub fn exists(&self) -> bool {
        self.status != ObjectStatus::Destroyed
    }

    /// Every process this object refers to (for forgetting dead processes).
    pub fn referenced(&self, out: &mut Vec<ProcessKey>) {
        out.extend(self.creator.key());
        match self.body() {
            Body::Shm(s) => {
                out.extend(s.attached.keys());
                out.extend(s.attachers.iter().map(|(k, _)| *k));
            }
            Body::Sem(s) => {
                out.extend(s.activity.adjs.keys());
                out.extend(s.activity.users.iter().map(|(k, _)| *k));
                out.extend(s.rare.waiters.iter());
            }
            Body::Msg(s) => {
                let p = &s.peers;
                for peers in [&p.senders, &p.receivers, &p.users] {
                    out.extend(peers.iter().map(|(k, _)| *k));
                }
                out.extend(s.rare.recv_waiters.iter());
                out.extend(s.rare.send_waiters.iter());
            }
        }
    }

    /// Forgets `key` as a user (revives / deaths are handled by the peers).
    pub fn process_died(&mut self, key: ProcessKey) {
        let Some(body) = self.body_made() else {
            return;
        };
        match body {
            Body::Shm(s) => s.attachers.died(key),
            Body::Sem(s) => {
                if let Some(r) = s.rare.made()
                    && r.waiters.remove(&key)
                    && r.waiters.is_empty()
                {
                    for slot in &mut s.slots {
                        slot.ncnt = 0;
                        slot.zcnt = 0;
                    }
                }
                // SEM_UNDO adjustments are given back by the kernel at exit.
                let Some(activity) = s.activity.made() else {
                    return;
                };
                activity.users.died(key);
                let mut holds = false;
                if let Some(m) = activity.adjs.get_mut(&key) {
                    for (num, adj) in m.iter_mut() {
                        if adj.undo != 0 {
                            let i = usize::from(*num);
                            if let Some(slot) = s.slots.get_mut(i)
                                && let Some(v) = slot.value
                            {
                                let nv = i64::from(v).saturating_sub(adj.undo).clamp(0, 32_767);
                                slot.value = i32::try_from(nv).ok();
                            }
                            adj.undo = 0;
                        }
                    }
                    m.retain(|_, a| a.net < 0);
                    holds = !m.is_empty();
                    if !holds {
                        activity.adjs.remove(&key);
                    }
                }
                if holds {
                    let dead = &mut s.rare.make().dead_adj;
                    dead.retain(|k| *k != key);
                    dead.push_back(key);
                    s.prune_dead();
                }
            }
            Body::Msg(s) => {
                if let Some(p) = s.peers.made() {
                    p.died(key);
                }
                s.not_waiting(false, &key);
                s.not_waiting(true, &key);
            }
        }
    }

    /// Undoes [`Self::process_died`] for a process wrongly thought dead.
    pub fn process_revived(&mut self, key: ProcessKey) {
        let Some(body) = self.body_made() else {
            return;
        };
        match body {
            Body::Shm(s) => s.attachers.revive(key),
            Body::Sem(s) => {
                if let Some(a) = s.activity.made() {
                    a.users.revive(key);
                }
                if let Some(r) = s.rare.made() {
                    r.dead_adj.retain(|k| *k != key);
                }
            }
            Body::Msg(s) => {
                if let Some(p) = s.peers.made() {
                    p.revive(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creator_and_times_round_trip() {
        let k = ProcessKey {
            pid: 9,
            start_ticks: u64::MAX,
        };
        let c = Creator::new(Some(k), Some(9));
        assert_eq!((c.key(), c.pid()), (Some(k), Some(9)));
        let c = Creator::new(None, Some(0));
        assert_eq!((c.key(), c.pid()), (None, Some(0)));
        let c = Creator::new(None, None);
        assert_eq!((c.key(), c.pid()), (None, None));
        let mut t = Times::default();
        assert_eq!(
            (t.created(), t.removed(), t.destroyed()),
            (None, None, None)
        );
        t.set_removed(0);
        t.set_destroyed(u64::MAX);
        assert_eq!(
            (t.created(), t.removed(), t.destroyed()),
            (None, Some(0), Some(u64::MAX - 1)),
            "u64::MAX means unknown: a time that far off is kept 1 ns earlier"
        );
        assert_eq!(std::mem::size_of::<Object>(), 80);
        assert_eq!(std::mem::size_of::<Detail>(), 112, "a story is 32 bytes");
    }

    /// An object whose story stores its creator's member, as before the member was implied.
    fn stored_creator(
        key: ObjectKey,
        creator: ProcessKey,
        now: u64,
        p: Option<&Process>,
    ) -> Object {
        let mut o = Object::new(key);
        o.creator = Creator::process(creator);
        o.times.set_created(now);
        o.creator_names = p.map(|p| p.names().clone());
        let story = o.story_mut(Some(creator));
        story.push(now, Some((creator, p)), super::super::story::What::Create);
        story.ops(creator, p, now).update(|s| s.created += 1);
        o
    }

    /// Whether `a` and `b` read the same to every reader of their stories' processes.
    fn read_alike(a: &Object, b: &Object, keys: &[ProcessKey]) {
        for k in keys {
            assert_eq!(a.character(*k), b.character(*k), "{k:?}");
            assert_eq!(a.operations_of(*k), b.operations_of(*k), "{k:?}");
        }
        let ops =
            |o: &Object| -> Vec<_> { o.operations().map(|(k, o)| (k, o.into_owned())).collect() };
        assert_eq!(ops(a), ops(b));
        let created = a.times.created().map(|t| (t, a.creator.key()));
        assert_eq!(a.story().entries(created), b.story().entries(created));
        assert_eq!(a.story().procs_dropped(), b.story().procs_dropped());
        assert_eq!(a.creator_program(), b.creator_program());
    }

    #[test]
    fn the_implied_creator_reads_as_a_stored_one() {
        use super::super::story::{MAX_PROCS, What};
        let okey = ObjectKey {
            ns: 1,
            ty: IpcType::Sem,
            id: 0,
            generation: 0,
        };
        let k = |pid| ProcessKey {
            pid,
            start_ticks: 7,
        };
        let creator = k(50);
        let mut proc = Process::new(creator, "maker", 0, 0);
        let others: Vec<Process> = (1..=u32::try_from(MAX_PROCS).unwrap() + 8)
            .map(|pid| Process::new(k(if pid >= 50 { pid + 1 } else { pid }), "other", 0, 0))
            .collect();
        let mut keys: Vec<ProcessKey> = others.iter().map(|p| p.key).collect();
        keys.push(creator);
        // The same creation by `p`, with the creator's member implied and stored.
        let pair = |p: Option<&Process>| {
            let mut a = Object::new(okey);
            assert!(a.set_created(creator, 100, p.map(|p| p.names().clone())));
            (a, stored_creator(okey, creator, 100, p))
        };
        // Both refreshed with the creator as `proc` is now, before they are archived.
        let refresh = |a: &mut Object, b: &mut Object, proc: &Process| {
            for o in [a, b] {
                o.refresh_cast(|key| (key == creator).then_some(proc));
            }
        };
        // After each step, the implied object reads as the stored one; the creator's member
        // is stored only when the creator comes back or the story nears its bound.
        let (mut a, mut b) = pair(Some(&proc));
        read_alike(&a, &b, &keys);
        assert_eq!(a.creator_program(), Some("maker"));
        assert!(a.story().is_empty() && a.implied().is_some());
        // Names changed since creation: the program charged stays the one at creation.
        proc.names_mut().exe = Some("/usr/bin/maker".into());
        assert_eq!(a.creator_program(), Some("maker"));
        for (i, p) in others.iter().enumerate() {
            let now = 200 + i as u64;
            for o in [&mut a, &mut b] {
                if i % 2 == 0 {
                    o.story_mut(Some(p.key))
                        .push(now, Some((p.key, Some(p))), What::Open);
                }
                o.story_mut(Some(p.key))
                    .ops(p.key, Some(p), now)
                    .update(|s| s.opened += 1);
            }
            read_alike(&a, &b, &keys);
            assert_eq!(a.implied().is_some(), i + 2 < MAX_PROCS, "{i}");
        }
        // Stored at the bound: the quietest (the creator, created only) was dropped as before.
        assert!(a.operations_of(creator).is_none() && a.character(creator).is_some());
        // The creator comes back.
        let (mut a, mut b) = pair(Some(&proc));
        for o in [&mut a, &mut b] {
            o.story_mut(Some(creator))
                .ops(creator, Some(&proc), 300)
                .update(|s| s.sem_ops += 1);
        }
        assert!(a.implied().is_none());
        read_alike(&a, &b, &keys);
        // Refreshed before it is archived: the creator's names as they are now.
        let (mut a, mut b) = pair(Some(&Process::new(creator, "maker", 0, 0)));
        refresh(&mut a, &mut b, &proc);
        read_alike(&a, &b, &keys);
        assert_eq!(
            a.character(creator).and_then(|c| c.exe.clone()).as_deref(),
            Some("/usr/bin/maker")
        );
        // A creator the model did not know: named as unknown, no program.
        let (mut a, mut b) = pair(None);
        read_alike(&a, &b, &keys);
        assert_eq!(a.character(creator).as_deref(), Some(&Character::default()));
        assert_eq!(a.creator_program(), None);
        refresh(&mut a, &mut b, &proc);
        read_alike(&a, &b, &keys);
        assert_eq!(
            a.character(creator).map(|c| c.comm.clone()).as_deref(),
            Some("maker")
        );
        // A created time the object cannot keep exactly: the caller stores the member.
        let mut a = Object::new(okey);
        assert!(!a.set_created(creator, u64::MAX, None));
        assert!(a.implied().is_none());
    }

    #[test]
    fn rare_fields_are_made_on_first_write_only() {
        let key = ProcessKey {
            pid: 7,
            start_ticks: 1,
        };
        let mut q = MsgState::default();
        assert!(q.rare.recv_waiters.is_empty() && q.rare.last_sender_pid.is_none());
        q.set_last_pid(true, 0);
        assert!(
            q.rare.made().is_none(),
            "clearing what is not there makes nothing"
        );
        q.set_last_pid(true, 42);
        assert_eq!(q.rare.last_sender_pid, Some(42));
        q.set_last_pid(true, 0);
        assert_eq!(q.rare.last_sender_pid, None);
        let mut s = SemState::default();
        assert_eq!(s.reset_of(3), 0);
        s.rare.make().reset_ns.insert(3, 9);
        s.rare.make().waiters.insert(key);
        assert_eq!((s.reset_of(3), s.reset_of(2)), (9, 0));
        assert!(s.rare.waiters.contains(&key));
        assert!(std::mem::size_of::<SemState>() <= 48 && std::mem::size_of::<MsgState>() <= 48);
    }

    #[test]
    fn attached_keeps_one_process_inline_and_many_in_order() {
        let k = |pid| ProcessKey {
            pid,
            start_ticks: 1,
        };
        let mut a = Attached::default();
        assert_eq!(a.keys().count(), 0);
        *a.get_or_insert_with(k(5), || 2) += 1;
        assert!(matches!(a, Attached::One(_, 3)), "one process: inline");
        *a.get_or_insert_with(k(5), || 9) += 1;
        *a.get_or_insert_with(k(1), || 7) += 0;
        *a.get_or_insert_with(k(9), || 4) += 0;
        assert_eq!(a.keys().map(|k| k.pid).collect::<Vec<_>>(), [1, 5, 9]);
        assert_eq!(*a.get_or_insert_with(k(5), || 0), 4);
        a.remove(&k(1));
        a.remove(&k(2));
        a.remove(&k(9));
        assert!(
            matches!(a, Attached::One(_, 4)),
            "back to one: inline again"
        );
        a.remove(&k(5));
        assert_eq!(a.keys().count(), 0);
        assert_eq!(std::mem::size_of::<ShmState>(), 80);
    }
}
