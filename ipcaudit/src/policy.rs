//! The reaping daemon: `ipcaudit watch --reap-policy FILE`. Without a policy nothing is ever
//! removed; with one, an object whose finding matches a rule of the policy, and has held for the
//! rule's grace period, is removed through the same recheck as `ipcaudit reap` (fresh
//! `IPC_STAT` in the object's namespace, identity against the model, creator and users dead, no
//! waiters) — at most the rule's rate. Everything else is only reported.
//!
//! ```toml
//! # /etc/ipcaudit/reap.toml
//! [[rule]]
//! name = "build-cache"          # names the rule in records (default: "rule N")
//! type = ["shm"]                # shm, sem, msg (default: all)
//! finding = ["orphaned-segment"] # reapable rules (default: all of them)
//! uid = [1000]                  # owner uid (default: any)
//! exe = ["/usr/bin/cache"]      # the creator's executable (default: any)
//! comm = ["cache"]              # the creator's comm (default: any)
//! key = "0x1000-0x1fff"         # a key or an inclusive range; never matches IPC_PRIVATE
//! grace = "10m"                 # how long the finding must have held (required)
//! rate = "10/h"                 # at most 10 removals per hour by this rule (default 10/h)
//! force_waiters = false         # remove semaphore sets with blocked waiters
//! ```
//!
//! Criteria of a rule must all match (a list matches any of its entries); the first matching
//! rule decides. Parse errors name the file, the line and the field.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::clock;
use crate::event::{Action, Event, IpcType, ProcessKey};
use crate::ls::{self, NamespaceSel, NsTarget};
use crate::model::{Applied, Finding, Model, ObjectKey, ObjectStatus, Role, Rule};
use crate::reap::{self, CheckOptions, Outcome, Record, Refusal};
use crate::snapshot::Snapshot;

const NS_PER_SEC: u64 = 1_000_000_000;

/// A removal rate: at most `max` per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub max: u32,
    pub window: Duration,
}

impl Default for Rate {
    fn default() -> Self {
        Self {
            max: 10,
            window: Duration::from_hours(1),
        }
    }
}

/// An inclusive range of IPC keys (as unsigned 32-bit values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub lo: u32,
    pub hi: u32,
}

impl KeyRange {
    /// Whether `key` is in the range; `IPC_PRIVATE` (0) never is.
    pub fn contains(self, key: i32) -> bool {
        let k = u32::from_ne_bytes(key.to_ne_bytes());
        k != 0 && (self.lo..=self.hi).contains(&k)
    }
}

/// One rule of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRule {
    pub name: String,
    /// Line of its `[[rule]]` header.
    pub line: usize,
    pub types: Vec<IpcType>,
    pub findings: Vec<Rule>,
    pub uids: Vec<u32>,
    pub exes: Vec<String>,
    pub comms: Vec<String>,
    pub keys: Option<KeyRange>,
    pub grace: Duration,
    pub rate: Rate,
    pub force_waiters: bool,
}

/// What is known about an object with a finding, for matching.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts<'a> {
    pub ty: Option<IpcType>,
    pub rule: Option<Rule>,
    pub key: Option<i32>,
    pub owner_uid: Option<u32>,
    pub creator_comm: Option<&'a str>,
    pub creator_exe: Option<&'a str>,
}

impl PolicyRule {
    /// Whether the rule covers an object with these facts (pure). An unknown fact matches no
    /// criterion that asks about it.
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        let Some(rule) = f.rule.filter(|r| reap::reapable(*r)) else {
            return false;
        };
        let any = |list_empty: bool, hit: bool| list_empty || hit;
        any(
            self.types.is_empty(),
            f.ty.is_some_and(|t| self.types.contains(&t)),
        ) && any(self.findings.is_empty(), self.findings.contains(&rule))
            && any(
                self.uids.is_empty(),
                f.owner_uid.is_some_and(|u| self.uids.contains(&u)),
            )
            && any(
                self.comms.is_empty(),
                f.creator_comm
                    .is_some_and(|c| self.comms.iter().any(|x| x == c)),
            )
            && any(
                self.exes.is_empty(),
                f.creator_exe
                    .is_some_and(|e| self.exes.iter().any(|x| x == e)),
            )
            && self
                .keys
                .is_none_or(|r| f.key.is_some_and(|k| r.contains(k)))
    }
}

/// A reap policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub path: PathBuf,
    pub rules: Vec<PolicyRule>,
}

impl Policy {
    /// The first rule that covers these facts.
    pub fn rule_for(&self, f: &Facts<'_>) -> Option<(usize, &PolicyRule)> {
        self.rules.iter().enumerate().find(|(_, r)| r.matches(f))
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// A policy file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the reap policy {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: field `{field}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
}

/// Reads and parses a policy file.
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

struct Cx<'t> {
    text: &'t str,
    path: &'t Path,
}

impl Cx<'_> {
    fn err(
        &self,
        offset: usize,
        field: impl fmt::Display,
        message: impl fmt::Display,
    ) -> PolicyError {
        PolicyError::Invalid {
            path: self.path.to_path_buf(),
            line: line_of(self.text, offset),
            field: field.to_string(),
            message: message.to_string(),
        }
    }
}

/// The items of a value that may be one item or an array of them.
fn one_or_many<'a, 'i>(v: &'a Spanned<DeValue<'i>>) -> Vec<&'a Spanned<DeValue<'i>>> {
    match v.get_ref() {
        DeValue::Array(a) => a.iter().collect(),
        _ => vec![v],
    }
}

fn as_str<'a>(
    cx: &Cx<'_>,
    v: &'a Spanned<DeValue<'_>>,
    field: &str,
) -> Result<&'a str, PolicyError> {
    match v.get_ref() {
        DeValue::String(s) => Ok(s.as_ref()),
        other => Err(cx.err(
            v.span().start,
            field,
            format!("expected a string, found {}", other.type_str()),
        )),
    }
}

fn as_int(cx: &Cx<'_>, v: &Spanned<DeValue<'_>>, field: &str) -> Result<i128, PolicyError> {
    match v.get_ref() {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
            .map_err(|e| cx.err(v.span().start, field, format!("not an integer: {e}"))),
        other => Err(cx.err(
            v.span().start,
            field,
            format!("expected an integer, found {}", other.type_str()),
        )),
    }
}

fn key_value(
    cx: &Cx<'_>,
    v: &Spanned<DeValue<'_>>,
    field: &str,
    s: &str,
) -> Result<u32, PolicyError> {
    let s = s.trim();
    let parsed = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).ok()
    } else {
        s.parse::<u32>().ok()
    };
    parsed.ok_or_else(|| {
        cx.err(
            v.span().start,
            field,
            format!("{s:?} is not a key (0x… or a decimal number)"),
        )
    })
}

fn key_range(cx: &Cx<'_>, v: &Spanned<DeValue<'_>>, field: &str) -> Result<KeyRange, PolicyError> {
    let range = match v.get_ref() {
        DeValue::Integer(_) => {
            let n = as_int(cx, v, field)?;
            let k = u32::try_from(n)
                .map_err(|_| cx.err(v.span().start, field, format!("{n} is not a 32-bit key")))?;
            KeyRange { lo: k, hi: k }
        }
        DeValue::String(s) => {
            if let Some((a, b)) = s.split_once('-') {
                KeyRange {
                    lo: key_value(cx, v, field, a)?,
                    hi: key_value(cx, v, field, b)?,
                }
            } else {
                let k = key_value(cx, v, field, s)?;
                KeyRange { lo: k, hi: k }
            }
        }
        other => {
            return Err(cx.err(
                v.span().start,
                field,
                format!(
                    "expected a key or a range like \"0x1000-0x1fff\", found {}",
                    other.type_str()
                ),
            ));
        }
    };
    if range.lo > range.hi {
        return Err(cx.err(
            v.span().start,
            field,
            "the range is empty (start above end)",
        ));
    }
    if range.lo == 0 && range.hi == 0 {
        return Err(cx.err(
            v.span().start,
            field,
            "0 is IPC_PRIVATE, not a key: private objects are never matched by key",
        ));
    }
    Ok(range)
}

fn duration(cx: &Cx<'_>, v: &Spanned<DeValue<'_>>, field: &str) -> Result<Duration, PolicyError> {
    match v.get_ref() {
        DeValue::Integer(_) => {
            let n = as_int(cx, v, field)?;
            u64::try_from(n).map(Duration::from_secs).map_err(|_| {
                cx.err(
                    v.span().start,
                    field,
                    format!("{n} is not a number of seconds"),
                )
            })
        }
        DeValue::String(s) => reap::parse_duration(s).map_err(|e| cx.err(v.span().start, field, e)),
        other => Err(cx.err(
            v.span().start,
            field,
            format!(
                "expected a duration like \"10m\", found {}",
                other.type_str()
            ),
        )),
    }
}

/// `"10/h"`, `"3/10m"`, `"100/1d"`.
fn rate(cx: &Cx<'_>, v: &Spanned<DeValue<'_>>, field: &str) -> Result<Rate, PolicyError> {
    let s = as_str(cx, v, field)?;
    let bad = || {
        cx.err(
            v.span().start,
            field,
            format!("{s:?} is not a rate like \"10/h\" (removals per s, m, h, d or a duration)"),
        )
    };
    let (n, per) = s.split_once('/').ok_or_else(bad)?;
    let max: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = per.trim();
    let window = if per.starts_with(|c: char| c.is_ascii_digit()) {
        reap::parse_duration(per).map_err(|_| bad())?
    } else {
        reap::parse_duration(&format!("1{per}")).map_err(|_| bad())?
    };
    if max == 0 || window.is_zero() {
        return Err(cx.err(
            v.span().start,
            field,
            "a rate of zero removes nothing: leave the rule out instead",
        ));
    }
    Ok(Rate { max, window })
}

fn parse_rule(
    cx: &Cx<'_>,
    n: usize,
    table: &DeTable<'_>,
    at: usize,
) -> Result<PolicyRule, PolicyError> {
    let mut rule = PolicyRule {
        name: format!("rule {n}"),
        line: line_of(cx.text, at),
        types: Vec::new(),
        findings: Vec::new(),
        uids: Vec::new(),
        exes: Vec::new(),
        comms: Vec::new(),
        keys: None,
        grace: Duration::ZERO,
        rate: Rate::default(),
        force_waiters: false,
    };
    let mut grace = None;
    for (k, v) in table {
        let key: &str = k.get_ref().as_ref();
        let field = format!("rule[{n}].{key}");
        let f = field.as_str();
        match key {
            "name" => as_str(cx, v, f)?.clone_into(&mut rule.name),
            "type" => {
                for item in one_or_many(v) {
                    let s = as_str(cx, item, f)?;
                    let ty = match s {
                        "shm" => IpcType::Shm,
                        "sem" => IpcType::Sem,
                        "msg" => IpcType::Msg,
                        _ => {
                            return Err(cx.err(
                                item.span().start,
                                f,
                                format!("unknown type {s:?}: expected shm, sem or msg"),
                            ));
                        }
                    };
                    rule.types.push(ty);
                }
            }
            "finding" => {
                for item in one_or_many(v) {
                    let s = as_str(cx, item, f)?;
                    match Rule::parse(s) {
                        Some(r) if reap::reapable(r) => rule.findings.push(r),
                        _ => {
                            return Err(cx.err(
                                item.span().start,
                                f,
                                format!(
                                    "{s:?} is not a finding a removal ends: expected \
                                     orphaned-segment, orphaned-semaphore-set, orphaned-queue, \
                                     stalled-queue or semaphore-held-by-dead-process"
                                ),
                            ));
                        }
                    }
                }
            }
            "uid" => {
                for item in one_or_many(v) {
                    let n = as_int(cx, item, f)?;
                    rule.uids.push(
                        u32::try_from(n).map_err(|_| {
                            cx.err(item.span().start, f, format!("{n} is not a uid"))
                        })?,
                    );
                }
            }
            "exe" => {
                for item in one_or_many(v) {
                    let s = as_str(cx, item, f)?;
                    if !s.starts_with('/') {
                        return Err(cx.err(
                            item.span().start,
                            f,
                            format!("{s:?} is not an absolute path"),
                        ));
                    }
                    rule.exes.push(s.to_owned());
                }
            }
            "comm" => {
                for item in one_or_many(v) {
                    rule.comms.push(as_str(cx, item, f)?.to_owned());
                }
            }
            "key" => rule.keys = Some(key_range(cx, v, f)?),
            "grace" => grace = Some(duration(cx, v, f)?),
            "rate" => rule.rate = rate(cx, v, f)?,
            "force_waiters" => match v.get_ref() {
                DeValue::Boolean(b) => rule.force_waiters = *b,
                other => {
                    return Err(cx.err(
                        v.span().start,
                        f,
                        format!("expected true or false, found {}", other.type_str()),
                    ));
                }
            },
            _ => {
                return Err(cx.err(
                    k.span().start,
                    f,
                    "unknown field: expected name, type, finding, uid, exe, comm, key, grace, \
                     rate or force_waiters",
                ));
            }
        }
    }
    rule.grace = grace.ok_or_else(|| {
        cx.err(
            at,
            format!("rule[{n}].grace"),
            "missing: every rule needs a grace period (e.g. grace = \"10m\")",
        )
    })?;
    Ok(rule)
}

/// Parses a policy (pure). `path` names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
    let cx = Cx { text, path };
    let doc = DeTable::parse(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        // The key on the offending line, if it has one.
        let line = text.lines().nth(line_of(text, offset) - 1).unwrap_or("");
        let field = line
            .split_once('=')
            .map(|(k, _)| k.trim())
            .filter(|k| !k.is_empty() && !k.starts_with('#'))
            .unwrap_or("(syntax)");
        cx.err(offset, field, e.message())
    })?;
    let mut rules = Vec::new();
    for (k, v) in doc.get_ref() {
        let key: &str = k.get_ref().as_ref();
        if key != "rule" {
            return Err(cx.err(
                k.span().start,
                key,
                "unknown field: a policy holds only [[rule]] tables",
            ));
        }
        let DeValue::Array(items) = v.get_ref() else {
            return Err(cx.err(
                v.span().start,
                "rule",
                "expected [[rule]] tables (an array of tables)",
            ));
        };
        for (n, item) in items.iter().enumerate() {
            let DeValue::Table(t) = item.get_ref() else {
                return Err(cx.err(
                    item.span().start,
                    format!("rule[{}]", n + 1),
                    format!("expected a table, found {}", item.get_ref().type_str()),
                ));
            };
            rules.push(parse_rule(&cx, n + 1, t, item.span().start)?);
        }
    }
    Ok(Policy {
        path: path.to_path_buf(),
        rules,
    })
}

// ---------------------------------------------------------------------------------------------
// The daemon's side

/// How long an object that was refused is left alone before it is tried again.
const RETRY_NS: u64 = 10 * NS_PER_SEC;
/// Executables remembered (creators of objects); older ones are dropped past this.
const MAX_EXES: usize = 16_384;

/// The reaping state of a `watch`: rate windows, executables of creators, recent refusals.
pub struct Reaper {
    policy: Policy,
    /// Removal times (ns) per rule.
    removals: Vec<VecDeque<u64>>,
    /// The executable of processes that created objects, read when they did.
    exes: HashMap<ProcessKey, String>,
    /// The last refusal per object (its code) and when to try again.
    refused: HashMap<ObjectKey, (&'static str, u64)>,
}

impl Reaper {
    pub fn new(policy: Policy) -> Self {
        let removals = vec![VecDeque::new(); policy.rules.len()];
        Self {
            policy,
            removals,
            exes: HashMap::new(),
            refused: HashMap::new(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The executable of a live process, if it is still the process `key`.
    fn read_exe(key: ProcessKey) -> Option<String> {
        let exe = std::fs::read_link(format!("/proc/{}/exe", key.pid)).ok()?;
        let p = crate::leaks::read_process(key.pid)?;
        (p.key == key).then(|| exe.to_string_lossy().into_owned())
    }

    fn remember_exe(&mut self, key: ProcessKey) {
        if self.policy.rules.iter().all(|r| r.exes.is_empty()) || self.exes.contains_key(&key) {
            return;
        }
        if self.exes.len() >= MAX_EXES {
            self.exes.clear();
        }
        if let Some(exe) = Self::read_exe(key) {
            self.exes.insert(key, exe);
        }
    }

    /// Sees every applied event: remembers the executable of processes that create objects.
    pub fn observe(&mut self, ev: &Event, applied: &Applied) {
        if matches!(
            applied.action,
            Some(Action::ShmCreate | Action::SemCreate | Action::MsgCreate)
        ) {
            self.remember_exe(ev.task.process);
        }
    }

    /// Remembers the executables of the live creators of a bootstrap snapshot's segments.
    pub fn seed(&mut self, snap: &Snapshot) {
        for seg in &snap.shm {
            if let Some(p) = snap.processes.iter().find(|p| p.key.pid == seg.cpid) {
                self.remember_exe(p.key);
            }
        }
    }

    /// The facts about one finding's object, from the model (pure).
    fn facts<'a>(&'a self, model: &'a Model, f: &'a Finding) -> Facts<'a> {
        let o = f.object;
        let view = o.and_then(|o| model.object_by_key(o.object_key()));
        let creator = f.evidence.iter().find(|e| e.role == Role::Creator);
        let exe = creator.and_then(|c| c.entity).and_then(|k| {
            self.exes
                .get(&k)
                .map(String::as_str)
                .or_else(|| model.process(k).and_then(|p| p.exe))
        });
        Facts {
            ty: o.map(|o| o.ty),
            rule: Some(f.rule),
            key: o.and_then(|o| o.key),
            owner_uid: view.and_then(|v| v.owner_uid),
            creator_comm: creator.map(|c| c.name.as_str()).filter(|n| !n.is_empty()),
            creator_exe: exe,
        }
    }

    /// The findings due for removal now (pure): covered by a rule, held for its grace, the
    /// object still the model's latest and live, not refused recently.
    pub fn due(&self, model: &Model, now_ns: u64) -> Vec<(usize, Finding)> {
        if model.needs_reconcile() {
            return Vec::new(); // Records were lost: wait for the resync.
        }
        let mut out = Vec::new();
        for f in model.findings() {
            let Some(o) = f.object else {
                continue;
            };
            let Some((i, rule)) = self.policy.rule_for(&self.facts(model, f)) else {
                continue;
            };
            let grace_ns = u64::try_from(rule.grace.as_nanos()).unwrap_or(u64::MAX);
            if f.since_ns.saturating_add(grace_ns) > now_ns {
                continue;
            }
            let latest = model.object(o.ns, o.ty, o.id);
            if latest.is_none_or(|v| {
                v.object.generation != o.generation || v.status != ObjectStatus::Live
            }) {
                continue;
            }
            if self
                .refused
                .get(&o.object_key())
                .is_some_and(|(_, retry)| *retry > now_ns)
            {
                continue;
            }
            if out.iter().any(|(_, g): &(usize, Finding)| {
                g.object.map(|x| x.object_key()) == Some(o.object_key())
            }) {
                continue;
            }
            out.push((i, f.clone()));
        }
        out
    }

    /// Whether rule `i` may remove one more object at `now_ns` (and prunes its window).
    fn rate_allows(&mut self, i: usize, now_ns: u64) -> bool {
        let Some(rule) = self.policy.rules.get(i) else {
            return false;
        };
        let window = u64::try_from(rule.rate.window.as_nanos()).unwrap_or(u64::MAX);
        let Some(times) = self.removals.get_mut(i) else {
            return false;
        };
        while times
            .front()
            .is_some_and(|t| t.saturating_add(window) <= now_ns)
        {
            times.pop_front();
        }
        times.len() < rule.rate.max as usize
    }

    /// Removes what is due, through the safe path; returns the records to write (a refusal is
    /// written once per object and reason).
    pub fn tick(&mut self, model: &Model, now_ns: u64) -> Vec<Record> {
        let due = self.due(model, now_ns);
        if due.is_empty() {
            return Vec::new();
        }
        let own = crate::snapshot::read::own_ipc_ns().ok();
        let mut others: Option<Vec<NsTarget>> = None;
        let mut records = Vec::new();
        for (i, f) in due {
            let Some(o) = f.object else {
                continue;
            };
            let Some(rule) = self.policy.rules.get(i).cloned() else {
                continue;
            };
            let (outcome, baseline) = if self.rate_allows(i, now_ns) {
                let target = if Some(o.ns) == own {
                    Some(NsTarget {
                        inode: o.ns,
                        pid: None,
                    })
                } else {
                    others
                        .get_or_insert_with(|| {
                            ls::targets(Some(NamespaceSel::All))
                                .map(|(t, _)| t)
                                .unwrap_or_default()
                        })
                        .iter()
                        .find(|t| t.inode == o.ns)
                        .copied()
                };
                match target {
                    Some(t) => {
                        let opts = CheckOptions {
                            older_than_secs: 0,
                            force_waiters: rule.force_waiters,
                        };
                        reap::reap_live(&t, &f, &o, opts)
                    }
                    None => (
                        Outcome::Refused(Refusal::Namespace {
                            why: format!("no process is in IPC namespace {} to enter it by", o.ns),
                        }),
                        None,
                    ),
                }
            } else {
                (
                    Outcome::Refused(Refusal::RateCapped {
                        max: rule.rate.max,
                        window_secs: rule.rate.window.as_secs(),
                    }),
                    None,
                )
            };
            let key = o.object_key();
            match &outcome {
                Outcome::Removed { .. } => {
                    if let Some(times) = self.removals.get_mut(i) {
                        times.push_back(now_ns);
                    }
                    self.refused.remove(&key);
                }
                Outcome::Refused(r) => {
                    let code = r.code();
                    let again = self.refused.get(&key).is_some_and(|(c, _)| *c == code);
                    self.refused
                        .insert(key, (code, now_ns.saturating_add(RETRY_NS)));
                    if again {
                        continue; // Said already.
                    }
                }
                Outcome::WouldRemove => {}
            }
            records.push(Record {
                time_ns: clock::now_wall_ns(),
                ns: o.ns,
                ty: o.ty,
                id: o.id,
                key: o.key,
                rule: Some(f.rule),
                dry_run: false,
                source: "policy".to_owned(),
                policy: Some(rule.name.clone()),
                why: f.description.clone(),
                outcome,
                evidence: f.evidence.clone(),
                baseline,
                posix: None,
            });
        }
        // Forget refusals of objects that no longer have a finding.
        let active: Vec<ObjectKey> = model
            .findings()
            .filter_map(|f| f.object.map(|o| o.object_key()))
            .collect();
        self.refused.retain(|k, _| active.contains(k));
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Policy, PolicyError> {
        parse(text, Path::new("/etc/ipcaudit/reap.toml"))
    }

    fn err(text: &str) -> String {
        p(text).unwrap_err().to_string()
    }

    const FULL: &str = r#"
# comment
[[rule]]
name = "cache"
type = ["shm", "sem"]
finding = "orphaned-segment"
uid = [1000, 1001]
exe = "/usr/bin/cache"
comm = ["cache", "cache2"]
key = "0x1000-0x1fff"
grace = "10m"
rate = "3/10m"
force_waiters = true

[[rule]]
grace = 30
"#;

    #[test]
    fn parses_every_field() {
        let policy = p(FULL).unwrap();
        assert_eq!(policy.rules.len(), 2);
        let r = &policy.rules[0];
        assert_eq!(r.name, "cache");
        assert_eq!(r.line, 3);
        assert_eq!(r.types, vec![IpcType::Shm, IpcType::Sem]);
        assert_eq!(r.findings, vec![Rule::OrphanedSegment]);
        assert_eq!(r.uids, vec![1000, 1001]);
        assert_eq!(r.exes, vec!["/usr/bin/cache".to_owned()]);
        assert_eq!(r.comms.len(), 2);
        assert_eq!(
            r.keys,
            Some(KeyRange {
                lo: 0x1000,
                hi: 0x1fff
            })
        );
        assert_eq!(r.grace, Duration::from_mins(10));
        assert_eq!(
            r.rate,
            Rate {
                max: 3,
                window: Duration::from_mins(10)
            }
        );
        assert!(r.force_waiters);
        let d = &policy.rules[1];
        assert_eq!(
            (d.name.as_str(), d.grace, d.rate),
            ("rule 2", Duration::from_secs(30), Rate::default())
        );
        assert!(d.types.is_empty() && d.keys.is_none() && !d.force_waiters);
        // Empty: nothing is reaped.
        assert!(p("").unwrap().rules.is_empty());
        assert!(p("# nothing\n").unwrap().rules.is_empty());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = err("[[rule]]\nname = \"x\"\ngrace = \"ten minutes\"\n");
        assert!(
            e.starts_with("/etc/ipcaudit/reap.toml:3: field `rule[1].grace`:"),
            "{e}"
        );
        assert!(e.contains("not a duration"), "{e}");
        let e = err("[[rule]]\ngrace = \"1m\"\n\n[[rule]]\ngrace = \"1m\"\ntype = \"pipe\"\n");
        assert!(
            e.starts_with("/etc/ipcaudit/reap.toml:6: field `rule[2].type`:"),
            "{e}"
        );
        let e = err("[[rule]]\nname = \"x\"\n");
        assert!(e.contains(":1: field `rule[1].grace`: missing"), "{e}");
        let e = err("[[rule]]\ngrace = \"1m\"\ncolour = \"red\"\n");
        assert!(
            e.contains(":3: field `rule[1].colour`: unknown field"),
            "{e}"
        );
        let e = err("[[rule]]\ngrace = \"1m\"\nfinding = \"world-accessible\"\n");
        assert!(
            e.contains("rule[1].finding") && e.contains("not a finding a removal ends"),
            "{e}"
        );
        let e = err("[[rule]]\ngrace = \"1m\"\nkey = \"0x0\"\n");
        assert!(e.contains("IPC_PRIVATE"), "{e}");
        let e = err("[[rule]]\ngrace = \"1m\"\nkey = \"0x20-0x10\"\n");
        assert!(e.contains("empty"), "{e}");
        let e = err("[[rule]]\ngrace = \"1m\"\nrate = \"0/h\"\n");
        assert!(e.contains("rate of zero"), "{e}");
        let e = err("[[rule]]\ngrace = \"1m\"\nrate = \"ten\"\n");
        assert!(e.contains(":3: field `rule[1].rate`"), "{e}");
        let e = err("[[rule]]\ngrace = \"1m\"\nuid = -1\n");
        assert!(e.contains("not a uid"), "{e}");
        let e = err("[[rule]]\ngrace = \"1m\"\nexe = \"cache\"\n");
        assert!(e.contains("absolute path"), "{e}");
        let e = err("[[rule]]\ngrace = \"1m\"\nforce_waiters = \"yes\"\n");
        assert!(e.contains("true or false"), "{e}");
        let e = err("grace = \"1m\"\n");
        assert!(e.contains(":1: field `grace`: unknown field"), "{e}");
        let e = err("rule = 3\n");
        assert!(e.contains("[[rule]] tables"), "{e}");
        // Syntax: the line, and the key on it.
        let e = err("[[rule]]\ngrace = \"1m\"\nname = \"unterminated\n");
        assert!(e.contains(":3: field `name`:"), "{e}");
        let e = err("[[rule]\n");
        assert!(e.contains(":1: field `(syntax)`:"), "{e}");
    }

    #[test]
    fn rules_match_by_every_criterion() {
        let policy = p(FULL).unwrap();
        let r = &policy.rules[0];
        let hit = Facts {
            ty: Some(IpcType::Shm),
            rule: Some(Rule::OrphanedSegment),
            key: Some(0x1234),
            owner_uid: Some(1000),
            creator_comm: Some("cache"),
            creator_exe: Some("/usr/bin/cache"),
        };
        assert!(r.matches(&hit));
        let misses = [
            Facts {
                ty: Some(IpcType::Msg),
                ..hit
            },
            Facts {
                rule: Some(Rule::StalledQueue),
                ..hit
            },
            Facts {
                rule: Some(Rule::WorldAccessible),
                ..hit
            },
            Facts {
                key: Some(0x2000),
                ..hit
            },
            Facts {
                key: Some(0),
                ..hit
            },
            Facts { key: None, ..hit },
            Facts {
                owner_uid: Some(0),
                ..hit
            },
            Facts {
                owner_uid: None,
                ..hit
            },
            Facts {
                creator_comm: Some("other"),
                ..hit
            },
            Facts {
                creator_exe: None,
                ..hit
            },
        ];
        for f in misses {
            assert!(!r.matches(&f), "{f:?}");
        }
        // The catch-all second rule takes what the first does not, but never a finding that
        // removal does not end.
        assert_eq!(
            policy
                .rule_for(&Facts {
                    owner_uid: Some(0),
                    ..hit
                })
                .map(|(i, _)| i),
            Some(1)
        );
        assert_eq!(
            policy.rule_for(&Facts {
                rule: Some(Rule::NearLimit),
                ..hit
            }),
            None
        );
        assert!(
            KeyRange {
                lo: 0,
                hi: u32::MAX
            }
            .contains(-1)
        );
        assert!(
            !KeyRange {
                lo: 0,
                hi: u32::MAX
            }
            .contains(0)
        );
    }

    #[test]
    fn the_rate_cap_slides() {
        let mut policy = p(FULL).unwrap();
        policy.rules.truncate(1);
        let mut reaper = Reaper::new(policy);
        let min = 60 * NS_PER_SEC;
        for t in [0, 1, 2] {
            assert!(reaper.rate_allows(0, t * min));
            reaper.removals[0].push_back(t * min);
        }
        assert!(!reaper.rate_allows(0, 3 * min));
        assert!(!reaper.rate_allows(0, 9 * min));
        // Ten minutes after the first: room for one more.
        assert!(reaper.rate_allows(0, 10 * min));
        assert!(!reaper.rate_allows(5, 0));
    }

    /// A model that holds one orphaned segment (id 5, key 0x1234, creator gone) whose
    /// condition started at t = 1,000,000 s, judged at t = 1,000,100 s.
    fn model_with_orphan() -> Model {
        use crate::snapshot::{IpcPerm, ShmSegment};
        let mut model = Model::new(crate::model::ModelConfig::default());
        let snap = Snapshot {
            ipc_ns: 7,
            taken_ns: 1_000_100 * NS_PER_SEC,
            shm: vec![ShmSegment {
                perm: IpcPerm {
                    key: 0x1234,
                    id: 5,
                    mode: 0o600,
                    uid: 1000,
                    gid: 1000,
                    cuid: 1000,
                    cgid: 1000,
                },
                size: 4096,
                cpid: 13,
                lpid: 0,
                nattch: 0,
                atime: 0,
                dtime: 0,
                ctime: 1_000_000,
                rss: 0,
                swap: 0,
            }],
            ..Snapshot::default()
        };
        model.bootstrap(&snap);
        model.tick(1_000_100 * NS_PER_SEC);
        model
    }

    #[test]
    fn due_when_covered_and_held_for_the_grace() {
        let model = model_with_orphan();
        let finding = model
            .findings()
            .find(|f| f.rule == Rule::OrphanedSegment)
            .expect("the model raised the orphan");
        let since = finding.since_ns;
        let policy = |rule: &str| p(&format!("[[rule]]\n{rule}\n")).unwrap();
        let now = 1_000_100 * NS_PER_SEC;
        // Covered by key and uid, held longer than the grace: due.
        let reaper = Reaper::new(policy(
            "key = \"0x1000-0x1fff\"\nuid = 1000\ngrace = \"30s\"",
        ));
        let due = reaper.due(&model, now);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0, due[0].1.object.map(|o| o.id)), (0, Some(5)));
        // Not yet held for the grace.
        let reaper = Reaper::new(policy("grace = \"1h\""));
        assert!(reaper.due(&model, now).is_empty());
        assert_eq!(reaper.due(&model, since + 3600 * NS_PER_SEC).len(), 1);
        // Not covered: another key range, another uid, another type, an unknown creator name.
        for rule in [
            "key = \"0x2000-0x2fff\"\ngrace = 1",
            "uid = 0\ngrace = 1",
            "type = \"sem\"\ngrace = 1",
            "comm = \"cache\"\ngrace = 1",
            "finding = \"stalled-queue\"\ngrace = 1",
        ] {
            assert!(
                Reaper::new(policy(rule)).due(&model, now).is_empty(),
                "{rule}"
            );
        }
        // Refused recently: left alone until the retry time.
        let mut reaper = Reaper::new(policy("grace = 1"));
        let key = due[0].1.object.map(|o| o.object_key()).expect("object");
        reaper.refused.insert(key, ("user-alive", now + 1));
        assert!(reaper.due(&model, now).is_empty());
        assert_eq!(reaper.due(&model, now + 1).len(), 1);
    }

    #[test]
    fn nothing_is_due_without_a_policy_or_findings() {
        let model = Model::new(crate::model::ModelConfig::default());
        let reaper = Reaper::new(Policy::default());
        assert!(reaper.due(&model, u64::MAX).is_empty());
        let reaper = Reaper::new(p(FULL).unwrap());
        assert!(reaper.due(&model, u64::MAX).is_empty());
    }
}
