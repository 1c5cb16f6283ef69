//! One aligned line per record, for a terminal.

use std::fmt::Write as _;

use super::{Session, Summary};
use crate::{
    event::{Action, Event, EventKind},
    model::{FindingChange, ObjectRef},
    names::{ipc_command_name, signal_name},
};

/// A name made printable: control characters escaped, padded or cut to `width` characters.
pub fn printable(s: &str, width: usize, out: &mut String) {
    let mut n = 0;
    for c in s.chars() {
        let escaped: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        let len = escaped.chars().count();
        if n + len > width {
            break;
        }
        out.push_str(&escaped);
        n += len;
    }
    for _ in n..width {
        out.push(' ');
    }
}

pub fn header(out: &mut String) {
    out.push_str("TIME (UTC)          ACTION         PID     COMM             TYPE ID         KEY        DETAIL");
}

/// Time of day with milliseconds.
fn time_of_day(ns: u64, out: &mut String) {
    let secs = ns / 1_000_000_000;
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}.{:06}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        (ns % 1_000_000_000) / 1000
    );
}

pub fn encode_event(
    _session: &Session,
    ev: &Event,
    action: Action,
    object: Option<&ObjectRef>,
    posix: Option<&crate::model::PosixRef>,
    out: &mut String,
) {
    time_of_day(ev.time_ns, out);
    out.push_str("     ");
    let _ = write!(out, "{:<14} {:<7} ", action.as_str(), ev.task.process.pid);
    printable(&ev.task.comm, 16, out);
    out.push(' ');
    let k = &ev.kind;
    if k.posix_type().is_some() {
        encode_mq(k, posix, out);
        return;
    }
    let ty = k.ipc_type().or(object.map(|o| o.ty));
    let id = match k {
        EventKind::ShmGet { result, .. }
        | EventKind::SemGet { result, .. }
        | EventKind::MsgGet { result, .. } => result.ok(),
        EventKind::ShmAt { shmid: id, .. }
        | EventKind::ShmCtl { shmid: id, .. }
        | EventKind::SemOp { semid: id, .. }
        | EventKind::SemCtl { semid: id, .. }
        | EventKind::MsgSnd { msqid: id, .. }
        | EventKind::MsgRcv { msqid: id, .. }
        | EventKind::MsgCtl { msqid: id, .. } => Some(*id),
        _ => object.map(|o| o.id),
    };
    let key = match k {
        EventKind::ShmGet { key, .. }
        | EventKind::SemGet { key, .. }
        | EventKind::MsgGet { key, .. } => Some(*key),
        _ => object.and_then(|o| o.key),
    };
    let _ = write!(
        out,
        "{:<4} {:<10} {:<10} ",
        ty.map_or("-", |t| t.as_str()),
        id.map_or_else(|| "-".to_owned(), |i| i.to_string()),
        key.map_or_else(|| "-".to_owned(), |k| format!("0x{k:08x}"))
    );
    match k {
        EventKind::ShmGet { size, .. } => {
            let _ = write!(out, "size={size}");
        }
        EventKind::ShmAt {
            result: Ok(addr), ..
        }
        | EventKind::ShmDt { addr, .. } => {
            let _ = write!(out, "addr=0x{addr:x}");
        }
        EventKind::Munmap { addr, len, .. } => {
            let _ = write!(out, "munmap 0x{addr:x}+{len}");
        }
        EventKind::Mremap {
            old_addr,
            new_len,
            result,
            ..
        } => {
            let _ = write!(
                out,
                "mremap 0x{old_addr:x} -> {} len {new_len}",
                result.map_or_else(|_| "-".into(), |a| format!("0x{a:x}"))
            );
        }
        EventKind::SemGet { nsems, .. } => {
            let _ = write!(out, "nsems={nsems}");
        }
        EventKind::SemOp { ops, nsops, .. } => {
            out.push_str("ops=");
            for (i, op) in ops.iter().enumerate() {
                let _ = write!(
                    out,
                    "{}{}:{:+}{}{}",
                    if i > 0 { "," } else { "" },
                    op.num,
                    op.op,
                    if op.undo() { "/undo" } else { "" },
                    if op.nowait() { "/nowait" } else { "" }
                );
            }
            if usize::try_from(*nsops).unwrap_or(0) > ops.len() {
                let _ = write!(out, ",…({nsops})");
            }
        }
        EventKind::ShmCtl { cmd, .. }
        | EventKind::SemCtl { cmd, .. }
        | EventKind::MsgCtl { cmd, .. } => {
            if let Some(ty) = ty {
                let _ = write!(
                    out,
                    "{}",
                    ipc_command_name(ty, *cmd).map_or_else(|| format!("cmd={cmd}"), str::to_owned)
                );
            }
        }
        EventKind::MsgSnd { size, mtype, .. } => {
            let _ = write!(out, "type={} size={size}", mtype.unwrap_or(0));
        }
        EventKind::MsgRcv { result, mtype, .. } => {
            let _ = write!(
                out,
                "type={} size={}",
                mtype.map_or_else(|| "-".into(), |t| t.to_string()),
                result.as_ref().map_or(0, |s| *s)
            );
        }
        EventKind::Fork { child } => {
            let _ = write!(out, "child={}", child.pid);
        }
        EventKind::Exec { filename, .. } => {
            printable(filename, filename.chars().count().min(200), out);
        }
        EventKind::Exit { code } => {
            if code & 0x7f != 0 {
                let _ = write!(
                    out,
                    "killed by {}",
                    signal_name(code & 0x7f)
                        .map_or_else(|| (code & 0x7f).to_string(), str::to_owned)
                );
            } else {
                let _ = write!(out, "status={}", code >> 8);
            }
        }
        EventKind::Lost { count } => {
            let _ = write!(out, "{count} records lost");
        }
        _ => {}
    }
    if let Some(e) = k.errno() {
        let _ = write!(out, " FAILED {}", e.name());
    }
    while out.ends_with(' ') {
        out.pop();
    }
}

/// A POSIX message queue event's columns: `pmsg NAME` and what moved.
fn encode_mq(k: &EventKind, posix: Option<&crate::model::PosixRef>, out: &mut String) {
    let name = match k {
        EventKind::MqOpen { name, .. } | EventKind::MqUnlink { name, .. } => Some(name.as_str()),
        _ => posix.map(|p| p.name.as_str()),
    };
    out.push_str("pmsg ");
    match name {
        Some(n) => printable(n, n.chars().count().min(64), out),
        None => out.push('-'),
    }
    match k {
        EventKind::MqOpen { flags, result, .. } => {
            let _ = write!(
                out,
                " flags=0o{flags:o} fd={}",
                result.map_or_else(|_| "-".into(), |f| f.to_string())
            );
        }
        EventKind::MqSend { size, prio, .. } => {
            let _ = write!(out, " size={size} prio={prio}");
        }
        EventKind::MqReceive { result, prio, .. } => {
            let _ = write!(
                out,
                " size={} prio={}",
                result.as_ref().map_or(0, |s| *s),
                prio.map_or_else(|| "-".into(), |p| p.to_string())
            );
        }
        EventKind::MqNotify { register, .. } => {
            out.push_str(if *register {
                " register"
            } else {
                " unregister"
            });
        }
        _ => {}
    }
    if let Some(e) = k.errno() {
        let _ = write!(out, " FAILED {}", e.name());
    }
}

/// A finding raised or cleared, on one line.
pub fn encode_finding(time_ns: u64, change: &FindingChange, out: &mut String) {
    let f = change.finding();
    time_of_day(time_ns, out);
    let _ = write!(
        out,
        "     {:<7} {:<8} {}",
        if change.is_raised() {
            "ALERT"
        } else {
            "CLEARED"
        },
        f.severity.as_str(),
        f.rule.as_str()
    );
    if let Some(o) = &f.object {
        let _ = write!(out, " {} {}", o.ty, o.id);
        if let Some(key) = o.key {
            let _ = write!(out, " key 0x{key:08x}");
        }
    }
    if let Some(p) = &f.posix {
        let _ = write!(out, " {} ", p.ty);
        printable(&p.name, p.name.chars().count().min(64), out);
    }
    out.push_str(": ");
    printable(&f.description, f.description.chars().count().min(400), out);
    for e in &f.evidence {
        let _ = write!(out, " [{:?} {} ", e.role, e.pid);
        printable(&e.name, e.name.chars().count().min(16), out);
        out.push_str(if e.alive { " alive" } else { " dead" });
        if let Some(site) = &e.call_site {
            out.push_str(" at ");
            let summary = site.summary(2);
            printable(&summary, summary.chars().count().min(200), out);
        }
        out.push(']');
    }
    if let Some(service) = &f.service {
        out.push_str(" service ");
        printable(service, service.chars().count().min(120), out);
    }
    if let Some(remedy) = &f.remedy {
        let _ = write!(out, " -> {remedy}");
    }
}

/// Where in the code an object was created or attached.
pub fn encode_call_site(r: &crate::stack::Resolved, object: &ObjectRef, out: &mut String) {
    time_of_day(r.time_ns, out);
    out.push_str("     ");
    let _ = write!(out, "{:<14} {:<7} ", "call-site", r.task.process.pid);
    printable(&r.task.comm, 16, out);
    let _ = write!(out, " {:<4} {:<10} ", object.ty, object.id);
    let what = if r.of.attach.is_some() {
        "attached at "
    } else {
        "created at "
    };
    out.push_str(what);
    let summary = r.site.summary(4);
    printable(&summary, summary.chars().count().min(300), out);
    if let Some(reason) = &r.site.reason {
        let _ = write!(out, " (frames: {}, reason: ", r.site.frames.len());
        printable(reason, reason.chars().count().min(200), out);
        out.push(')');
    }
}

/// A resync note: how many corrections, and the first few.
pub fn encode_resync(time_ns: u64, differences: &[crate::model::Difference], out: &mut String) {
    time_of_day(time_ns, out);
    let _ = write!(
        out,
        "     model-resync   {} corrections:",
        differences.len()
    );
    for d in differences.iter().take(3) {
        let _ = write!(out, " {}", serde_json::to_string(d).unwrap_or_default());
    }
    if differences.len() > 3 {
        out.push_str(" …");
    }
}

pub fn encode_summary(summary: &Summary, out: &mut String) {
    let total: u64 = summary.counts.values().sum();
    let _ = write!(
        out,
        "-- {total} records, {} lost, {} undecodable, {} processes and {} objects evicted:",
        summary.lost, summary.undecodable, summary.evicted.processes, summary.evicted.objects
    );
    for (action, n) in &summary.counts {
        let _ = write!(out, " {action}={n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ProcessKey, Task};

    #[test]
    fn names_are_escaped_and_aligned() {
        let mut a = String::new();
        printable("a\nb\"c", 8, &mut a);
        assert_eq!(a, "a\\nb\"c  ");
        let mut b = String::new();
        printable("0123456789abcdefXYZ", 16, &mut b);
        assert_eq!(b, "0123456789abcdef");
        let mut c = String::new();
        printable("\u{fffd}é", 4, &mut c);
        assert_eq!(c.chars().count(), 4);
    }

    #[test]
    fn event_line_has_fixed_columns() {
        let ev = Event {
            time_ns: 3_723_000_000_000,
            ipc_ns: 1,
            task: Task {
                process: ProcessKey {
                    pid: 42,
                    start_ticks: 1,
                },
                tid: 42,
                comm: "x\ty".into(),
                uid: 0,
            },
            kind: EventKind::ShmGet {
                key: 1,
                size: 4096,
                flags: 0,
                result: Ok(7),
            },
        };
        let mut s = String::new();
        encode_event(
            &Session::default(),
            &ev,
            Action::ShmCreate,
            None,
            None,
            &mut s,
        );
        assert_eq!(
            s,
            "01:02:03.000000     shm-create     42      x\\ty             shm  7          0x00000001 size=4096"
        );
    }
}
