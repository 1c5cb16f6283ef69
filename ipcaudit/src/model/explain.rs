//! The `explain` and `report` views of the model: one object's story (who created it, where in
//! the code, every attach and detach, what each process did with it, its removal), the people in
//! it, who holds it now, and the verdict (the rules that fired or wait for their grace period,
//! why, and the remedy). Owned and (de)serializable: the live daemon sends them as JSON and the
//! client renders the same structures a replay builds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::{CallSite, IpcType, ProcessDetails, ProcessKey};

use super::object::{Body, Object, ObjectRef, ObjectStatus};
use super::process::Character;
use super::rules::{FindingKey, Rule, Severity};
use super::story::{Entry, OpSummary};
use super::{Model, NS_PER_SEC};

/// Which object to explain: by id or by IPC key, optionally narrowed by type and namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none", default)]
    pub ty: Option<IpcType>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub namespace: Option<u32>,
}

impl Target {
    /// `shm 123`, `key 0x000004d2`, `object 7`.
    pub fn describe(&self) -> String {
        let ty = self.ty.map_or("object", IpcType::as_str);
        let mut s = match (self.id, self.key) {
            (Some(id), _) => format!("{ty} {id}"),
            (None, Some(key)) => format!("{ty} with key {key:#010x}"),
            (None, None) => ty.to_owned(),
        };
        if let Some(ns) = self.namespace {
            let _ = write!(s, " in IPC namespace {ns}");
        }
        s
    }

    fn matches(&self, o: &Object) -> bool {
        self.ty.is_none_or(|t| t == o.key.ty)
            && self.namespace.is_none_or(|n| n == o.key.ns)
            && self.id.is_none_or(|id| id == o.key.id)
            && self.key.is_none_or(|k| o.ipc_key() == Some(k))
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ExplainError {
    #[error("say which object: an id or --key")]
    NoTarget,
    #[error(
        "the model knows no {0} (it knows objects that exist, and removed ones it still remembers)"
    )]
    NotFound(String),
    #[error("{what} is ambiguous: {candidates}; narrow it with --type or --namespace")]
    Ambiguous { what: String, candidates: String },
}

/// A process in a story, with what is known about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub pid: u32,
    pub entity: ProcessKey,
    pub name: String,
    pub alive: bool,
    /// `task->exit_code` of a dead process, when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit_code: Option<u32>,
    /// How it ended, in words (`killed by SIGKILL`, `exited with status 1`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ended: Option<String>,
    #[serde(flatten)]
    pub details: ProcessDetails,
    /// The service a human would blame for what it did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub service: Option<String>,
}

/// What one process did with the object, summed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operations {
    pub process: ProcessKey,
    #[serde(flatten)]
    pub ops: OpSummary,
    /// Where it last attached the segment from.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attach_site: Option<CallSite>,
}

/// A process holding the object now, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBy {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub process: Option<ProcessKey>,
    pub how: String,
}

/// One rule that fired (or holds and waits for its grace period).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictFinding {
    pub rule: Rule,
    pub severity: Severity,
    pub description: String,
    /// Since when the condition holds.
    pub since_ns: u64,
    /// The condition holds but its grace period is not over: it is reported at `due_ns`.
    pub pending: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub due_ns: Option<u64>,
    /// The facts the rule checked.
    pub why: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub remedy: Option<String>,
}

/// The verdict on an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// `leaked` (a leak finding is active), `suspect` (a leak condition holds, within its
    /// grace period), `live`, `removed` (removed, still attached), `destroyed`.
    pub state: String,
    /// One sentence.
    pub summary: String,
    pub findings: Vec<VerdictFinding>,
    /// The command that ends the leak, when there is one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub remedy: Option<String>,
}

/// Everything `explain` says about one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub object: ObjectRef,
    pub status: ObjectStatus,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mode: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub owner_uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub removed_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub destroyed_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub creator: Option<ProcessKey>,
    /// The creator's pid, also when the process itself is unknown (it predates the model).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub creator_pid: Option<u32>,
    /// Where in the code it was created.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub call_site: Option<CallSite>,
    /// The service a human would blame (the creator's unit, container or executable).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub service: Option<String>,
    /// The executable that created it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub program: Option<String>,
    /// Every process in the story.
    pub people: Vec<Person>,
    /// What happened, in time order.
    pub timeline: Vec<Entry>,
    /// Entries left out between the first and the latest ones.
    pub omitted: u64,
    /// What each process did with it.
    pub operations: Vec<Operations>,
    /// Processes whose operations were left out (the quietest, past the per-object bound).
    pub operations_omitted: u64,
    /// Who holds it now.
    pub holders: Vec<HeldBy>,
    pub verdict: Verdict,
    /// The model's clock when this was made.
    pub now_ns: u64,
}

impl Explanation {
    pub fn person(&self, key: ProcessKey) -> Option<&Person> {
        self.people.iter().find(|p| p.entity == key)
    }
}

/// Objects a program created and removed while the model watched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramTotals {
    pub created: u64,
    pub removed: u64,
}

/// A finding that is not about one object (`leaky-process`, `near-limit`), for `report`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherFinding {
    pub rule: Rule,
    pub severity: Severity,
    pub description: String,
    pub since_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub service: Option<String>,
}

/// Everything `report` draws.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Every object the model holds or remembers, oldest first.
    pub objects: Vec<Explanation>,
    pub other_findings: Vec<OtherFinding>,
    pub programs: BTreeMap<String, ProgramTotals>,
    pub now_ns: u64,
    pub lost_records: u64,
}

/// How a process ended, from `task->exit_code`.
pub fn ended(code: u32) -> String {
    let sig = code & 0x7f;
    if sig != 0 {
        crate::names::signal_name(sig).map_or_else(
            || format!("killed by signal {sig}"),
            |n| format!("killed by {n}"),
        )
    } else {
        format!("exited with status {}", (code >> 8) & 0xff)
    }
}

fn is_leak(rule: Rule) -> bool {
    !matches!(
        rule,
        Rule::WorldAccessible | Rule::NearLimit | Rule::LeakyProcess
    )
}

impl Model {
    /// What `o`'s story knows of process `key`, and whether it is alive.
    fn character(&self, o: &Object, key: ProcessKey) -> (Arc<Character>, bool) {
        if let Some(p) = self.processes.get(&key) {
            return (p.names().clone(), p.alive);
        }
        // Only dead processes are forgotten.
        (o.character(key).unwrap_or_default(), false)
    }

    fn person(&self, o: &Object, key: ProcessKey) -> Person {
        let (c, alive) = self.character(o, key);
        let mut details = c.details.as_deref().cloned().unwrap_or_default();
        if details.executable.is_none() {
            details.executable = c.exe.as_deref().map(str::to_owned);
        }
        let service = details.service(&c.comm);
        Person {
            pid: key.pid,
            entity: key,
            name: c.comm.to_string(),
            alive,
            exit_code: c.exit_code.filter(|_| !alive),
            ended: c.exit_code.filter(|_| !alive).map(ended),
            details,
            service,
        }
    }

    fn label(&self, o: &Object, key: ProcessKey) -> String {
        let (c, alive) = self.character(o, key);
        let dead = if alive {
            String::new()
        } else {
            c.exit_code.map_or_else(
                || " (dead)".to_owned(),
                |code| format!(" ({})", ended(code)),
            )
        };
        format!("{} ({}){dead}", key.pid, c.comm)
    }

    /// Objects that match `t`: live ones (latest generation first) then archived ones (newest
    /// first).
    fn candidates(&self, t: &Target) -> Vec<&Object> {
        let mut live: Vec<&Object> = self.objects.values().filter(|o| t.matches(o)).collect();
        live.sort_by_key(|o| std::cmp::Reverse((o.exists(), o.key.generation)));
        let archived = self
            .archive
            .iter()
            .rev()
            .map(Box::as_ref)
            .filter(|o| t.matches(o));
        live.into_iter().chain(archived).collect()
    }

    /// The object `t` names: the one that exists if there is one, else the most recently
    /// destroyed one remembered. Two objects of different types or namespaces that both exist
    /// are ambiguous.
    pub fn explain(&self, t: &Target) -> Result<Explanation, ExplainError> {
        if t.id.is_none() && t.key.is_none() {
            return Err(ExplainError::NoTarget);
        }
        let found = self.candidates(t);
        let Some(first) = found.first() else {
            return Err(ExplainError::NotFound(t.describe()));
        };
        // Several objects with the same id (or key) that exist at once: one per type or
        // namespace.
        let existing: Vec<&&Object> = found.iter().filter(|o| o.exists()).collect();
        let distinct = |os: &[&&Object]| {
            let mut seen: Vec<(IpcType, u32)> = os.iter().map(|o| (o.key.ty, o.key.ns)).collect();
            seen.sort();
            seen.dedup();
            seen.len()
        };
        if distinct(&existing) > 1 {
            let candidates = existing
                .iter()
                .map(|o| {
                    format!("{} {} in namespace {}", { o.key.ty }, { o.key.id }, {
                        o.key.ns
                    })
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ExplainError::Ambiguous {
                what: t.describe(),
                candidates,
            });
        }
        Ok(self.explanation(first))
    }

    /// Every object the model holds and the destroyed ones it remembers, with the findings that
    /// are not about one object and the per-program totals.
    pub fn report(&self) -> Report {
        let mut objects: Vec<Explanation> = self
            .archive
            .iter()
            .map(Box::as_ref)
            .chain(self.objects_in_order())
            .map(|o| self.explanation(o))
            .collect();
        objects.sort_by_key(|e| {
            (
                e.created_ns
                    .or_else(|| e.timeline.first().map(|t| t.time_ns))
                    .unwrap_or(0),
                e.object.ns,
                e.object.ty,
                e.object.id,
                e.object.generation,
            )
        });
        let other_findings = self
            .findings
            .values()
            .filter(|f| f.object.is_none())
            .map(|f| OtherFinding {
                rule: f.rule,
                severity: f.severity,
                description: f.description.clone(),
                since_ns: f.since_ns,
                service: f.service.clone(),
            })
            .collect();
        Report {
            objects,
            other_findings,
            programs: self.program_totals.clone(),
            now_ns: self.now_ns,
            lost_records: self.lost_events,
        }
    }

    /// Objects created and removed per program.
    pub fn program_totals(&self) -> &BTreeMap<String, ProgramTotals> {
        &self.program_totals
    }

    fn explanation(&self, o: &Object) -> Explanation {
        let created = o.times.created().map(|t| (t, o.creator.key()));
        let timeline: Vec<Entry> = o.story().entries(created);
        let mut keys: Vec<ProcessKey> = Vec::new();
        keys.extend(o.creator.key());
        keys.extend(timeline.iter().filter_map(|e| e.process));
        keys.extend(o.operations().map(|(k, _)| k));
        let holders = self.holders(o);
        keys.extend(holders.iter().filter_map(|h| h.process));
        let mut seen = std::collections::HashSet::new();
        keys.retain(|k| seen.insert(*k));
        let people: Vec<Person> = keys.iter().map(|k| self.person(o, *k)).collect();
        let mut operations: Vec<Operations> = o
            .operations()
            .map(|(k, p)| Operations {
                process: k,
                ops: p.summary(),
                attach_site: p.attach_site().map(Arc::as_ref).cloned(),
            })
            .collect();
        operations.sort_by_key(|op| (op.ops.first_ns, op.process));
        let creator = o
            .creator
            .key()
            .and_then(|k| people.iter().find(|p| p.entity == k));
        let service = creator.and_then(|p| p.service.clone());
        let program = creator
            .and_then(|p| p.details.executable.clone())
            .or_else(|| o.creator_program().map(str::to_owned));
        Explanation {
            object: o.object_ref(),
            status: o.status,
            mode: o.mode(),
            owner_uid: o.owner_uid(),
            created_ns: o.times.created(),
            removed_ns: o.times.removed(),
            destroyed_ns: o.times.destroyed(),
            creator: o.creator.key(),
            creator_pid: o.creator.pid(),
            call_site: o.story().create_site().map(Arc::as_ref).cloned(),
            service,
            program,
            people,
            timeline,
            omitted: o.story().omitted(created.is_some()),
            operations,
            operations_omitted: o.story().procs_dropped(),
            holders,
            verdict: self.verdict(o),
            now_ns: self.now_ns,
        }
    }

    fn holders(&self, o: &Object) -> Vec<HeldBy> {
        let mut out = Vec::new();
        match o.body() {
            Body::Shm(s) => {
                let mut keys: Vec<&ProcessKey> = s.attached.keys().collect();
                keys.sort();
                for k in keys {
                    let ranges: Vec<String> = self
                        .processes
                        .get(k)
                        .into_iter()
                        .flat_map(|p| p.vmas.iter())
                        .filter(|(_, v)| v.object == o.key)
                        .map(|(start, v)| format!("{start:#x}-{:#x}", v.end))
                        .collect();
                    out.push(HeldBy {
                        process: Some(*k),
                        how: format!("attached at {}", ranges.join(", ")),
                    });
                }
                if s.external > 0 {
                    out.push(HeldBy {
                        process: None,
                        how: format!(
                            "{} attachment(s) by processes ipcaudit does not know (the kernel counts them)",
                            s.external
                        ),
                    });
                }
            }
            Body::Sem(s) => {
                let mut adjs: Vec<(&ProcessKey, &BTreeMap<u16, super::object::SemAdj>)> =
                    s.activity.adjs.iter().collect();
                adjs.sort_by_key(|(k, _)| **k);
                for (k, m) in adjs {
                    for (n, a) in m {
                        if a.net < 0 {
                            out.push(HeldBy {
                                process: Some(*k),
                                how: format!(
                                    "holds {} unit(s) of semaphore #{n} (taken without SEM_UNDO)",
                                    a.net.unsigned_abs()
                                ),
                            });
                        }
                        if a.undo < 0 {
                            out.push(HeldBy {
                                process: Some(*k),
                                how: format!(
                                    "holds {} unit(s) of semaphore #{n} with SEM_UNDO (given back at its exit)",
                                    a.undo.unsigned_abs()
                                ),
                            });
                        }
                    }
                }
                for k in &s.rare.waiters {
                    out.push(HeldBy {
                        process: Some(*k),
                        how: "blocked in semop on it".to_owned(),
                    });
                }
            }
            Body::Msg(s) => {
                if s.messages > 0 {
                    out.push(HeldBy {
                        process: None,
                        how: format!(
                            "{} message(s), {} bytes queued{}",
                            s.messages,
                            s.bytes,
                            if s.uncertain { " (approximate)" } else { "" }
                        ),
                    });
                }
                for k in &s.rare.recv_waiters {
                    out.push(HeldBy {
                        process: Some(*k),
                        how: "blocked in msgrcv on it".to_owned(),
                    });
                }
                for k in &s.rare.send_waiters {
                    out.push(HeldBy {
                        process: Some(*k),
                        how: "blocked in msgsnd (the queue is full)".to_owned(),
                    });
                }
            }
        }
        out
    }

    fn verdict(&self, o: &Object) -> Verdict {
        let mut findings = Vec::new();
        for rule in Rule::for_type(o.key.ty) {
            let key = FindingKey::object(*rule, o.key);
            if let Some(f) = self.findings.get(&key) {
                findings.push(VerdictFinding {
                    rule: f.rule,
                    severity: f.severity,
                    description: f.description.clone(),
                    since_ns: f.since_ns,
                    pending: false,
                    due_ns: None,
                    why: self.why(*rule, o),
                    remedy: f.remedy.clone(),
                });
            } else if let Some(since) = self.pending.get(&key)
                && let Some(f) = self.build_finding(&key, *since)
            {
                findings.push(VerdictFinding {
                    rule: f.rule,
                    severity: f.severity,
                    description: f.description,
                    since_ns: *since,
                    pending: true,
                    due_ns: Some(since.saturating_add(self.cfg.grace_ns)),
                    why: self.why(*rule, o),
                    remedy: f.remedy,
                });
            }
        }
        let leak = |pending: bool| {
            findings
                .iter()
                .any(|f| is_leak(f.rule) && f.pending == pending)
        };
        let state = if leak(false) {
            "leaked"
        } else if leak(true) {
            "suspect"
        } else {
            match o.status {
                ObjectStatus::Live => "live",
                ObjectStatus::RemovedPendingDestroy => "removed",
                ObjectStatus::Destroyed => "destroyed",
            }
        };
        let remedy = findings
            .iter()
            .filter(|f| is_leak(f.rule))
            .find_map(|f| f.remedy.clone());
        let summary = match state {
            "leaked" => {
                let rules: Vec<&str> = findings
                    .iter()
                    .filter(|f| !f.pending && is_leak(f.rule))
                    .map(|f| f.rule.as_str())
                    .collect();
                rules.join(", ")
            }
            "suspect" => {
                let due = findings
                    .iter()
                    .filter(|f| f.pending)
                    .filter_map(|f| f.due_ns)
                    .min()
                    .unwrap_or(0);
                let secs = due.saturating_sub(self.now_ns).div_ceil(NS_PER_SEC);
                format!("a leak condition holds; reported in {secs} s unless it ends")
            }
            "live" => "live: in use, or with a live creator".to_owned(),
            "removed" => "removed (IPC_RMID); freed when its last attachment goes".to_owned(),
            _ => "destroyed: the kernel freed it".to_owned(),
        };
        Verdict {
            state: state.to_owned(),
            summary,
            findings,
            remedy,
        }
    }

    /// The facts rule `rule` checked on `o`.
    fn why(&self, rule: Rule, o: &Object) -> Vec<String> {
        let mut why = Vec::new();
        let creator = |why: &mut Vec<String>| match (o.creator.key(), o.creator.pid()) {
            (Some(k), _) => {
                let (_, alive) = self.character(o, k);
                why.push(if alive {
                    format!("its creator {} is alive", self.label(o, k))
                } else {
                    format!("its creator {} is gone", self.label(o, k))
                });
            }
            (None, Some(pid)) => why.push(format!(
                "its creator (pid {pid}) predates ipcaudit and is gone"
            )),
            (None, None) => why.push("its creator is unknown".to_owned()),
        };
        let everyone = |peers: &super::object::Peers, role: &str, why: &mut Vec<String>| {
            let all: Vec<String> = peers.iter().map(|(k, _)| self.label(o, *k)).collect();
            if all.is_empty() {
                why.push(format!("no process ever {role} it"));
            } else if peers.live.is_empty() {
                why.push(format!(
                    "every process that {role} it is dead: {}",
                    all.join(", ")
                ));
            } else {
                why.push(format!("{role} by: {}", all.join(", ")));
            }
        };
        match (rule, o.body()) {
            (Rule::OrphanedSegment, Body::Shm(s)) => {
                why.push(format!("not attached (nattch {})", s.nattch()));
                why.push("not removed (no IPC_RMID)".to_owned());
                creator(&mut why);
                everyone(&s.attachers, "attached", &mut why);
            }
            (Rule::RemovedSegmentStillAttached, Body::Shm(s)) => {
                why.push("removed (IPC_RMID was done)".to_owned());
                let mut holders: Vec<&ProcessKey> = s.attached.keys().collect();
                holders.sort();
                let names: Vec<String> = holders.iter().map(|k| self.label(o, **k)).collect();
                why.push(format!("still attached by: {}", names.join(", ")));
            }
            (Rule::SemaphoreHeldByDeadProcess, Body::Sem(s)) => {
                for k in &s.rare.dead_adj {
                    for (n, a) in s.holdings(*k) {
                        if s.stuck(n, &a) {
                            why.push(format!(
                                "{} took {} unit(s) of semaphore #{n} without SEM_UNDO and never gave {} back",
                                self.label(o, *k),
                                a.net.unsigned_abs(),
                                if a.net == -1 { "it" } else { "them" }
                            ));
                        }
                    }
                }
                let blocked = s.slots.iter().map(|v| u64::from(v.ncnt)).sum::<u64>();
                if blocked > 0 || !s.rare.waiters.is_empty() {
                    why.push(format!(
                        "{} process(es) wait for it",
                        blocked.max(s.rare.waiters.len() as u64)
                    ));
                }
            }
            (Rule::OrphanedSemaphoreSet, Body::Sem(s)) => {
                creator(&mut why);
                everyone(&s.activity.users, "used", &mut why);
                why.push("nobody waits on it".to_owned());
            }
            (Rule::StalledQueue, Body::Msg(s)) => {
                why.push(format!(
                    "{} message(s), {} bytes waiting",
                    s.messages, s.bytes
                ));
                everyone(&s.peers.receivers, "received from", &mut why);
            }
            (Rule::OrphanedQueue, Body::Msg(s)) => {
                creator(&mut why);
                everyone(&s.peers.users, "opened", &mut why);
                why.push("nobody waits on it".to_owned());
            }
            (Rule::WorldAccessible, _) => {
                let m = o.mode().unwrap_or(0) & 0o777;
                why.push(format!(
                    "mode {m:03o}: others may {}",
                    match m & 0o006 {
                        0o006 => "read and write it",
                        0o004 => "read it",
                        _ => "write it",
                    }
                ));
            }
            _ => {}
        }
        why
    }

    /// Whether a call site is still wanted: `process` created the latest object with this id
    /// and its creation site is unknown (`attach: None`), or `process` attached it at that
    /// address and that attach's site is unknown. (Gets that opened an existing object and
    /// stacks already known are not worth symbolizing.)
    pub fn wants_call_site(
        &self,
        ns: u32,
        ty: IpcType,
        id: i32,
        process: ProcessKey,
        attach: Option<u64>,
    ) -> bool {
        let Some(o) = self.latest(ns, ty, id).and_then(|k| self.objects.get(&k)) else {
            return false;
        };
        match attach {
            None => o.creator.key() == Some(process) && o.story().create_site().is_none(),
            Some(addr) => o.story().awaits_attach_site(process, addr),
        }
    }

    /// Where in the code an object was created (`attach: None`) or attached at `address` by
    /// `process`: the latest object with this id gets it. Returns the object.
    pub fn set_call_site(
        &mut self,
        ns: u32,
        ty: IpcType,
        id: i32,
        process: ProcessKey,
        attach: Option<u64>,
        site: CallSite,
    ) -> Option<ObjectRef> {
        let okey = self.latest(ns, ty, id)?;
        let o = self.objects.get_mut(&okey)?;
        let site = Arc::new(site);
        match attach {
            None => {
                if o.creator.key() != Some(process) || o.story().create_site().is_some() {
                    return None;
                }
                o.story_mut(None).set_create_site(site);
            }
            Some(addr) => {
                if !o
                    .story_mut(None)
                    .set_attach_site(process, addr, site.clone())
                {
                    return None;
                }
                if let Some(p) = o.story_mut(Some(process)).operations_of_mut(process) {
                    p.set_attach_site(site);
                }
            }
        }
        let r = o.object_ref();
        // Active findings on the object name the call sites of their processes.
        for rule in Rule::for_type(ty) {
            let key = FindingKey::object(*rule, okey);
            if let Some(since) = self.findings.get(&key).map(|f| f.since_ns)
                && let Some(f) = self.build_finding(&key, since)
            {
                self.findings.insert(key, f);
            }
        }
        Some(r)
    }
}
