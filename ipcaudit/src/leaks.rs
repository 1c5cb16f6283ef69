//! `ipcaudit leaks`: what leaked, judged from one snapshot of the kernel's truth — or, when a
//! `watch` daemon is running, its exact findings, asked over the control socket.
//!
//! A snapshot cannot see history, so it judges only what the kernel's tables show by
//! themselves, with the rule names `watch` uses:
//!
//! * `orphaned-segment`: a segment not removed, not attached (`nattch` 0), whose creator (`cpid`)
//!   and last user (`lpid`) are dead;
//! * `removed-segment-still-attached`: a segment removed (`SHM_DEST`) that processes still map;
//! * `semaphore-held-by-dead-process`: a semaphore at 0 with processes waiting for it
//!   (`ncnt` > 0) whose last operator (`sempid`) is dead;
//! * `stalled-queue`: a queue holding messages that no live process receives: its last receiver
//!   (`lrpid`) is dead — or it never had one and its last sender (`lspid`) is dead — and nobody
//!   is blocked in `msgrcv` on it.
//!
//! Process identity is the model's: a pid names the process that had it when the object was
//! used only if that process started before the use (with the model's 2 s slack: `/proc` times
//! are in ticks, IPC times in seconds). A live process that started later holds a reused pid,
//! and the process the kernel recorded is dead. A zombie is dead.
//!
//! [`judge`] and everything it calls are pure; [`Scene::read`] and [`run`] are the IO edge.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use serde_json::{Value, json};

use crate::clock::{self, Clocks};
use crate::control::{self, Request};
use crate::event::{IpcType, ObjectType, PosixType, ProcessKey};
use crate::ls::{self, NamespaceSel};
use crate::model::{Finding, ObjectRef, PosixRef, ProcessEvidence, Role, Rule, Severity};
use crate::snapshot::parse::{parse_ns_link, parse_stat, parse_stat_num_threads, parse_status_uid};
use crate::snapshot::read::{self, ReadError};
use crate::snapshot::{
    Blocked, Hold, MsgQueue, PosixHolder, PosixObject, ProcessInfo, SHM_DEST, SemSet, ShmSegment,
    Snapshot,
};

const NS_PER_SEC: u64 = 1_000_000_000;
/// A process may be the one an IPC time names if it started at most this long after it (IPC
/// times are whole seconds; the model uses the same slack).
const SLACK_SECS: i64 = 2;

/// What `leaks` (and `reap`, and `ls`) could not do.
#[derive(Debug, thiserror::Error)]
pub enum LeaksError {
    #[error("cannot read the kernel's IPC state: {0}")]
    Snapshot(#[from] ReadError),
    #[error(transparent)]
    Namespace(#[from] ls::NsError),
    #[error("cannot start the runtime that asks the watch daemon: {0}")]
    Runtime(std::io::Error),
}

// ---------------------------------------------------------------------------------------------
// Process identity

/// What became of the process an IPC object recorded by pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PidStatus {
    /// Pid 0: nobody (never used), or a process not visible from our PID namespace.
    None,
    /// The process is alive (and may be the one recorded).
    Alive,
    /// It exited and was not reaped yet: dead.
    Zombie,
    /// No such process: dead.
    Gone,
    /// A live process has the pid but started after the use: the recorded one is dead.
    Reused,
}

impl PidStatus {
    pub fn is_dead(self) -> bool {
        matches!(self, Self::Zombie | Self::Gone | Self::Reused)
    }

    pub fn is_alive(self) -> bool {
        self == Self::Alive
    }

    /// `alive` as JSON shows it: unknown (null) for pid 0.
    pub fn alive_json(self) -> Value {
        match self {
            Self::None => Value::Null,
            other => Value::Bool(other.is_alive()),
        }
    }
}

/// The processes a judgement may name, by pid, and the clock that dates them.
#[derive(Clone, Debug, Default)]
pub struct Procs {
    by_pid: HashMap<u32, ProcessInfo>,
    /// Wall-clock time of boot, ns since the epoch.
    pub boot_wall_ns: u64,
    pub ticks_per_sec: u64,
}

impl Procs {
    pub fn new(
        processes: impl IntoIterator<Item = ProcessInfo>,
        boot_wall_ns: u64,
        ticks_per_sec: u64,
    ) -> Self {
        Self {
            by_pid: processes.into_iter().map(|p| (p.key.pid, p)).collect(),
            boot_wall_ns,
            ticks_per_sec: ticks_per_sec.max(1),
        }
    }

    pub fn insert(&mut self, p: ProcessInfo) {
        self.by_pid.insert(p.key.pid, p);
    }

    pub fn contains(&self, pid: u32) -> bool {
        self.by_pid.contains_key(&pid)
    }

    pub fn get(&self, pid: u32) -> Option<&ProcessInfo> {
        self.by_pid.get(&pid)
    }

    /// When a process started, wall clock ns since the epoch.
    pub fn started_ns(&self, key: ProcessKey) -> u64 {
        let per_tick = NS_PER_SEC / self.ticks_per_sec.max(1);
        self.boot_wall_ns
            .saturating_add(key.start_ticks.saturating_mul(per_tick))
    }

    /// What became of the process that had `pid` when it used the object at `used_at` (wall
    /// clock seconds; 0 or less when unknown: then a live process is taken to be the one).
    pub fn status(&self, pid: u32, used_at: i64) -> PidStatus {
        if pid == 0 {
            return PidStatus::None;
        }
        let Some(p) = self.by_pid.get(&pid) else {
            return PidStatus::Gone;
        };
        if !p.is_alive() {
            return PidStatus::Zombie;
        }
        if used_at > 0 {
            let bound = u64::try_from(used_at.saturating_add(SLACK_SECS))
                .unwrap_or(0)
                .saturating_mul(NS_PER_SEC);
            if self.started_ns(p.key) > bound {
                return PidStatus::Reused;
            }
        }
        PidStatus::Alive
    }

    /// What became of one exact process (pid and start time).
    pub fn entity_status(&self, key: ProcessKey) -> PidStatus {
        match self.by_pid.get(&key.pid) {
            None => PidStatus::Gone,
            Some(p) if p.key.start_ticks != key.start_ticks => PidStatus::Reused,
            Some(p) if !p.is_alive() => PidStatus::Zombie,
            Some(_) => PidStatus::Alive,
        }
    }

    /// `comm` of the process that has `pid` now, if it is the one recorded (alive or zombie).
    pub fn comm(&self, pid: u32, used_at: i64) -> Option<&str> {
        match self.status(pid, used_at) {
            PidStatus::Alive | PidStatus::Zombie => self.get(pid).map(|p| p.comm.as_str()),
            PidStatus::None | PidStatus::Gone | PidStatus::Reused => None,
        }
    }

    /// Evidence naming the process that had `pid` at `used_at`, in `role`.
    pub fn evidence(&self, pid: u32, used_at: i64, role: Role) -> ProcessEvidence {
        let status = self.status(pid, used_at);
        let known = matches!(status, PidStatus::Alive | PidStatus::Zombie);
        let p = self.get(pid).filter(|_| known);
        ProcessEvidence {
            pid,
            name: p.map(|p| p.comm.clone()).unwrap_or_default(),
            entity: p.map(|p| p.key),
            alive: status.is_alive(),
            role,
            details: std::sync::Arc::default(),
            call_site: None,
        }
    }
}

/// One process read directly from /proc (any namespace); None if it does not exist. A process
/// whose main thread exited while others run is alive (state `S`).
pub fn read_process(pid: u32) -> Option<ProcessInfo> {
    let stat_path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&stat_path).ok()?;
    let mut stat = parse_stat(&text, &stat_path).ok()?;
    if stat.state == 'Z' && parse_stat_num_threads(&text).is_some_and(|n| n > 1) {
        stat.state = 'S';
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = parse_status_uid(&status)?;
    let ipc_ns = std::fs::read_link(format!("/proc/{pid}/ns/ipc"))
        .ok()
        .and_then(|l| parse_ns_link(&l.to_string_lossy()))
        .unwrap_or(0);
    // Read the stat again: if the pid was reused meanwhile, the start time differs.
    let again = std::fs::read_to_string(&stat_path).ok()?;
    let check = parse_stat(&again, &stat_path).ok()?;
    if check.start_ticks != stat.start_ticks {
        return None;
    }
    Some(ProcessInfo {
        key: ProcessKey {
            pid,
            start_ticks: stat.start_ticks,
        },
        ppid: stat.ppid,
        comm: stat.comm,
        uid,
        state: stat.state,
        ipc_ns,
    })
}

/// Every pid an object of the snapshot records (creators, last users, senders, receivers).
pub fn recorded_pids(snap: &Snapshot) -> Vec<u32> {
    let mut pids: Vec<u32> = snap
        .shm
        .iter()
        .flat_map(|s| [s.cpid, s.lpid])
        .chain(snap.msg.iter().flat_map(|q| [q.lspid, q.lrpid]))
        .chain(
            snap.sem_values
                .iter()
                .flat_map(|(_, v)| v.iter().map(|s| s.pid)),
        )
        .chain(
            snap.posix
                .iter()
                .filter_map(|o| o.queue.map(|q| q.notify_pid)),
        )
        .filter(|&p| p != 0)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

// ---------------------------------------------------------------------------------------------
// A scene: one namespace's snapshot and the processes it names

/// A snapshot of one IPC namespace with every process its objects name (those in other
/// namespaces too: a creator may have moved).
#[derive(Clone, Debug, Default)]
pub struct Scene {
    pub snap: Snapshot,
    pub procs: Procs,
}

impl Scene {
    /// Builds a scene from a snapshot and the clock (pure: the processes are the snapshot's).
    pub fn new(snap: Snapshot, boot_wall_ns: u64, ticks_per_sec: u64) -> Self {
        let procs = Procs::new(snap.processes.iter().cloned(), boot_wall_ns, ticks_per_sec);
        Self { snap, procs }
    }

    /// Reads the calling thread's IPC namespace now.
    pub fn read() -> Result<Self, ReadError> {
        let clocks = Clocks::sample();
        let snap = read::take_snapshot(clock::now_wall_ns())?;
        let mut scene = Self::new(snap, clocks.boot_wall_ns, clocks.ticks_per_sec);
        for pid in recorded_pids(&scene.snap) {
            if !scene.procs.contains(pid)
                && let Some(p) = read_process(pid)
            {
                scene.procs.insert(p);
            }
        }
        Ok(scene)
    }

    pub fn now_secs(&self) -> i64 {
        i64::try_from(self.snap.taken_ns / NS_PER_SEC).unwrap_or(i64::MAX)
    }

    pub fn sem_values(&self, semid: i32) -> Option<&[crate::snapshot::SemValue]> {
        self.snap
            .sem_values
            .iter()
            .find(|(id, _)| *id == semid)
            .map(|(_, v)| v.as_slice())
    }
}

/// The identity of an object as a snapshot finding names it (generation 0: no model).
pub fn object_ref(ns: u32, ty: IpcType, id: i32, key: i32, size_or_nsems: u64) -> ObjectRef {
    ObjectRef {
        ns,
        ty,
        id,
        generation: 0,
        key: Some(key),
        size: (ty == IpcType::Shm).then_some(size_or_nsems),
        nsems: (ty == IpcType::Sem).then(|| u32::try_from(size_or_nsems).unwrap_or(u32::MAX)),
    }
}

fn secs_ns(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0).saturating_mul(NS_PER_SEC)
}

/// The latest of some IPC times (seconds), as ns.
fn latest(times: &[i64]) -> u64 {
    secs_ns(times.iter().copied().max().unwrap_or(0))
}

/// "shared memory segment 7 (key 0x0000abcd)"
pub fn describe(ty: IpcType, id: i32, key: i32) -> String {
    let what = match ty {
        IpcType::Shm => "shared memory segment",
        IpcType::Sem => "semaphore set",
        IpcType::Msg => "message queue",
    };
    if key == 0 {
        format!("{what} {id}")
    } else {
        format!("{what} {id} (key {key:#010x})")
    }
}

// ---------------------------------------------------------------------------------------------
// The snapshot rules (pure)

/// The findings one scene shows by itself, ordered by rule, type and id. `since_ns` is the
/// latest activity the kernel recorded on the object: the condition holds since then or later.
pub fn judge(scene: &Scene) -> Vec<Finding> {
    let mut out = Vec::new();
    for seg in &scene.snap.shm {
        if let Some(f) = orphaned_segment(scene, seg) {
            out.push(f);
        }
        if let Some(f) = removed_still_attached(scene, seg) {
            out.push(f);
        }
    }
    for set in &scene.snap.sem {
        if let Some(f) = sem_held(scene, set) {
            out.push(f);
        }
    }
    for q in &scene.snap.msg {
        if let Some(f) = stalled_queue(scene, q) {
            out.push(f);
        }
    }
    out.sort_by_key(|f| (f.rule, f.object.map(|o| (o.ty, o.id))));
    out
}

fn orphaned_segment(scene: &Scene, seg: &ShmSegment) -> Option<Finding> {
    let p = &scene.procs;
    let last_use = seg.atime.max(seg.dtime);
    let creator = p.status(seg.cpid, seg.ctime);
    let last = p.status(seg.lpid, last_use);
    let holds = seg.perm.mode & SHM_DEST == 0
        && seg.nattch == 0
        && creator.is_dead()
        && (last.is_dead() || last == PidStatus::None);
    if !holds {
        return None;
    }
    let mut evidence = vec![p.evidence(seg.cpid, seg.ctime, Role::Creator)];
    if seg.lpid != 0 && seg.lpid != seg.cpid {
        evidence.push(p.evidence(seg.lpid, last_use, Role::Attacher));
    }
    let r = object_ref(
        scene.snap.ipc_ns,
        IpcType::Shm,
        seg.perm.id,
        seg.perm.key,
        seg.size,
    );
    Some(Finding {
        rule: Rule::OrphanedSegment,
        object: Some(r),
        posix: None,
        severity: Severity::Warning,
        description: format!(
            "{} ({} bytes) is not attached, and its creator (pid {}) and last user are dead",
            describe(IpcType::Shm, seg.perm.id, seg.perm.key),
            seg.size,
            seg.cpid
        ),
        evidence,
        remedy: Some(r.ipcrm()),
        since_ns: latest(&[seg.ctime, seg.atime, seg.dtime]),
        service: None,
    })
}

fn removed_still_attached(scene: &Scene, seg: &ShmSegment) -> Option<Finding> {
    if seg.perm.mode & SHM_DEST == 0 || seg.nattch == 0 {
        return None;
    }
    let mut holders: Vec<u32> = scene
        .snap
        .mappings
        .iter()
        .filter(|m| m.shmid == seg.perm.id)
        .map(|m| m.pid)
        .collect();
    holders.sort_unstable();
    holders.dedup();
    let evidence = holders
        .iter()
        .map(|&pid| scene.procs.evidence(pid, 0, Role::Holder))
        .collect();
    let r = object_ref(
        scene.snap.ipc_ns,
        IpcType::Shm,
        seg.perm.id,
        seg.perm.key,
        seg.size,
    );
    Some(Finding {
        rule: Rule::RemovedSegmentStillAttached,
        object: Some(r),
        posix: None,
        severity: Severity::Warning,
        description: format!(
            "{} was removed but {} attachment(s) keep it and its memory ({} bytes) alive",
            describe(IpcType::Shm, seg.perm.id, 0),
            seg.nattch,
            seg.size
        ),
        evidence,
        remedy: None,
        since_ns: latest(&[seg.ctime, seg.atime, seg.dtime]),
        service: None,
    })
}

fn sem_held(scene: &Scene, set: &SemSet) -> Option<Finding> {
    let values = scene.sem_values(set.perm.id)?;
    let used_at = set.otime.max(set.ctime);
    let p = &scene.procs;
    let stuck: Vec<(usize, u32)> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.value == 0 && v.ncnt > 0 && p.status(v.pid, used_at).is_dead())
        .map(|(n, v)| (n, v.pid))
        .collect();
    if stuck.is_empty() {
        return None;
    }
    let mut evidence: Vec<ProcessEvidence> = Vec::new();
    for &(_, pid) in &stuck {
        if !evidence.iter().any(|e| e.pid == pid) {
            evidence.push(p.evidence(pid, used_at, Role::Holder));
        }
    }
    let mut waiters: Vec<u32> = scene
        .snap
        .waiters
        .iter()
        .filter(|w| w.on == Blocked::Sem { semid: set.perm.id })
        .map(|w| w.pid)
        .collect();
    waiters.sort_unstable();
    waiters.dedup();
    for pid in waiters {
        evidence.push(p.evidence(pid, 0, Role::Waiter));
    }
    let nums: Vec<String> = stuck
        .iter()
        .map(|(n, pid)| format!("#{n} (last taken by pid {pid})"))
        .collect();
    let r = object_ref(
        scene.snap.ipc_ns,
        IpcType::Sem,
        set.perm.id,
        set.perm.key,
        u64::from(set.nsems),
    );
    Some(Finding {
        rule: Rule::SemaphoreHeldByDeadProcess,
        object: Some(r),
        posix: None,
        severity: Severity::Critical,
        description: format!(
            "{}: semaphore {} is 0, processes are blocked on it, and the last process that \
             operated on it is dead",
            describe(IpcType::Sem, set.perm.id, set.perm.key),
            nums.join(", ")
        ),
        evidence,
        remedy: Some(r.ipcrm()),
        since_ns: latest(&[set.otime, set.ctime]),
        service: None,
    })
}

fn stalled_queue(scene: &Scene, q: &MsgQueue) -> Option<Finding> {
    let p = &scene.procs;
    let reader = p.status(q.lrpid, q.rtime);
    let sender = p.status(q.lspid, q.stime);
    let receiving = scene
        .snap
        .waiters
        .iter()
        .any(|w| w.on == Blocked::MsgRcv { msqid: q.perm.id });
    let no_reader = reader.is_dead() || (reader == PidStatus::None && sender.is_dead());
    if q.qnum == 0 || receiving || !no_reader {
        return None;
    }
    let mut evidence = Vec::new();
    if q.lspid != 0 {
        evidence.push(p.evidence(q.lspid, q.stime, Role::LastSender));
    }
    if q.lrpid != 0 {
        evidence.push(p.evidence(q.lrpid, q.rtime, Role::Reader));
    }
    let r = object_ref(scene.snap.ipc_ns, IpcType::Msg, q.perm.id, q.perm.key, 0);
    Some(Finding {
        rule: Rule::StalledQueue,
        object: Some(r),
        posix: None,
        severity: Severity::Warning,
        description: format!(
            "{} holds {} message(s) ({} bytes) and no live process receives from it",
            describe(IpcType::Msg, q.perm.id, q.perm.key),
            q.qnum,
            q.cbytes
        ),
        evidence,
        remedy: Some(r.ipcrm()),
        since_ns: latest(&[q.stime, q.rtime, q.ctime]),
        service: None,
    })
}

// ---------------------------------------------------------------------------------------------
// The POSIX rules on a snapshot (pure)

/// The grace period the POSIX rules of a snapshot judgement use by default (as `watch`'s).
pub const DEFAULT_POSIX_GRACE_SECS: u64 = 60;

/// The identity of a POSIX object as a snapshot finding names it (generation 0: no model).
pub fn posix_ref(ns: u32, o: &PosixObject) -> PosixRef {
    PosixRef {
        ns,
        ty: o.ty,
        name: o.name.clone(),
        generation: 0,
        dev: o.dev,
        ino: o.ino,
        size: (o.ty == PosixType::Pshm).then_some(o.size),
    }
}

/// The holders of one object in a snapshot (one entry per mapping or descriptor).
pub fn posix_holders_of<'s>(snap: &'s Snapshot, o: &PosixObject) -> Vec<&'s PosixHolder> {
    snap.posix_holders
        .iter()
        .filter(|h| (h.dev, h.ino) == (o.dev, o.ino))
        .collect()
}

/// Whether a holder can receive from a queue (a descriptor open for reading).
fn can_read(h: &PosixHolder) -> bool {
    matches!(h.hold, Hold::Fd { read: true, .. })
}

/// Evidence naming each holder process once.
fn holder_evidence(holders: &[&PosixHolder]) -> Vec<ProcessEvidence> {
    let mut out: Vec<ProcessEvidence> = Vec::new();
    for h in holders {
        if !out.iter().any(|e| e.entity == Some(h.process)) {
            out.push(ProcessEvidence {
                pid: h.process.pid,
                name: h.comm.clone(),
                entity: Some(h.process),
                alive: true,
                role: Role::Holder,
                details: std::sync::Arc::default(),
                call_site: None,
            });
        }
    }
    out
}

/// The POSIX findings one scene shows by itself: `orphaned-posix-shm`,
/// `orphaned-posix-semaphore` and `orphaned-posix-queue` for an object no process maps or holds
/// open and that has not changed for `grace_secs`; `stalled-posix-queue` for a queue holding
/// messages whose live holders all opened it write-only (and with no live `mq_notify`
/// registration). Ordered by rule, type and name. Nothing when some processes' holdings could
/// not be read (`posix_hidden`).
pub fn judge_posix(scene: &Scene, grace_secs: u64) -> Vec<Finding> {
    let snap = &scene.snap;
    let now = scene.now_secs();
    let mut out = Vec::new();
    // Who holds what is not known when some processes could not be inspected (a note says so).
    if snap.posix_hidden > 0 {
        return out;
    }
    for o in &snap.posix {
        let holders = posix_holders_of(snap, o);
        let r = posix_ref(snap.ipc_ns, o);
        let age = u64::try_from(now.saturating_sub(o.last_change())).unwrap_or(0);
        let since = latest(&[o.last_change()]);
        if holders.is_empty() {
            if age < grace_secs {
                continue;
            }
            let rule = match o.ty {
                PosixType::Pshm => Rule::OrphanedPosixShm,
                PosixType::Psem => Rule::OrphanedPosixSemaphore,
                PosixType::Pmsg => Rule::OrphanedPosixQueue,
            };
            let size = match o.ty {
                PosixType::Pshm => format!(" ({} bytes)", o.size),
                PosixType::Psem | PosixType::Pmsg => String::new(),
            };
            let messages = match o.queue {
                Some(q) if q.messages > 0 => format!(", with {} message(s) in it", q.messages),
                _ => String::new(),
            };
            out.push(Finding {
                rule,
                object: None,
                posix: Some(r.clone()),
                severity: Severity::Warning,
                description: format!(
                    "{}{size} is not mapped or open in any process{messages}; unchanged for \
                     {age} s",
                    r.describe()
                ),
                evidence: Vec::new(),
                remedy: Some(r.remedy()),
                since_ns: since,
                service: None,
            });
            continue;
        }
        let Some(q) = o.queue else { continue };
        let notified = q.notify_pid != 0 && scene.procs.status(q.notify_pid, 0).is_alive();
        if q.messages == 0 || notified || holders.iter().any(|h| can_read(h)) {
            continue;
        }
        let evidence = holder_evidence(&holders);
        out.push(Finding {
            rule: Rule::StalledPosixQueue,
            object: None,
            posix: Some(r.clone()),
            severity: Severity::Warning,
            description: format!(
                "{} holds {} message(s) ({} bytes) and no live process can receive from it: \
                 its {} live holder(s) opened it write-only",
                r.describe(),
                q.messages,
                q.qsize,
                evidence.len()
            ),
            evidence,
            remedy: Some(r.remedy()),
            since_ns: since,
            service: None,
        });
    }
    out.sort_by(|a, b| {
        let key = |f: &Finding| (f.rule, f.posix.as_ref().map(|p| (p.ty, p.name.clone())));
        key(a).cmp(&key(b))
    });
    out
}

// ---------------------------------------------------------------------------------------------
// Findings as JSON (both sources print the same shape)

/// A finding as JSON: the shape `ipcaudit findings --json` shows.
pub fn finding_json(f: &Finding) -> Value {
    serde_json::to_value(f).unwrap_or(Value::Null)
}

/// A finding back from the daemon's JSON; None if it is not one.
pub fn finding_from_json(v: &Value) -> Option<Finding> {
    let rule = Rule::parse(v["rule"].as_str()?)?;
    let severity = match v["severity"].as_str()? {
        "info" => Severity::Info,
        "warning" => Severity::Warning,
        "critical" => Severity::Critical,
        _ => return None,
    };
    let object = match &v["object"] {
        Value::Null => None,
        o => Some(ObjectRef {
            ns: u32::try_from(o["ns"].as_u64()?).ok()?,
            ty: match o["type"].as_str()? {
                "shm" => IpcType::Shm,
                "sem" => IpcType::Sem,
                "msg" => IpcType::Msg,
                _ => return None,
            },
            id: i32::try_from(o["id"].as_i64()?).ok()?,
            generation: u32::try_from(o["generation"].as_u64()?).ok()?,
            key: o["key"].as_i64().and_then(|k| i32::try_from(k).ok()),
            size: o["size"].as_u64(),
            nsems: o["nsems"].as_u64().and_then(|n| u32::try_from(n).ok()),
        }),
    };
    let evidence = v["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(ProcessEvidence {
                pid: u32::try_from(e["pid"].as_u64()?).ok()?,
                name: e["name"].as_str().unwrap_or_default().to_owned(),
                entity: match &e["entity"] {
                    Value::Null => None,
                    k => Some(ProcessKey {
                        pid: u32::try_from(k["pid"].as_u64()?).ok()?,
                        start_ticks: k["start_ticks"].as_u64()?,
                    }),
                },
                alive: e["alive"].as_bool().unwrap_or(false),
                role: role_from_str(e["role"].as_str()?)?,
                details: serde_json::from_value(e.clone())
                    .map(std::sync::Arc::new)
                    .unwrap_or_default(),
                call_site: serde_json::from_value(e["call_site"].clone())
                    .ok()
                    .map(std::sync::Arc::new),
            })
        })
        .collect();
    let posix = match v.get("posix") {
        None | Some(Value::Null) => None,
        Some(p) => Some(serde_json::from_value::<PosixRef>(p.clone()).ok()?),
    };
    Some(Finding {
        rule,
        object,
        posix,
        severity,
        description: v["description"].as_str().unwrap_or_default().to_owned(),
        evidence,
        remedy: v["remedy"].as_str().map(str::to_owned),
        since_ns: v["since_ns"].as_u64().unwrap_or(0),
        service: v["service"].as_str().map(str::to_owned),
    })
}

fn role_from_str(s: &str) -> Option<Role> {
    [
        Role::Creator,
        Role::Holder,
        Role::Waiter,
        Role::LastSender,
        Role::Reader,
        Role::Attacher,
        Role::User,
    ]
    .into_iter()
    .find(|r| r.as_str() == s)
}

// ---------------------------------------------------------------------------------------------
// Where findings come from

/// Which source findings came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The running `watch` daemon at this socket: exact.
    Watch(PathBuf),
    /// A snapshot, with why the daemon was not asked.
    Snapshot { why: String },
}

impl Source {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Watch(_) => "watch",
            Self::Snapshot { .. } => "snapshot",
        }
    }

    /// The header line `leaks` prints in text mode.
    pub fn header(&self) -> String {
        match self {
            Self::Watch(path) => format!(
                "source: watch daemon at {} (exact: traced ownership)",
                path.display()
            ),
            Self::Snapshot { why } => {
                format!("source: snapshot of the kernel's IPC tables (heuristic; {why})")
            }
        }
    }
}

/// Asks the daemon for its findings; Err says why it could not.
pub fn ask_daemon(socket: &Path) -> Result<Vec<Finding>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("no runtime: {e}"))?;
    let answer = runtime
        .block_on(control::ask(socket, Request::Findings))
        .map_err(|e| match e {
            control::ControlError::Connect { source, .. } => {
                format!("no watch daemon at {}: {source}", socket.display())
            }
            other => other.to_string(),
        })?;
    if let Some(err) = answer["error"].as_str() {
        return Err(format!(
            "the watch daemon at {} said: {err}",
            socket.display()
        ));
    }
    let list = answer["findings"]
        .as_array()
        .ok_or_else(|| format!("the watch daemon at {} sent no findings", socket.display()))?;
    Ok(list.iter().filter_map(finding_from_json).collect())
}

/// Everything a snapshot judgement finds: the System V rules and the POSIX ones (with their
/// grace period).
pub fn judge_all(scene: &Scene, posix_grace_secs: u64) -> Vec<Finding> {
    let mut out = judge(scene);
    out.extend(judge_posix(scene, posix_grace_secs));
    out
}

/// Whether a finding is about an object of one of `types` (all, when it is empty; findings
/// about no object only then).
pub fn finding_has_type(f: &Finding, types: &[ObjectType]) -> bool {
    if types.is_empty() {
        return true;
    }
    match (&f.object, &f.posix) {
        (Some(o), _) => types.contains(&ObjectType::Sysv(o.ty)),
        (None, Some(p)) => types.contains(&ObjectType::Posix(p.ty)),
        (None, None) => false,
    }
}

/// The findings of the daemon if one answers (and no namespace was asked for), else those of
/// snapshots of the selected namespaces (the POSIX rules with `posix_grace_secs`).
pub fn gather(
    socket: &Path,
    force_snapshot: bool,
    namespace: Option<NamespaceSel>,
    posix_grace_secs: u64,
) -> Result<(Source, Vec<Finding>, Vec<String>), LeaksError> {
    let why = if force_snapshot {
        "--snapshot asked for it".to_owned()
    } else if namespace.is_some() {
        "--namespace reads each namespace's tables".to_owned()
    } else {
        match ask_daemon(socket) {
            Ok(findings) => return Ok((Source::Watch(socket.to_path_buf()), findings, Vec::new())),
            Err(why) => why,
        }
    };
    let (targets, mut notes) = ls::targets(namespace)?;
    let mut findings = Vec::new();
    for target in &targets {
        match ls::run_in(target, || {
            Scene::read().map(|s| {
                let notes = s.snap.posix_notes.clone();
                (judge_all(&s, posix_grace_secs), notes)
            })
        }) {
            Ok(Ok((f, n))) => {
                findings.extend(f);
                notes.extend(n);
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(e) if namespace == Some(NamespaceSel::All) => notes.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok((Source::Snapshot { why }, findings, notes))
}

/// `ipcaudit leaks`.
pub fn run(args: &crate::cli::LeaksArgs) -> Result<ExitCode, LeaksError> {
    let (source, mut findings, notes) = gather(
        &args.socket,
        args.snapshot,
        args.namespace,
        args.grace.as_secs(),
    )?;
    findings.retain(|f| finding_has_type(f, &args.types));
    for note in &notes {
        eprintln!("ipcaudit: note: {note}");
    }
    let list: Vec<Value> = findings.iter().map(finding_json).collect();
    let mut value = json!({"source": source.name(), "findings": list});
    match &source {
        Source::Watch(path) => value["socket"] = path.display().to_string().into(),
        Source::Snapshot { why } => value["reason"] = why.clone().into(),
    }
    if args.json {
        println!("{value}");
    } else {
        let mut out = source.header();
        let _ = write!(out, "\n{}", crate::status::render_findings(&value));
        println!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use crate::snapshot::{IpcPerm, SemValue, ShmMapping, Waiter};

    /// Boot at t = 1,000,000 s; 100 ticks per second.
    const BOOT_S: u64 = 1_000_000;

    fn proc_at(pid: u32, started_s: u64, state: char) -> ProcessInfo {
        ProcessInfo {
            key: ProcessKey {
                pid,
                start_ticks: (started_s - BOOT_S) * 100,
            },
            ppid: 1,
            comm: format!("p{pid}"),
            uid: 0,
            state,
            ipc_ns: 7,
        }
    }

    fn perm(id: i32, key: i32, mode: u32) -> IpcPerm {
        IpcPerm {
            key,
            id,
            mode,
            uid: 0,
            gid: 0,
            cuid: 0,
            cgid: 0,
        }
    }

    fn seg(id: i32, cpid: u32, lpid: u32, nattch: u64, mode: u32) -> ShmSegment {
        ShmSegment {
            perm: perm(id, 0, mode),
            size: 4096,
            cpid,
            lpid,
            nattch,
            atime: 1_000_100,
            dtime: 1_000_200,
            ctime: 1_000_050,
            rss: 0,
            swap: 0,
        }
    }

    fn scene(snap: Snapshot, procs: Vec<ProcessInfo>) -> Scene {
        let mut s = Scene::new(snap, BOOT_S * NS_PER_SEC, 100);
        for p in procs {
            s.procs.insert(p);
        }
        s
    }

    fn snap() -> Snapshot {
        Snapshot {
            ipc_ns: 7,
            taken_ns: 1_001_000 * NS_PER_SEC,
            ..Snapshot::default()
        }
    }

    #[test]
    fn pid_status_tells_reuse_zombies_and_nobody() {
        let p = Procs::new(
            [
                proc_at(10, 1_000_010, 'S'),
                proc_at(11, 1_000_500, 'S'),
                proc_at(12, 1_000_010, 'Z'),
            ],
            BOOT_S * NS_PER_SEC,
            100,
        );
        assert_eq!(p.status(0, 1_000_050), PidStatus::None);
        assert_eq!(p.status(10, 1_000_050), PidStatus::Alive);
        // Started 450 s after the use: another process has the pid.
        assert_eq!(p.status(11, 1_000_050), PidStatus::Reused);
        // Within the slack: may be the one.
        assert_eq!(p.status(11, 1_000_498), PidStatus::Alive);
        // Unknown use time: a live process counts as the one.
        assert_eq!(p.status(11, 0), PidStatus::Alive);
        assert_eq!(p.status(12, 1_000_050), PidStatus::Zombie);
        assert_eq!(p.status(13, 1_000_050), PidStatus::Gone);
        assert!(PidStatus::Zombie.is_dead() && PidStatus::Reused.is_dead());
        assert!(!PidStatus::None.is_dead() && !PidStatus::None.is_alive());
        let k = proc_at(10, 1_000_010, 'S').key;
        assert_eq!(p.entity_status(k), PidStatus::Alive);
        assert_eq!(
            p.entity_status(ProcessKey {
                pid: 10,
                start_ticks: 1
            }),
            PidStatus::Reused
        );
        assert_eq!(p.comm(11, 1_000_050), None);
        assert_eq!(p.comm(12, 1_000_050), Some("p12"));
        let e = p.evidence(12, 1_000_050, Role::Creator);
        assert_eq!(
            (e.alive, e.name.as_str(), e.entity.is_some()),
            (false, "p12", true)
        );
        let e = p.evidence(11, 1_000_050, Role::Creator);
        assert_eq!((e.alive, e.name.as_str(), e.entity), (false, "", None));
    }

    #[test]
    fn orphaned_segment_needs_dead_creator_and_last_user() {
        let mut s = snap();
        s.shm = vec![
            seg(1, 10, 10, 0, 0o600),            // creator alive
            seg(2, 13, 0, 0, 0o600),             // creator gone, never attached
            seg(3, 12, 11, 0, 0o600),            // zombie creator, last user's pid reused
            seg(4, 13, 10, 0, 0o600),            // last user alive
            seg(5, 13, 13, 1, 0o600),            // attached
            seg(6, 13, 13, 0, 0o600 | SHM_DEST), // removed
            seg(7, 0, 0, 0, 0o600),              // creator not visible: cannot judge
        ];
        let procs = vec![
            proc_at(10, 1_000_010, 'S'),
            proc_at(11, 1_000_900, 'S'),
            proc_at(12, 1_000_010, 'Z'),
        ];
        let f = judge(&scene(s, procs));
        let ids: Vec<i32> = f
            .iter()
            .filter(|f| f.rule == Rule::OrphanedSegment)
            .filter_map(|f| f.object.map(|o| o.id))
            .collect();
        assert_eq!(ids, vec![2, 3]);
        let three = f
            .iter()
            .find(|f| f.object.is_some_and(|o| o.id == 3))
            .unwrap();
        assert_eq!(three.remedy.as_deref(), Some("ipcrm -m 3"));
        assert_eq!(three.evidence[0].role, Role::Creator);
        assert_eq!(three.evidence[0].name, "p12");
        assert!(!three.evidence[0].alive);
        assert_eq!(three.evidence[1].role, Role::Attacher);
        assert!(!three.evidence[1].alive);
        assert_eq!(three.since_ns, 1_000_200 * NS_PER_SEC);
        assert_eq!(three.object.unwrap().ns, 7);
    }

    #[test]
    fn removed_but_attached_names_the_holders() {
        let mut s = snap();
        s.shm = vec![
            seg(8, 13, 10, 2, 0o600 | SHM_DEST),
            seg(9, 13, 10, 0, 0o600 | SHM_DEST),
        ];
        s.mappings = vec![
            ShmMapping {
                pid: 10,
                shmid: 8,
                key: 0,
                start: 0x1000,
                end: 0x2000,
                offset: 0,
                writable: true,
            };
            2
        ];
        let f = judge(&scene(s, vec![proc_at(10, 1_000_010, 'S')]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, Rule::RemovedSegmentStillAttached);
        assert_eq!(f[0].evidence.len(), 1);
        assert_eq!((f[0].evidence[0].pid, f[0].evidence[0].alive), (10, true));
        assert_eq!(f[0].remedy, None);
    }

    #[test]
    fn held_semaphore_needs_zero_waiters_and_dead_sempid() {
        let mut s = snap();
        let set = |id| SemSet {
            perm: perm(id, 0x1234, 0o600),
            nsems: 2,
            otime: 1_000_100,
            ctime: 1_000_050,
        };
        s.sem = vec![set(1), set(2), set(3)];
        let v = |value, ncnt, pid| SemValue {
            value,
            ncnt,
            zcnt: 0,
            pid,
        };
        s.sem_values = vec![
            (1, vec![v(0, 1, 13), v(1, 0, 0)]), // held by a gone process, one waiter
            (2, vec![v(0, 1, 10), v(1, 0, 0)]), // holder alive
            (3, vec![v(0, 0, 13), v(1, 0, 0)]), // nobody waits
        ];
        s.waiters = vec![Waiter {
            pid: 10,
            tid: 10,
            on: Blocked::Sem { semid: 1 },
        }];
        let f = judge(&scene(s, vec![proc_at(10, 1_000_010, 'S')]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, Rule::SemaphoreHeldByDeadProcess);
        assert_eq!(f[0].severity, Severity::Critical);
        let roles: Vec<(u32, Role, bool)> = f[0]
            .evidence
            .iter()
            .map(|e| (e.pid, e.role, e.alive))
            .collect();
        assert_eq!(
            roles,
            vec![(13, Role::Holder, false), (10, Role::Waiter, true)]
        );
        assert_eq!(f[0].remedy.as_deref(), Some("ipcrm -s 1"));
        assert!(
            f[0].description.contains("key 0x00001234"),
            "{}",
            f[0].description
        );
    }

    #[test]
    fn stalled_queue_needs_messages_and_no_live_reader() {
        let mut s = snap();
        let q = |id, qnum, lspid, lrpid| MsgQueue {
            perm: perm(id, 0, 0o600),
            cbytes: qnum * 16,
            qnum,
            lspid,
            lrpid,
            stime: 1_000_300,
            rtime: 1_000_200,
            ctime: 1_000_050,
        };
        s.msg = vec![
            q(1, 3, 10, 13), // reader gone, sender alive
            q(2, 3, 10, 10), // reader alive
            q(3, 0, 13, 13), // empty
            q(4, 2, 13, 0),  // never read, sender gone
            q(5, 2, 10, 0),  // never read, sender alive: may be starting
            q(6, 2, 13, 13), // a live task blocked in msgrcv on it
        ];
        s.waiters = vec![Waiter {
            pid: 10,
            tid: 11,
            on: Blocked::MsgRcv { msqid: 6 },
        }];
        let f = judge(&scene(s, vec![proc_at(10, 1_000_010, 'S')]));
        let ids: Vec<i32> = f.iter().filter_map(|f| f.object.map(|o| o.id)).collect();
        assert_eq!(ids, vec![1, 4]);
        assert!(f.iter().all(|f| f.rule == Rule::StalledQueue));
        let e: Vec<(Role, bool)> = f[0].evidence.iter().map(|e| (e.role, e.alive)).collect();
        assert_eq!(e, vec![(Role::LastSender, true), (Role::Reader, false)]);
    }

    #[test]
    fn findings_round_trip_through_json() {
        let mut s = snap();
        s.shm = vec![seg(2, 12, 0, 0, 0o600)];
        let f = judge(&scene(s, vec![proc_at(12, 1_000_010, 'Z')]));
        let json = finding_json(&f[0]);
        assert_eq!(json["rule"], "orphaned-segment");
        assert_eq!(json["object"]["type"], "shm");
        assert_eq!(finding_from_json(&json).as_ref(), Some(&f[0]));
        assert_eq!(finding_from_json(&json!({"rule": "nope"})), None);
        assert_eq!(finding_from_json(&Value::Null), None);
    }

    fn pobj(ty: PosixType, name: &str, ino: u64, changed: i64, messages: u64) -> PosixObject {
        PosixObject {
            ty,
            name: name.into(),
            dev: 27,
            ino,
            mode: 0o600,
            uid: 0,
            gid: 0,
            size: 4096,
            memory: 4096,
            atime: changed,
            mtime: changed,
            ctime: changed,
            queue: (ty == PosixType::Pmsg).then_some(crate::snapshot::MqState {
                qsize: messages * 8,
                messages,
                max_messages: 10,
                message_size: 64,
                notify_pid: 0,
                notify: 0,
                signo: 0,
            }),
        }
    }

    fn pholder(pid: u32, ino: u64, hold: Hold) -> PosixHolder {
        PosixHolder {
            process: proc_at(pid, 1_000_010, 'S').key,
            comm: format!("p{pid}"),
            uid: 0,
            ipc_ns: 7,
            dev: 27,
            ino,
            hold,
        }
    }

    #[test]
    fn posix_orphans_need_no_holder_and_the_grace_period() {
        let mut s = snap();
        // Taken at 1,001,000: "old" changed 900 s before, "fresh" 30 s before.
        s.posix = vec![
            pobj(PosixType::Pshm, "/old", 1, 1_000_100, 0),
            pobj(PosixType::Pshm, "/fresh", 2, 1_000_970, 0),
            pobj(PosixType::Pshm, "/mapped", 3, 1_000_100, 0),
            pobj(PosixType::Psem, "/lock", 4, 1_000_100, 0),
            pobj(PosixType::Pmsg, "/q", 5, 1_000_100, 2),
        ];
        s.posix_holders = vec![pholder(
            10,
            3,
            Hold::Map {
                start: 0,
                end: 4096,
                writable: false,
            },
        )];
        let sc = scene(s, vec![proc_at(10, 1_000_010, 'S')]);
        let f = judge_posix(&sc, 60);
        let got: Vec<(Rule, &str)> = f
            .iter()
            .map(|f| (f.rule, f.posix.as_ref().map_or("", |p| p.name.as_str())))
            .collect();
        assert_eq!(
            got,
            vec![
                (Rule::OrphanedPosixShm, "/old"),
                (Rule::OrphanedPosixSemaphore, "/lock"),
                (Rule::OrphanedPosixQueue, "/q"),
            ]
        );
        assert_eq!(f[0].remedy.as_deref(), Some("rm /dev/shm/old"));
        assert_eq!(f[0].since_ns, 1_000_100 * NS_PER_SEC);
        assert!(
            f[0].description.contains("unchanged for 900 s"),
            "{}",
            f[0].description
        );
        assert!(
            f[2].description.contains("with 2 message(s)"),
            "{}",
            f[2].description
        );
        // A queue's file read a second ago (its ctime) has not changed for all that.
        let mut read = sc.clone();
        read.snap.posix[4].ctime = 1_000_999;
        assert!(
            judge_posix(&read, 60)
                .iter()
                .any(|f| f.rule == Rule::OrphanedPosixQueue)
        );
        // With no grace, the fresh one too.
        assert_eq!(
            judge_posix(&sc, 0)
                .iter()
                .filter(|f| f.rule == Rule::OrphanedPosixShm)
                .count(),
            2
        );
        // judge_all has both families.
        assert_eq!(judge_all(&sc, 60).len(), 3);
        // When some processes could not be inspected, nobody may be said not to hold anything.
        let mut blind = sc.clone();
        blind.snap.posix_hidden = 4;
        assert!(judge_posix(&blind, 0).is_empty());
    }

    #[test]
    #[expect(
        clippy::many_single_char_names,
        reason = "s(napshot), w(riter), f(indings), p, e"
    )]
    fn a_posix_queue_held_write_only_with_messages_is_stalled() {
        let mut s = snap();
        s.posix = vec![
            pobj(PosixType::Pmsg, "/stalled", 1, 1_000_990, 3),
            pobj(PosixType::Pmsg, "/read", 2, 1_000_990, 3),
            pobj(PosixType::Pmsg, "/empty", 3, 1_000_990, 0),
            pobj(PosixType::Pmsg, "/notified", 4, 1_000_990, 3),
        ];
        if let Some(q) = s.posix[3].queue.as_mut() {
            q.notify_pid = 11;
        }
        let w = |ino| {
            pholder(
                10,
                ino,
                Hold::Fd {
                    fd: 3,
                    read: false,
                    write: true,
                },
            )
        };
        s.posix_holders = vec![
            w(1),
            w(2),
            pholder(
                11,
                2,
                Hold::Fd {
                    fd: 4,
                    read: true,
                    write: false,
                },
            ),
            w(3),
            w(4),
        ];
        let sc = scene(
            s,
            vec![proc_at(10, 1_000_010, 'S'), proc_at(11, 1_000_010, 'S')],
        );
        let f = judge_posix(&sc, 60);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, Rule::StalledPosixQueue);
        let p = f[0].posix.as_ref().unwrap();
        assert_eq!(
            (p.name.as_str(), p.path()),
            ("/stalled", "/dev/mqueue/stalled".to_owned())
        );
        let e: Vec<(u32, Role, bool)> = f[0]
            .evidence
            .iter()
            .map(|e| (e.pid, e.role, e.alive))
            .collect();
        assert_eq!(e, vec![(10, Role::Holder, true)]);
        // The JSON round trip keeps the POSIX object.
        let json = finding_json(&f[0]);
        assert_eq!(json["posix"]["type"], "pmsg");
        assert_eq!(finding_from_json(&json).as_ref(), Some(&f[0]));
        assert!(finding_has_type(
            &f[0],
            &[ObjectType::Posix(PosixType::Pmsg)]
        ));
        assert!(!finding_has_type(&f[0], &[ObjectType::Sysv(IpcType::Msg)]));
        assert!(finding_has_type(&f[0], &[]));
    }

    #[test]
    fn source_headers_say_which_source() {
        let w = Source::Watch(PathBuf::from("/run/x.sock"));
        assert_eq!(w.name(), "watch");
        assert!(w.header().contains("/run/x.sock"));
        let s = Source::Snapshot {
            why: "no daemon".into(),
        };
        assert_eq!(s.name(), "snapshot");
        assert!(s.header().contains("heuristic; no daemon"));
    }
}
