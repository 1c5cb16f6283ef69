//! POSIX IPC objects in the model: shared memory objects and named semaphores (files of
//! /dev/shm) and message queues (files of the mqueue filesystem), named by path.
//!
//! # What the model knows, and from where
//!
//! * The objects and who holds them — a process that maps the file or has a descriptor of it
//!   — come from snapshots (bootstrap and every reconcile): the kernel's truth replaces what
//!   the model had. Between snapshots, a holder's exit (the process lifecycle is traced) drops
//!   its holdings at once; a fork copies them (descriptors and shared mappings are inherited);
//!   an exec drops them (`shm_open`, `sem_open` and `mq_open` descriptors are close-on-exec, and
//!   an exec replaces the memory).
//! * A queue's depth comes from snapshots (`mq_getattr`).
//! * Message queues are also traced: `mq_open` (a holder, with its access mode; `mq-create`
//!   when `O_CREAT` made the queue: `O_EXCL`, or an inode the model did not know),
//!   `mq_unlink` (the name is gone: not a leak any more), `mq_timedsend` / `mq_timedreceive`
//!   (depth, readers; in `watch` a process's later ones arrive as the queue's totals) and
//!   `mq_notify` (the registered reader). The kernel programs resolve each descriptor to its
//!   queue's inode, so a send through an inherited or duplicated descriptor is attributed
//!   exactly.
//!
//! Holders that change without an exit (a `close`, an `munmap`) are only seen at the next
//! reconcile; they are not corrections of a mistake, so they are not reported as differences
//! (`Reconciled::posix_changed` says the POSIX part changed, so that the snapshot is recorded
//! for `replay`).
//!
//! # Rules
//!
//! * `orphaned-posix-shm`, `orphaned-posix-semaphore`, `orphaned-posix-queue`: nobody holds
//!   it. The condition is deemed to hold since the object last changed (its mtime/ctime) or was
//!   last seen held, whichever is later, and is raised once it has held for the grace period.
//! * `stalled-posix-queue`: messages wait, some live process holds the queue, but none can
//!   receive (every live descriptor is write-only, and no live process is registered with
//!   `mq_notify`). A queue nobody holds at all is `orphaned-posix-queue` instead.

use super::HashMap;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::event::{Action, Event, EventKind, MqId, PosixType, ProcessKey};
use crate::snapshot::parse::{PosixDir, posix_file_name};
use crate::snapshot::{Hold, PosixHolder, PosixObject, Snapshot};

use super::object::Peers;
use super::process::Process;
use super::rules::{Finding, FindingKey, ProcessEvidence, Role, Rule, Severity, Subject};
use super::view::{PeerView, ProcessRef};
use super::{Cx, Model, NS_PER_SEC};

/// Identity of a POSIX object in the model: a name in a namespace; `generation` tells apart
/// successive objects under one name (a name unlinked and created again is another object).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PosixKey {
    pub ns: u32,
    #[serde(rename = "type")]
    pub ty: PosixType,
    pub name: String,
    pub generation: u32,
}

/// What findings and records show about a POSIX object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PosixRef {
    /// The IPC namespace it was seen from (a queue's own; for /dev/shm, ipcaudit's).
    pub ns: u32,
    #[serde(rename = "type")]
    pub ty: PosixType,
    /// `/NAME`, as `shm_open`, `sem_open` and `mq_open` take it.
    pub name: String,
    /// Unique within one model; 0 in a snapshot's judgement.
    pub generation: u32,
    /// Its file: device and inode (0 when not known yet).
    pub dev: u64,
    pub ino: u64,
    /// Size in bytes (shared memory), if known.
    pub size: Option<u64>,
}

impl PosixRef {
    /// Its file's name in its directory (`NAME`, or `sem.NAME` for a semaphore).
    pub fn file_name(&self) -> String {
        posix_file_name(self.ty, &self.name)
            .unwrap_or_else(|_| self.name.trim_start_matches('/').to_owned())
    }

    /// Its path where it conventionally is: /dev/shm/NAME, /dev/shm/sem.NAME,
    /// /dev/mqueue/NAME.
    pub fn path(&self) -> String {
        let dir = match PosixDir::of(self.ty) {
            PosixDir::DevShm => "/dev/shm",
            PosixDir::Mqueue => "/dev/mqueue",
        };
        format!("{dir}/{}", self.file_name())
    }

    /// The command that removes it (a queue's needs the mqueue filesystem mounted at
    /// /dev/mqueue).
    pub fn remedy(&self) -> String {
        format!("rm {}", shell_quote(&self.path()))
    }

    /// "POSIX shared memory object /cache"
    pub fn describe(&self) -> String {
        format!("{} {}", self.ty.describe(), self.name)
    }
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%,=".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// One process's holdings of an object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Holding {
    /// Mappings of the file.
    pub maps: u32,
    /// Open descriptors.
    pub fds: u32,
    /// A descriptor open for reading (a queue: it can receive).
    pub read: bool,
    /// A descriptor open for writing (a queue: it can send).
    pub write: bool,
}

/// A queue's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueState {
    pub messages: u64,
    /// Bytes of message data queued (`QSIZE`).
    pub bytes: u64,
    pub max_messages: u64,
    pub message_size: u64,
    /// The process registered with `mq_notify` (0: none).
    pub notify_pid: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct PosixObj {
    pub key: PosixKey,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub size: u64,
    /// Last change (mtime/ctime; a queue's move with every send and receive), ns.
    pub changed_ns: u64,
    /// The last time some process was known to hold it.
    pub held_ns: Option<u64>,
    /// The last time some process was known to be able to receive from it (queues).
    pub read_ns: Option<u64>,
    /// Current holdings of live processes.
    pub holders: BTreeMap<ProcessKey, Holding>,
    /// Every process that held it (live ones, and the most recent dead ones).
    pub peers: Peers,
    /// Those of them that could receive (queues).
    pub readers: Peers,
    pub queue: Option<QueueState>,
    /// When the model saw it created (`mq-create`).
    pub created_ns: Option<u64>,
    /// The process that created it, when the model saw it.
    pub creator: Option<ProcessKey>,
    /// What the model consumed of the kernel's totals entry of this queue: the entry's
    /// `first_ns`, `ops`, and sent, sent bytes, received, received bytes.
    pub totals: Option<(u64, u64, [u64; 4])>,
}

impl PosixObj {
    pub fn posix_ref(&self) -> PosixRef {
        PosixRef {
            ns: self.key.ns,
            ty: self.key.ty,
            name: self.key.name.clone(),
            generation: self.key.generation,
            dev: self.dev,
            ino: self.ino,
            size: (self.key.ty == PosixType::Pshm).then_some(self.size),
        }
    }
}

/// Every POSIX object the model holds, and its indexes.
#[derive(Clone, Debug, Default)]
pub(crate) struct PosixTable {
    pub objects: BTreeMap<PosixKey, PosixObj>,
    /// The current object of each name: (namespace, type, name).
    pub by_name: HashMap<(u32, PosixType, String), PosixKey>,
    /// The objects each live process holds: what its exit, fork and exec change.
    pub by_process: HashMap<ProcessKey, BTreeSet<PosixKey>>,
    /// The queues each pid is registered with `mq_notify` on: re-evaluated when it dies.
    pub notified: HashMap<u32, BTreeSet<PosixKey>>,
    /// The current queue of each inode: (namespace, inode).
    pub by_ino: HashMap<(u32, u64), PosixKey>,
    pub next_generation: u32,
}

/// A process's dealings with a POSIX object, for `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PosixHolderView<'a> {
    pub process: ProcessRef<'a>,
    #[serde(flatten)]
    pub holding: Holding,
}

/// A POSIX object as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PosixView<'a> {
    pub object: PosixRef,
    /// The process that created it, when the model saw it (`mq-create`).
    pub creator: Option<ProcessRef<'a>>,
    pub created_ns: Option<u64>,
    pub mode: u32,
    pub uid: u32,
    pub changed_ns: u64,
    pub holders: Vec<PosixHolderView<'a>>,
    /// Every process that held it (live ones and the most recent dead ones).
    pub peers: Vec<PeerView<'a>>,
    pub readers: Vec<PeerView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueState>,
}

fn secs_ns(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0).saturating_mul(NS_PER_SEC)
}

/// Holdings per (device, inode) and process, from a snapshot's holder records.
type Held = HashMap<(u64, u64), BTreeMap<ProcessKey, Holding>>;

fn holdings(holders: &[PosixHolder]) -> Held {
    let mut out: Held = HashMap::default();
    for h in holders {
        let e = out
            .entry((h.dev, h.ino))
            .or_default()
            .entry(h.process)
            .or_default();
        match h.hold {
            Hold::Map { writable, .. } => {
                e.maps += 1;
                e.write |= writable;
                e.read = true;
            }
            Hold::Fd { read, write, .. } => {
                e.fds += 1;
                e.read |= read;
                e.write |= write;
            }
        }
    }
    out
}

impl Model {
    /// Every POSIX object the model holds, in key order.
    pub fn posix_objects(&self) -> impl Iterator<Item = PosixView<'_>> {
        self.posix.objects.values().map(|o| self.posix_view(o))
    }

    fn posix_view<'a>(&'a self, o: &'a PosixObj) -> PosixView<'a> {
        PosixView {
            object: o.posix_ref(),
            creator: o.creator.map(|k| self.pref(k)),
            created_ns: o.created_ns,
            mode: o.mode,
            uid: o.uid,
            changed_ns: o.changed_ns,
            holders: o
                .holders
                .iter()
                .map(|(k, h)| PosixHolderView {
                    process: self.pref(*k),
                    holding: *h,
                })
                .collect(),
            peers: self.peers_view(&o.peers),
            readers: self.peers_view(&o.readers),
            queue: o.queue,
        }
    }

    /// The POSIX objects of a snapshot replace the model's of that namespace; holders are the
    /// snapshot's. Returns whether anything changed.
    pub(crate) fn sync_posix(&mut self, snap: &Snapshot, cx: &mut Cx) -> bool {
        // A snapshot that could not inspect every process does not know who holds what.
        if snap.posix_hidden > 0 {
            return false;
        }
        let ns = snap.ipc_ns;
        let now = snap.taken_ns;
        let mut changed = false;
        let held = holdings(&snap.posix_holders);
        // Holders are processes the model must know (those of other namespaces too).
        for h in &snap.posix_holders {
            if !self.processes.contains_key(&h.process) {
                let p = Process::new(h.process, &h.comm, h.uid, h.ipc_ns);
                self.add_process(p, cx);
            }
        }
        // A type the snapshot could not list (a note says why) keeps what the model had.
        let listed: BTreeSet<PosixType> = snap.posix_listed.iter().copied().collect();
        let mut seen: BTreeSet<PosixKey> = BTreeSet::new();
        for po in &snap.posix {
            let k = self.posix_match(ns, po, cx, &mut changed);
            seen.insert(k.clone());
            let holders = held.get(&(po.dev, po.ino)).cloned().unwrap_or_default();
            changed |= self.posix_set_holders(&k, holders, now, cx);
            if let Some(o) = self.posix.objects.get_mut(&k) {
                let changed_ns = secs_ns(po.last_change()).min(now.max(1));
                let queue = po.queue.map(|q| QueueState {
                    messages: q.messages,
                    bytes: q.qsize,
                    max_messages: q.max_messages,
                    message_size: q.message_size,
                    notify_pid: q.notify_pid,
                });
                let fresh = (po.mode, po.uid, po.size, changed_ns, queue.or(o.queue));
                if (o.mode, o.uid, o.size, o.changed_ns, o.queue) != fresh {
                    changed = true;
                    (o.mode, o.uid, o.size, o.changed_ns, o.queue) = fresh;
                }
                if let Some(pid) = o.queue.map(|q| q.notify_pid).filter(|p| *p != 0) {
                    self.posix
                        .notified
                        .entry(pid)
                        .or_default()
                        .insert(k.clone());
                }
            }
        }
        let gone: Vec<PosixKey> = self
            .posix
            .objects
            .keys()
            .filter(|k| k.ns == ns && listed.contains(&k.ty) && !seen.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            changed = true;
            self.posix_forget(&k, cx);
        }
        let keys: Vec<PosixKey> = self
            .posix
            .objects
            .keys()
            .filter(|k| k.ns == ns)
            .cloned()
            .collect();
        for k in keys {
            self.evaluate_posix(&k, now, cx);
        }
        changed
    }

    /// The model's object for a snapshot's: the current one of that name if it is the same
    /// file, else a new one (the old one is gone).
    fn posix_match(
        &mut self,
        ns: u32,
        po: &PosixObject,
        cx: &mut Cx,
        changed: &mut bool,
    ) -> PosixKey {
        let name_key = (ns, po.ty, po.name.clone());
        if let Some(k) = self.posix.by_name.get(&name_key).cloned() {
            let same = self
                .posix
                .objects
                .get(&k)
                // A queue the model learnt of from an event has no device yet.
                .is_some_and(|o| {
                    o.ino == 0 || (o.ino == po.ino && (o.dev == po.dev || o.dev == 0))
                });
            if same {
                if let Some(o) = self.posix.objects.get_mut(&k) {
                    (o.dev, o.ino) = (po.dev, po.ino);
                }
                if po.ty == PosixType::Pmsg {
                    self.posix.by_ino.insert((ns, po.ino), k.clone());
                }
                return k;
            }
            self.posix_forget(&k, cx);
        }
        *changed = true;
        let key = PosixKey {
            ns,
            ty: po.ty,
            name: po.name.clone(),
            generation: self.posix.next_generation,
        };
        self.posix.next_generation = self.posix.next_generation.wrapping_add(1);
        self.posix.objects.insert(
            key.clone(),
            PosixObj {
                key: key.clone(),
                dev: po.dev,
                ino: po.ino,
                mode: po.mode,
                uid: po.uid,
                size: po.size,
                changed_ns: secs_ns(po.last_change()),
                held_ns: None,
                read_ns: None,
                holders: BTreeMap::new(),
                peers: Peers::default(),
                readers: Peers::default(),
                queue: None,
                created_ns: None,
                creator: None,
                totals: None,
            },
        );
        self.posix.by_name.insert(name_key, key.clone());
        if po.ty == PosixType::Pmsg {
            self.posix.by_ino.insert((ns, po.ino), key.clone());
        }
        key
    }

    /// Replaces an object's holders (only live processes count). Returns whether they differ.
    fn posix_set_holders(
        &mut self,
        k: &PosixKey,
        holders: BTreeMap<ProcessKey, Holding>,
        now: u64,
        cx: &mut Cx,
    ) -> bool {
        let holders: BTreeMap<ProcessKey, Holding> = holders
            .into_iter()
            .filter(|(p, _)| self.is_alive(*p))
            .collect();
        let Some(o) = self.posix.objects.get_mut(k) else {
            return false;
        };
        if o.holders == holders {
            if !holders.is_empty() {
                o.held_ns = Some(now);
                if holders.values().any(|h| h.read) {
                    o.read_ns = Some(now);
                }
            }
            return false;
        }
        let old: Vec<ProcessKey> = o.holders.keys().copied().collect();
        if !o.holders.is_empty() {
            o.held_ns = Some(now);
        }
        if o.holders.values().any(|h| h.read) {
            o.read_ns = Some(now);
        }
        for (p, h) in &holders {
            o.peers.touch(*p, true, now, 0, 0);
            if h.read {
                o.readers.touch(*p, true, now, 0, 0);
            }
        }
        if !holders.is_empty() {
            o.held_ns = Some(now);
        }
        if holders.values().any(|h| h.read) {
            o.read_ns = Some(now);
        }
        o.holders = holders;
        let new: Vec<ProcessKey> = o.holders.keys().copied().collect();
        for p in old {
            if let Some(set) = self.posix.by_process.get_mut(&p) {
                set.remove(k);
                if set.is_empty() {
                    self.posix.by_process.remove(&p);
                }
            }
        }
        for p in new {
            self.posix
                .by_process
                .entry(p)
                .or_default()
                .insert(k.clone());
        }
        let _ = cx;
        true
    }

    /// The object is gone (unlinked, or another file has the name): findings cleared, indexes
    /// dropped.
    fn posix_forget(&mut self, k: &PosixKey, cx: &mut Cx) {
        let Some(o) = self.posix.objects.remove(k) else {
            return;
        };
        let name_key = (k.ns, k.ty, k.name.clone());
        if self.posix.by_name.get(&name_key) == Some(k) {
            self.posix.by_name.remove(&name_key);
        }
        if self.posix.by_ino.get(&(k.ns, o.ino)) == Some(k) {
            self.posix.by_ino.remove(&(k.ns, o.ino));
        }
        for p in o.holders.keys() {
            if let Some(set) = self.posix.by_process.get_mut(p) {
                set.remove(k);
                if set.is_empty() {
                    self.posix.by_process.remove(p);
                }
            }
        }
        if let Some(pid) = o.queue.map(|q| q.notify_pid)
            && let Some(set) = self.posix.notified.get_mut(&pid)
        {
            set.remove(k);
            if set.is_empty() {
                self.posix.notified.remove(&pid);
            }
        }
        for rule in Rule::for_posix(k.ty) {
            self.settle(
                FindingKey {
                    rule: *rule,
                    subject: Subject::Posix(k.clone()),
                },
                false,
                cx.now,
                cx,
            );
        }
    }

    /// A process died: its holdings go.
    pub(crate) fn posix_process_died(&mut self, key: ProcessKey, now: u64, cx: &mut Cx) {
        if let Some(queues) = self.posix.notified.remove(&key.pid) {
            for k in queues {
                if let Some(o) = self.posix.objects.get_mut(&k) {
                    o.read_ns = Some(now);
                }
                self.evaluate_posix(&k, now, cx);
            }
        }
        let Some(keys) = self.posix.by_process.remove(&key) else {
            return;
        };
        for k in keys {
            if let Some(o) = self.posix.objects.get_mut(&k) {
                if let Some(h) = o.holders.remove(&key) {
                    o.held_ns = Some(now);
                    if h.read {
                        o.read_ns = Some(now);
                    }
                }
                o.peers.died(key);
                o.readers.died(key);
            }
            self.evaluate_posix(&k, now, cx);
        }
    }

    /// A fork: the child holds what the parent holds (descriptors and mappings are
    /// inherited).
    pub(crate) fn posix_fork(&mut self, parent: ProcessKey, child: ProcessKey, now: u64) {
        let Some(keys) = self.posix.by_process.get(&parent).cloned() else {
            return;
        };
        for k in &keys {
            if let Some(o) = self.posix.objects.get_mut(k)
                && let Some(h) = o.holders.get(&parent).copied()
            {
                o.holders.insert(child, h);
                o.peers.touch(child, true, now, 0, 0);
                if h.read {
                    o.readers.touch(child, true, now, 0, 0);
                }
            }
        }
        self.posix.by_process.entry(child).or_default().extend(keys);
    }

    /// An exec: the process's POSIX descriptors are close-on-exec and its memory is replaced.
    pub(crate) fn posix_exec(&mut self, key: ProcessKey, now: u64, cx: &mut Cx) {
        let Some(keys) = self.posix.by_process.remove(&key) else {
            return;
        };
        for k in keys {
            if let Some(o) = self.posix.objects.get_mut(&k)
                && o.holders.remove(&key).is_some()
            {
                o.held_ns = Some(now);
                o.read_ns = Some(now);
            }
            self.evaluate_posix(&k, now, cx);
        }
    }

    /// Re-evaluates the rules of one POSIX object.
    pub(crate) fn evaluate_posix(&mut self, k: &PosixKey, now: u64, cx: &mut Cx) {
        let Some(o) = self.posix.objects.get(k) else {
            return;
        };
        let changed = o.changed_ns.min(now);
        let since_held = o.held_ns.map_or(changed, |t| t.max(changed));
        let since_read = o.read_ns.map_or(changed, |t| t.max(changed));
        for rule in Rule::for_posix(k.ty) {
            let holds = self.posix_condition(*rule, k);
            let since = if *rule == Rule::StalledPosixQueue {
                since_read
            } else {
                since_held
            };
            let key = FindingKey {
                rule: *rule,
                subject: Subject::Posix(k.clone()),
            };
            self.settle(key, holds, since, cx);
        }
    }

    /// Whether `rule` holds for POSIX object `k`.
    pub(crate) fn posix_condition(&self, rule: Rule, k: &PosixKey) -> bool {
        let Some(o) = self.posix.objects.get(k) else {
            return false;
        };
        let held = o.holders.keys().any(|p| self.is_alive(*p));
        match (rule, k.ty) {
            (Rule::OrphanedPosixShm, PosixType::Pshm)
            | (Rule::OrphanedPosixSemaphore, PosixType::Psem)
            | (Rule::OrphanedPosixQueue, PosixType::Pmsg) => !held,
            (Rule::StalledPosixQueue, PosixType::Pmsg) => {
                let waiting = o.queue.is_some_and(|q| q.messages > 0);
                let reader = o.holders.iter().any(|(p, h)| h.read && self.is_alive(*p));
                let notified = o.queue.is_some_and(|q| {
                    q.notify_pid != 0
                        && self
                            .live_by_pid
                            .get(&q.notify_pid)
                            .is_some_and(|p| self.is_alive(*p))
                });
                waiting && held && !reader && !notified
            }
            _ => false,
        }
    }

    fn posix_evidence(&self, key: ProcessKey, role: Role) -> ProcessEvidence {
        let p = self.processes.get(&key);
        ProcessEvidence {
            pid: key.pid,
            name: p.map(|p| p.comm().to_owned()).unwrap_or_default(),
            entity: Some(key),
            alive: p.is_some_and(|p| p.alive),
            role,
            details: p.map_or_else(std::sync::Arc::default, super::rules::process_details),
            call_site: None,
        }
    }

    /// The finding of `rule` on POSIX object `k` as things stand.
    pub(crate) fn posix_finding(&self, rule: Rule, k: &PosixKey, since: u64) -> Option<Finding> {
        let o = self.posix.objects.get(k)?;
        let r = o.posix_ref();
        let mut evidence = Vec::new();
        let description = if rule == Rule::StalledPosixQueue {
            for (p, _) in o.holders.iter().filter(|(p, _)| self.is_alive(**p)) {
                evidence.push(self.posix_evidence(*p, Role::Holder));
            }
            for (p, _) in o.readers.iter().filter(|(p, _)| !self.is_alive(**p)) {
                evidence.push(self.posix_evidence(*p, Role::Reader));
            }
            let q = o.queue.unwrap_or_default();
            format!(
                "{} holds {} message(s) ({} bytes) and no live process can receive from it: \
                 its {} live holder(s) opened it write-only",
                r.describe(),
                q.messages,
                q.bytes,
                o.holders.len()
            )
        } else {
            if let Some(c) = o.creator {
                evidence.push(self.posix_evidence(c, Role::Creator));
            }
            for (p, _) in o.peers.iter() {
                if o.creator != Some(*p) {
                    evidence.push(self.posix_evidence(*p, Role::User));
                }
            }
            let what = match k.ty {
                PosixType::Pshm => format!(" ({} bytes)", o.size),
                PosixType::Psem | PosixType::Pmsg => String::new(),
            };
            let messages = match o.queue {
                Some(q) if q.messages > 0 => format!(", with {} message(s) in it", q.messages),
                _ => String::new(),
            };
            let unchanged = self
                .now_ns
                .max(since)
                .saturating_sub(o.changed_ns)
                .checked_div(NS_PER_SEC)
                .unwrap_or(0);
            format!(
                "{}{what} is not mapped or open in any process{messages}; unchanged for {unchanged} s",
                r.describe()
            )
        };
        Some(Finding {
            rule,
            object: None,
            posix: Some(r.clone()),
            severity: Severity::Warning,
            description,
            evidence,
            remedy: Some(r.remedy()),
            since_ns: since,
            service: None,
        })
        .map(|mut f| {
            f.blame();
            f
        })
    }

    /// A POSIX message queue event: what it does to the model, and its `event.action` (the
    /// object goes to `cx.posix`).
    pub(crate) fn on_mq(
        &mut self,
        ev: &Event,
        who: ProcessKey,
        alive: bool,
        cx: &mut Cx,
    ) -> Action {
        const O_ACCMODE: i32 = 0o3;
        const O_CREAT: i32 = 0o100;
        const O_EXCL: i32 = 0o200;
        let now = cx.now;
        match &ev.kind {
            EventKind::MqOpen {
                name,
                flags,
                queue,
                result,
                ..
            } => {
                let creat = flags & O_CREAT != 0;
                let ns = queue.map_or(ev.ipc_ns, |q| q.ns);
                let (read, write) = crate::snapshot::parse::access_mode(
                    u32::try_from(flags & O_ACCMODE).unwrap_or(0),
                );
                let action = if creat {
                    Action::MqCreate
                } else {
                    Action::MqOpen
                };
                let Ok(_fd) = result else {
                    cx.posix = Some(self.mq_ref_by_name(ns, name));
                    return action;
                };
                let known = self
                    .posix
                    .by_name
                    .get(&(ns, PosixType::Pmsg, name.clone()))
                    .cloned();
                let same = known.as_ref().is_some_and(|k| {
                    self.posix
                        .objects
                        .get(k)
                        .is_some_and(|o| queue.is_none_or(|q| o.ino == q.ino || o.ino == 0))
                });
                let created = creat && (flags & O_EXCL != 0 || !same);
                let k = match known {
                    Some(k) if same && !(created && flags & O_EXCL != 0) => k,
                    old => {
                        if let Some(old) = old {
                            self.posix_forget(&old, cx);
                        }
                        self.mq_new(ns, name, *queue, created.then_some((who, now)))
                    }
                };
                if let (Some(q), Some(o)) = (queue, self.posix.objects.get_mut(&k)) {
                    o.ino = q.ino;
                    self.posix.by_ino.insert((ns, q.ino), k.clone());
                }
                self.mq_hold(&k, who, alive, read, write, now);
                self.evaluate_posix(&k, now, cx);
                cx.posix = self.posix.objects.get(&k).map(PosixObj::posix_ref);
                if created {
                    Action::MqCreate
                } else {
                    Action::MqOpen
                }
            }
            EventKind::MqUnlink { name, result } => {
                let ns = ev.ipc_ns;
                cx.posix = Some(self.mq_ref_by_name(ns, name));
                if result.is_ok()
                    && let Some(k) = self.posix.by_name.get(&(ns, PosixType::Pmsg, name.clone()))
                {
                    let k = k.clone();
                    self.posix_forget(&k, cx);
                }
                Action::MqRemove
            }
            EventKind::MqSend {
                queue,
                size,
                result,
                ..
            } => {
                let k = self.mq_key(*queue);
                if let Some(k) = &k {
                    if result.is_ok() {
                        self.mq_hold(k, who, alive, false, true, now);
                        if let Some(o) = self.posix.objects.get_mut(k) {
                            let q = o.queue.get_or_insert_with(QueueState::default);
                            q.messages = q.messages.saturating_add(1);
                            q.bytes = q.bytes.saturating_add(*size);
                            o.changed_ns = o.changed_ns.max(now);
                        }
                        self.evaluate_posix(k, now, cx);
                    }
                    cx.posix = self.posix.objects.get(k).map(PosixObj::posix_ref);
                }
                Action::MqSend
            }
            EventKind::MqReceive { queue, result, .. } => {
                let k = self.mq_key(*queue);
                if let Some(k) = &k {
                    if let Ok(n) = result {
                        self.mq_hold(k, who, alive, true, false, now);
                        if let Some(o) = self.posix.objects.get_mut(k) {
                            let q = o.queue.get_or_insert_with(QueueState::default);
                            q.messages = q.messages.saturating_sub(1);
                            q.bytes = q.bytes.saturating_sub(*n);
                            o.changed_ns = o.changed_ns.max(now);
                        }
                        self.evaluate_posix(k, now, cx);
                    }
                    cx.posix = self.posix.objects.get(k).map(PosixObj::posix_ref);
                }
                Action::MqReceive
            }
            EventKind::MqNotify {
                queue,
                register,
                result,
                ..
            } => {
                let k = self.mq_key(*queue);
                if let Some(k) = &k {
                    if result.is_ok() {
                        let old = self
                            .posix
                            .objects
                            .get(k)
                            .and_then(|o| o.queue)
                            .map_or(0, |q| q.notify_pid);
                        if old != 0
                            && let Some(set) = self.posix.notified.get_mut(&old)
                        {
                            set.remove(k);
                        }
                        let pid = if *register { who.pid } else { 0 };
                        if let Some(o) = self.posix.objects.get_mut(k) {
                            o.queue.get_or_insert_with(QueueState::default).notify_pid = pid;
                        }
                        if pid != 0 {
                            self.posix
                                .notified
                                .entry(pid)
                                .or_default()
                                .insert(k.clone());
                            self.mq_hold(k, who, alive, true, false, now);
                        }
                        self.evaluate_posix(k, now, cx);
                    }
                    cx.posix = self.posix.objects.get(k).map(PosixObj::posix_ref);
                }
                Action::MqNotify
            }
            _ => Action::EventsLost,
        }
    }

    /// The model's queue of a kernel-resolved descriptor.
    fn mq_key(&self, queue: Option<MqId>) -> Option<PosixKey> {
        let q = queue?;
        self.posix.by_ino.get(&(q.ns, q.ino)).cloned()
    }

    /// The queue named `name` in `ns` as records name it (a bare reference when unknown).
    fn mq_ref_by_name(&self, ns: u32, name: &str) -> PosixRef {
        self.posix
            .by_name
            .get(&(ns, PosixType::Pmsg, name.to_owned()))
            .and_then(|k| self.posix.objects.get(k))
            .map_or_else(
                || PosixRef {
                    ns,
                    ty: PosixType::Pmsg,
                    name: name.to_owned(),
                    generation: 0,
                    dev: 0,
                    ino: 0,
                    size: None,
                },
                PosixObj::posix_ref,
            )
    }

    /// A queue the model learns of from an event (`created`: by whom, when).
    fn mq_new(
        &mut self,
        ns: u32,
        name: &str,
        queue: Option<MqId>,
        created: Option<(ProcessKey, u64)>,
    ) -> PosixKey {
        let key = PosixKey {
            ns,
            ty: PosixType::Pmsg,
            name: name.to_owned(),
            generation: self.posix.next_generation,
        };
        self.posix.next_generation = self.posix.next_generation.wrapping_add(1);
        let now = created.map_or(self.now_ns, |(_, t)| t);
        self.posix.objects.insert(
            key.clone(),
            PosixObj {
                key: key.clone(),
                dev: 0,
                ino: queue.map_or(0, |q| q.ino),
                mode: 0,
                uid: 0,
                size: 0,
                changed_ns: now,
                held_ns: None,
                read_ns: None,
                holders: BTreeMap::new(),
                peers: Peers::default(),
                readers: Peers::default(),
                queue: created.map(|_| QueueState::default()),
                created_ns: created.map(|(_, t)| t),
                creator: created.map(|(p, _)| p),
                totals: None,
            },
        );
        self.posix
            .by_name
            .insert((ns, PosixType::Pmsg, name.to_owned()), key.clone());
        if let Some(q) = queue {
            self.posix.by_ino.insert((ns, q.ino), key.clone());
        }
        key
    }

    /// Process `who` holds a descriptor of queue `k` (open for reading and/or writing).
    fn mq_hold(
        &mut self,
        k: &PosixKey,
        who: ProcessKey,
        alive: bool,
        read: bool,
        write: bool,
        now: u64,
    ) {
        let Some(o) = self.posix.objects.get_mut(k) else {
            return;
        };
        o.peers.touch(who, alive, now, 1, 0);
        if read {
            o.readers.touch(who, alive, now, 1, 0);
        }
        if !alive {
            return;
        }
        let h = o.holders.entry(who).or_default();
        h.fds = h.fds.max(1);
        h.read |= read;
        h.write |= write;
        o.held_ns = Some(now);
        if read {
            o.read_ns = Some(now);
        }
        self.posix
            .by_process
            .entry(who)
            .or_default()
            .insert(k.clone());
    }

    /// A POSIX queue's totals from the kernel: the messages since what was consumed.
    pub(crate) fn apply_mqueue_totals(&mut self, totals: &super::MqueueTotals, cx: &mut Cx) {
        let t = totals;
        let Some(key) = self.mq_key(Some(MqId {
            ns: t.ns,
            ino: t.ino,
        })) else {
            return;
        };
        let Some(o) = self.posix.objects.get_mut(&key) else {
            return;
        };
        // An entry made before the queue the model knows under this inode was created counted
        // for an earlier queue.
        if o.created_ns.is_some_and(|c| c > t.first_ns) {
            return;
        }
        let before = match o.totals {
            Some((first, ops, counts)) if first == t.first_ns => {
                if t.ops < ops {
                    return; // A stale copy.
                }
                counts
            }
            Some((first, ..)) if first > t.first_ns => return,
            _ => [0; 4],
        };
        let now = [t.sent, t.sent_bytes, t.received, t.received_bytes];
        let diff: Vec<u64> = now
            .iter()
            .zip(before)
            .map(|(n, b)| n.saturating_sub(b))
            .collect();
        o.totals = Some((t.first_ns, t.ops, now));
        if diff.iter().all(|v| *v == 0) {
            return;
        }
        let q = o.queue.get_or_insert_with(QueueState::default);
        // Sends first: the queue held them before the receives that followed took them.
        q.messages = q.messages.saturating_add(diff[0]).saturating_sub(diff[2]);
        q.bytes = q.bytes.saturating_add(diff[1]).saturating_sub(diff[3]);
        o.changed_ns = o.changed_ns.max(t.time_ns);
        let now = cx.now;
        self.evaluate_posix(&key, now, cx);
    }

    /// Forgets processes no POSIX object refers to any more: those kept as peers are referred
    /// to (for evidence).
    pub(crate) fn posix_referenced(&self, out: &mut Vec<ProcessKey>) {
        for o in self.posix.objects.values() {
            out.extend(o.creator);
            out.extend(o.holders.keys());
            out.extend(o.peers.iter().map(|(k, _)| *k));
            out.extend(o.readers.iter().map(|(k, _)| *k));
        }
    }

    /// A process wrongly thought dead (a snapshot shows it): its peer entries come back; its
    /// holdings come back with the snapshot's.
    pub(crate) fn posix_process_revived(&mut self, key: ProcessKey) {
        for o in self.posix.objects.values_mut() {
            o.peers.revive(key);
            o.readers.revive(key);
        }
    }
}
