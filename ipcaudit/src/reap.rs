//! `ipcaudit reap`: removes leaked System V IPC objects, and never a live one.
//!
//! Three steps, the first two pure:
//!
//! 1. **plan** ([`plan`]): findings (a running `watch`'s, exact, or a snapshot's, see
//!    [`crate::leaks`]) and the snapshot → candidates, each with the object's state as the
//!    snapshot showed it (its *baseline*) and the reason, or a refusal with its reason;
//! 2. **recheck** ([`check`]): immediately before the removal, inside the object's own IPC
//!    namespace, a fresh `IPC_STAT` of that id is compared with the baseline — the same key,
//!    creator uid/gid, ctime, size or number of semaphores and creator pid (a different object
//!    under a reused id is never hit), no use since the plan (attach and detach times, last pids,
//!    semaphore values, queue times) — and the leak is judged again on the fresh state: not
//!    attached, creator and every known user dead (by pid and start time), no waiters (unless
//!    `--force-waiters`, semaphores only), idle for longer than `--older-than`;
//! 3. **act** ([`execute`]): `IPC_RMID` on the id, and for a segment a last `IPC_STAT` to tell
//!    whether someone attached in the microseconds between the recheck and the removal (then it
//!    lives on, removed, until they detach: the record says so).
//!
//! Objects are removed by id only. `--key` selects by key (never `IPC_PRIVATE`, which is not a
//! key), resolved to an id by the plan. Every removal and every refusal is one NDJSON record:
//! `event.action` `reap-remove` or `reap-skip`, `event.reason` in words and
//! `ipcaudit.reap.code` as a stable name.
//!
//! What a recheck cannot rule out: an object removed and re-created under the same id, by the
//! same dead process, within the same second, with the same key, owner, size and times — the
//! kernel shows nothing that tells the two apart (its sequence number is part of the id).

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use nix::errno::Errno;
use serde::Serialize;
use serde_json::{Value, json};

use crate::clock;
use crate::event::IpcType;
use crate::leaks::{self, LeaksError, Procs, Scene, Source};
use crate::ls::{self, NamespaceSel, NsError, NsTarget};
use crate::model::{Finding, ProcessEvidence, Role, Rule};
use crate::reap_posix::PosixSelection;
use crate::snapshot::read::{self, ReadError};
use crate::snapshot::{Blocked, MsgQueue, SHM_DEST, SemSet, SemValue, ShmSegment, Waiter};

// ---------------------------------------------------------------------------------------------
// Arguments

/// Parses a duration: `90` (seconds), `90s`, `500ms`, `10m`, `2h`, `1d`, or sums like `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 90, 90s, 10m, 1h30m, 2d)");
    let text = s.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// Parses an IPC key: `0x1234abcd` (hex, as `ipcs` prints it) or decimal. `IPC_PRIVATE` (0)
/// is refused: it is not a key.
pub fn parse_key(s: &str) -> Result<i32, String> {
    let text = s.trim();
    let key = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16)
            .map(|k| i32::from_ne_bytes(k.to_ne_bytes()))
            .map_err(|_| format!("{s:?} is not a hexadecimal key"))?
    } else {
        text.parse::<i32>()
            .map_err(|_| format!("{s:?} is not a key (0x… or a decimal number)"))?
    };
    if key == 0 {
        return Err("0 is IPC_PRIVATE, not a key: select private objects by --id".to_owned());
    }
    Ok(key)
}

// ---------------------------------------------------------------------------------------------
// The state of one object

/// One object's state as `IPC_STAT` (and, for semaphores, GETVAL/GETNCNT/GETZCNT/GETPID) shows
/// it — or as a snapshot showed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stat {
    #[serde(rename = "type")]
    pub ty: IpcType,
    pub id: i32,
    pub key: i32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    /// Permission bits, plus `SHM_DEST`/`SHM_LOCKED` for segments.
    pub mode: u32,
    pub ctime: i64,
    #[serde(flatten)]
    pub body: StatBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatBody {
    Shm {
        size: u64,
        cpid: u32,
        lpid: u32,
        nattch: u64,
        atime: i64,
        dtime: i64,
    },
    Sem {
        nsems: u32,
        otime: i64,
        /// None when the values could not be read (no permission).
        sems: Option<Vec<SemValue>>,
    },
    Msg {
        qnum: u64,
        cbytes: u64,
        lspid: u32,
        lrpid: u32,
        stime: i64,
        rtime: i64,
    },
}

impl Stat {
    pub fn from_shm(s: &ShmSegment) -> Self {
        let p = &s.perm;
        Self {
            ty: IpcType::Shm,
            id: p.id,
            key: p.key,
            uid: p.uid,
            gid: p.gid,
            cuid: p.cuid,
            cgid: p.cgid,
            mode: p.mode,
            ctime: s.ctime,
            body: StatBody::Shm {
                size: s.size,
                cpid: s.cpid,
                lpid: s.lpid,
                nattch: s.nattch,
                atime: s.atime,
                dtime: s.dtime,
            },
        }
    }

    pub fn from_sem(s: &SemSet, values: Option<&[SemValue]>) -> Self {
        let p = &s.perm;
        Self {
            ty: IpcType::Sem,
            id: p.id,
            key: p.key,
            uid: p.uid,
            gid: p.gid,
            cuid: p.cuid,
            cgid: p.cgid,
            mode: p.mode,
            ctime: s.ctime,
            body: StatBody::Sem {
                nsems: s.nsems,
                otime: s.otime,
                sems: values.map(<[SemValue]>::to_vec),
            },
        }
    }

    pub fn from_msg(q: &MsgQueue) -> Self {
        let p = &q.perm;
        Self {
            ty: IpcType::Msg,
            id: p.id,
            key: p.key,
            uid: p.uid,
            gid: p.gid,
            cuid: p.cuid,
            cgid: p.cgid,
            mode: p.mode,
            ctime: q.ctime,
            body: StatBody::Msg {
                qnum: q.qnum,
                cbytes: q.cbytes,
                lspid: q.lspid,
                lrpid: q.lrpid,
                stime: q.stime,
                rtime: q.rtime,
            },
        }
    }

    /// The object with this type and id in a scene.
    pub fn find(scene: &Scene, ty: IpcType, id: i32) -> Option<Self> {
        let snap = &scene.snap;
        match ty {
            IpcType::Shm => snap
                .shm
                .iter()
                .find(|s| s.perm.id == id)
                .map(Self::from_shm),
            IpcType::Sem => snap
                .sem
                .iter()
                .find(|s| s.perm.id == id)
                .map(|s| Self::from_sem(s, scene.sem_values(id))),
            IpcType::Msg => snap
                .msg
                .iter()
                .find(|q| q.perm.id == id)
                .map(Self::from_msg),
        }
    }

    /// The latest time anything happened to it (seconds).
    pub fn last_activity(&self) -> i64 {
        let t = match &self.body {
            StatBody::Shm { atime, dtime, .. } => (*atime).max(*dtime),
            StatBody::Sem { otime, .. } => *otime,
            StatBody::Msg { stime, rtime, .. } => (*stime).max(*rtime),
        };
        t.max(self.ctime)
    }

    /// Every pid the object records, when it recorded it, and as what.
    pub fn recorded(&self) -> Vec<(u32, i64, Role)> {
        let mut out = Vec::new();
        match &self.body {
            StatBody::Shm {
                cpid,
                lpid,
                atime,
                dtime,
                ..
            } => {
                out.push((*cpid, self.ctime, Role::Creator));
                out.push((*lpid, (*atime).max(*dtime), Role::Attacher));
            }
            StatBody::Sem { otime, sems, .. } => {
                for v in sems.iter().flatten() {
                    out.push((v.pid, (*otime).max(self.ctime), Role::User));
                }
            }
            StatBody::Msg {
                lspid,
                lrpid,
                stime,
                rtime,
                ..
            } => {
                out.push((*lspid, *stime, Role::LastSender));
                out.push((*lrpid, *rtime, Role::Reader));
            }
        }
        out.retain(|(pid, ..)| *pid != 0);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Decisions

/// Why an object is not removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No object has this id any more.
    Gone,
    /// The id now names a different object.
    Replaced {
        field: &'static str,
        was: String,
        now: String,
    },
    /// Something used the object since the plan.
    Used {
        field: &'static str,
        was: String,
        now: String,
    },
    /// Already removed (a segment kept by its attachments).
    Removed,
    Attached {
        nattch: u64,
    },
    /// The creator's pid is not known (0: not visible from our PID namespace).
    CreatorUnknown,
    /// A process it records is alive.
    Alive {
        pid: u32,
        role: Role,
    },
    /// Processes are blocked on it.
    Waiters {
        count: u64,
        forceable: bool,
    },
    /// Its semaphore values could not be read.
    Unreadable,
    /// Used or changed too recently.
    TooYoung {
        idle_secs: u64,
        need_secs: u64,
    },
    /// Selected by id or key, but no finding says it leaked.
    NotLeaked {
        why: String,
    },
    /// A syscall on it failed.
    Syscall {
        op: &'static str,
        errno: Errno,
    },
    /// Its namespace could not be entered.
    Namespace {
        why: String,
    },
    /// A policy's rate cap is reached (the daemon).
    RateCapped {
        max: u32,
        window_secs: u64,
    },
    /// Events were lost: the daemon's model may be wrong until the next resync.
    ModelUncertain,
    /// The directory of a POSIX object could not be opened (/dev/shm, the mqueue filesystem).
    Directory {
        why: String,
    },
    /// Some processes could not be inspected for descriptors and mappings of a POSIX object.
    HoldersUnknown {
        hidden: u32,
    },
}

impl Refusal {
    /// A stable name for the reason (`ipcaudit.reap.code`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::Replaced { .. } => "replaced",
            Self::Used { .. } => "used-since-plan",
            Self::Removed => "already-removed",
            Self::Attached { .. } => "attached",
            Self::CreatorUnknown => "creator-unknown",
            Self::Alive { .. } => "user-alive",
            Self::Waiters { .. } => "waiters",
            Self::Unreadable => "unreadable",
            Self::TooYoung { .. } => "too-young",
            Self::NotLeaked { .. } => "not-leaked",
            Self::Syscall {
                errno: Errno::EPERM | Errno::EACCES,
                ..
            } => "permission-denied",
            Self::Syscall { .. } => "syscall-failed",
            Self::Namespace { .. } => "namespace",
            Self::RateCapped { .. } => "rate-capped",
            Self::ModelUncertain => "model-uncertain",
            Self::Directory { .. } => "directory",
            Self::HoldersUnknown { .. } => "holders-unknown",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gone => f.write_str("it no longer exists"),
            Self::Replaced { field, was, now } => write!(
                f,
                "the id now names a different object (or it was changed): {field} was {was}, \
                 is {now}"
            ),
            Self::Used { field, was, now } => {
                write!(f, "it was used since the plan: {field} was {was}, is {now}")
            }
            Self::Removed => f.write_str("it is already removed (kept by its attachments)"),
            Self::Attached { nattch } => write!(f, "it is attached ({nattch} attachment(s))"),
            Self::CreatorUnknown => {
                f.write_str("its creator is unknown (pid 0: not visible from here)")
            }
            Self::Alive { pid, role } => {
                write!(f, "its {} (pid {pid}) is alive", role.as_str())
            }
            Self::Waiters { count, forceable } => {
                write!(f, "{count} process(es) are blocked on it")?;
                if *forceable {
                    f.write_str(" (--force-waiters removes it anyway: they get EIDRM)")?;
                }
                Ok(())
            }
            Self::Unreadable => f.write_str("its semaphore values cannot be read"),
            Self::TooYoung {
                idle_secs,
                need_secs,
            } => write!(
                f,
                "it was used or changed {idle_secs} s ago, less than --older-than ({need_secs} s)"
            ),
            Self::NotLeaked { why } => write!(f, "not leaked: {why}"),
            Self::Syscall { op, errno } => write!(f, "{op}: {errno}"),
            Self::Namespace { why } => write!(f, "its IPC namespace: {why}"),
            Self::RateCapped { max, window_secs } => write!(
                f,
                "the policy's rate cap ({max} removal(s) per {window_secs} s) is reached"
            ),
            Self::ModelUncertain => {
                f.write_str("records were lost: the model may be wrong until the next resync")
            }
            Self::Directory { why } => write!(f, "its directory: {why}"),
            Self::HoldersUnknown { hidden } => write!(
                f,
                "the descriptors and mappings of {hidden} process(es) could not be read (no \
                 permission; run as root): whether someone holds it is not known"
            ),
        }
    }
}

/// How strict the checks are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// The object must have been idle (no use, no change) this long.
    pub older_than_secs: u64,
    /// Remove semaphore sets even with processes blocked on them.
    pub force_waiters: bool,
}

/// A removal the plan proposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub ns: u32,
    pub rule: Rule,
    /// The object as the plan saw it.
    pub baseline: Stat,
    /// The processes the finding names.
    pub evidence: Vec<ProcessEvidence>,
    /// Why it is a leak (the finding's description).
    pub why: String,
}

fn differs<T: PartialEq + fmt::Display>(
    field: &'static str,
    was: &T,
    now: &T,
) -> Option<(&'static str, String, String)> {
    (was != now).then(|| (field, was.to_string(), now.to_string()))
}

/// Fields that never change over an object's life (key, creator, creation size, ctime — which
/// only `IPC_SET` and, for semaphores, SETVAL/SETALL move): a difference means another object.
fn identity_difference(was: &Stat, now: &Stat) -> Option<(&'static str, String, String)> {
    let hex = |k: i32| format!("0x{k:08x}");
    differs("key", &hex(was.key), &hex(now.key))
        .or_else(|| differs("cuid", &was.cuid, &now.cuid))
        .or_else(|| differs("cgid", &was.cgid, &now.cgid))
        .or_else(|| match (&was.body, &now.body) {
            (
                StatBody::Shm { size, cpid, .. },
                StatBody::Shm {
                    size: s2, cpid: c2, ..
                },
            ) => differs("size", size, s2).or_else(|| differs("cpid", cpid, c2)),
            (StatBody::Sem { nsems, .. }, StatBody::Sem { nsems: n2, .. }) => {
                differs("nsems", nsems, n2)
            }
            (StatBody::Msg { .. }, StatBody::Msg { .. }) => None,
            _ => Some(("type", was.ty.to_string(), now.ty.to_string())),
        })
        .or_else(|| differs("ctime", &was.ctime, &now.ctime))
}

/// Fields any use moves.
fn use_difference(was: &Stat, now: &Stat) -> Option<(&'static str, String, String)> {
    match (&was.body, &now.body) {
        (
            StatBody::Shm {
                lpid,
                nattch,
                atime,
                dtime,
                ..
            },
            StatBody::Shm {
                lpid: l2,
                nattch: n2,
                atime: a2,
                dtime: d2,
                ..
            },
        ) => differs("nattch", nattch, n2)
            .or_else(|| differs("atime", atime, a2))
            .or_else(|| differs("dtime", dtime, d2))
            .or_else(|| differs("lpid", lpid, l2)),
        (
            StatBody::Sem { otime, sems, .. },
            StatBody::Sem {
                otime: o2,
                sems: s2,
                ..
            },
        ) => differs("otime", otime, o2).or_else(|| match (sems, s2) {
            (Some(a), Some(b)) => a.iter().zip(b).enumerate().find_map(|(n, (x, y))| {
                (x.value != y.value || x.pid != y.pid).then(|| {
                    (
                        "semaphore",
                        format!("#{n} {}@{}", x.value, x.pid),
                        format!("#{n} {}@{}", y.value, y.pid),
                    )
                })
            }),
            _ => None,
        }),
        (
            StatBody::Msg {
                qnum,
                lspid,
                lrpid,
                stime,
                rtime,
                ..
            },
            StatBody::Msg {
                qnum: q2,
                lspid: s2,
                lrpid: r2,
                stime: st2,
                rtime: rt2,
                ..
            },
        ) => differs("stime", stime, st2)
            .or_else(|| differs("rtime", rtime, rt2))
            .or_else(|| differs("qnum", qnum, q2))
            .or_else(|| differs("lspid", lspid, s2))
            .or_else(|| differs("lrpid", lrpid, r2)),
        _ => None,
    }
}

/// The decision (pure): may `candidate` be removed, given the object's state `now` (None: no
/// object has the id), the processes, the tasks blocked in IPC and the time (seconds)?
pub fn check(
    c: &Candidate,
    now: Option<&Stat>,
    procs: &Procs,
    waiters: &[Waiter],
    now_secs: i64,
    opts: CheckOptions,
) -> Result<(), Refusal> {
    let Some(now) = now else {
        return Err(Refusal::Gone);
    };
    let was = &c.baseline;
    if now.ty == IpcType::Shm && now.mode & SHM_DEST != 0 {
        return Err(Refusal::Removed);
    }
    if let Some((field, was, now)) = identity_difference(was, now) {
        return Err(Refusal::Replaced { field, was, now });
    }
    if let Some((field, was, now)) = use_difference(was, now) {
        return Err(Refusal::Used { field, was, now });
    }
    // The leak, judged again on the fresh state.
    match &now.body {
        StatBody::Shm { nattch, cpid, .. } => {
            if *nattch > 0 {
                return Err(Refusal::Attached { nattch: *nattch });
            }
            if *cpid == 0 && !c.evidence.iter().any(|e| e.role == Role::Creator) {
                return Err(Refusal::CreatorUnknown);
            }
        }
        StatBody::Sem { sems, .. } => {
            let Some(sems) = sems else {
                return Err(Refusal::Unreadable);
            };
            let blocked: u64 = sems
                .iter()
                .map(|v| u64::from(v.ncnt) + u64::from(v.zcnt))
                .sum();
            let tasks = waiters
                .iter()
                .filter(|w| w.on == Blocked::Sem { semid: now.id })
                .count() as u64;
            let count = blocked.max(tasks);
            if count > 0 && !opts.force_waiters {
                return Err(Refusal::Waiters {
                    count,
                    forceable: true,
                });
            }
        }
        StatBody::Msg { .. } => {
            let count = waiters
                .iter()
                .filter(|w| {
                    matches!(w.on, Blocked::MsgRcv { msqid } | Blocked::MsgSnd { msqid } if msqid == now.id)
                })
                .count() as u64;
            if count > 0 {
                return Err(Refusal::Waiters {
                    count,
                    forceable: false,
                });
            }
        }
    }
    for (pid, used_at, role) in now.recorded() {
        if procs.status(pid, used_at).is_alive() {
            return Err(Refusal::Alive { pid, role });
        }
    }
    for e in c.evidence.iter().filter(|e| e.role != Role::Waiter) {
        let status = match e.entity {
            Some(key) => procs.entity_status(key),
            None => procs.status(e.pid, now.ctime),
        };
        if status.is_alive() {
            return Err(Refusal::Alive {
                pid: e.pid,
                role: e.role,
            });
        }
    }
    let idle = u64::try_from(now_secs.saturating_sub(now.last_activity())).unwrap_or(0);
    if idle < opts.older_than_secs {
        return Err(Refusal::TooYoung {
            idle_secs: idle,
            need_secs: opts.older_than_secs,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The plan (pure)

/// Which objects to consider.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub types: Vec<IpcType>,
    pub ids: Vec<i32>,
    pub keys: Vec<i32>,
    pub uids: Vec<u32>,
    pub comms: Vec<String>,
}

impl Selection {
    /// Whether objects were named explicitly (by id or key): those get a record even when
    /// they are not leaked.
    fn explicit(&self) -> bool {
        !self.ids.is_empty() || !self.keys.is_empty()
    }

    fn selects(&self, stat: &Stat, evidence: &[ProcessEvidence]) -> bool {
        (self.types.is_empty() || self.types.contains(&stat.ty))
            && (self.ids.is_empty() || self.ids.contains(&stat.id))
            && (self.keys.is_empty() || (stat.key != 0 && self.keys.contains(&stat.key)))
            && (self.uids.is_empty()
                || self.uids.contains(&stat.uid)
                || self.uids.contains(&stat.cuid))
            && (self.comms.is_empty()
                || evidence
                    .iter()
                    .any(|e| e.role == Role::Creator && self.comms.contains(&e.name)))
    }
}

/// The System V rules whose remedy is the removal (the POSIX ones:
/// [`crate::reap_posix::reapable`]).
pub fn reapable(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::OrphanedSegment
            | Rule::OrphanedSemaphoreSet
            | Rule::OrphanedQueue
            | Rule::StalledQueue
            | Rule::SemaphoreHeldByDeadProcess
    )
}

/// What the plan says about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Planned {
    Remove(Candidate),
    Skip {
        ns: u32,
        ty: IpcType,
        id: i32,
        key: Option<i32>,
        rule: Option<Rule>,
        refusal: Refusal,
    },
}

/// The plan for one namespace's scene (pure): every reapable finding on an object of this
/// namespace that the selection selects becomes a candidate or a refusal, and every object
/// selected by id or key that no finding names becomes a `not-leaked` refusal.
pub fn plan(
    scene: &Scene,
    findings: &[Finding],
    sel: &Selection,
    opts: CheckOptions,
) -> Vec<Planned> {
    let ns = scene.snap.ipc_ns;
    let now_secs = scene.now_secs();
    let mut out: Vec<Planned> = Vec::new();
    let mut named: Vec<(IpcType, i32)> = Vec::new();
    for f in findings.iter().filter(|f| reapable(f.rule)) {
        let Some(o) = f.object.filter(|o| o.ns == ns) else {
            continue;
        };
        if named.contains(&(o.ty, o.id)) {
            continue; // One decision per object (its first finding).
        }
        let skip = |refusal| Planned::Skip {
            ns,
            ty: o.ty,
            id: o.id,
            key: o.key,
            rule: Some(f.rule),
            refusal,
        };
        let Some(stat) = Stat::find(scene, o.ty, o.id) else {
            if sel.explicit() && sel.ids.contains(&o.id) {
                named.push((o.ty, o.id));
                out.push(skip(Refusal::Gone));
            }
            continue;
        };
        if !sel.selects(&stat, &f.evidence) {
            continue;
        }
        named.push((o.ty, o.id));
        // The finding's object must be the one the snapshot shows under this id.
        if let Some(refusal) = mismatch(&o, &stat) {
            out.push(skip(refusal));
            continue;
        }
        let candidate = Candidate {
            ns,
            rule: f.rule,
            baseline: stat.clone(),
            evidence: f.evidence.clone(),
            why: f.description.clone(),
        };
        match check(
            &candidate,
            Some(&stat),
            &scene.procs,
            &scene.snap.waiters,
            now_secs,
            opts,
        ) {
            Ok(()) => out.push(Planned::Remove(candidate)),
            Err(refusal) => out.push(skip(refusal)),
        }
    }
    if sel.explicit() {
        let all: Vec<Stat> = scene
            .snap
            .shm
            .iter()
            .map(Stat::from_shm)
            .chain(
                scene
                    .snap
                    .sem
                    .iter()
                    .map(|s| Stat::from_sem(s, scene.sem_values(s.perm.id))),
            )
            .chain(scene.snap.msg.iter().map(Stat::from_msg))
            .collect();
        for stat in all {
            if named.contains(&(stat.ty, stat.id)) || !sel.selects(&stat, &[]) {
                continue;
            }
            out.push(Planned::Skip {
                ns,
                ty: stat.ty,
                id: stat.id,
                key: Some(stat.key),
                rule: None,
                refusal: Refusal::NotLeaked {
                    why: not_leaked_why(scene, &stat, opts),
                },
            });
        }
        // Ids asked for that exist in no table.
        for &id in &sel.ids {
            let exists = |ty| Stat::find(scene, ty, id).is_some();
            let types = if sel.types.is_empty() {
                IpcType::ALL.to_vec()
            } else {
                sel.types.clone()
            };
            if !types.iter().any(|&t| exists(t)) && !named.iter().any(|(_, i)| *i == id) {
                out.push(Planned::Skip {
                    ns,
                    ty: types.first().copied().unwrap_or(IpcType::Shm),
                    id,
                    key: None,
                    rule: None,
                    refusal: Refusal::Gone,
                });
            }
        }
    }
    out
}

/// Whether the snapshot's object differs from the one a finding named.
fn mismatch(expected: &crate::model::ObjectRef, stat: &Stat) -> Option<Refusal> {
    let removed = stat.ty == IpcType::Shm && stat.mode & SHM_DEST != 0;
    if let Some(k) = expected.key
        && k != stat.key
        && !removed
    {
        return Some(Refusal::Replaced {
            field: "key",
            was: format!("0x{k:08x}"),
            now: format!("0x{:08x}", stat.key),
        });
    }
    match &stat.body {
        StatBody::Shm { size, .. } => {
            expected
                .size
                .filter(|s| s != size)
                .map(|s| Refusal::Replaced {
                    field: "size",
                    was: s.to_string(),
                    now: size.to_string(),
                })
        }
        StatBody::Sem { nsems, .. } => {
            expected
                .nsems
                .filter(|n| n != nsems)
                .map(|n| Refusal::Replaced {
                    field: "nsems",
                    was: n.to_string(),
                    now: nsems.to_string(),
                })
        }
        StatBody::Msg { .. } => None,
    }
}

/// Why an object no finding names is not removed: the first check it fails, or that nothing
/// says it leaked.
fn not_leaked_why(scene: &Scene, stat: &Stat, opts: CheckOptions) -> String {
    let probe = Candidate {
        ns: scene.snap.ipc_ns,
        rule: Rule::OrphanedSegment,
        baseline: stat.clone(),
        evidence: Vec::new(),
        why: String::new(),
    };
    match check(
        &probe,
        Some(stat),
        &scene.procs,
        &scene.snap.waiters,
        scene.now_secs(),
        opts,
    ) {
        Err(r) => r.to_string(),
        Ok(()) => match stat.ty {
            IpcType::Shm => "no finding names it".to_owned(),
            IpcType::Sem | IpcType::Msg => format!(
                "no finding names it (a snapshot cannot tell who created a {}; a running \
                 `ipcaudit watch` can)",
                if stat.ty == IpcType::Sem {
                    "semaphore set"
                } else {
                    "queue"
                }
            ),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// IO: stat, remove

/// A `Stat` from the `ipc_perm` and ctime every IPC_STAT returns, and the family's own fields.
fn stat_from(
    ty: IpcType,
    id: i32,
    p: &libc::ipc_perm,
    ctime: libc::time_t,
    body: StatBody,
) -> Stat {
    Stat {
        ty,
        id,
        key: p.__key,
        uid: p.uid,
        gid: p.gid,
        cuid: p.cuid,
        cgid: p.cgid,
        mode: u32::from(p.mode),
        ctime,
        body,
    }
}

/// The current state of object `id` in the calling thread's namespace: None if there is none.
pub fn stat(ty: IpcType, id: i32) -> Result<Option<Stat>, Errno> {
    let gone = |e: Errno| matches!(e, Errno::EINVAL | Errno::EIDRM);
    match ty {
        IpcType::Shm => {
            let mut ds = std::mem::MaybeUninit::<libc::shmid_ds>::zeroed();
            // SAFETY: IPC_STAT writes one `struct shmid_ds` to the buffer.
            if unsafe { libc::shmctl(id, libc::IPC_STAT, ds.as_mut_ptr()) } != 0 {
                let e = Errno::last();
                return if gone(e) { Ok(None) } else { Err(e) };
            }
            // SAFETY: zero-initialized plain data, filled by the kernel.
            let ds = unsafe { ds.assume_init() };
            let p = &ds.shm_perm;
            Ok(Some(stat_from(
                ty,
                id,
                p,
                ds.shm_ctime,
                StatBody::Shm {
                    size: u64::try_from(ds.shm_segsz).unwrap_or(u64::MAX),
                    cpid: u32::try_from(ds.shm_cpid).unwrap_or(0),
                    lpid: u32::try_from(ds.shm_lpid).unwrap_or(0),
                    nattch: ds.shm_nattch,
                    atime: ds.shm_atime,
                    dtime: ds.shm_dtime,
                },
            )))
        }
        IpcType::Sem => {
            let mut ds = std::mem::MaybeUninit::<libc::semid_ds>::zeroed();
            // SAFETY: IPC_STAT reads `union semun` as a pointer to one `struct semid_ds`, which
            // it fills.
            if unsafe { libc::semctl(id, 0, libc::IPC_STAT, ds.as_mut_ptr()) } != 0 {
                let e = Errno::last();
                return if gone(e) { Ok(None) } else { Err(e) };
            }
            // SAFETY: as above.
            let ds = unsafe { ds.assume_init() };
            let p = &ds.sem_perm;
            let nsems = u32::try_from(ds.sem_nsems).unwrap_or(u32::MAX);
            let sems = match read::read_sem_values(id, nsems) {
                Ok(v) => Some(v),
                Err(ReadError::SemGone { .. }) => return Ok(None),
                Err(_) => None,
            };
            Ok(Some(stat_from(
                ty,
                id,
                p,
                ds.sem_ctime,
                StatBody::Sem {
                    nsems,
                    otime: ds.sem_otime,
                    sems,
                },
            )))
        }
        IpcType::Msg => {
            let mut ds = std::mem::MaybeUninit::<libc::msqid_ds>::zeroed();
            // SAFETY: IPC_STAT writes one `struct msqid_ds` to the buffer.
            if unsafe { libc::msgctl(id, libc::IPC_STAT, ds.as_mut_ptr()) } != 0 {
                let e = Errno::last();
                return if gone(e) { Ok(None) } else { Err(e) };
            }
            // SAFETY: as above.
            let ds = unsafe { ds.assume_init() };
            let p = &ds.msg_perm;
            Ok(Some(stat_from(
                ty,
                id,
                p,
                ds.msg_ctime,
                StatBody::Msg {
                    qnum: ds.msg_qnum,
                    cbytes: ds.__msg_cbytes,
                    lspid: u32::try_from(ds.msg_lspid).unwrap_or(0),
                    lrpid: u32::try_from(ds.msg_lrpid).unwrap_or(0),
                    stime: ds.msg_stime,
                    rtime: ds.msg_rtime,
                },
            )))
        }
    }
}

/// `IPC_RMID` on object `id` of the calling thread's namespace.
pub fn rmid(ty: IpcType, id: i32) -> Result<(), Errno> {
    // SAFETY: IPC_RMID reads no buffer (a null one is allowed).
    let r = unsafe {
        match ty {
            IpcType::Shm => libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()),
            IpcType::Sem => libc::semctl(id, 0, libc::IPC_RMID),
            IpcType::Msg => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
        }
    };
    if r == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// The processes a fresh state and a candidate name, read now from /proc.
fn fresh_procs(now: &Stat, evidence: &[ProcessEvidence]) -> Procs {
    let clocks = clock::Clocks::sample();
    let mut procs = Procs::new([], clocks.boot_wall_ns, clocks.ticks_per_sec);
    let pids = now
        .recorded()
        .into_iter()
        .map(|(pid, ..)| pid)
        .chain(evidence.iter().map(|e| e.pid));
    for pid in pids {
        if !procs.contains(pid)
            && let Some(p) = leaks::read_process(pid)
        {
            procs.insert(p);
        }
    }
    procs
}

/// The tasks of this namespace blocked on message queues (queues have no waiter count).
fn fresh_queue_waiters() -> Vec<Waiter> {
    let Ok(ns) = read::own_ipc_ns() else {
        return Vec::new();
    };
    let pids: Vec<u32> = read::read_processes()
        .into_iter()
        .filter(|p| p.ipc_ns == ns || p.ipc_ns == 0)
        .map(|p| p.key.pid)
        .collect();
    read::read_waiters(&pids)
}

/// What [`execute`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Removed. `late_attach`: a segment someone attached between the recheck and the removal
    /// (it lives on, removed, until they detach).
    Removed {
        late_attach: Option<u64>,
    },
    /// Dry run: the recheck passed.
    WouldRemove,
    Refused(Refusal),
}

/// Rechecks a candidate against the kernel now and, unless `dry_run`, removes it. Must run in
/// the candidate's namespace.
pub fn execute(c: &Candidate, opts: CheckOptions, dry_run: bool) -> Outcome {
    let ty = c.baseline.ty;
    let id = c.baseline.id;
    let now = match stat(ty, id) {
        Ok(now) => now,
        Err(errno) => {
            return Outcome::Refused(Refusal::Syscall {
                op: "IPC_STAT",
                errno,
            });
        }
    };
    let procs = now
        .as_ref()
        .map(|s| fresh_procs(s, &c.evidence))
        .unwrap_or_default();
    let waiters = if ty == IpcType::Msg && now.is_some() {
        fresh_queue_waiters()
    } else {
        Vec::new()
    };
    let now_secs = i64::try_from(clock::now_wall_ns() / 1_000_000_000).unwrap_or(i64::MAX);
    if let Err(refusal) = check(c, now.as_ref(), &procs, &waiters, now_secs, opts) {
        return Outcome::Refused(refusal);
    }
    if dry_run {
        return Outcome::WouldRemove;
    }
    match rmid(ty, id) {
        Ok(()) => {}
        Err(Errno::EINVAL | Errno::EIDRM) => return Outcome::Refused(Refusal::Gone),
        Err(errno) => {
            return Outcome::Refused(Refusal::Syscall {
                op: "IPC_RMID",
                errno,
            });
        }
    }
    let late_attach = match (ty, stat(ty, id)) {
        (
            IpcType::Shm,
            Ok(Some(Stat {
                body: StatBody::Shm { nattch, .. },
                ..
            })),
        ) if nattch > 0 => Some(nattch),
        _ => None,
    };
    Outcome::Removed { late_attach }
}

// ---------------------------------------------------------------------------------------------
// Records

/// One `reap-remove` / `reap-skip` record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub time_ns: u64,
    pub ns: u32,
    pub ty: IpcType,
    pub id: i32,
    pub key: Option<i32>,
    pub rule: Option<Rule>,
    pub dry_run: bool,
    /// `snapshot`, `watch` or `policy`.
    pub source: String,
    /// The policy rule that selected it (the daemon).
    pub policy: Option<String>,
    /// Why it leaked (removals) — the finding's description.
    pub why: String,
    pub outcome: Outcome,
    pub evidence: Vec<ProcessEvidence>,
    /// The state the decision was made on.
    pub baseline: Option<Stat>,
    /// A POSIX object (then `ty`, `id`, `key` and `baseline` are not used).
    pub posix: Option<PosixSubject>,
}

/// The POSIX object a reap record is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PosixSubject {
    pub object: crate::model::PosixRef,
    /// Its state the decision was made on.
    pub state: Option<crate::snapshot::PosixObject>,
}

impl Record {
    pub fn is_refusal(&self) -> bool {
        matches!(self.outcome, Outcome::Refused(_))
    }

    pub fn action(&self) -> &'static str {
        if self.is_refusal() {
            "reap-skip"
        } else {
            "reap-remove"
        }
    }

    /// What happened, in words (`event.reason`).
    pub fn reason(&self) -> String {
        match &self.outcome {
            Outcome::Removed { late_attach: None } => format!("removed: {}", self.why),
            Outcome::Removed {
                late_attach: Some(n),
            } => format!(
                "removed: {}; but {n} attachment(s) appeared between the recheck and the \
                 removal: the segment lives until they detach",
                self.why
            ),
            Outcome::WouldRemove => format!("would remove (dry run; --yes removes): {}", self.why),
            Outcome::Refused(r) => format!("refused: {r}"),
        }
    }

    pub fn code(&self) -> &'static str {
        match &self.outcome {
            Outcome::Removed { late_attach: None } => "removed",
            Outcome::Removed {
                late_attach: Some(_),
            } => "removed-late-attach",
            Outcome::WouldRemove => "would-remove",
            Outcome::Refused(r) => r.code(),
        }
    }

    /// The NDJSON line.
    pub fn to_json(&self) -> Value {
        let mut ts = String::new();
        clock::rfc3339_nanos(self.time_ns, &mut ts);
        let outcome = match self.outcome {
            Outcome::Removed { .. } => "success",
            Outcome::WouldRemove => "unknown",
            Outcome::Refused(_) => "failure",
        };
        let evidence: Vec<Value> = self
            .evidence
            .iter()
            .map(|e| json!({"pid": e.pid, "name": e.name, "alive": e.alive, "role": e.role}))
            .collect();
        let mut v = json!({
            "@timestamp": ts,
            "event": {
                "kind": "event",
                "action": self.action(),
                "outcome": outcome,
                "reason": self.reason(),
            },
            "ipc": {
                "type": self.ty,
                "id": self.id,
                "namespace": self.ns,
            },
            "ipcaudit": {"reap": {
                "dry_run": self.dry_run,
                "code": self.code(),
                "source": self.source,
                "evidence": evidence,
            }},
        });
        if let Some(k) = self.key {
            v["ipc"]["key"] = format!("0x{k:08x}").into();
        }
        if let Some(rule) = self.rule {
            v["rule"] = json!({"name": rule.as_str()});
        }
        if let Some(p) = &self.policy {
            v["ipcaudit"]["reap"]["policy"] = p.clone().into();
        }
        if let Some(b) = &self.baseline {
            v["ipcaudit"]["reap"]["object"] = serde_json::to_value(b).unwrap_or(Value::Null);
        }
        if let Some(p) = &self.posix {
            v["ipc"] = crate::reap_posix::ipc_json(&p.object);
            match &p.state {
                Some(st) => {
                    v["ipcaudit"]["reap"]["object"] =
                        serde_json::to_value(st).unwrap_or(Value::Null);
                }
                None => {
                    if let Some(o) = v["ipcaudit"]["reap"].as_object_mut() {
                        o.remove("object");
                    }
                }
            }
        }
        v
    }

    /// One line for people.
    pub fn to_text(&self) -> String {
        if let Some(p) = &self.posix {
            return format!(
                "{:<11} {} {:<21} {}",
                self.action(),
                p.object.ty,
                p.object.name,
                self.reason()
            );
        }
        format!(
            "{:<11} {} {:>10} {:<10} {}",
            self.action(),
            self.ty,
            self.id,
            self.key
                .map_or_else(|| "-".to_owned(), |k| format!("0x{k:08x}")),
            self.reason()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The command

/// What `reap` could not do.
#[derive(Debug, thiserror::Error)]
pub enum ReapError {
    #[error(transparent)]
    Leaks(#[from] LeaksError),
    #[error(transparent)]
    Namespace(#[from] NsError),
    #[error("--name: {0}")]
    Name(String),
    #[error("cannot open the log {path}: {source}")]
    Log {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Exit code when something was refused.
pub const EXIT_REFUSED: u8 = 3;

/// Plans, rechecks and (with `yes`) removes in one namespace; runs there.
fn reap_here(
    scene_findings: Option<&[Finding]>,
    sel: Option<&Selection>,
    posix: Option<&PosixSelection>,
    opts: CheckOptions,
    dry_run: bool,
    source: &str,
    posix_grace_secs: u64,
) -> Result<Vec<Record>, LeaksError> {
    let scene = Scene::read()?;
    let judged;
    let findings = if let Some(f) = scene_findings {
        f
    } else {
        judged = leaks::judge_all(&scene, posix_grace_secs);
        &judged
    };
    let mut records = Vec::new();
    let sysv = match sel {
        Some(sel) => plan(&scene, findings, sel, opts),
        None => Vec::new(),
    };
    for planned in sysv {
        let record = match planned {
            Planned::Remove(c) => {
                let outcome = execute(&c, opts, dry_run);
                Record {
                    time_ns: clock::now_wall_ns(),
                    ns: c.ns,
                    ty: c.baseline.ty,
                    id: c.baseline.id,
                    key: Some(c.baseline.key),
                    rule: Some(c.rule),
                    dry_run,
                    source: source.to_owned(),
                    policy: None,
                    why: c.why,
                    outcome,
                    evidence: c.evidence,
                    baseline: Some(c.baseline),
                    posix: None,
                }
            }
            Planned::Skip {
                ns,
                ty,
                id,
                key,
                rule,
                refusal,
            } => Record {
                time_ns: clock::now_wall_ns(),
                ns,
                ty,
                id,
                key,
                rule,
                dry_run,
                source: source.to_owned(),
                policy: None,
                why: String::new(),
                outcome: Outcome::Refused(refusal),
                evidence: Vec::new(),
                baseline: Stat::find(&scene, ty, id),
                posix: None,
            },
        };
        records.push(record);
    }
    let Some(psel) = posix else {
        return Ok(records);
    };
    for planned in crate::reap_posix::plan(&scene, findings, psel, opts) {
        let (rule, object, state, why, outcome, evidence) = match planned {
            crate::reap_posix::Planned::Remove(c) => {
                let outcome = crate::reap_posix::execute(&c, opts, dry_run);
                (
                    Some(c.rule),
                    c.object,
                    Some(c.baseline),
                    c.why,
                    outcome,
                    c.evidence,
                )
            }
            crate::reap_posix::Planned::Skip {
                object,
                state,
                rule,
                refusal,
            } => (
                rule,
                object,
                state,
                String::new(),
                Outcome::Refused(refusal),
                Vec::new(),
            ),
        };
        records.push(Record {
            time_ns: clock::now_wall_ns(),
            ns: object.ns,
            ty: IpcType::Shm,
            id: 0,
            key: None,
            rule,
            dry_run,
            source: source.to_owned(),
            policy: None,
            why,
            outcome,
            evidence,
            baseline: None,
            posix: Some(PosixSubject { object, state }),
        });
    }
    Ok(records)
}

/// `ipcaudit reap`.
pub fn run(args: &crate::cli::ReapArgs) -> Result<ExitCode, ReapError> {
    use crate::event::ObjectType;
    // System V objects unless only POSIX types or names were asked for; POSIX objects unless
    // only System V types, ids or keys were.
    let by_id = !args.ids.is_empty() || !args.keys.is_empty();
    let sysv_types = ObjectType::sysv(&args.types);
    let posix_types = ObjectType::posix(&args.types);
    for name in &args.names {
        let types = if posix_types.is_empty() {
            crate::event::PosixType::ALL.to_vec()
        } else {
            posix_types.clone()
        };
        if types
            .iter()
            .all(|t| crate::snapshot::parse::posix_file_name(*t, name).is_err())
        {
            let why = crate::snapshot::parse::posix_file_name(types[0], name)
                .err()
                .unwrap_or_default();
            return Err(ReapError::Name(why));
        }
    }
    let sel = (!sysv_types.is_empty() && (args.names.is_empty() || by_id)).then(|| Selection {
        types: sysv_types,
        ids: args.ids.clone(),
        keys: args.keys.clone(),
        uids: args.uids.clone(),
        comms: args.comms.clone(),
    });
    let posix_sel =
        (!posix_types.is_empty() && (!by_id || !args.names.is_empty())).then(|| PosixSelection {
            types: posix_types,
            names: args.names.clone(),
            uids: args.uids.clone(),
            comms: args.comms.clone(),
        });
    let opts = CheckOptions {
        older_than_secs: args.older_than.as_secs(),
        force_waiters: args.force_waiters,
    };
    let dry_run = !args.yes;
    // The daemon's exact findings when it answers (and no namespace was named).
    let (source, daemon) = if args.snapshot || args.namespace.is_some() {
        (
            Source::Snapshot {
                why: "asked for".to_owned(),
            },
            None,
        )
    } else {
        match leaks::ask_daemon(&args.socket) {
            Ok(f) => (Source::Watch(args.socket.clone()), Some(f)),
            Err(why) => (Source::Snapshot { why }, None),
        }
    };
    let (mut targets, mut notes) = ls::targets(args.namespace)?;
    if let Some(findings) = &daemon {
        // Findings in other namespaces are rechecked and removed there.
        let own = targets.first().map(|t| t.inode);
        let others: Vec<u32> = findings
            .iter()
            .filter_map(|f| f.object.map(|o| o.ns))
            .filter(|ns| Some(*ns) != own)
            .collect();
        if !others.is_empty() {
            let (all, more) = ls::targets(Some(NamespaceSel::All))?;
            targets.extend(all.into_iter().filter(|t| others.contains(&t.inode)));
            notes.extend(more);
        }
    }
    let mut writer = match &args.log {
        Some(path) => Some(
            crate::sink::LineWriter::open(&crate::sink::Destination::File(path.clone())).map_err(
                |source| ReapError::Log {
                    path: path.clone(),
                    source,
                },
            )?,
        ),
        None => None,
    };
    eprintln!("ipcaudit: reap: {}", source.header());
    for note in &notes {
        eprintln!("ipcaudit: note: {note}");
    }
    let session = crate::sink::Session::from_system();
    let (mut removed, mut refused, mut would) = (0u32, 0u32, 0u32);
    for target in &targets {
        let records = match ls::run_in(target, || {
            reap_here(
                daemon.as_deref(),
                sel.as_ref(),
                posix_sel.as_ref(),
                opts,
                dry_run,
                source.name(),
                args.grace.as_secs(),
            )
        }) {
            Ok(r) => r?,
            Err(e) => {
                if args.namespace == Some(NamespaceSel::All) || daemon.is_some() {
                    eprintln!("ipcaudit: note: {e}");
                    continue;
                }
                return Err(e.into());
            }
        };
        for r in records {
            match r.outcome {
                Outcome::Removed { .. } => removed += 1,
                Outcome::WouldRemove => would += 1,
                Outcome::Refused(_) => refused += 1,
            }
            let mut record = r.to_json();
            crate::sink::json::stamp(&session, &mut record);
            let line = record.to_string();
            match writer.as_mut() {
                Some(w) => {
                    w.line(&line);
                    println!("{}", r.to_text());
                }
                None => println!("{line}"),
            }
        }
    }
    if dry_run {
        eprintln!(
            "ipcaudit: reap: dry run: {would} would be removed, {refused} refused; --yes removes"
        );
    } else {
        eprintln!("ipcaudit: reap: {removed} removed, {refused} refused");
    }
    Ok(if refused > 0 {
        ExitCode::from(EXIT_REFUSED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Rechecks and removes one object named by the daemon's model, in its namespace (the reaping
/// daemon's path). `expect` is the model's identity of the object; the fresh state is the
/// baseline.
pub fn reap_live(
    target: &NsTarget,
    finding: &Finding,
    expect: &crate::model::ObjectRef,
    opts: CheckOptions,
) -> (Outcome, Option<Stat>) {
    let run = || -> (Outcome, Option<Stat>) {
        let fresh = match stat(expect.ty, expect.id) {
            Ok(Some(s)) => s,
            Ok(None) => return (Outcome::Refused(Refusal::Gone), None),
            Err(errno) => {
                return (
                    Outcome::Refused(Refusal::Syscall {
                        op: "IPC_STAT",
                        errno,
                    }),
                    None,
                );
            }
        };
        if fresh.ty == IpcType::Shm && fresh.mode & SHM_DEST != 0 {
            return (Outcome::Refused(Refusal::Removed), Some(fresh));
        }
        if let Some(r) = mismatch(expect, &fresh) {
            return (Outcome::Refused(r), Some(fresh));
        }
        let c = Candidate {
            ns: expect.ns,
            rule: finding.rule,
            baseline: fresh.clone(),
            evidence: finding.evidence.clone(),
            why: finding.description.clone(),
        };
        (execute(&c, opts, false), Some(fresh))
    };
    match ls::run_in(target, run) {
        Ok(r) => r,
        Err(e) => (
            Outcome::Refused(Refusal::Namespace { why: e.to_string() }),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ProcessKey;
    use crate::snapshot::{IpcPerm, ProcessInfo, Snapshot};

    const BOOT_S: u64 = 1_000_000;
    const NS: u64 = 1_000_000_000;

    fn procs(list: &[(u32, u64, char)]) -> Procs {
        Procs::new(
            list.iter().map(|&(pid, started, state)| ProcessInfo {
                key: ProcessKey {
                    pid,
                    start_ticks: (started - BOOT_S) * 100,
                },
                ppid: 1,
                comm: format!("p{pid}"),
                uid: 0,
                state,
                ipc_ns: 7,
            }),
            BOOT_S * NS,
            100,
        )
    }

    fn perm(id: i32) -> IpcPerm {
        IpcPerm {
            key: 0,
            id,
            mode: 0o600,
            uid: 1000,
            gid: 1000,
            cuid: 1000,
            cgid: 1000,
        }
    }

    /// A leaked segment: creator 13 gone, last used at t = 1,000,200.
    fn leaked_seg(id: i32) -> ShmSegment {
        ShmSegment {
            perm: perm(id),
            size: 4096,
            cpid: 13,
            lpid: 13,
            nattch: 0,
            atime: 1_000_100,
            dtime: 1_000_200,
            ctime: 1_000_050,
            rss: 0,
            swap: 0,
        }
    }

    fn scene_with(shm: Vec<ShmSegment>, p: &[(u32, u64, char)]) -> Scene {
        let snap = Snapshot {
            ipc_ns: 7,
            taken_ns: 1_001_000 * NS,
            shm,
            ..Snapshot::default()
        };
        let mut s = Scene::new(snap, BOOT_S * NS, 100);
        s.procs = procs(p);
        s
    }

    fn candidate(seg: &ShmSegment) -> Candidate {
        Candidate {
            ns: 7,
            rule: Rule::OrphanedSegment,
            baseline: Stat::from_shm(seg),
            evidence: Vec::new(),
            why: "leaked".into(),
        }
    }

    const NOW: i64 = 1_001_000;

    #[test]
    fn durations_and_keys_parse() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_mins(10)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_mins(90)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_hours(48)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "m", "10x", "1.5h", "-3s", "h10"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(parse_key("0x1234"), Ok(0x1234));
        assert_eq!(parse_key("0xffffffff"), Ok(-1));
        assert_eq!(parse_key("4660"), Ok(4660));
        assert!(parse_key("0").unwrap_err().contains("IPC_PRIVATE"));
        assert!(parse_key("0x0").is_err());
        assert!(parse_key("0xzz").is_err());
    }

    #[test]
    fn a_leaked_segment_passes_the_recheck() {
        let seg = leaked_seg(5);
        let c = candidate(&seg);
        let now = Stat::from_shm(&seg);
        assert_eq!(
            check(
                &c,
                Some(&now),
                &procs(&[]),
                &[],
                NOW,
                CheckOptions::default()
            ),
            Ok(())
        );
    }

    #[test]
    fn an_id_removed_and_recreated_between_plan_and_act_is_never_removed() {
        let seg = leaked_seg(5);
        let c = candidate(&seg);
        let p = procs(&[]);
        let opts = CheckOptions::default();
        // Gone.
        assert_eq!(check(&c, None, &p, &[], NOW, opts), Err(Refusal::Gone));
        // Re-created under the same id: a new ctime...
        let mut again = seg.clone();
        again.ctime = 1_000_900;
        again.atime = 0;
        again.dtime = 0;
        let r = check(&c, Some(&Stat::from_shm(&again)), &p, &[], NOW, opts).unwrap_err();
        assert_eq!(r.code(), "replaced");
        assert!(r.to_string().contains("ctime"), "{r}");
        // ...or in the same second, by another process...
        let mut same_second = seg.clone();
        same_second.cpid = 14;
        let r = check(&c, Some(&Stat::from_shm(&same_second)), &p, &[], NOW, opts).unwrap_err();
        assert_eq!(
            r,
            Refusal::Replaced {
                field: "cpid",
                was: "13".into(),
                now: "14".into()
            }
        );
        // ...or with another key, size or owner.
        for change in [
            |s: &mut ShmSegment| s.perm.key = 0x77,
            |s: &mut ShmSegment| s.size = 8192,
            |s: &mut ShmSegment| s.perm.cuid = 0,
        ] {
            let mut other = seg.clone();
            change(&mut other);
            let r = check(&c, Some(&Stat::from_shm(&other)), &p, &[], NOW, opts).unwrap_err();
            assert_eq!(r.code(), "replaced", "{r}");
        }
        // A semaphore set where a queue was: another object.
        let q = MsgQueue {
            perm: perm(5),
            cbytes: 0,
            qnum: 0,
            lspid: 0,
            lrpid: 0,
            stime: 0,
            rtime: 0,
            ctime: seg.ctime,
        };
        let r = check(&c, Some(&Stat::from_msg(&q)), &p, &[], NOW, opts).unwrap_err();
        assert_eq!(r.code(), "replaced");
    }

    #[test]
    fn a_segment_attached_between_plan_and_act_is_never_removed() {
        let seg = leaked_seg(5);
        let c = candidate(&seg);
        let opts = CheckOptions::default();
        // Attached now by a live process (pid 20, started long ago).
        let mut attached = seg.clone();
        attached.nattch = 1;
        attached.lpid = 20;
        attached.atime = 1_000_950;
        let p = procs(&[(20, 1_000_000, 'S')]);
        let r = check(&c, Some(&Stat::from_shm(&attached)), &p, &[], NOW, opts).unwrap_err();
        assert_eq!(r.code(), "used-since-plan", "{r}");
        // Attached and detached again since the plan: used.
        let mut touched = seg.clone();
        touched.lpid = 20;
        touched.atime = 1_000_950;
        touched.dtime = 1_000_960;
        let r = check(&c, Some(&Stat::from_shm(&touched)), &p, &[], NOW, opts).unwrap_err();
        assert_eq!(r.code(), "used-since-plan");
        // Without a plan to compare with (the daemon's path: baseline = fresh), the fresh
        // state alone refuses.
        let fresh = Stat::from_shm(&attached);
        let c2 = Candidate {
            baseline: fresh.clone(),
            ..c.clone()
        };
        assert_eq!(
            check(&c2, Some(&fresh), &p, &[], NOW, opts),
            Err(Refusal::Attached { nattch: 1 })
        );
        // Removed meanwhile (SHM_DEST): refused, whatever else.
        let mut dest = seg.clone();
        dest.perm.mode |= SHM_DEST;
        dest.perm.key = 0;
        assert_eq!(
            check(&c, Some(&Stat::from_shm(&dest)), &p, &[], NOW, opts),
            Err(Refusal::Removed)
        );
    }

    #[test]
    fn live_creators_users_and_young_objects_are_refused() {
        let seg = leaked_seg(5);
        let c = candidate(&seg);
        let now = Stat::from_shm(&seg);
        let opts = CheckOptions::default();
        // The creator's pid is alive and started before the creation: alive.
        let p = procs(&[(13, 1_000_000, 'S')]);
        assert_eq!(
            check(&c, Some(&now), &p, &[], NOW, opts),
            Err(Refusal::Alive {
                pid: 13,
                role: Role::Creator
            })
        );
        // A zombie, or a live process that took the pid later: dead.
        for p in [
            procs(&[(13, 1_000_000, 'Z')]),
            procs(&[(13, 1_000_800, 'S')]),
        ] {
            assert_eq!(check(&c, Some(&now), &p, &[], NOW, opts), Ok(()));
        }
        // Evidence by entity: alive only if the same process (pid and start time).
        let mut with_user = c.clone();
        let live = procs(&[(30, 1_000_000, 'S')]);
        let key = ProcessKey {
            pid: 30,
            start_ticks: 0,
        };
        with_user.evidence = vec![ProcessEvidence {
            pid: 30,
            name: "u".into(),
            entity: Some(key),
            alive: false,
            role: Role::Attacher,
            details: std::sync::Arc::default(),
            call_site: None,
        }];
        assert_eq!(
            check(&with_user, Some(&now), &live, &[], NOW, opts),
            Err(Refusal::Alive {
                pid: 30,
                role: Role::Attacher
            })
        );
        with_user.evidence[0].entity = Some(ProcessKey {
            pid: 30,
            start_ticks: 1,
        });
        assert_eq!(check(&with_user, Some(&now), &live, &[], NOW, opts), Ok(()));
        // Waiters in the evidence do not count as users.
        with_user.evidence[0].role = Role::Waiter;
        with_user.evidence[0].entity = Some(key);
        assert_eq!(check(&with_user, Some(&now), &live, &[], NOW, opts), Ok(()));
        // Idle 800 s: older than 600 s passes, 900 s refuses.
        let young = CheckOptions {
            older_than_secs: 900,
            ..opts
        };
        assert_eq!(
            check(&c, Some(&now), &procs(&[]), &[], NOW, young),
            Err(Refusal::TooYoung {
                idle_secs: 800,
                need_secs: 900
            })
        );
        let old = CheckOptions {
            older_than_secs: 600,
            ..opts
        };
        assert_eq!(check(&c, Some(&now), &procs(&[]), &[], NOW, old), Ok(()));
        // cpid 0 with no creator evidence: unknown, refused.
        let mut unknown = seg.clone();
        unknown.cpid = 0;
        let cu = candidate(&unknown);
        assert_eq!(
            check(
                &cu,
                Some(&Stat::from_shm(&unknown)),
                &procs(&[]),
                &[],
                NOW,
                opts
            ),
            Err(Refusal::CreatorUnknown)
        );
    }

    fn sem_set(id: i32) -> SemSet {
        SemSet {
            perm: perm(id),
            nsems: 1,
            otime: 1_000_100,
            ctime: 1_000_050,
        }
    }

    #[test]
    fn semaphore_waiters_need_force_and_queue_waiters_always_refuse() {
        let values = [SemValue {
            value: 0,
            ncnt: 1,
            zcnt: 0,
            pid: 13,
        }];
        let stat = Stat::from_sem(&sem_set(3), Some(&values));
        let cand = Candidate {
            ns: 7,
            rule: Rule::SemaphoreHeldByDeadProcess,
            baseline: stat.clone(),
            evidence: Vec::new(),
            why: String::new(),
        };
        let none = procs(&[]);
        let refusal =
            check(&cand, Some(&stat), &none, &[], NOW, CheckOptions::default()).unwrap_err();
        assert_eq!(refusal.code(), "waiters");
        assert!(refusal.to_string().contains("--force-waiters"), "{refusal}");
        let force = CheckOptions {
            force_waiters: true,
            ..CheckOptions::default()
        };
        assert_eq!(check(&cand, Some(&stat), &none, &[], NOW, force), Ok(()));
        // A value changed since the plan: used.
        let moved = [SemValue {
            value: 1,
            ..values[0]
        }];
        let refusal = check(
            &cand,
            Some(&Stat::from_sem(&sem_set(3), Some(&moved))),
            &none,
            &[],
            NOW,
            force,
        )
        .unwrap_err();
        assert_eq!(refusal.code(), "used-since-plan");
        // Values not readable: refused.
        let blind = Stat::from_sem(&sem_set(3), None);
        let cb = Candidate {
            baseline: blind.clone(),
            ..cand.clone()
        };
        assert_eq!(
            check(&cb, Some(&blind), &none, &[], NOW, force),
            Err(Refusal::Unreadable)
        );

        let queue = MsgQueue {
            perm: perm(4),
            cbytes: 16,
            qnum: 1,
            lspid: 13,
            lrpid: 0,
            stime: 1_000_100,
            rtime: 0,
            ctime: 1_000_050,
        };
        let qs = Stat::from_msg(&queue);
        let cq = Candidate {
            rule: Rule::StalledQueue,
            baseline: qs.clone(),
            ..cand
        };
        let w = [Waiter {
            pid: 40,
            tid: 40,
            on: Blocked::MsgRcv { msqid: 4 },
        }];
        assert_eq!(
            check(&cq, Some(&qs), &none, &w, NOW, force),
            Err(Refusal::Waiters {
                count: 1,
                forceable: false
            })
        );
        assert_eq!(check(&cq, Some(&qs), &none, &[], NOW, force), Ok(()));
        // A message sent since the plan: used.
        let mut sent = queue.clone();
        sent.qnum = 2;
        sent.stime = 1_000_990;
        let refusal = check(&cq, Some(&Stat::from_msg(&sent)), &none, &[], NOW, force).unwrap_err();
        assert_eq!(refusal.code(), "used-since-plan");
    }

    #[test]
    fn the_plan_selects_refuses_and_names_explicit_objects() {
        let mut live = leaked_seg(6);
        live.cpid = 20;
        live.lpid = 20;
        live.nattch = 1;
        let scene = scene_with(vec![leaked_seg(5), live], &[(20, 1_000_000, 'S')]);
        let findings = leaks::judge(&scene);
        assert_eq!(findings.len(), 1);
        let all = plan(
            &scene,
            &findings,
            &Selection::default(),
            CheckOptions::default(),
        );
        assert!(
            matches!(&all[..], [Planned::Remove(c)] if c.baseline.id == 5 && c.rule == Rule::OrphanedSegment)
        );

        // Type and uid filters.
        let sem_only = Selection {
            types: vec![IpcType::Sem],
            ..Selection::default()
        };
        assert!(plan(&scene, &findings, &sem_only, CheckOptions::default()).is_empty());
        let other_uid = Selection {
            uids: vec![0],
            ..Selection::default()
        };
        assert!(plan(&scene, &findings, &other_uid, CheckOptions::default()).is_empty());
        // --comm: the creator is gone, its name unknown: not selected.
        let comm = Selection {
            comms: vec!["p13".into()],
            ..Selection::default()
        };
        assert!(plan(&scene, &findings, &comm, CheckOptions::default()).is_empty());

        // Explicit ids: the live one is refused with the reason, an unknown id is gone.
        let ids = Selection {
            ids: vec![5, 6, 99],
            ..Selection::default()
        };
        let p = plan(&scene, &findings, &ids, CheckOptions::default());
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(matches!(&p[0], Planned::Remove(c) if c.baseline.id == 5));
        match &p[1] {
            Planned::Skip {
                id: 6,
                refusal: Refusal::NotLeaked { why },
                rule: None,
                ..
            } => {
                assert!(why.contains("attached"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &p[2],
            Planned::Skip {
                id: 99,
                refusal: Refusal::Gone,
                ..
            }
        ));

        // Too young: the candidate becomes a refusal.
        let young = CheckOptions {
            older_than_secs: 3600,
            ..CheckOptions::default()
        };
        let p = plan(&scene, &findings, &Selection::default(), young);
        assert!(matches!(
            &p[0],
            Planned::Skip {
                refusal: Refusal::TooYoung { .. },
                ..
            }
        ));

        // A finding whose object is not the one under the id now (another key): refused.
        let mut stale = findings[0].clone();
        if let Some(o) = stale.object.as_mut() {
            o.key = Some(0x55);
        }
        let p = plan(
            &scene,
            &[stale],
            &Selection::default(),
            CheckOptions::default(),
        );
        assert!(matches!(
            &p[0],
            Planned::Skip {
                refusal: Refusal::Replaced { field: "key", .. },
                ..
            }
        ));

        // A finding from another namespace is not this scene's.
        let mut elsewhere = findings[0].clone();
        if let Some(o) = elsewhere.object.as_mut() {
            o.ns = 8;
        }
        assert!(
            plan(
                &scene,
                &[elsewhere],
                &Selection::default(),
                CheckOptions::default()
            )
            .is_empty()
        );

        // Keys: private objects are never selected by key.
        let mut keyed = leaked_seg(7);
        keyed.perm.key = 0x4242;
        let scene = scene_with(vec![leaked_seg(5), keyed], &[]);
        let findings = leaks::judge(&scene);
        let by_key = Selection {
            keys: vec![0x4242],
            ..Selection::default()
        };
        let p = plan(&scene, &findings, &by_key, CheckOptions::default());
        assert!(
            matches!(&p[..], [Planned::Remove(c)] if c.baseline.id == 7),
            "{p:?}"
        );
    }

    #[test]
    fn records_say_what_happened() {
        let seg = leaked_seg(5);
        let mut r = Record {
            time_ns: 1_700_000_000 * NS,
            ns: 7,
            ty: IpcType::Shm,
            id: 5,
            key: Some(0),
            rule: Some(Rule::OrphanedSegment),
            dry_run: false,
            source: "snapshot".into(),
            policy: None,
            why: "leaked".into(),
            outcome: Outcome::Removed { late_attach: None },
            evidence: Vec::new(),
            baseline: Some(Stat::from_shm(&seg)),
            posix: None,
        };
        let v = r.to_json();
        assert_eq!(v["event"]["action"], "reap-remove");
        assert_eq!(v["event"]["outcome"], "success");
        assert_eq!(v["rule"]["name"], "orphaned-segment");
        assert_eq!(v["ipc"]["key"], "0x00000000");
        assert_eq!(v["ipcaudit"]["reap"]["code"], "removed");
        assert_eq!(v["ipcaudit"]["reap"]["object"]["shm"]["cpid"], 13);
        assert!(!r.is_refusal());
        r.outcome = Outcome::Refused(Refusal::Attached { nattch: 2 });
        let v = r.to_json();
        assert_eq!(v["event"]["action"], "reap-skip");
        assert_eq!(v["event"]["outcome"], "failure");
        assert_eq!(v["ipcaudit"]["reap"]["code"], "attached");
        assert!(
            v["event"]["reason"]
                .as_str()
                .unwrap()
                .contains("2 attachment")
        );
        assert!(r.to_text().starts_with("reap-skip"));
        r.outcome = Outcome::WouldRemove;
        r.dry_run = true;
        assert_eq!(r.to_json()["event"]["outcome"], "unknown");
        assert_eq!(r.code(), "would-remove");
        r.outcome = Outcome::Removed {
            late_attach: Some(1),
        };
        assert!(r.reason().contains("lives until they detach"));
    }
}
