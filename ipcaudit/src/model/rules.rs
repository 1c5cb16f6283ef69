//! Findings: what leaked or is about to go wrong, by rule. A finding is raised once (when its
//! condition has held for the rule's grace period, or at once for immediate rules) and cleared
//! once when the condition stops holding.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{CallSite, IpcType, PosixType, ProcessDetails, ProcessKey};

use super::object::{Body, Object, ObjectKey, ObjectRef, ObjectStatus, Peers, SemState};
use super::posix::{PosixKey, PosixRef};
use super::{Cx, Model, NS_PER_SEC};

/// The rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    OrphanedSegment,
    RemovedSegmentStillAttached,
    SemaphoreHeldByDeadProcess,
    StalledQueue,
    OrphanedSemaphoreSet,
    OrphanedQueue,
    LeakyProcess,
    NearLimit,
    WorldAccessible,
    OrphanedPosixShm,
    OrphanedPosixSemaphore,
    StalledPosixQueue,
    OrphanedPosixQueue,
}

impl Rule {
    pub const ALL: [Self; 13] = [
        Self::OrphanedSegment,
        Self::RemovedSegmentStillAttached,
        Self::SemaphoreHeldByDeadProcess,
        Self::StalledQueue,
        Self::OrphanedSemaphoreSet,
        Self::OrphanedQueue,
        Self::LeakyProcess,
        Self::NearLimit,
        Self::WorldAccessible,
        Self::OrphanedPosixShm,
        Self::OrphanedPosixSemaphore,
        Self::StalledPosixQueue,
        Self::OrphanedPosixQueue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrphanedSegment => "orphaned-segment",
            Self::RemovedSegmentStillAttached => "removed-segment-still-attached",
            Self::SemaphoreHeldByDeadProcess => "semaphore-held-by-dead-process",
            Self::StalledQueue => "stalled-queue",
            Self::OrphanedSemaphoreSet => "orphaned-semaphore-set",
            Self::OrphanedQueue => "orphaned-queue",
            Self::LeakyProcess => "leaky-process",
            Self::NearLimit => "near-limit",
            Self::WorldAccessible => "world-accessible",
            Self::OrphanedPosixShm => "orphaned-posix-shm",
            Self::OrphanedPosixSemaphore => "orphaned-posix-semaphore",
            Self::StalledPosixQueue => "stalled-posix-queue",
            Self::OrphanedPosixQueue => "orphaned-posix-queue",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// What the rule detects (`rule.description`).
    pub fn description(self) -> &'static str {
        match self {
            Self::OrphanedSegment => {
                "A shared memory segment that is not attached and not removed, whose creator and \
                 every process that ever attached it are dead: its memory is leaked until \
                 someone removes it."
            }
            Self::RemovedSegmentStillAttached => {
                "A shared memory segment was removed (IPC_RMID) but live processes keep it, and \
                 its memory, attached."
            }
            Self::SemaphoreHeldByDeadProcess => {
                "A process died holding a semaphore it used as a lock (it took a unit without \
                 SEM_UNDO and never gave it back): whoever waits for it waits forever."
            }
            Self::StalledQueue => {
                "A message queue holds messages and every process that ever received from it is \
                 dead (or none ever did)."
            }
            Self::OrphanedSemaphoreSet => {
                "A semaphore set whose every known user is dead and that nobody waits on."
            }
            Self::OrphanedQueue => {
                "A message queue whose every known user is dead and that nobody waits on."
            }
            Self::LeakyProcess => {
                "A program creates System V IPC objects faster than it removes them."
            }
            Self::NearLimit => {
                "The IPC namespace uses more than 90% of a kernel limit: the next creations will \
                 fail with ENOSPC."
            }
            Self::WorldAccessible => {
                "The object's mode grants access to every user (mode & 0o007)."
            }
            Self::OrphanedPosixShm => {
                "A POSIX shared memory object (/dev/shm) that no process maps or holds open, \
                 unchanged for longer than the grace period: its memory is leaked until someone \
                 unlinks it."
            }
            Self::OrphanedPosixSemaphore => {
                "A POSIX named semaphore (/dev/shm/sem.NAME) that no process maps or holds open, \
                 unchanged for longer than the grace period."
            }
            Self::StalledPosixQueue => {
                "A POSIX message queue holds messages, processes keep it open, but none of them \
                 can receive (no live descriptor open for reading, no mq_notify registration)."
            }
            Self::OrphanedPosixQueue => {
                "A POSIX message queue that no process holds open, unchanged for longer than the \
                 grace period."
            }
        }
    }

    /// Whether the condition must hold for the grace period before the finding is raised.
    pub(crate) fn needs_grace(self) -> bool {
        matches!(
            self,
            Self::OrphanedSegment
                | Self::RemovedSegmentStillAttached
                | Self::StalledQueue
                | Self::OrphanedSemaphoreSet
                | Self::OrphanedQueue
                | Self::OrphanedPosixShm
                | Self::OrphanedPosixSemaphore
                | Self::StalledPosixQueue
                | Self::OrphanedPosixQueue
        )
    }

    /// The rules of a POSIX type.
    pub(crate) fn for_posix(ty: PosixType) -> &'static [Self] {
        match ty {
            PosixType::Pshm => &[Self::OrphanedPosixShm],
            PosixType::Psem => &[Self::OrphanedPosixSemaphore],
            PosixType::Pmsg => &[Self::StalledPosixQueue, Self::OrphanedPosixQueue],
        }
    }

    /// The object rules of a type.
    pub(crate) fn for_type(ty: IpcType) -> &'static [Self] {
        match ty {
            IpcType::Shm => &[
                Self::OrphanedSegment,
                Self::RemovedSegmentStillAttached,
                Self::WorldAccessible,
            ],
            IpcType::Sem => &[
                Self::SemaphoreHeldByDeadProcess,
                Self::OrphanedSemaphoreSet,
                Self::WorldAccessible,
            ],
            IpcType::Msg => &[
                Self::StalledQueue,
                Self::OrphanedQueue,
                Self::WorldAccessible,
            ],
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// What a process in a finding's evidence did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Creator,
    /// Keeps a removed segment attached; holds a semaphore unit.
    Holder,
    /// Blocked on the object.
    Waiter,
    LastSender,
    /// Received from the queue.
    Reader,
    /// Attached the segment.
    Attacher,
    /// Opened or operated on a semaphore set or queue.
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creator => "creator",
            Self::Holder => "holder",
            Self::Waiter => "waiter",
            Self::LastSender => "last-sender",
            Self::Reader => "reader",
            Self::Attacher => "attacher",
            Self::User => "user",
        }
    }
}

/// A process named by a finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessEvidence {
    pub pid: u32,
    /// `comm` (empty when only the pid is known).
    pub name: String,
    /// None when only the pid is known (e.g. a creator that predates the model and is gone).
    pub entity: Option<ProcessKey>,
    pub alive: bool,
    pub role: Role,
    /// Executable, command line, parent chain, unit, container, when known.
    #[serde(flatten)]
    pub details: Arc<ProcessDetails>,
    /// Where in the code it created (creator) or attached (attacher, holder) the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_site: Option<Arc<CallSite>>,
}

impl ProcessEvidence {
    /// A process known only by its pid.
    pub fn pid_only(pid: u32, role: Role) -> Self {
        Self {
            pid,
            name: String::new(),
            entity: None,
            alive: false,
            role,
            details: Arc::default(),
            call_site: None,
        }
    }

    /// The service a human would blame for it (`nginx.service`, `container …`, the executable).
    pub fn service(&self) -> Option<String> {
        self.details.service(&self.name)
    }
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: Rule,
    /// The object (None for `leaky-process`, `near-limit` and the POSIX rules).
    pub object: Option<ObjectRef>,
    /// The POSIX object (the POSIX rules only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posix: Option<PosixRef>,
    pub severity: Severity,
    /// What is wrong with this object, in a sentence.
    pub description: String,
    pub evidence: Vec<ProcessEvidence>,
    /// The command that ends it, when there is one (`ipcrm -m 123`).
    pub remedy: Option<String>,
    /// Since when the condition holds (wall clock, ns).
    pub since_ns: u64,
    /// The service a human would blame: the unit, container or executable of the creator (or
    /// of the holder, the last sender, for the rules about them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl Finding {
    /// Fills `service` from the evidence: the first creator, holder or last sender whose
    /// service is known, else any process's.
    pub fn blame(&mut self) {
        let primary = |e: &&ProcessEvidence| {
            matches!(e.role, Role::Creator | Role::Holder | Role::LastSender)
        };
        self.service = self
            .evidence
            .iter()
            .filter(primary)
            .chain(self.evidence.iter())
            .find_map(ProcessEvidence::service);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", content = "finding", rename_all = "kebab-case")]
pub enum FindingChange {
    Raised(Finding),
    Cleared(Finding),
}

impl FindingChange {
    pub fn finding(&self) -> &Finding {
        match self {
            Self::Raised(f) | Self::Cleared(f) => f,
        }
    }

    pub fn is_raised(&self) -> bool {
        matches!(self, Self::Raised(_))
    }
}

/// The kernel limits `near-limit` watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitKind {
    Shmmni,
    Shmall,
    Semmni,
    Semmns,
    Msgmni,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shmmni => "shmmni",
            Self::Shmall => "shmall",
            Self::Semmni => "semmni",
            Self::Semmns => "semmns",
            Self::Msgmni => "msgmni",
        }
    }

    pub(crate) fn for_type(ty: IpcType) -> &'static [Self] {
        match ty {
            IpcType::Shm => &[Self::Shmmni, Self::Shmall],
            IpcType::Sem => &[Self::Semmni, Self::Semmns],
            IpcType::Msg => &[Self::Msgmni],
        }
    }
}

/// What a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Subject {
    Object(ObjectKey),
    Program(String),
    Limit(u32, LimitKind),
    Posix(PosixKey),
}

/// Identity of a finding.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FindingKey {
    pub rule: Rule,
    pub subject: Subject,
}

impl FindingKey {
    pub fn object(rule: Rule, key: ObjectKey) -> Self {
        Self {
            rule,
            subject: Subject::Object(key),
        }
    }
}

impl Model {
    pub(crate) fn is_alive(&self, key: ProcessKey) -> bool {
        self.processes.get(&key).is_some_and(|p| p.alive)
    }

    /// A creator that is not known to be alive counts as dead (it predates the model and its
    /// pid is gone, or it exited).
    fn creator_alive(&self, o: &Object) -> bool {
        o.creator.key().is_some_and(|k| self.is_alive(k))
    }

    /// Whether `rule` holds for object `o`.
    pub(crate) fn object_condition(&self, rule: Rule, o: &Object) -> bool {
        let live = o.status == ObjectStatus::Live;
        match (rule, o.body()) {
            (Rule::OrphanedSegment, Body::Shm(s)) => {
                live && !s.attached_any() && s.attachers.live.is_empty() && !self.creator_alive(o)
            }
            (Rule::RemovedSegmentStillAttached, Body::Shm(s)) => {
                o.status == ObjectStatus::RemovedPendingDestroy && s.attached_any()
            }
            (Rule::SemaphoreHeldByDeadProcess, Body::Sem(s)) => {
                live && s
                    .rare
                    .dead_adj
                    .iter()
                    .any(|k| s.holdings(*k).any(|(n, a)| s.stuck(n, &a)))
            }
            (Rule::OrphanedSemaphoreSet, Body::Sem(s)) => {
                live && s.activity.users.live.is_empty()
                    && s.rare.waiters.is_empty()
                    && !s.slots.iter().any(|v| v.ncnt > 0 || v.zcnt > 0)
                    && !self.creator_alive(o)
            }
            (Rule::StalledQueue, Body::Msg(s)) => {
                live && s.messages > 0
                    && s.peers.receivers.live.is_empty()
                    && s.rare.recv_waiters.is_empty()
            }
            (Rule::OrphanedQueue, Body::Msg(s)) => {
                live && s.peers.users.live.is_empty()
                    && s.peers.senders.live.is_empty()
                    && s.peers.receivers.live.is_empty()
                    && s.rare.recv_waiters.is_empty()
                    && s.rare.send_waiters.is_empty()
                    && !self.creator_alive(o)
            }
            (Rule::WorldAccessible, _) => o.exists() && o.mode().is_some_and(|m| m & 0o007 != 0),
            _ => false,
        }
    }

    /// Re-evaluates every rule of one object. `since` is when a condition that starts holding
    /// now is deemed to have started.
    pub(crate) fn evaluate_object(&mut self, key: ObjectKey, since: u64, cx: &mut Cx) {
        let Some(o) = self.objects.get(&key) else {
            return;
        };
        let mut holds = [false; 3];
        let rules = Rule::for_type(key.ty);
        for (h, rule) in holds.iter_mut().zip(rules) {
            *h = self.object_condition(*rule, o);
        }
        for (h, rule) in holds.into_iter().zip(rules) {
            self.settle(FindingKey::object(*rule, key), h, since, cx);
        }
    }

    /// Raises, keeps pending, or clears one finding.
    pub(crate) fn settle(&mut self, key: FindingKey, holds: bool, since: u64, cx: &mut Cx) {
        if holds {
            if self.findings.contains_key(&key) {
                if key.rule == Rule::SemaphoreHeldByDeadProcess && self.sem_held_changed(&key) {
                    // Holders and waiters change; the finding is kept up to date silently.
                    let since = self.findings.get(&key).map_or(since, |f| f.since_ns);
                    if let Some(f) = self.build_finding(&key, since) {
                        self.findings.insert(key, f);
                    }
                }
                return;
            }
            if key.rule.needs_grace() {
                self.pending.entry(key).or_insert(since);
            } else if let Some(f) = self.build_finding(&key, since) {
                self.note_finding(&key, &f, true, cx.now);
                self.findings.insert(key, f.clone());
                cx.findings.push(FindingChange::Raised(f));
            }
        } else {
            if !self.pending.is_empty() {
                self.pending.remove(&key);
            }
            if let Some(f) = self.findings.remove(&key) {
                self.note_finding(&key, &f, false, cx.now);
                cx.findings.push(FindingChange::Cleared(f));
            }
        }
    }

    /// A finding about an object is part of its story: raised when its condition started (the
    /// same time live and in a replay), cleared when it stopped.
    fn note_finding(&mut self, key: &FindingKey, f: &Finding, raised: bool, now: u64) {
        let Subject::Object(k) = &key.subject else {
            return;
        };
        let (time, what) = if raised {
            (
                f.since_ns,
                super::story::What::FindingRaised {
                    rule: f.rule,
                    severity: f.severity,
                },
            )
        } else {
            (now, super::story::What::FindingCleared { rule: f.rule })
        };
        self.story_push(*k, time, None, what);
    }

    /// Whether an active `semaphore-held-by-dead-process` finding no longer names the right
    /// processes or has the wrong severity (cheap: no allocation).
    fn sem_held_changed(&self, key: &FindingKey) -> bool {
        let (Some(f), Subject::Object(k)) = (self.findings.get(key), &key.subject) else {
            return false;
        };
        let Some(s) = self.objects.get(k).and_then(|o| o.sem()) else {
            return false;
        };
        let mut holders = 0;
        let mut critical = !s.rare.waiters.is_empty();
        for pk in &s.rare.dead_adj {
            let mut stuck = false;
            for (n, a) in s.holdings(*pk) {
                if s.stuck(n, &a) {
                    stuck = true;
                    critical |= s.slot(n).ncnt > 0;
                }
            }
            holders += usize::from(stuck);
        }
        let severity = if critical {
            Severity::Critical
        } else {
            Severity::Warning
        };
        f.evidence.len() != holders + s.rare.waiters.len() || f.severity != severity
    }

    /// Whether the condition of a finding still holds (for pending ones at tick).
    pub(crate) fn condition(&self, key: &FindingKey) -> bool {
        match &key.subject {
            Subject::Object(k) => self
                .objects
                .get(k)
                .is_some_and(|o| self.object_condition(key.rule, o)),
            Subject::Program(p) => self.leaky_count(p) > u64::from(self.cfg.leaky_threshold),
            Subject::Limit(ns, kind) => self
                .limit_usage(*ns, *kind)
                .is_some_and(|(u, l)| over(u, l)),
            Subject::Posix(k) => self.posix_condition(key.rule, k),
        }
    }

    /// Raises the pending findings whose grace period is over.
    pub(crate) fn expire_pending(&mut self, now: u64, cx: &mut Cx) {
        let grace = self.cfg.grace_ns;
        let mut due: Vec<(FindingKey, u64)> = self
            .pending
            .iter()
            .filter(|(_, since)| now >= since.saturating_add(grace))
            .map(|(k, s)| (k.clone(), *s))
            .collect();
        due.sort();
        for (key, since) in due {
            self.pending.remove(&key);
            if self.findings.contains_key(&key) || !self.condition(&key) {
                continue;
            }
            if let Some(f) = self.build_finding(&key, since) {
                self.note_finding(&key, &f, true, now);
                self.findings.insert(key, f.clone());
                cx.findings.push(FindingChange::Raised(f));
            }
        }
    }

    // ----- evidence -----

    fn evidence(&self, key: ProcessKey, role: Role) -> ProcessEvidence {
        let p = self.processes.get(&key);
        ProcessEvidence {
            pid: key.pid,
            name: p.map(|p| p.comm().to_owned()).unwrap_or_default(),
            entity: Some(key),
            alive: p.is_some_and(|p| p.alive),
            role,
            details: p.map_or_else(Arc::default, process_details),
            call_site: None,
        }
    }

    fn creator_evidence(&self, o: &Object, out: &mut Vec<ProcessEvidence>) {
        if let Some(k) = o.creator.key() {
            out.push(self.evidence(k, Role::Creator));
        } else if let Some(pid) = o.creator.pid() {
            out.push(ProcessEvidence::pid_only(pid, Role::Creator));
        }
    }

    /// Gives each process of an object finding the call site it created or attached from.
    fn call_sites(o: &Object, f: &mut Finding) {
        for e in &mut f.evidence {
            e.call_site = match e.role {
                Role::Creator if e.entity.is_some() && e.entity == o.creator.key() => {
                    o.story().create_site().cloned()
                }
                Role::Attacher | Role::Holder => e
                    .entity
                    .and_then(|k| o.operations_of(k))
                    .and_then(|p| p.attach_site().cloned()),
                _ => None,
            };
        }
    }

    fn peers_evidence(&self, peers: &Peers, role: Role, out: &mut Vec<ProcessEvidence>) {
        for (k, _) in peers.iter() {
            if !out.iter().any(|e| e.entity == Some(*k) && e.role == role) {
                out.push(self.evidence(*k, role));
            }
        }
    }

    /// Builds the finding for `key` as things stand.
    pub(crate) fn build_finding(&self, key: &FindingKey, since: u64) -> Option<Finding> {
        match &key.subject {
            Subject::Object(k) => {
                let o = self.objects.get(k)?;
                Some(self.object_finding(key.rule, o, since))
            }
            Subject::Program(p) => Some(self.leaky_finding(p, since)),
            Subject::Posix(k) => self.posix_finding(key.rule, k, since),
            Subject::Limit(ns, kind) => {
                let (used, limit) = self.limit_usage(*ns, *kind)?;
                let pct = u128::from(used) * 100 / u128::from(limit.max(1));
                Some(Finding {
                    rule: Rule::NearLimit,
                    object: None,
                    posix: None,
                    severity: if used >= limit {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    description: format!(
                        "IPC namespace {ns} uses {used} of {limit} {} ({pct}%)",
                        match kind {
                            LimitKind::Shmmni => "shared memory segments (shmmni)",
                            LimitKind::Shmall => "shared memory pages (shmall)",
                            LimitKind::Semmni => "semaphore sets (semmni)",
                            LimitKind::Semmns => "semaphores (semmns)",
                            LimitKind::Msgmni => "message queues (msgmni)",
                        }
                    ),
                    evidence: Vec::new(),
                    remedy: None,
                    since_ns: since,
                    service: None,
                })
            }
        }
    }

    fn object_finding(&self, rule: Rule, o: &Object, since: u64) -> Finding {
        let mut f = self.object_finding_inner(rule, o, since);
        Self::call_sites(o, &mut f);
        f.blame();
        f
    }

    fn object_finding_inner(&self, rule: Rule, o: &Object, since: u64) -> Finding {
        let r = o.object_ref();
        let name = describe(&r);
        let mut f = Finding {
            rule,
            object: Some(r),
            posix: None,
            severity: Severity::Warning,
            description: String::new(),
            evidence: Vec::new(),
            remedy: Some(r.ipcrm()),
            since_ns: since,
            service: None,
        };
        if rule == Rule::WorldAccessible {
            self.creator_evidence(o, &mut f.evidence);
            f.severity = Severity::Info;
            f.remedy = None;
            f.description = format!(
                "{name} has mode {:03o}: every user can access it",
                o.mode().unwrap_or(0) & 0o777
            );
            return f;
        }
        match o.body() {
            Body::Shm(s) => {
                let bytes = s.size.map_or_else(String::new, |b| format!(" ({b} bytes)"));
                if rule == Rule::RemovedSegmentStillAttached {
                    let mut holders: Vec<ProcessKey> = s.attached.keys().copied().collect();
                    holders.sort();
                    for k in holders {
                        f.evidence.push(self.evidence(k, Role::Holder));
                    }
                    f.remedy = None;
                    f.description = format!(
                        "{name} was removed but {} process(es) keep it and its memory{bytes} attached",
                        f.evidence.len()
                    );
                } else {
                    self.creator_evidence(o, &mut f.evidence);
                    self.peers_evidence(&s.attachers, Role::Attacher, &mut f.evidence);
                    f.description = format!(
                        "{name}{bytes} is not attached, and its creator and every process that \
                         attached it are dead"
                    );
                }
            }
            Body::Sem(s) => {
                if rule == Rule::SemaphoreHeldByDeadProcess {
                    self.sem_held(s, &name, &mut f);
                } else {
                    self.creator_evidence(o, &mut f.evidence);
                    self.peers_evidence(&s.activity.users, Role::User, &mut f.evidence);
                    f.description =
                        format!("{name}: every known user is dead and nobody waits on it");
                }
            }
            Body::Msg(s) => {
                if rule == Rule::StalledQueue {
                    if let Some(k) = s.peers.senders.latest() {
                        f.evidence.push(self.evidence(k, Role::LastSender));
                    } else if let Some(pid) = s.rare.last_sender_pid {
                        f.evidence.push(pid_evidence(pid, Role::LastSender));
                    }
                    self.peers_evidence(&s.peers.receivers, Role::Reader, &mut f.evidence);
                    if s.peers.receivers.iter().next().is_none()
                        && let Some(pid) = s.rare.last_receiver_pid
                    {
                        f.evidence.push(pid_evidence(pid, Role::Reader));
                    }
                    f.description = format!(
                        "{name} holds {} message(s) ({} bytes) and no live process receives from it",
                        s.messages, s.bytes
                    );
                } else {
                    self.creator_evidence(o, &mut f.evidence);
                    self.peers_evidence(&s.peers.users, Role::User, &mut f.evidence);
                    self.peers_evidence(&s.peers.senders, Role::LastSender, &mut f.evidence);
                    self.peers_evidence(&s.peers.receivers, Role::Reader, &mut f.evidence);
                    f.description =
                        format!("{name}: every known user is dead and nobody waits on it");
                }
            }
        }
        f
    }

    /// `semaphore-held-by-dead-process`: the dead holders, the waiters, critical when
    /// processes are blocked.
    fn sem_held(&self, s: &SemState, name: &str, f: &mut Finding) {
        let mut waited = false;
        let mut nums = Vec::new();
        for k in &s.rare.dead_adj {
            let stuck: Vec<(u16, i64)> = s
                .holdings(*k)
                .filter(|(n, a)| s.stuck(*n, a))
                .map(|(n, a)| (n, a.net))
                .collect();
            if stuck.is_empty() {
                continue;
            }
            f.evidence.push(self.evidence(*k, Role::Holder));
            for (n, net) in stuck {
                waited |= s.slot(n).ncnt > 0;
                nums.push(format!(
                    "#{n} ({} unit(s) by pid {})",
                    net.unsigned_abs(),
                    k.pid
                ));
            }
        }
        for k in &s.rare.waiters {
            f.evidence.push(self.evidence(*k, Role::Waiter));
        }
        if waited || !s.rare.waiters.is_empty() {
            f.severity = Severity::Critical;
        }
        let waiting = if waited {
            ", and processes are blocked on it"
        } else {
            ""
        };
        f.description = format!(
            "{name}: semaphore {} taken by a process that died without giving it back{waiting}",
            nums.join(", ")
        );
    }

    fn leaky_finding(&self, program: &str, since: u64) -> Finding {
        let count = self.leaky_count(program);
        let mut evidence: Vec<ProcessEvidence> = Vec::new();
        if let Some(p) = self.programs.get(program) {
            // Each creator once, in the table's order: sorted for a stable evidence list.
            let mut creators: Vec<ProcessKey> = p.unremoved_creators().collect();
            creators.sort_unstable();
            for k in creators.into_iter().take(super::object::DEAD_KEPT) {
                evidence.push(self.evidence(k, Role::Creator));
            }
        }
        let mut f = Finding {
            rule: Rule::LeakyProcess,
            object: None,
            posix: None,
            severity: Severity::Warning,
            description: format!(
                "{program} created {count} objects in the last {} s without removing them \
                 (threshold {})",
                self.cfg.leaky_window_ns / NS_PER_SEC,
                self.cfg.leaky_threshold
            ),
            evidence,
            remedy: None,
            since_ns: since,
            service: None,
        };
        f.blame();
        f
    }

    // ----- leaky-process -----

    pub(crate) fn leaky_count(&self, program: &str) -> u64 {
        self.programs
            .get(program)
            .map_or(0, |p| p.unremoved() as u64)
    }

    /// Drops creations older than the window.
    pub(crate) fn slide_window(&mut self, program: &str, now: u64) {
        let window = self.cfg.leaky_window_ns;
        if let Some(p) = self.programs.get_mut(program) {
            p.slide(now, window);
        }
    }

    pub(crate) fn evaluate_program(&mut self, program: &str, now: u64, cx: &mut Cx) {
        self.slide_window(program, now);
        let holds = self.leaky_count(program) > u64::from(self.cfg.leaky_threshold);
        if !holds && self.findings.is_empty() {
            // Nothing to raise or clear; the usual case, without a copy of the name for the key.
            return;
        }
        let key = FindingKey {
            rule: Rule::LeakyProcess,
            subject: Subject::Program(program.to_owned()),
        };
        if holds || self.findings.contains_key(&key) {
            self.settle(key, holds, now, cx);
        }
    }

    // ----- near-limit -----

    /// (used, limit) of one limit in one namespace, when the limit is known and non-zero.
    pub(crate) fn limit_usage(&self, ns: u32, kind: LimitKind) -> Option<(u64, u64)> {
        let n = self.namespaces.get(&ns)?;
        let l = n.limits?;
        let (used, limit) = match kind {
            LimitKind::Shmmni => (n.shm_count, l.shmmni),
            LimitKind::Shmall => (n.shm_pages, l.shmall),
            LimitKind::Semmni => (n.sem_sets, l.semmni),
            LimitKind::Semmns => (n.sem_total, l.semmns),
            LimitKind::Msgmni => (n.msg_count, l.msgmni),
        };
        (limit > 0).then_some((used, limit))
    }

    pub(crate) fn evaluate_limits(&mut self, ns: u32, ty: IpcType, cx: &mut Cx) {
        if self.namespaces.get(&ns).is_none_or(|n| n.limits.is_none()) {
            return;
        }
        for kind in LimitKind::for_type(ty) {
            let holds = self.limit_usage(ns, *kind).is_some_and(|(u, l)| over(u, l));
            let key = FindingKey {
                rule: Rule::NearLimit,
                subject: Subject::Limit(ns, *kind),
            };
            self.settle(key, holds, cx.now, cx);
        }
    }
}

/// Above 90%.
fn over(used: u64, limit: u64) -> bool {
    u128::from(used) * 10 > u128::from(limit) * 9
}

fn pid_evidence(pid: u32, role: Role) -> ProcessEvidence {
    ProcessEvidence::pid_only(pid, role)
}

/// What the model knows about a process beyond its identity (its exec'd file when nothing was
/// read from /proc).
pub(crate) fn process_details(p: &super::process::Process) -> Arc<ProcessDetails> {
    match (p.details(), p.exe()) {
        (Some(d), _) => d.clone(),
        (None, Some(exe)) => Arc::new(ProcessDetails {
            executable: Some(exe.to_string()),
            ..ProcessDetails::default()
        }),
        (None, None) => Arc::default(),
    }
}

/// "shm segment 123 (key 0x0000abcd)"
fn describe(r: &ObjectRef) -> String {
    let what = match r.ty {
        IpcType::Shm => "shared memory segment",
        IpcType::Sem => "semaphore set",
        IpcType::Msg => "message queue",
    };
    match r.key {
        Some(k) if k != 0 => format!("{what} {} (key {:#010x})", r.id, k),
        _ => format!("{what} {}", r.id),
    }
}
