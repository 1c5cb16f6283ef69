//! `ipcaudit explain (ID | --key KEY) [--type shm|sem|msg] [--replay FILE]`: one object's story
//! — created when, by whom, where in the code; every attach and detach with process and call
//! site; what each process did with it; its removal; who holds it now; the verdict with the
//! rules that fired, why, and the remedy. From the live daemon (control socket) or a recorded
//! stream (rebuilt with the same model code `replay` uses). Text for a terminal, `--json` for
//! tools.

use std::{fmt::Write as _, path::PathBuf, process::ExitCode};

use thiserror::Error;

use crate::{
    cli::ExplainArgs,
    control::{ControlError, Request},
    event::{CallSite, ProcessKey},
    model::{AttachHow, DetachHow, ExplainError, Explanation, Person, Target, What, ended},
    replay::{ReplayError, rebuild, replay_config},
};

#[derive(Debug, Error)]
pub enum ExplainCmdError {
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("{why}{}", in_file(.file.as_ref()))]
    Explain {
        why: ExplainError,
        file: Option<PathBuf>,
    },
    #[error("the watch daemon's answer has no explanation: {0}")]
    BadAnswer(String),
}

fn in_file(file: Option<&PathBuf>) -> String {
    file.map_or_else(String::new, |f| format!(" (in {})", f.display()))
}

/// The target the arguments name.
pub fn target(args: &ExplainArgs) -> Target {
    Target {
        ty: args.ty,
        id: args.id,
        key: args.key,
        namespace: args.namespace,
    }
}

/// The explanation, from the recording or the running `watch`; `source` says which.
pub fn fetch(args: &ExplainArgs) -> Result<(Explanation, &'static str), ExplainCmdError> {
    let t = target(args);
    if let Some(file) = &args.replay {
        let (model, _) = rebuild(file, replay_config(args.grace), |_| {})?;
        let e = model.explain(&t).map_err(|why| ExplainCmdError::Explain {
            why,
            file: Some(file.clone()),
        })?;
        return Ok((e, "replay"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| {
            ExplainCmdError::Control(ControlError::Io {
                path: args.socket.clone(),
                source,
            })
        })?;
    let answer = runtime.block_on(crate::control::ask(&args.socket, Request::Explain(t)))?;
    let e = serde_json::from_value(answer["explanation"].clone())
        .map_err(|e| ExplainCmdError::BadAnswer(e.to_string()))?;
    Ok((e, "watch"))
}

/// Runs `ipcaudit explain`.
pub fn run(args: &ExplainArgs) -> Result<ExitCode, ExplainCmdError> {
    let (e, source) = fetch(args)?;
    if args.json {
        let v = serde_json::json!({"source": source, "explanation": e});
        println!("{v}");
    } else {
        print!("{}", render(&e));
    }
    Ok(ExitCode::SUCCESS)
}

/// `14:20:01.123` (UTC).
fn time_of_day(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        (ns % 1_000_000_000) / 1_000_000
    )
}

/// `2026-11-23 14:20:01.123 UTC`.
pub fn date_time(ns: u64) -> String {
    let mut s = String::new();
    crate::clock::rfc3339_nanos(ns, &mut s);
    // 2026-11-23T14:20:01.123456789Z
    match (s.get(..10), s.get(11..23)) {
        (Some(d), Some(t)) => format!("{d} {t} UTC"),
        _ => s,
    }
}

/// Control characters escaped: names and command lines come from other processes.
fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn who(e: &Explanation, key: ProcessKey) -> String {
    match e.person(key) {
        Some(p) => {
            let mut s = format!("{} {}", p.pid, clean(&p.name));
            if !p.alive {
                s.push_str(" †");
            }
            s
        }
        None => key.pid.to_string(),
    }
}

fn site_lines(site: &CallSite, indent: &str, out: &mut String) {
    let _ = writeln!(out, "{indent}at {}", clean(&site.summary(4)));
    if let Some(reason) = &site.reason {
        let pad = " ".repeat(indent.chars().count() + 3);
        let _ = writeln!(
            out,
            "{pad}(frames: {}, reason: {})",
            site.frames.len(),
            clean(reason)
        );
    }
}

fn person_lines(p: &Person, out: &mut String) {
    let d = &p.details;
    if let Some(exe) = &d.executable {
        let _ = writeln!(out, "    executable  {}", clean(exe));
    }
    if let Some(cmd) = &d.command_line {
        let _ = writeln!(out, "    command     {}", clean(cmd));
    }
    if !d.ancestors.is_empty() {
        let chain: Vec<String> = d
            .ancestors
            .iter()
            .map(|a| {
                let exe = a
                    .executable
                    .as_deref()
                    .map_or_else(String::new, |x| format!(" ({})", clean(x)));
                format!("{} {}{exe}", a.pid, clean(&a.name))
            })
            .collect();
        let _ = writeln!(out, "    parents     {}", chain.join(" ← "));
    }
    if let Some(unit) = &d.unit {
        let _ = writeln!(out, "    unit        {}", clean(unit));
    }
    if let Some(id) = &d.container_id {
        let _ = writeln!(out, "    container   {id}");
    }
    if let Some(ended) = &p.ended {
        let _ = writeln!(out, "    ended       {ended}");
    }
}

fn what_text(e: &Explanation, entry: &crate::model::StoryEntry) -> (String, String) {
    match &entry.what {
        What::Create => (
            "create".into(),
            e.call_site
                .as_ref()
                .map_or_else(String::new, |s| format!("at {}", clean(&s.summary(3)))),
        ),
        What::Appear => (
            "known".into(),
            "already existed when ipcaudit first saw it".into(),
        ),
        What::Open => ("open".into(), "got the existing object".into()),
        What::Attach {
            address,
            how,
            ranges,
            call_site,
        } => {
            let mut d = match how {
                AttachHow::Shmat => "shmat".to_owned(),
                AttachHow::Fork => format!("inherited at fork ({ranges} range(s))"),
                AttachHow::Snapshot => format!("already mapped ({ranges} range(s))"),
            };
            if let Some(a) = address {
                let _ = write!(d, " at {a:#x}");
            }
            if let Some(s) = call_site {
                let _ = write!(d, " from {}", clean(&s.summary(3)));
            }
            ("attach".into(), d)
        }
        What::Detach {
            address,
            how,
            ranges,
            left,
            exit_code,
        } => {
            let mut d = match how {
                DetachHow::Shmdt => "shmdt".to_owned(),
                DetachHow::Munmap => "munmap".to_owned(),
                DetachHow::Mremap => "mremap".to_owned(),
                DetachHow::Replaced => "mapped over (SHM_REMAP)".to_owned(),
                DetachHow::Exec => "exec dropped it".to_owned(),
                DetachHow::Exit => exit_code.map_or_else(
                    || "the process exited".to_owned(),
                    |c| format!("the process ended: {}", ended(c)),
                ),
                DetachHow::Snapshot => "no longer mapped (snapshot)".to_owned(),
                DetachHow::Unknown => "detached".to_owned(),
            };
            if let Some(a) = address {
                let _ = write!(d, " at {a:#x}");
            }
            if *ranges > 1 || *left > 0 {
                let _ = write!(d, " ({ranges} range(s); {left} left)");
            }
            ("detach".into(), d)
        }
        What::Control { command } => ("control".into(), clean(command)),
        What::Remove => ("remove".into(), "IPC_RMID".into()),
        What::Destroy => ("destroy".into(), "the kernel freed it".into()),
        What::FindingRaised { rule, severity } => (
            "finding".into(),
            format!("{rule} ({}) condition starts", severity.as_str()),
        ),
        What::FindingCleared { rule } => ("cleared".into(), format!("{rule} no longer holds")),
    }
}

/// The story as text for a terminal.
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let o = &e.object;
    let mut head = format!("{} {}", o.ty, o.id);
    if let Some(k) = o.key {
        let _ = write!(head, " · key {k:#010x}");
    }
    if let Some(size) = o.size {
        let _ = write!(head, " · {size} bytes");
    }
    if let Some(n) = o.nsems {
        let _ = write!(head, " · {n} semaphore(s)");
    }
    if let Some(m) = e.mode {
        let _ = write!(head, " · mode {:03o}", m & 0o777);
    }
    if let Some(u) = e.owner_uid {
        let _ = write!(head, " · owner uid {u}");
    }
    let _ = write!(head, " · IPC namespace {}", o.ns);
    let _ = writeln!(out, "{head}");
    let _ = writeln!(
        out,
        "verdict: {} — {}",
        e.verdict.state.to_uppercase(),
        clean(&e.verdict.summary)
    );
    if let Some(service) = &e.service {
        let _ = writeln!(out, "service: {}", clean(service));
    }
    out.push('\n');

    // Creation.
    match (e.created_ns, e.creator) {
        (Some(t), Some(c)) => {
            let _ = writeln!(out, "created {} by {}", date_time(t), who(e, c));
        }
        (None, Some(c)) => {
            let _ = writeln!(out, "created (before ipcaudit watched) by {}", who(e, c));
        }
        (_, None) => match e.creator_pid {
            Some(pid) => {
                let _ = writeln!(
                    out,
                    "created before ipcaudit watched, by pid {pid} (no longer running)"
                );
            }
            None => out.push_str("creator unknown\n"),
        },
    }
    match &e.call_site {
        Some(site) => site_lines(site, "  ", &mut out),
        None if e.creator.is_some() && e.created_ns.is_some() => {
            out.push_str("  (no call site recorded)\n");
        }
        None => {}
    }
    if let Some(p) = e.creator.and_then(|c| e.person(c)) {
        person_lines(p, &mut out);
    }

    // Timeline.
    out.push_str("\ntimeline (UTC)\n");
    for entry in &e.timeline {
        let (what, detail) = what_text(e, entry);
        let process = entry.process.map_or_else(String::new, |k| who(e, k));
        let line = format!(
            "  {}  {what:<8} {process:<24} {detail}",
            time_of_day(entry.time_ns)
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if e.omitted > 0 {
        let _ = writeln!(
            out,
            "  ({} entries between the first and the latest ones are not kept)",
            e.omitted
        );
    }

    // Other people.
    let others: Vec<&Person> = e
        .people
        .iter()
        .filter(|p| Some(p.entity) != e.creator)
        .collect();
    if !others.is_empty() {
        out.push_str("\nprocesses\n");
        for p in others {
            let _ = writeln!(
                out,
                "  {}{}",
                who(e, p.entity),
                p.service
                    .as_deref()
                    .map_or_else(String::new, |s| format!("  [{}]", clean(s)))
            );
            person_lines(p, &mut out);
        }
    }

    // Operations.
    if !e.operations.is_empty() {
        out.push_str("\noperations\n");
        for op in &e.operations {
            let s = &op.ops;
            let mut parts = Vec::new();
            if s.created > 0 {
                parts.push("created it".to_owned());
            }
            if s.opened > 0 {
                parts.push(format!("opened ×{}", s.opened));
            }
            if s.attached > 0 || s.detached > 0 {
                parts.push(format!(
                    "attached {} range(s), detached {}",
                    s.attached, s.detached
                ));
            }
            if s.sem_ops > 0 {
                let mut p = format!(
                    "semop ×{}: {} take(s), {} give-back(s); net {:+} unit(s) without SEM_UNDO",
                    s.sem_ops, s.takes, s.gives, s.net
                );
                if s.undo_net != 0 {
                    let _ = write!(p, ", {:+} with SEM_UNDO", s.undo_net);
                }
                parts.push(p);
            }
            if s.sent > 0 || s.received > 0 {
                parts.push(format!(
                    "sent {} message(s) ({} bytes), received {} ({} bytes)",
                    s.sent, s.sent_bytes, s.received, s.received_bytes
                ));
            }
            if s.controls > 0 {
                parts.push(format!("ctl ×{}", s.controls));
            }
            if s.failed > 0 {
                parts.push(format!("{} failed call(s)", s.failed));
            }
            let _ = writeln!(out, "  {:<24} {}", who(e, op.process), parts.join("; "));
            if let Some(site) = &op.attach_site {
                site_lines(site, "      attached ", &mut out);
            }
        }
        if e.operations_omitted > 0 {
            let _ = writeln!(
                out,
                "  ({} more process(es) not kept)",
                e.operations_omitted
            );
        }
    }

    // Holders.
    out.push_str("\nheld now by\n");
    if e.holders.is_empty() {
        out.push_str("  nobody\n");
    }
    for h in &e.holders {
        let process = h.process.map_or_else(String::new, |k| who(e, k));
        let _ = writeln!(out, "  {process:<24} {}", clean(&h.how));
    }

    // Verdict.
    let _ = writeln!(out, "\nverdict: {}", e.verdict.state);
    for f in &e.verdict.findings {
        let status = match f.due_ns {
            Some(due) if f.pending => format!(
                "holds since {}, reported at {} unless it ends",
                time_of_day(f.since_ns),
                time_of_day(due)
            ),
            _ => format!("since {}", time_of_day(f.since_ns)),
        };
        let _ = writeln!(out, "  {} ({}, {status})", f.rule, f.severity.as_str());
        let _ = writeln!(out, "    {}", clean(&f.description));
        for w in &f.why {
            let _ = writeln!(out, "    · {}", clean(w));
        }
    }
    if let Some(fix) = &e.verdict.remedy {
        let _ = writeln!(out, "  fix: {fix}");
    }
    out
}
