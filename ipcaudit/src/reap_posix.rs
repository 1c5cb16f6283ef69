//! `ipcaudit reap` for POSIX objects: unlinks the files of leaked shared memory objects, named
//! semaphores and message queues, and never one that is held.
//!
//! The same three steps as for System V ([`crate::reap`]):
//!
//! 1. **plan** ([`plan`], pure): the findings on POSIX objects of this namespace (a running
//!    `watch`'s, or [`crate::leaks::judge_posix`]'s on a snapshot) and the snapshot →
//!    candidates with the object's state as the snapshot showed it (its *baseline*), or
//!    refusals;
//! 2. **recheck** ([`check`], pure, fed by [`execute`] immediately before the unlink): the name
//!    must still be the same file (device and inode), unchanged since the plan (size, mtime,
//!    ctime, mode, owner), and **no process may map it or hold a descriptor of it** — every
//!    process of the system is scanned for it (/proc/PID/maps and /proc/PID/fd, any namespace);
//!    it must have been unchanged for `--older-than`; a process that cannot be inspected (no
//!    permission) makes it unknown whether someone holds it: refused (a process that cannot be
//!    inspected even with CAP_SYS_PTRACE belongs to another security domain, such as a
//!    sandbox's init: it is taken to hold nothing, and a warning names it);
//! 3. **act**: `unlinkat` on a descriptor of /dev/shm or of the mqueue filesystem, right after
//!    a last `fstatat(AT_SYMLINK_NOFOLLOW)` shows the name still is that file. Only names
//!    directly in those directories are touched, a symlink is never followed, and nothing
//!    that is not a regular file is removed.
//!
//! A queue with messages that live processes hold (`stalled-posix-queue`) is therefore never
//! unlinked: someone holds it.
//!
//! What the recheck cannot rule out: a process that opens the object in the microseconds
//! between the scan and the unlink. It keeps a working descriptor (an unlinked file lives on
//! while open); only later opens by name fail or create a new object.

use serde_json::{Value, json};

use crate::clock;
use crate::event::PosixType;
use crate::leaks::{self, Scene};
use crate::model::{Finding, PosixRef, ProcessEvidence, Role, Rule};
use crate::reap::{CheckOptions, Outcome, Refusal};
use crate::snapshot::parse::posix_file_name;
use crate::snapshot::posix::{self as dir, UnlinkError};
use crate::snapshot::read::{self, PosixTargets};
use crate::snapshot::{PosixHolder, PosixObject};

/// Which POSIX objects to consider.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PosixSelection {
    /// Types (empty: all three).
    pub types: Vec<PosixType>,
    /// Names (`/NAME`; empty: any).
    pub names: Vec<String>,
    pub uids: Vec<u32>,
    /// Creator names: POSIX creators are not known, so a selection by creator selects none.
    pub comms: Vec<String>,
}

impl PosixSelection {
    fn selects(&self, o: &PosixObject) -> bool {
        (self.types.is_empty() || self.types.contains(&o.ty))
            && (self.names.is_empty() || self.names.iter().any(|n| same_name(n, &o.name)))
            && (self.uids.is_empty() || self.uids.contains(&o.uid))
            && self.comms.is_empty()
    }

    /// Objects were named explicitly: those get a record even when they are not leaked.
    fn explicit(&self) -> bool {
        !self.names.is_empty()
    }
}

/// `/x` and `x` name the same object.
fn same_name(a: &str, b: &str) -> bool {
    a.trim_start_matches('/') == b.trim_start_matches('/')
}

/// The rules whose remedy is the unlink.
pub fn reapable(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::OrphanedPosixShm
            | Rule::OrphanedPosixSemaphore
            | Rule::OrphanedPosixQueue
            | Rule::StalledPosixQueue
    )
}

/// An unlink the plan proposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub rule: Rule,
    pub object: PosixRef,
    /// The object as the plan saw it.
    pub baseline: PosixObject,
    pub evidence: Vec<ProcessEvidence>,
    pub why: String,
}

/// What the plan says about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Planned {
    Remove(Candidate),
    Skip {
        object: PosixRef,
        state: Option<PosixObject>,
        rule: Option<Rule>,
        refusal: Refusal,
    },
}

/// The decision (pure): may `c` be unlinked, given the object's state `now` (None: no file has
/// the name), the processes holding it now and the time (seconds)?
pub fn check(
    c: &Candidate,
    now: Option<&PosixObject>,
    holders: &[&PosixHolder],
    now_secs: i64,
    opts: CheckOptions,
) -> Result<(), Refusal> {
    let Some(now) = now else {
        return Err(Refusal::Gone);
    };
    let was = &c.baseline;
    let differs = |field: &'static str, a: String, b: String| (a != b).then_some((field, a, b));
    let identity = differs("type", was.ty.to_string(), now.ty.to_string())
        .or_else(|| differs("dev", was.dev.to_string(), now.dev.to_string()))
        .or_else(|| differs("inode", was.ino.to_string(), now.ino.to_string()));
    if let Some((field, was, now)) = identity {
        return Err(Refusal::Replaced { field, was, now });
    }
    // A queue's ctime moves when its file is read (as the plan and this recheck do).
    let ctime = |o: &PosixObject| {
        if o.ty == PosixType::Pmsg {
            String::new()
        } else {
            o.ctime.to_string()
        }
    };
    let used = differs("mtime", was.mtime.to_string(), now.mtime.to_string())
        .or_else(|| differs("ctime", ctime(was), ctime(now)))
        .or_else(|| differs("size", was.size.to_string(), now.size.to_string()))
        .or_else(|| {
            differs(
                "mode",
                format!("{:04o}", was.mode),
                format!("{:04o}", now.mode),
            )
        })
        .or_else(|| differs("uid", was.uid.to_string(), now.uid.to_string()))
        .or_else(|| {
            let messages = |o: &PosixObject| o.queue.map_or(0, |q| q.messages).to_string();
            differs("messages", messages(was), messages(now))
        });
    if let Some((field, was, now)) = used {
        return Err(Refusal::Used { field, was, now });
    }
    if let Some(h) = holders.first() {
        return Err(Refusal::Alive {
            pid: h.process.pid,
            role: Role::Holder,
        });
    }
    let idle = u64::try_from(now_secs.saturating_sub(now.last_change())).unwrap_or(0);
    if idle < opts.older_than_secs {
        return Err(Refusal::TooYoung {
            idle_secs: idle,
            need_secs: opts.older_than_secs,
        });
    }
    Ok(())
}

/// The plan for one namespace's scene (pure): every reapable finding on a POSIX object of this
/// namespace that the selection selects becomes a candidate or a refusal, and every object
/// named by `--name` that no finding names a `not-leaked` refusal.
pub fn plan(
    scene: &Scene,
    findings: &[Finding],
    sel: &PosixSelection,
    opts: CheckOptions,
) -> Vec<Planned> {
    let snap = &scene.snap;
    let ns = snap.ipc_ns;
    let now_secs = scene.now_secs();
    let mut out = Vec::new();
    let mut named: Vec<(PosixType, String)> = Vec::new();
    let blind = (snap.posix_hidden > 0).then_some(Refusal::HoldersUnknown {
        hidden: snap.posix_hidden,
    });
    for f in findings.iter().filter(|f| reapable(f.rule)) {
        let Some(r) = f.posix.as_ref().filter(|r| r.ns == ns) else {
            continue;
        };
        if named.contains(&(r.ty, r.name.clone())) {
            continue;
        }
        // Only types the snapshot listed can be judged here.
        if !snap.posix_listed.contains(&r.ty) {
            continue;
        }
        let state = snap.posix.iter().find(|o| o.ty == r.ty && o.name == r.name);
        let skip = |refusal, state: Option<&PosixObject>| Planned::Skip {
            object: r.clone(),
            state: state.cloned(),
            rule: Some(f.rule),
            refusal,
        };
        let Some(o) = state else {
            if sel.names.iter().any(|n| same_name(n, &r.name)) {
                named.push((r.ty, r.name.clone()));
                out.push(skip(Refusal::Gone, None));
            }
            continue;
        };
        if !sel.selects(o) {
            continue;
        }
        named.push((r.ty, r.name.clone()));
        if r.ino != 0 && (r.dev, r.ino) != (o.dev, o.ino) {
            out.push(skip(
                Refusal::Replaced {
                    field: "inode",
                    was: r.ino.to_string(),
                    now: o.ino.to_string(),
                },
                Some(o),
            ));
            continue;
        }
        let c = Candidate {
            rule: f.rule,
            object: leaks::posix_ref(ns, o),
            baseline: o.clone(),
            evidence: f.evidence.clone(),
            why: f.description.clone(),
        };
        let holders = leaks::posix_holders_of(snap, o);
        match (check(&c, Some(o), &holders, now_secs, opts), &blind) {
            (Ok(()), Some(refusal)) => out.push(skip(refusal.clone(), Some(o))),
            (Ok(()), None) => out.push(Planned::Remove(c)),
            (Err(refusal), _) => out.push(skip(refusal, Some(o))),
        }
    }
    if sel.explicit() {
        for o in &snap.posix {
            if named.contains(&(o.ty, o.name.clone())) || !sel.selects(o) {
                continue;
            }
            named.push((o.ty, o.name.clone()));
            let holders = leaks::posix_holders_of(snap, o);
            if let Some(refusal) = &blind {
                out.push(Planned::Skip {
                    object: leaks::posix_ref(ns, o),
                    state: Some(o.clone()),
                    rule: None,
                    refusal: refusal.clone(),
                });
                continue;
            }
            let why = match holders.first() {
                Some(h) => format!(
                    "process {} ({}) maps it or holds it open",
                    h.process.pid, h.comm
                ),
                None => "no finding names it (it has not been unchanged and unheld for the \
                         grace period)"
                    .to_owned(),
            };
            out.push(Planned::Skip {
                object: leaks::posix_ref(ns, o),
                state: Some(o.clone()),
                rule: None,
                refusal: Refusal::NotLeaked { why },
            });
        }
        // Names asked for that no listed object has.
        for n in &sel.names {
            let types = if sel.types.is_empty() {
                PosixType::ALL.to_vec()
            } else {
                sel.types.clone()
            };
            let known = types.iter().any(|t| named.contains(&(*t, canonical(n))));
            if known {
                continue;
            }
            for t in types.into_iter().filter(|t| snap.posix_listed.contains(t)) {
                if posix_file_name(t, n).is_err() {
                    continue;
                }
                named.push((t, canonical(n)));
                out.push(Planned::Skip {
                    object: PosixRef {
                        ns,
                        ty: t,
                        name: canonical(n),
                        generation: 0,
                        dev: 0,
                        ino: 0,
                        size: None,
                    },
                    state: None,
                    rule: None,
                    refusal: Refusal::Gone,
                });
            }
        }
    }
    out
}

/// `/NAME` for `NAME` or `/NAME`.
fn canonical(name: &str) -> String {
    format!("/{}", name.trim_start_matches('/'))
}

/// Rechecks a candidate against the system now (the file through its directory's descriptor,
/// the holders by a scan of every process) and, unless `dry_run`, unlinks it. Must run in the
/// candidate's IPC namespace (for a queue).
pub fn execute(c: &Candidate, opts: CheckOptions, dry_run: bool) -> Outcome {
    let d = match dir::open_dir_of(c.object.ty) {
        Ok(d) => d,
        Err(why) => return Outcome::Refused(Refusal::Directory { why }),
    };
    let file = c.object.file_name();
    let now = match dir::read_entry(&d, file.as_bytes()) {
        Ok(now) => now,
        Err(e) => {
            return Outcome::Refused(Refusal::Syscall {
                op: "fstatat",
                errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            });
        }
    };
    let scan = now
        .as_ref()
        .map(|o| {
            read::read_posix_holders(&PosixTargets::one(o.dev, o.ino, o.ty != PosixType::Pmsg))
        })
        .unwrap_or_default();
    if scan.hidden > 0 {
        return Outcome::Refused(Refusal::HoldersUnknown {
            hidden: scan.hidden,
        });
    }
    if !scan.protected.is_empty() {
        log::warn!(
            "{}: protected process(es) {:?} could not be inspected even with CAP_SYS_PTRACE \
             (another security domain): taken to hold nothing",
            c.object.describe(),
            scan.protected
        );
    }
    let refs: Vec<&PosixHolder> = scan.holders.iter().collect();
    let now_secs = i64::try_from(clock::now_wall_ns() / 1_000_000_000).unwrap_or(i64::MAX);
    if let Err(refusal) = check(c, now.as_ref(), &refs, now_secs, opts) {
        return Outcome::Refused(refusal);
    }
    if dry_run {
        return Outcome::WouldRemove;
    }
    match dir::unlink_object(&d, &file, c.baseline.dev, c.baseline.ino) {
        Ok(()) => Outcome::Removed { late_attach: None },
        Err(UnlinkError::Gone) => Outcome::Refused(Refusal::Gone),
        Err(UnlinkError::Replaced { ino }) => Outcome::Refused(Refusal::Replaced {
            field: "inode",
            was: c.baseline.ino.to_string(),
            now: ino.to_string(),
        }),
        Err(UnlinkError::Failed { op, errno }) => Outcome::Refused(Refusal::Syscall { op, errno }),
    }
}

/// The `ipc` part of a reap record about a POSIX object.
pub fn ipc_json(r: &PosixRef) -> Value {
    let mut v = json!({
        "type": r.ty,
        "name": r.name,
        "path": r.path(),
        "namespace": r.ns,
    });
    if r.ino != 0 {
        v["inode"] = r.ino.into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ProcessKey;
    use crate::snapshot::{Hold, Snapshot};

    const NS_PER_SEC: u64 = 1_000_000_000;
    /// The scene is taken at 1,001,000 s.
    const NOW: i64 = 1_001_000;

    fn obj(ty: PosixType, name: &str, ino: u64, changed: i64) -> PosixObject {
        PosixObject {
            ty,
            name: name.into(),
            dev: 27,
            ino,
            mode: 0o600,
            uid: 1000,
            gid: 1000,
            size: 4096,
            memory: 4096,
            atime: changed,
            mtime: changed,
            ctime: changed,
            queue: None,
        }
    }

    fn holder(pid: u32, ino: u64) -> PosixHolder {
        PosixHolder {
            process: ProcessKey {
                pid,
                start_ticks: 5,
            },
            comm: "worker".into(),
            uid: 1000,
            ipc_ns: 7,
            dev: 27,
            ino,
            hold: Hold::Fd {
                fd: 3,
                read: true,
                write: true,
            },
        }
    }

    fn scene(objects: Vec<PosixObject>, holders: Vec<PosixHolder>) -> Scene {
        let snap = Snapshot {
            ipc_ns: 7,
            taken_ns: u64::try_from(NOW).unwrap() * NS_PER_SEC,
            posix: objects,
            posix_holders: holders,
            posix_listed: PosixType::ALL.to_vec(),
            ..Snapshot::default()
        };
        Scene::new(snap, 1_000_000 * NS_PER_SEC, 100)
    }

    fn names(planned: &[Planned]) -> Vec<(String, &'static str)> {
        planned
            .iter()
            .map(|p| match p {
                Planned::Remove(c) => (c.object.name.clone(), "remove"),
                Planned::Skip {
                    object, refusal, ..
                } => (object.name.clone(), refusal.code()),
            })
            .collect()
    }

    #[test]
    fn the_plan_removes_exactly_the_unheld_orphans() {
        let sc = scene(
            vec![
                obj(PosixType::Pshm, "/orphan", 1, NOW - 900),
                obj(PosixType::Pshm, "/held", 2, NOW - 900),
                obj(PosixType::Psem, "/lock", 3, NOW - 900),
                obj(PosixType::Pshm, "/other", 4, NOW - 900),
            ],
            vec![holder(10, 2)],
        );
        // The findings a watch reported before /held was opened again, and /lock's.
        let mut findings = crate::leaks::judge_posix(&sc, 60);
        findings.push(Finding {
            rule: Rule::OrphanedPosixShm,
            object: None,
            posix: Some(leaks::posix_ref(7, &sc.snap.posix[1])),
            severity: crate::model::Severity::Warning,
            description: "was orphaned".into(),
            evidence: Vec::new(),
            remedy: None,
            since_ns: 0,
            service: None,
        });
        let sel = PosixSelection {
            types: vec![PosixType::Pshm],
            ..PosixSelection::default()
        };
        let p = plan(&sc, &findings, &sel, CheckOptions::default());
        assert_eq!(
            names(&p),
            vec![
                ("/orphan".to_owned(), "remove"),
                ("/other".to_owned(), "remove"),
                ("/held".to_owned(), "user-alive"),
            ]
        );
        // By name: the named one only; a held one named is refused as not leaked.
        let sel = PosixSelection {
            names: vec!["orphan".into(), "/held".into(), "/nope".into()],
            ..PosixSelection::default()
        };
        let p = plan(
            &sc,
            &crate::leaks::judge_posix(&sc, 60),
            &sel,
            CheckOptions::default(),
        );
        let got = names(&p);
        assert!(got.contains(&("/orphan".to_owned(), "remove")), "{got:?}");
        assert!(got.contains(&("/held".to_owned(), "not-leaked")), "{got:?}");
        assert!(got.contains(&("/nope".to_owned(), "gone")), "{got:?}");
        assert!(
            !got.iter().any(|(n, _)| n == "/lock" || n == "/other"),
            "{got:?}"
        );
        // --older-than: idle 900 s is not enough for 1000 s.
        let p = plan(
            &sc,
            &crate::leaks::judge_posix(&sc, 60),
            &PosixSelection::default(),
            CheckOptions {
                older_than_secs: 1000,
                force_waiters: false,
            },
        );
        assert!(names(&p).iter().all(|(_, c)| *c == "too-young"), "{p:?}");
        // A selection by creator name selects nothing: POSIX creators are not known.
        let sel = PosixSelection {
            comms: vec!["worker".into()],
            ..PosixSelection::default()
        };
        assert!(
            plan(
                &sc,
                &crate::leaks::judge_posix(&sc, 60),
                &sel,
                CheckOptions::default()
            )
            .is_empty()
        );

        // Processes that could not be inspected: an orphan named is refused, not removed.
        let mut blind = sc.clone();
        blind.snap.posix_hidden = 2;
        let named = PosixSelection {
            names: vec!["/orphan".into()],
            ..PosixSelection::default()
        };
        let p = plan(&blind, &findings, &named, CheckOptions::default());
        assert_eq!(names(&p), vec![("/orphan".to_owned(), "holders-unknown")]);
    }

    #[test]
    fn the_recheck_refuses_a_replaced_used_or_held_object() {
        let base = obj(PosixType::Pshm, "/x", 1, NOW - 900);
        let c = Candidate {
            rule: Rule::OrphanedPosixShm,
            object: leaks::posix_ref(7, &base),
            baseline: base.clone(),
            evidence: Vec::new(),
            why: "orphaned".into(),
        };
        let opts = CheckOptions::default();
        assert_eq!(check(&c, Some(&base), &[], NOW, opts), Ok(()));
        assert_eq!(check(&c, None, &[], NOW, opts), Err(Refusal::Gone));
        let mut other = base.clone();
        other.ino = 2;
        assert!(matches!(
            check(&c, Some(&other), &[], NOW, opts),
            Err(Refusal::Replaced { field: "inode", .. })
        ));
        let mut written = base.clone();
        written.mtime += 1;
        assert!(matches!(
            check(&c, Some(&written), &[], NOW, opts),
            Err(Refusal::Used { field: "mtime", .. })
        ));
        // A queue's ctime moves whenever its file is read (the plan and the recheck read it).
        let mut q = obj(PosixType::Pmsg, "/q", 5, NOW - 900);
        q.queue = Some(crate::snapshot::MqState::default());
        let cq = Candidate {
            rule: Rule::OrphanedPosixQueue,
            object: leaks::posix_ref(7, &q),
            baseline: q.clone(),
            evidence: Vec::new(),
            why: "orphaned".into(),
        };
        let mut read = q.clone();
        read.ctime = NOW;
        read.atime = NOW;
        assert_eq!(check(&cq, Some(&read), &[], NOW, opts), Ok(()));
        let mut sent = read.clone();
        sent.mtime = NOW;
        sent.queue = Some(crate::snapshot::MqState {
            messages: 1,
            ..crate::snapshot::MqState::default()
        });
        assert!(matches!(
            check(&cq, Some(&sent), &[], NOW, opts),
            Err(Refusal::Used { field: "mtime", .. })
        ));
        let h = holder(42, 1);
        assert_eq!(
            check(&c, Some(&base), &[&h], NOW, opts),
            Err(Refusal::Alive {
                pid: 42,
                role: Role::Holder
            })
        );
    }

    #[test]
    fn records_name_the_posix_object() {
        let o = obj(PosixType::Psem, "/lock", 3, NOW - 900);
        let r = crate::reap::Record {
            time_ns: 1_700_000_000 * NS_PER_SEC,
            ns: 7,
            ty: crate::event::IpcType::Shm,
            id: 0,
            key: None,
            rule: Some(Rule::OrphanedPosixSemaphore),
            dry_run: false,
            source: "snapshot".into(),
            policy: None,
            why: "orphaned".into(),
            outcome: Outcome::Removed { late_attach: None },
            evidence: Vec::new(),
            baseline: None,
            posix: Some(crate::reap::PosixSubject {
                object: leaks::posix_ref(7, &o),
                state: Some(o),
            }),
        };
        let v = r.to_json();
        assert_eq!(
            v["ipc"],
            json!({"type": "psem", "name": "/lock", "path": "/dev/shm/sem.lock", "namespace": 7, "inode": 3})
        );
        assert_eq!(v["ipcaudit"]["reap"]["object"]["ino"], 3);
        assert_eq!(v["rule"]["name"], "orphaned-posix-semaphore");
        assert!(r.to_text().contains("psem /lock"), "{}", r.to_text());
    }
}
