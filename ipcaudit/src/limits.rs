//! `ipcaudit limits`: every System V IPC limit of the kernel with what is used of it, per IPC
//! namespace — what `lsipc -g` and `ipcs -l -u` show.
//!
//! Usage is counted as the kernel counts it: `SHMALL` in pages (each segment rounded up to whole
//! pages), `SEMMNS` as the semaphores of every set. JSON is `lsipc -g --json`'s shape,
//! `{"ipclimits": [{"resource", "description", "limit", "used", "use%"}]}`, with numbers as
//! numbers, `null` where a limit has no usage, a `namespace` on each row, and a `usage` array
//! with what `ipcs -u` adds (resident and swapped pages, queued messages and bytes).

use std::fmt::Write as _;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::{Value, json};

use crate::ls::{self, NamespaceSel, NsError};
use crate::snapshot::read::{self, ReadError};
use crate::snapshot::{Limits, MsgQueue, SemSet, ShmSegment};

/// `SHMMIN`: fixed at 1 byte.
const SHMMIN: u64 = 1;
/// `SEMVMX`: fixed at 32767.
const SEMVMX: u64 = 32_767;

/// One namespace's tables and limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NsLimits {
    pub ipc_ns: u32,
    pub limits: Limits,
    pub shm: Vec<ShmSegment>,
    pub sem: Vec<SemSet>,
    pub msg: Vec<MsgQueue>,
}

impl NsLimits {
    /// Reads the calling thread's namespace.
    pub fn read() -> Result<Self, ReadError> {
        let ipc_ns = read::own_ipc_ns()?;
        let (shm, sem, msg) = read::read_sysvipc()?;
        Ok(Self {
            ipc_ns,
            limits: read::read_limits(),
            shm,
            sem,
            msg,
        })
    }
}

/// What is in use, as `ipcs -u` counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub namespace: u32,
    pub shm_segments: u64,
    pub shm_pages: u64,
    pub shm_rss_pages: u64,
    pub shm_swap_pages: u64,
    pub sem_sets: u64,
    pub semaphores: u64,
    pub msg_queues: u64,
    pub msg_messages: u64,
    pub msg_bytes: u64,
}

/// One limit row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub namespace: u32,
    pub resource: &'static str,
    pub description: &'static str,
    pub limit: u64,
    /// None for limits on a single object or operation (nothing to count).
    pub used: Option<u64>,
}

impl Row {
    /// Percent used, to two decimals; None without usage or limit.
    pub fn use_percent(&self) -> Option<f64> {
        let used = self.used?;
        if self.limit == 0 {
            return None;
        }
        let hundredths = u128::from(used) * 10_000 / u128::from(self.limit);
        // Below 2^53 for any realistic usage; exactness beyond two decimals is not promised.
        #[expect(
            clippy::cast_precision_loss,
            reason = "a percentage to two decimals; u128 → f64 rounds only past 2^53"
        )]
        Some(hundredths as f64 / 100.0)
    }
}

fn pages(bytes: u64, page: u64) -> u64 {
    if page == 0 { 0 } else { bytes.div_ceil(page) }
}

/// Usage of one namespace (pure).
pub fn usage(ns: &NsLimits) -> Usage {
    let page = ns.limits.page_size.max(1);
    Usage {
        namespace: ns.ipc_ns,
        shm_segments: ns.shm.len() as u64,
        shm_pages: ns.shm.iter().map(|s| pages(s.size, page)).sum(),
        shm_rss_pages: ns.shm.iter().map(|s| s.rss / page).sum(),
        shm_swap_pages: ns.shm.iter().map(|s| s.swap / page).sum(),
        sem_sets: ns.sem.len() as u64,
        semaphores: ns.sem.iter().map(|s| u64::from(s.nsems)).sum(),
        msg_queues: ns.msg.len() as u64,
        msg_messages: ns.msg.iter().map(|q| q.qnum).sum(),
        msg_bytes: ns.msg.iter().map(|q| q.cbytes).sum(),
    }
}

/// The rows of one namespace, in `lsipc -g`'s order (pure).
pub fn rows(ns: &NsLimits) -> Vec<Row> {
    let u = usage(ns);
    let l = &ns.limits;
    let row = |resource, description, limit, used| Row {
        namespace: ns.ipc_ns,
        resource,
        description,
        limit,
        used,
    };
    vec![
        row(
            "MSGMNI",
            "Number of message queues",
            l.msgmni,
            Some(u.msg_queues),
        ),
        row("MSGMAX", "Max size of message (bytes)", l.msgmax, None),
        row(
            "MSGMNB",
            "Default max size of queue (bytes)",
            l.msgmnb,
            None,
        ),
        row(
            "SHMMNI",
            "Shared memory segments",
            l.shmmni,
            Some(u.shm_segments),
        ),
        row("SHMALL", "Shared memory pages", l.shmall, Some(u.shm_pages)),
        row(
            "SHMMAX",
            "Max size of shared memory segment (bytes)",
            l.shmmax,
            None,
        ),
        row(
            "SHMMIN",
            "Min size of shared memory segment (bytes)",
            SHMMIN,
            None,
        ),
        row(
            "SEMMNI",
            "Number of semaphore identifiers",
            l.semmni,
            Some(u.sem_sets),
        ),
        row(
            "SEMMNS",
            "Total number of semaphores",
            l.semmns,
            Some(u.semaphores),
        ),
        row(
            "SEMMSL",
            "Max semaphores per semaphore set.",
            l.semmsl,
            None,
        ),
        row(
            "SEMOPM",
            "Max number of operations per semop(2)",
            l.semopm,
            None,
        ),
        row("SEMVMX", "Semaphore max value", SEMVMX, None),
    ]
}

/// The `--json` document.
pub fn render_json(namespaces: &[NsLimits]) -> Value {
    let limits: Vec<Value> = namespaces
        .iter()
        .flat_map(rows)
        .map(|r| {
            json!({
                "namespace": r.namespace,
                "resource": r.resource,
                "description": r.description,
                "limit": r.limit,
                "used": r.used,
                "use%": r.use_percent(),
            })
        })
        .collect();
    let usage: Vec<Usage> = namespaces.iter().map(usage).collect();
    json!({"ipclimits": limits, "usage": usage})
}

/// The table: `lsipc -g`'s, a namespace column when there are several, then `ipcs -u`'s usage.
pub fn render_text(namespaces: &[NsLimits]) -> String {
    let many = namespaces.len() > 1;
    let mut out = String::new();
    let all: Vec<Row> = namespaces.iter().flat_map(rows).collect();
    let limit_w = all
        .iter()
        .map(|r| r.limit.to_string().len())
        .max()
        .unwrap_or(5)
        .max(5);
    let used_w = all
        .iter()
        .map(|r| r.used.map_or(1, |u| u.to_string().len()))
        .max()
        .unwrap_or(4)
        .max(4);
    if many {
        out.push_str("NAMESPACE  ");
    }
    let _ = writeln!(
        out,
        "{:<8} {:<42} {:>limit_w$} {:>used_w$} {:>7}",
        "RESOURCE", "DESCRIPTION", "LIMIT", "USED", "USE%"
    );
    for r in &all {
        if many {
            let _ = write!(out, "{:<10} ", r.namespace);
        }
        let used = r.used.map_or_else(|| "-".to_owned(), |u| u.to_string());
        let pct = r
            .use_percent()
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.2}%"));
        let _ = writeln!(
            out,
            "{:<8} {:<42} {:>limit_w$} {used:>used_w$} {pct:>7}",
            r.resource, r.description, r.limit
        );
    }
    for ns in namespaces {
        let u = usage(ns);
        let _ = write!(
            out,
            "\nIPC namespace {}: {} segment(s), {} page(s) ({} resident, {} swapped); {} \
             semaphore set(s), {} semaphore(s); {} queue(s), {} message(s), {} byte(s) queued",
            u.namespace,
            u.shm_segments,
            u.shm_pages,
            u.shm_rss_pages,
            u.shm_swap_pages,
            u.sem_sets,
            u.semaphores,
            u.msg_queues,
            u.msg_messages,
            u.msg_bytes
        );
    }
    out.push('\n');
    out
}

/// What `limits` could not do.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("cannot read the kernel's IPC tables: {0}")]
    Read(#[from] ReadError),
    #[error(transparent)]
    Namespace(#[from] NsError),
}

/// `ipcaudit limits`.
pub fn run(args: &crate::cli::LimitsArgs) -> Result<ExitCode, LimitsError> {
    let (targets, mut notes) = ls::targets(args.namespace)?;
    let mut namespaces = Vec::new();
    for target in &targets {
        match ls::run_in(target, NsLimits::read) {
            Ok(ns) => namespaces.push(ns?),
            Err(e) if args.namespace == Some(NamespaceSel::All) => notes.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    for note in &notes {
        eprintln!("ipcaudit: note: {note}");
    }
    if args.json {
        println!("{}", render_json(&namespaces));
    } else {
        print!("{}", render_text(&namespaces));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::IpcPerm;

    fn ns() -> NsLimits {
        let perm = IpcPerm {
            key: 0,
            id: 1,
            mode: 0o600,
            uid: 0,
            gid: 0,
            cuid: 0,
            cgid: 0,
        };
        let seg = |size, rss| ShmSegment {
            perm: perm.clone(),
            size,
            cpid: 1,
            lpid: 1,
            nattch: 0,
            atime: 0,
            dtime: 0,
            ctime: 0,
            rss,
            swap: 0,
        };
        NsLimits {
            ipc_ns: 9,
            limits: Limits {
                shmmax: u64::MAX,
                shmall: 18_446_744_073_692_774_399,
                shmmni: 4096,
                semmsl: 32_000,
                semmns: 1_024_000_000,
                semopm: 500,
                semmni: 32_000,
                msgmax: 8192,
                msgmnb: 16_384,
                msgmni: 3,
                page_size: 4096,
            },
            shm: vec![seg(8192, 4096), seg(1, 0), seg(4097, 8192)],
            sem: vec![SemSet {
                perm: perm.clone(),
                nsems: 5,
                otime: 0,
                ctime: 0,
            }],
            msg: vec![MsgQueue {
                perm,
                cbytes: 160,
                qnum: 10,
                lspid: 0,
                lrpid: 0,
                stime: 0,
                rtime: 0,
                ctime: 0,
            }],
        }
    }

    #[test]
    fn usage_counts_like_the_kernel() {
        let u = usage(&ns());
        assert_eq!(u.shm_segments, 3);
        assert_eq!(u.shm_pages, 2 + 1 + 2);
        assert_eq!(u.shm_rss_pages, 3);
        assert_eq!((u.sem_sets, u.semaphores), (1, 5));
        assert_eq!((u.msg_queues, u.msg_messages, u.msg_bytes), (1, 10, 160));
    }

    #[test]
    fn rows_follow_lsipc_g() {
        let r = rows(&ns());
        let names: Vec<&str> = r.iter().map(|r| r.resource).collect();
        assert_eq!(
            names,
            [
                "MSGMNI", "MSGMAX", "MSGMNB", "SHMMNI", "SHMALL", "SHMMAX", "SHMMIN", "SEMMNI",
                "SEMMNS", "SEMMSL", "SEMOPM", "SEMVMX"
            ]
        );
        let shmmni = &r[3];
        assert_eq!((shmmni.limit, shmmni.used), (4096, Some(3)));
        assert_eq!(shmmni.use_percent(), Some(0.07));
        assert_eq!(r[0].use_percent(), Some(33.33));
        assert_eq!(r[1].use_percent(), None);
        let zero = Row {
            limit: 0,
            ..r[0].clone()
        };
        assert_eq!(zero.use_percent(), None);
    }

    #[test]
    fn json_and_text() {
        let v = render_json(&[ns()]);
        let first = &v["ipclimits"][0];
        assert_eq!(first["resource"], "MSGMNI");
        assert_eq!(first["used"], 1);
        assert_eq!(first["use%"], 33.33);
        assert_eq!(first["namespace"], 9);
        assert_eq!(v["ipclimits"][1]["used"], Value::Null);
        assert_eq!(v["usage"][0]["shm_pages"], 5);
        let text = render_text(&[ns()]);
        assert!(text.starts_with("RESOURCE"), "{text}");
        assert!(text.contains("33.33%"), "{text}");
        assert!(text.contains("3 segment(s), 5 page(s)"), "{text}");
        let two = render_text(&[ns(), ns()]);
        assert!(two.starts_with("NAMESPACE"), "{two}");
    }
}
