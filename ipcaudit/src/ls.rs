//! `ipcaudit ls`: every System V IPC object with its owners, its creator and users (alive or
//! not), its attachments and waiters — a superset of `lsipc` and `ipcs`. Also the IPC namespace
//! machinery `ls`, `limits`, `leaks` and `reap` share.
//!
//! # Namespaces
//!
//! /proc/sysvipc, /proc/sys/kernel/{shm*,sem,msg*} and the IPC syscalls all go by the IPC
//! namespace of the calling *thread*. Another namespace is therefore read on a dedicated thread
//! that joins it (`setns` on /proc/PID/ns/ipc) and ends with the work: the rest of the process
//! never changes namespace.
//!
//! # Output
//!
//! A table per type on a terminal (or without `--json`), like `ipcs`; with `--json` one object
//! in the shape of `lsipc --json`: `{"sharedmemory": [...], "semaphores": [...], "messages":
//! [...]}`, each row an object whose keys are the lower-cased column names (`-o` picks the
//! columns, by `lsipc`'s names plus ipcaudit's own). Numbers are JSON numbers, times RFC 3339
//! UTC, a time never set and an unknown value `null`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::process::ExitCode;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use serde_json::{Value, json};

use crate::event::{IpcType, ObjectType, PosixType};
use crate::leaks::{LeaksError, Scene};
use crate::snapshot::parse::parse_ns_link;
use crate::snapshot::read::{self, own_ipc_ns};
use crate::snapshot::{
    Blocked, Hold, MsgQueue, PosixObject, SHM_DEST, SHM_LOCKED, SemSet, ShmSegment,
};

// ---------------------------------------------------------------------------------------------
// Namespaces

/// Which IPC namespaces to read: the one of a process, or every one that has a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceSel {
    Pid(u32),
    All,
}

/// Parses `--namespace PID|all`.
pub fn parse_namespace(s: &str) -> Result<NamespaceSel, String> {
    if s == "all" {
        return Ok(NamespaceSel::All);
    }
    match s.parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(NamespaceSel::Pid(pid)),
        _ => Err(format!(
            "{s:?} is neither a process id nor `all`: the IPC namespace of which process?"
        )),
    }
}

/// One IPC namespace to read, and how to get there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsTarget {
    /// Inode of the namespace.
    pub inode: u32,
    /// A process in it (None: our own namespace, read where we are).
    pub pid: Option<u32>,
}

/// Entering an IPC namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("cannot read our own IPC namespace: {0}")]
    Own(#[source] read::ReadError),
    #[error("/proc/{pid}/ns/ipc: {source}")]
    Open {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot enter the IPC namespace {inode} of process {pid}: setns: {errno}{hint}",
        hint = if *errno == Errno::EPERM { " (needs CAP_SYS_ADMIN)" } else { "" }
    )]
    Setns { pid: u32, inode: u32, errno: Errno },
    #[error("process {pid} left IPC namespace {inode} before it could be entered")]
    Moved { pid: u32, inode: u32 },
    #[error("cannot start a thread to enter IPC namespace {inode}: {source}")]
    Thread {
        inode: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("the thread reading IPC namespace {inode} panicked")]
    Panicked { inode: u32 },
}

/// The namespaces `sel` names (None: our own), and notes about those that could not be listed.
pub fn targets(sel: Option<NamespaceSel>) -> Result<(Vec<NsTarget>, Vec<String>), NsError> {
    let own = own_ipc_ns().map_err(NsError::Own)?;
    let own_target = NsTarget {
        inode: own,
        pid: None,
    };
    match sel {
        None => Ok((vec![own_target], Vec::new())),
        Some(NamespaceSel::Pid(pid)) => {
            let path = format!("/proc/{pid}/ns/ipc");
            let link = std::fs::read_link(&path).map_err(|source| NsError::Open { pid, source })?;
            let inode = parse_ns_link(&link.to_string_lossy()).ok_or_else(|| NsError::Open {
                pid,
                source: std::io::Error::other(format!("unexpected link {}", link.display())),
            })?;
            Ok((
                vec![if inode == own {
                    own_target
                } else {
                    NsTarget {
                        inode,
                        pid: Some(pid),
                    }
                }],
                Vec::new(),
            ))
        }
        Some(NamespaceSel::All) => {
            let mut found: BTreeMap<u32, u32> = BTreeMap::new();
            let mut hidden = 0usize;
            if let Ok(entries) = std::fs::read_dir("/proc") {
                for entry in entries.flatten() {
                    let Some(pid) = entry
                        .file_name()
                        .to_str()
                        .and_then(|s| s.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    match std::fs::read_link(format!("/proc/{pid}/ns/ipc")) {
                        Ok(link) => {
                            if let Some(inode) = parse_ns_link(&link.to_string_lossy()) {
                                found.entry(inode).or_insert(pid);
                            }
                        }
                        Err(e) if e.raw_os_error() == Some(libc::EACCES) => hidden += 1,
                        Err(_) => {}
                    }
                }
            }
            let mut out = vec![own_target];
            out.extend(
                found
                    .into_iter()
                    .filter(|(inode, _)| *inode != own)
                    .map(|(inode, pid)| NsTarget {
                        inode,
                        pid: Some(pid),
                    }),
            );
            let mut notes = Vec::new();
            if hidden > 0 {
                notes.push(format!(
                    "the IPC namespace of {hidden} process(es) is not ours to see (no ptrace \
                     access): namespaces only they are in are left out"
                ));
            }
            Ok((out, notes))
        }
    }
}

/// Runs `f` inside the namespace: here for our own, else on a thread that joins it first.
pub fn run_in<T: Send>(target: &NsTarget, f: impl FnOnce() -> T + Send) -> Result<T, NsError> {
    let Some(pid) = target.pid else {
        return Ok(f());
    };
    let inode = target.inode;
    let path = format!("/proc/{pid}/ns/ipc");
    let file = std::fs::File::open(&path).map_err(|source| NsError::Open { pid, source })?;
    let meta = file
        .metadata()
        .map_err(|source| NsError::Open { pid, source })?;
    if meta.ino() != u64::from(inode) {
        return Err(NsError::Moved { pid, inode });
    }
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("ipcaudit-ns".into())
            .spawn_scoped(s, move || {
                nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWIPC)
                    .map_err(|errno| NsError::Setns { pid, inode, errno })?;
                if own_ipc_ns().ok() != Some(inode) {
                    return Err(NsError::Moved { pid, inode });
                }
                Ok(f())
            })
            .map_err(|source| NsError::Thread { inode, source })?;
        handle.join().map_err(|_| NsError::Panicked { inode })?
    })
}

// ---------------------------------------------------------------------------------------------
// Columns

/// Which types a column applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Applies {
    /// Every type, System V and POSIX.
    Any,
    /// The System V types.
    Sysv,
    Shm,
    Sem,
    Msg,
    SemMsg,
    /// System V and POSIX shared memory.
    ShmPshm,
    /// System V and POSIX message queues.
    MsgPmsg,
    /// The POSIX types.
    Posix,
    Pmsg,
}

impl Applies {
    fn to(self, ty: ObjectType) -> bool {
        use ObjectType::{Posix, Sysv};
        matches!(
            (self, ty),
            (Self::Any, _)
                | (Self::Sysv, Sysv(_))
                | (Self::Shm | Self::ShmPshm, Sysv(IpcType::Shm))
                | (Self::ShmPshm, Posix(PosixType::Pshm))
                | (Self::Sem | Self::SemMsg, Sysv(IpcType::Sem))
                | (Self::Msg | Self::SemMsg | Self::MsgPmsg, Sysv(IpcType::Msg))
                | (Self::MsgPmsg | Self::Pmsg, Posix(PosixType::Pmsg))
                | (Self::Posix, Posix(_))
        )
    }

    /// What `--help` says after the column.
    fn scope(self) -> &'static str {
        match self {
            Self::Any => "",
            Self::Sysv => " [System V]",
            Self::Shm => " [shm]",
            Self::Sem => " [sem]",
            Self::Msg => " [msg]",
            Self::SemMsg => " [sem, msg]",
            Self::ShmPshm => " [shm, pshm]",
            Self::MsgPmsg => " [msg, pmsg]",
            Self::Posix => " [POSIX]",
            Self::Pmsg => " [pmsg]",
        }
    }
}

/// A column: `lsipc`'s, or one of ipcaudit's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    Key,
    Id,
    Owner,
    Perms,
    Cuid,
    Cuser,
    Cgid,
    Cgroup,
    Uid,
    User,
    Gid,
    Group,
    Ctime,
    Type,
    Namespace,
    Mode,
    Age,
    Size,
    Nattch,
    Status,
    Attach,
    Detach,
    Command,
    Cpid,
    Lpid,
    Calive,
    Lalive,
    Attached,
    Rss,
    Swap,
    Usedbytes,
    Qbytes,
    Msgs,
    Send,
    Recv,
    Lspid,
    Lrpid,
    Lsalive,
    Lralive,
    Nsems,
    Otime,
    Values,
    Ncount,
    Zcount,
    Sempid,
    Waiters,
    Name,
    Path,
    Inode,
    Mtime,
    Memory,
    Holders,
    Maxmsg,
    Msgsize,
    Notifypid,
}

/// Name (as `-o` takes it), what it applies to, and what it shows.
const COLUMNS: &[(Column, &str, Applies, &str)] = &[
    (Column::Key, "KEY", Applies::Sysv, "Resource key"),
    (Column::Id, "ID", Applies::Sysv, "Resource ID"),
    (
        Column::Owner,
        "OWNER",
        Applies::Any,
        "Owner's username or UID",
    ),
    (Column::Perms, "PERMS", Applies::Any, "Permissions (rwx)"),
    (Column::Cuid, "CUID", Applies::Sysv, "Creator UID"),
    (Column::Cuser, "CUSER", Applies::Sysv, "Creator user"),
    (Column::Cgid, "CGID", Applies::Sysv, "Creator GID"),
    (Column::Cgroup, "CGROUP", Applies::Sysv, "Creator group"),
    (Column::Uid, "UID", Applies::Any, "User ID"),
    (Column::User, "USER", Applies::Any, "User name"),
    (Column::Gid, "GID", Applies::Any, "Group ID"),
    (Column::Group, "GROUP", Applies::Any, "Group name"),
    (
        Column::Ctime,
        "CTIME",
        Applies::Any,
        "Time of the last change",
    ),
    (
        Column::Type,
        "TYPE",
        Applies::Any,
        "shm, sem, msg, pshm, psem or pmsg (ipcaudit)",
    ),
    (
        Column::Namespace,
        "NAMESPACE",
        Applies::Any,
        "IPC namespace inode (ipcaudit)",
    ),
    (
        Column::Mode,
        "MODE",
        Applies::Any,
        "Permissions in octal (ipcaudit)",
    ),
    (
        Column::Age,
        "AGE",
        Applies::Any,
        "Time since the last change, seconds (ipcaudit)",
    ),
    (Column::Size, "SIZE", Applies::ShmPshm, "Segment size"),
    (
        Column::Nattch,
        "NATTCH",
        Applies::Shm,
        "Number of attached processes",
    ),
    (
        Column::Status,
        "STATUS",
        Applies::Shm,
        "Status (dest, locked)",
    ),
    (Column::Attach, "ATTACH", Applies::Shm, "Attach time"),
    (Column::Detach, "DETACH", Applies::Shm, "Detach time"),
    (
        Column::Command,
        "COMMAND",
        Applies::Shm,
        "Creator command line",
    ),
    (Column::Cpid, "CPID", Applies::Shm, "PID of the creator"),
    (Column::Lpid, "LPID", Applies::Shm, "PID of last user"),
    (
        Column::Calive,
        "CALIVE",
        Applies::Shm,
        "Creator still alive (ipcaudit)",
    ),
    (
        Column::Lalive,
        "LALIVE",
        Applies::Shm,
        "Last user still alive (ipcaudit)",
    ),
    (
        Column::Attached,
        "ATTACHED",
        Applies::Shm,
        "Processes mapping it (ipcaudit)",
    ),
    (
        Column::Rss,
        "RSS",
        Applies::Shm,
        "Resident bytes (ipcaudit)",
    ),
    (
        Column::Swap,
        "SWAP",
        Applies::Shm,
        "Swapped bytes (ipcaudit)",
    ),
    (
        Column::Usedbytes,
        "USEDBYTES",
        Applies::MsgPmsg,
        "Bytes used",
    ),
    (
        Column::Qbytes,
        "QBYTES",
        Applies::Msg,
        "Queue capacity in bytes (ipcaudit)",
    ),
    (Column::Msgs, "MSGS", Applies::MsgPmsg, "Number of messages"),
    (Column::Send, "SEND", Applies::Msg, "Time of last msg sent"),
    (
        Column::Recv,
        "RECV",
        Applies::Msg,
        "Time of last msg received",
    ),
    (
        Column::Lspid,
        "LSPID",
        Applies::Msg,
        "PID of the last msg sender",
    ),
    (
        Column::Lrpid,
        "LRPID",
        Applies::Msg,
        "PID of the last msg receiver",
    ),
    (
        Column::Lsalive,
        "LSALIVE",
        Applies::Msg,
        "Last sender still alive (ipcaudit)",
    ),
    (
        Column::Lralive,
        "LRALIVE",
        Applies::Msg,
        "Last receiver still alive (ipcaudit)",
    ),
    (Column::Nsems, "NSEMS", Applies::Sem, "Number of semaphores"),
    (
        Column::Otime,
        "OTIME",
        Applies::Sem,
        "Time of the last operation",
    ),
    (
        Column::Values,
        "VALUES",
        Applies::Sem,
        "Semaphore values (ipcaudit)",
    ),
    (
        Column::Ncount,
        "NCOUNT",
        Applies::Sem,
        "Waiting for increase, per semaphore (ipcaudit)",
    ),
    (
        Column::Zcount,
        "ZCOUNT",
        Applies::Sem,
        "Waiting for zero, per semaphore (ipcaudit)",
    ),
    (
        Column::Sempid,
        "SEMPID",
        Applies::Sem,
        "Last operator per semaphore, alive? (ipcaudit)",
    ),
    (
        Column::Waiters,
        "WAITERS",
        Applies::SemMsg,
        "Tasks blocked on it (ipcaudit)",
    ),
    (
        Column::Name,
        "NAME",
        Applies::Posix,
        "POSIX name (/NAME, as shm_open, sem_open, mq_open take it)",
    ),
    (Column::Path, "PATH", Applies::Posix, "Its file (ipcaudit)"),
    (
        Column::Inode,
        "INODE",
        Applies::Posix,
        "Its file's inode (ipcaudit)",
    ),
    (
        Column::Mtime,
        "MTIME",
        Applies::Posix,
        "Time of the last change",
    ),
    (
        Column::Memory,
        "MEMORY",
        Applies::Posix,
        "Memory it takes, bytes (ipcaudit)",
    ),
    (
        Column::Holders,
        "HOLDERS",
        Applies::Posix,
        "Processes mapping it or holding it open (ipcaudit)",
    ),
    (
        Column::Maxmsg,
        "MAXMSG",
        Applies::Pmsg,
        "Capacity in messages (ipcaudit)",
    ),
    (
        Column::Msgsize,
        "MSGSIZE",
        Applies::Pmsg,
        "Largest message, bytes (ipcaudit)",
    ),
    (
        Column::Notifypid,
        "NOTIFYPID",
        Applies::Pmsg,
        "Process registered with mq_notify (ipcaudit)",
    ),
];

impl Column {
    fn entry(self) -> (Column, &'static str, Applies, &'static str) {
        COLUMNS
            .iter()
            .copied()
            .find(|(c, ..)| *c == self)
            .unwrap_or((self, "?", Applies::Any, ""))
    }

    /// The name `-o` takes (and the table header).
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// The JSON key: the lower-cased name, as `lsipc --json` has it.
    pub fn json_key(self) -> String {
        self.name().to_ascii_lowercase()
    }

    pub fn applies_to(self, ty: ObjectType) -> bool {
        self.entry().2.to(ty)
    }

    /// Right-aligned in the table.
    fn numeric(self) -> bool {
        matches!(
            self,
            Self::Id
                | Self::Cuid
                | Self::Cgid
                | Self::Uid
                | Self::Gid
                | Self::Namespace
                | Self::Mode
                | Self::Age
                | Self::Size
                | Self::Nattch
                | Self::Cpid
                | Self::Lpid
                | Self::Rss
                | Self::Swap
                | Self::Usedbytes
                | Self::Qbytes
                | Self::Msgs
                | Self::Lspid
                | Self::Lrpid
                | Self::Nsems
                | Self::Inode
                | Self::Memory
                | Self::Maxmsg
                | Self::Msgsize
                | Self::Notifypid
        )
    }

    /// Widest a table cell may be (longer ones are cut with an ellipsis).
    fn max_width(self) -> usize {
        match self {
            Self::Command | Self::Attached | Self::Holders | Self::Name | Self::Path => 36,
            Self::Waiters => 28,
            _ => 24,
        }
    }
}

/// Parses one `-o` column name (case-insensitive).
pub fn parse_column(s: &str) -> Result<Column, String> {
    COLUMNS
        .iter()
        .find(|(_, name, ..)| name.eq_ignore_ascii_case(s.trim()))
        .map(|(c, ..)| *c)
        .ok_or_else(|| {
            let names: Vec<&str> = COLUMNS.iter().map(|(_, n, ..)| *n).collect();
            format!("unknown column {s:?}; columns: {}", names.join(","))
        })
}

/// The table's default columns for a type.
fn default_columns(ty: ObjectType) -> &'static [Column] {
    use Column as C;
    let ty = match ty {
        ObjectType::Sysv(t) => t,
        ObjectType::Posix(PosixType::Pshm) => {
            return &[
                C::Name,
                C::Owner,
                C::Perms,
                C::Mode,
                C::Size,
                C::Memory,
                C::Mtime,
                C::Age,
                C::Holders,
            ];
        }
        ObjectType::Posix(PosixType::Psem) => {
            return &[
                C::Name,
                C::Owner,
                C::Perms,
                C::Mode,
                C::Mtime,
                C::Age,
                C::Holders,
            ];
        }
        ObjectType::Posix(PosixType::Pmsg) => {
            return &[
                C::Name,
                C::Owner,
                C::Perms,
                C::Mode,
                C::Msgs,
                C::Usedbytes,
                C::Maxmsg,
                C::Msgsize,
                C::Mtime,
                C::Age,
                C::Notifypid,
                C::Holders,
            ];
        }
    };
    match ty {
        IpcType::Shm => &[
            C::Key,
            C::Id,
            C::Owner,
            C::Perms,
            C::Mode,
            C::Size,
            C::Nattch,
            C::Status,
            C::Ctime,
            C::Age,
            C::Cpid,
            C::Calive,
            C::Command,
            C::Lpid,
            C::Lalive,
            C::Attached,
        ],
        IpcType::Sem => &[
            C::Key,
            C::Id,
            C::Owner,
            C::Perms,
            C::Mode,
            C::Nsems,
            C::Ctime,
            C::Otime,
            C::Age,
            C::Values,
            C::Ncount,
            C::Zcount,
            C::Sempid,
            C::Waiters,
        ],
        IpcType::Msg => &[
            C::Key,
            C::Id,
            C::Owner,
            C::Perms,
            C::Mode,
            C::Usedbytes,
            C::Qbytes,
            C::Msgs,
            C::Ctime,
            C::Age,
            C::Lspid,
            C::Lsalive,
            C::Lrpid,
            C::Lralive,
            C::Waiters,
        ],
    }
}

/// Every column of a type, in order (the JSON default).
fn all_columns(ty: ObjectType) -> Vec<Column> {
    COLUMNS
        .iter()
        .filter(|(_, _, a, _)| a.to(ty))
        .map(|(c, ..)| *c)
        .collect()
}

/// The `--help` text listing the columns.
pub fn columns_help() -> String {
    let mut s = String::from("Columns (-o, comma separated; lsipc's names and ipcaudit's):\n");
    for (_, name, applies, help) in COLUMNS {
        let _ = writeln!(s, "  {name:<10} {help}{}", applies.scope());
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Values

/// `rw-r-----` for mode bits.
pub fn perms_string(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 0o7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// RFC 3339 UTC to the second, or null for a time never set (0).
pub fn time_json(secs: i64) -> Value {
    match u64::try_from(secs) {
        Ok(s) if s > 0 => {
            let mut out = String::with_capacity(32);
            crate::clock::rfc3339_nanos(s.saturating_mul(1_000_000_000), &mut out);
            out.truncate(19);
            out.push('Z');
            Value::String(out)
        }
        _ => Value::Null,
    }
}

/// `3d04h`, `5m12s`, `42s`.
pub fn human_age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// User and group names, looked up once each.
#[derive(Default)]
struct Names {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names {
    fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .clone()
    }

    /// The name, or the number when the id has none.
    fn user_or_id(&mut self, uid: u32) -> Value {
        self.user(uid)
            .map_or_else(|| json!(uid.to_string()), Value::String)
    }
}

/// A process's command line (arguments joined by spaces), or `[comm]` when it has none (a
/// zombie, a kernel thread).
fn command_line(pid: u32, comm: &str) -> String {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(bytes) if !bytes.is_empty() => {
            let text = String::from_utf8_lossy(&bytes);
            text.trim_end_matches('\0').replace('\0', " ")
        }
        _ => format!("[{comm}]"),
    }
}

/// `msg_qbytes` of a queue: IPC_STAT, or MSG_STAT_ANY (no read permission needed) by index.
pub fn msg_qbytes(msqid: i32) -> Option<u64> {
    /// `MSG_STAT_ANY` (Linux 4.17).
    const MSG_STAT_ANY: libc::c_int = 13;
    let mut ds = std::mem::MaybeUninit::<libc::msqid_ds>::zeroed();
    // SAFETY: IPC_STAT writes one `struct msqid_ds` to the buffer it is given.
    if unsafe { libc::msgctl(msqid, libc::IPC_STAT, ds.as_mut_ptr()) } == 0 {
        // SAFETY: zero-initialized plain data, filled by the kernel.
        return Some(unsafe { ds.assume_init() }.msg_qbytes);
    }
    // The index is the id's low bits (15 of them; 24 with ipcmni_extend).
    for mask in [0x7fff, 0x00ff_ffff] {
        let index = msqid & mask;
        // SAFETY: as above; the raw syscall takes the 64-bit layout on x86_64, which
        // `libc::msqid_ds` is.
        let r = unsafe {
            libc::syscall(
                libc::SYS_msgctl,
                libc::c_long::from(index),
                libc::c_long::from(MSG_STAT_ANY),
                ds.as_mut_ptr(),
            )
        };
        if r == libc::c_long::from(msqid) {
            // SAFETY: as above.
            return Some(unsafe { ds.assume_init() }.msg_qbytes);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Rows

/// One namespace's objects, with what `ls` reads besides the snapshot.
pub struct Listing {
    pub scene: Scene,
    /// `msg_qbytes` by queue id (read in the namespace).
    pub qbytes: HashMap<i32, u64>,
}

impl Listing {
    /// Reads the calling thread's namespace.
    pub fn read() -> Result<Self, LeaksError> {
        let scene = Scene::read()?;
        let qbytes = scene
            .snap
            .msg
            .iter()
            .filter_map(|q| Some((q.perm.id, msg_qbytes(q.perm.id)?)))
            .collect();
        Ok(Self { scene, qbytes })
    }
}

/// One object of a listing.
#[derive(Clone, Copy)]
enum Obj<'a> {
    Shm(&'a ShmSegment),
    Sem(&'a SemSet),
    Msg(&'a MsgQueue),
    Posix(&'a PosixObject),
}

/// A System V object of a listing.
#[derive(Clone, Copy)]
enum Sysv<'a> {
    Shm(&'a ShmSegment),
    Sem(&'a SemSet),
    Msg(&'a MsgQueue),
}

impl Sysv<'_> {
    fn perm(&self) -> &crate::snapshot::IpcPerm {
        match self {
            Self::Shm(s) => &s.perm,
            Self::Sem(s) => &s.perm,
            Self::Msg(q) => &q.perm,
        }
    }

    fn ctime(&self) -> i64 {
        match self {
            Self::Shm(s) => s.ctime,
            Self::Sem(s) => s.ctime,
            Self::Msg(q) => q.ctime,
        }
    }
}

/// The holders of a POSIX object, one entry per process: its mappings and descriptors.
pub fn posix_holders_json(scene: &Scene, o: &PosixObject) -> Value {
    let mut per: BTreeMap<crate::event::ProcessKey, (String, u32, u32, bool, bool)> =
        BTreeMap::new();
    for h in crate::leaks::posix_holders_of(&scene.snap, o) {
        let e = per
            .entry(h.process)
            .or_insert_with(|| (h.comm.clone(), 0, 0, false, false));
        match h.hold {
            Hold::Map { writable, .. } => {
                e.1 += 1;
                e.3 = true;
                e.4 |= writable;
            }
            Hold::Fd { read, write, .. } => {
                e.2 += 1;
                e.3 |= read;
                e.4 |= write;
            }
        }
    }
    Value::Array(
        per.into_iter()
            .map(|(k, (comm, maps, fds, read, write))| {
                json!({"pid": k.pid, "command": comm, "maps": maps, "fds": fds,
                       "read": read, "write": write})
            })
            .collect(),
    )
}

/// Builds cells.
struct Cells<'a> {
    listing: &'a Listing,
    names: &'a mut Names,
}

impl Cells<'_> {
    fn waiters(&self, on: impl Fn(Blocked) -> bool) -> Value {
        let scene = &self.listing.scene;
        let list: Vec<Value> = scene
            .snap
            .waiters
            .iter()
            .filter(|w| on(w.on))
            .map(|w| {
                let op = match w.on {
                    Blocked::Sem { .. } => "semop",
                    Blocked::MsgRcv { .. } => "msgrcv",
                    Blocked::MsgSnd { .. } => "msgsnd",
                };
                json!({
                    "pid": w.pid,
                    "tid": w.tid,
                    "command": scene.procs.get(w.pid).map(|p| p.comm.clone()),
                    "op": op,
                })
            })
            .collect();
        Value::Array(list)
    }

    fn posix_cell(&mut self, col: Column, o: &PosixObject) -> Value {
        let scene = &self.listing.scene;
        let r = crate::leaks::posix_ref(scene.snap.ipc_ns, o);
        let q = o.queue;
        match col {
            Column::Owner | Column::User => self.names.user_or_id(o.uid),
            Column::Perms => json!(perms_string(o.mode)),
            Column::Uid => json!(o.uid),
            Column::Gid => json!(o.gid),
            Column::Group => self
                .names
                .group(o.gid)
                .map_or_else(|| json!(o.gid.to_string()), Value::String),
            Column::Ctime => time_json(o.ctime),
            Column::Mtime => time_json(o.mtime),
            Column::Type => json!(o.ty.as_str()),
            Column::Namespace => json!(scene.snap.ipc_ns),
            Column::Mode => json!(format!("{:04o}", o.mode & 0o777)),
            Column::Age => {
                json!(u64::try_from(scene.now_secs().saturating_sub(o.last_change())).unwrap_or(0))
            }
            Column::Size => json!(o.size),
            Column::Name => json!(o.name),
            Column::Path => json!(r.path()),
            Column::Inode => json!(o.ino),
            Column::Memory => json!(o.memory),
            Column::Holders => posix_holders_json(scene, o),
            Column::Msgs => q.map_or(Value::Null, |q| json!(q.messages)),
            Column::Usedbytes => q.map_or(Value::Null, |q| json!(q.qsize)),
            Column::Maxmsg => q.map_or(Value::Null, |q| json!(q.max_messages)),
            Column::Msgsize => q.map_or(Value::Null, |q| json!(q.message_size)),
            Column::Notifypid => match q {
                Some(q) if q.notify_pid != 0 => json!(q.notify_pid),
                _ => Value::Null,
            },
            _ => Value::Null,
        }
    }

    fn cell(&mut self, col: Column, obj: Obj<'_>) -> Value {
        let obj = match obj {
            Obj::Posix(o) => return self.posix_cell(col, o),
            Obj::Shm(s) => Sysv::Shm(s),
            Obj::Sem(s) => Sysv::Sem(s),
            Obj::Msg(q) => Sysv::Msg(q),
        };
        let scene = &self.listing.scene;
        let procs = &scene.procs;
        let p = obj.perm();
        let now = scene.now_secs();
        match (col, obj) {
            (Column::Key, _) => json!(format!("0x{:08x}", p.key)),
            (Column::Id, _) => json!(p.id),
            (Column::Owner | Column::User, _) => self.names.user_or_id(p.uid),
            (Column::Perms, _) => json!(perms_string(p.mode)),
            (Column::Cuid, _) => json!(p.cuid),
            (Column::Cuser, _) => self.names.user_or_id(p.cuid),
            (Column::Cgid, _) => json!(p.cgid),
            (Column::Cgroup, _) => self
                .names
                .group(p.cgid)
                .map_or_else(|| json!(p.cgid.to_string()), Value::String),
            (Column::Uid, _) => json!(p.uid),
            (Column::Gid, _) => json!(p.gid),
            (Column::Group, _) => self
                .names
                .group(p.gid)
                .map_or_else(|| json!(p.gid.to_string()), Value::String),
            (Column::Ctime, o) => time_json(o.ctime()),
            (Column::Type, o) => json!(match o {
                Sysv::Shm(_) => "shm",
                Sysv::Sem(_) => "sem",
                Sysv::Msg(_) => "msg",
            }),
            (Column::Namespace, _) => json!(scene.snap.ipc_ns),
            (Column::Mode, _) => json!(format!("{:04o}", p.mode & 0o777)),
            (Column::Age, o) => json!(u64::try_from(now.saturating_sub(o.ctime())).unwrap_or(0)),
            (Column::Size, Sysv::Shm(s)) => json!(s.size),
            (Column::Nattch, Sysv::Shm(s)) => json!(s.nattch),
            (Column::Status, Sysv::Shm(s)) => {
                let mut st = Vec::new();
                if s.perm.mode & SHM_DEST != 0 {
                    st.push("dest");
                }
                if s.perm.mode & SHM_LOCKED != 0 {
                    st.push("locked");
                }
                if st.is_empty() {
                    Value::Null
                } else {
                    json!(st.join(","))
                }
            }
            (Column::Attach, Sysv::Shm(s)) => time_json(s.atime),
            (Column::Detach, Sysv::Shm(s)) => time_json(s.dtime),
            (Column::Command, Sysv::Shm(s)) => match procs.comm(s.cpid, s.ctime) {
                Some(comm) => json!(command_line(s.cpid, comm)),
                None => Value::Null,
            },
            (Column::Cpid, Sysv::Shm(s)) => json!(s.cpid),
            (Column::Lpid, Sysv::Shm(s)) => json!(s.lpid),
            (Column::Calive, Sysv::Shm(s)) => procs.status(s.cpid, s.ctime).alive_json(),
            (Column::Lalive, Sysv::Shm(s)) => {
                procs.status(s.lpid, s.atime.max(s.dtime)).alive_json()
            }
            (Column::Attached, Sysv::Shm(s)) => {
                let mut pids: Vec<u32> = scene
                    .snap
                    .mappings
                    .iter()
                    .filter(|m| m.shmid == s.perm.id)
                    .map(|m| m.pid)
                    .collect();
                pids.sort_unstable();
                pids.dedup();
                Value::Array(
                    pids.into_iter()
                        .map(|pid| {
                            json!({"pid": pid, "command": procs.get(pid).map(|p| p.comm.clone())})
                        })
                        .collect(),
                )
            }
            (Column::Rss, Sysv::Shm(s)) => json!(s.rss),
            (Column::Swap, Sysv::Shm(s)) => json!(s.swap),
            (Column::Usedbytes, Sysv::Msg(q)) => json!(q.cbytes),
            (Column::Qbytes, Sysv::Msg(q)) => self
                .listing
                .qbytes
                .get(&q.perm.id)
                .map_or(Value::Null, |b| json!(b)),
            (Column::Msgs, Sysv::Msg(q)) => json!(q.qnum),
            (Column::Send, Sysv::Msg(q)) => time_json(q.stime),
            (Column::Recv, Sysv::Msg(q)) => time_json(q.rtime),
            (Column::Lspid, Sysv::Msg(q)) => json!(q.lspid),
            (Column::Lrpid, Sysv::Msg(q)) => json!(q.lrpid),
            (Column::Lsalive, Sysv::Msg(q)) => procs.status(q.lspid, q.stime).alive_json(),
            (Column::Lralive, Sysv::Msg(q)) => procs.status(q.lrpid, q.rtime).alive_json(),
            (Column::Nsems, Sysv::Sem(s)) => json!(s.nsems),
            (Column::Otime, Sysv::Sem(s)) => time_json(s.otime),
            (Column::Values | Column::Ncount | Column::Zcount | Column::Sempid, Sysv::Sem(s)) => {
                let Some(values) = scene.sem_values(s.perm.id) else {
                    return Value::Null; // Not readable (no permission) or gone meanwhile.
                };
                let used_at = s.otime.max(s.ctime);
                Value::Array(
                    values
                        .iter()
                        .map(|v| match col {
                            Column::Values => json!(v.value),
                            Column::Ncount => json!(v.ncnt),
                            Column::Zcount => json!(v.zcnt),
                            _ => json!({
                                "pid": v.pid,
                                "alive": procs.status(v.pid, used_at).alive_json(),
                            }),
                        })
                        .collect(),
                )
            }
            (Column::Waiters, Sysv::Sem(s)) => {
                let id = s.perm.id;
                self.waiters(|b| b == Blocked::Sem { semid: id })
            }
            (Column::Waiters, Sysv::Msg(q)) => {
                let id = q.perm.id;
                self.waiters(|b| matches!(b, Blocked::MsgRcv { msqid } | Blocked::MsgSnd { msqid } if msqid == id))
            }
            _ => Value::Null,
        }
    }
}

/// The rows of one type: for each object, its cells in column order.
pub type Rows = Vec<Vec<(Column, Value)>>;

/// What `ls` prints: per type (in the order asked), the columns and the rows of every
/// namespace read.
pub struct Table {
    pub sections: Vec<(ObjectType, Vec<Column>, Rows)>,
}

/// Builds the rows (pure but for user/group names and command lines).
pub fn build(
    listings: &[Listing],
    types: &[ObjectType],
    columns: Option<&[Column]>,
    json_default: bool,
    label_ns: bool,
) -> Table {
    let mut names = Names::default();
    let mut sections = Vec::new();
    for &ty in types {
        let mut cols: Vec<Column> = match columns {
            Some(cs) => cs.iter().copied().filter(|c| c.applies_to(ty)).collect(),
            None if json_default => all_columns(ty),
            None => default_columns(ty).to_vec(),
        };
        if label_ns && columns.is_none() && !cols.contains(&Column::Namespace) {
            cols.insert(0, Column::Namespace);
        }
        let mut rows = Vec::new();
        for listing in listings {
            let mut cells = Cells {
                listing,
                names: &mut names,
            };
            let snap = &listing.scene.snap;
            let objs: Vec<Obj<'_>> = match ty {
                ObjectType::Sysv(IpcType::Shm) => snap.shm.iter().map(Obj::Shm).collect(),
                ObjectType::Sysv(IpcType::Sem) => snap.sem.iter().map(Obj::Sem).collect(),
                ObjectType::Sysv(IpcType::Msg) => snap.msg.iter().map(Obj::Msg).collect(),
                ObjectType::Posix(t) => snap
                    .posix
                    .iter()
                    .filter(|o| o.ty == t)
                    .map(Obj::Posix)
                    .collect(),
            };
            for obj in objs {
                rows.push(cols.iter().map(|&c| (c, cells.cell(c, obj))).collect());
            }
        }
        sections.push((ty, cols, rows));
    }
    Table { sections }
}

/// The `lsipc --json` key of a type's array.
pub fn json_section(ty: ObjectType) -> &'static str {
    match ty {
        ObjectType::Sysv(IpcType::Shm) => "sharedmemory",
        ObjectType::Sysv(IpcType::Sem) => "semaphores",
        ObjectType::Sysv(IpcType::Msg) => "messages",
        ObjectType::Posix(PosixType::Pshm) => "posix-sharedmemory",
        ObjectType::Posix(PosixType::Psem) => "posix-semaphores",
        ObjectType::Posix(PosixType::Pmsg) => "posix-messages",
    }
}

/// Writes a JSON object with its keys in the order given (serde_json's map would sort them).
fn write_object(out: &mut String, fields: impl IntoIterator<Item = (String, Value)>) {
    out.push('{');
    for (n, (key, value)) in fields.into_iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(key).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
}

/// The `--json` document.
pub fn render_json(table: &Table) -> String {
    let mut out = String::from("{");
    for (n, (ty, _, rows)) in table.sections.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{}\":[", json_section(*ty));
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_object(&mut out, row.iter().map(|(c, v)| (c.json_key(), v.clone())));
        }
        out.push(']');
    }
    out.push('}');
    out
}

/// A cell as the table shows it.
fn cell_text(col: Column, v: &Value) -> String {
    let process = |p: &Value| -> String {
        let pid = p["pid"]
            .as_u64()
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        match p["command"].as_str() {
            Some(c) => format!(
                "{pid}({})",
                c.chars().filter(|c| !c.is_control()).collect::<String>()
            ),
            None => pid,
        }
    };
    match (col, v) {
        (_, Value::Null) => "-".to_owned(),
        (_, Value::Bool(b)) => if *b { "yes" } else { "no" }.to_owned(),
        (Column::Age, Value::Number(n)) => n.as_u64().map_or_else(|| n.to_string(), human_age),
        (Column::Sempid, Value::Array(a)) => a
            .iter()
            .map(|p| {
                let pid = p["pid"].as_u64().unwrap_or(0);
                if p["alive"] == Value::Bool(false) {
                    format!("{pid}†")
                } else {
                    pid.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(","),
        (Column::Attached | Column::Waiters | Column::Holders, Value::Array(a)) if a.is_empty() => {
            "-".to_owned()
        }
        (Column::Attached | Column::Waiters | Column::Holders, Value::Array(a)) => {
            a.iter().map(process).collect::<Vec<_>>().join(" ")
        }
        (_, Value::Array(a)) => a
            .iter()
            .map(|x| cell_text(col, x))
            .collect::<Vec<_>>()
            .join(","),
        (
            Column::Ctime
            | Column::Attach
            | Column::Detach
            | Column::Send
            | Column::Recv
            | Column::Otime
            | Column::Mtime,
            Value::String(s),
        ) => s.replacen('T', " ", 1).trim_end_matches('Z').to_owned(),
        (_, Value::String(s)) => s.chars().filter(|c| !c.is_control()).collect(),
        (_, other) => other.to_string(),
    }
}

fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The table, one section per type as `ipcs` prints them.
pub fn render_text(table: &Table) -> String {
    let mut out = String::new();
    for (ty, cols, rows) in &table.sections {
        let title = match ty {
            ObjectType::Sysv(IpcType::Shm) => "Shared Memory Segments",
            ObjectType::Sysv(IpcType::Sem) => "Semaphore Arrays",
            ObjectType::Sysv(IpcType::Msg) => "Message Queues",
            ObjectType::Posix(PosixType::Pshm) => "POSIX Shared Memory",
            ObjectType::Posix(PosixType::Psem) => "POSIX Named Semaphores",
            ObjectType::Posix(PosixType::Pmsg) => "POSIX Message Queues",
        };
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(out, "------ {title} --------");
        let texts: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|(c, v)| cut(&cell_text(*c, v), c.max_width()))
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| {
                texts
                    .iter()
                    .map(|r| r.get(i).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
                    .max(c.name().len())
            })
            .collect();
        let line = |cells: &[String], out: &mut String| {
            let mut l = String::new();
            for (i, (c, s)) in cols.iter().zip(cells).enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                if i > 0 {
                    l.push(' ');
                }
                if c.numeric() {
                    let _ = write!(l, "{s:>w$}");
                } else {
                    let _ = write!(l, "{s:<w$}");
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        let header: Vec<String> = cols.iter().map(|c| c.name().to_owned()).collect();
        line(&header, &mut out);
        for row in &texts {
            line(row, &mut out);
        }
    }
    out
}

/// What `ls` could not do.
#[derive(Debug, thiserror::Error)]
pub enum LsError {
    #[error(transparent)]
    Read(#[from] LeaksError),
    #[error(transparent)]
    Namespace(#[from] NsError),
    #[error("column {column} does not apply to {types}")]
    Column { column: &'static str, types: String },
}

/// Reads the listings of the selected namespaces; notes say which could not be read.
pub fn read_listings(sel: Option<NamespaceSel>) -> Result<(Vec<Listing>, Vec<String>), LsError> {
    let (targets, mut notes) = targets(sel)?;
    let mut listings = Vec::new();
    for target in &targets {
        match run_in(target, Listing::read) {
            Ok(listing) => listings.push(listing?),
            Err(e) if sel == Some(NamespaceSel::All) => notes.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok((listings, notes))
}

/// `ipcaudit ls`.
pub fn run(args: &crate::cli::LsArgs) -> Result<ExitCode, LsError> {
    let types: Vec<ObjectType> = if args.types.is_empty() {
        ObjectType::ALL.to_vec()
    } else {
        let mut t = args.types.clone();
        t.sort();
        t.dedup();
        t
    };
    let columns = (!args.columns.is_empty()).then_some(args.columns.as_slice());
    if let Some(cols) = columns {
        for c in cols {
            if !types.iter().any(|t| c.applies_to(*t)) {
                let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
                return Err(LsError::Column {
                    column: c.name(),
                    types: names.join(", "),
                });
            }
        }
    }
    let (listings, mut notes) = read_listings(args.namespace)?;
    if types.iter().any(|t| matches!(t, ObjectType::Posix(_))) {
        for l in &listings {
            notes.extend(l.scene.snap.posix_notes.iter().cloned());
        }
    }
    notes.dedup();
    for note in &notes {
        eprintln!("ipcaudit: note: {note}");
    }
    let label = args.namespace.is_some();
    let table = build(&listings, &types, columns, args.json, label);
    if args.json {
        println!("{}", render_json(&table));
    } else {
        print!("{}", render_text(&table));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ProcessKey;
    use crate::snapshot::{IpcPerm, ProcessInfo, SemValue, ShmMapping, Snapshot};

    fn listing() -> Listing {
        let perm = |id, key, mode| IpcPerm {
            key,
            id,
            mode,
            uid: 0,
            gid: 0,
            cuid: 0,
            cgid: 0,
        };
        let snap = Snapshot {
            ipc_ns: 4_026_531_839,
            taken_ns: 1_700_000_100_000_000_000,
            shm: vec![ShmSegment {
                perm: perm(5, 0x1234, 0o640 | SHM_DEST),
                size: 8192,
                cpid: 4_000_000,
                lpid: 42,
                nattch: 1,
                atime: 1_700_000_050,
                dtime: 0,
                ctime: 1_700_000_000,
                rss: 4096,
                swap: 0,
            }],
            sem: vec![SemSet {
                perm: perm(6, 0, 0o600),
                nsems: 2,
                otime: 0,
                ctime: 1_700_000_000,
            }],
            msg: vec![MsgQueue {
                perm: perm(7, 0, 0o666),
                cbytes: 32,
                qnum: 2,
                lspid: 42,
                lrpid: 0,
                stime: 1_700_000_060,
                rtime: 0,
                ctime: 1_700_000_000,
            }],
            sem_values: vec![(
                6,
                vec![
                    SemValue {
                        value: 1,
                        ncnt: 0,
                        zcnt: 0,
                        pid: 42,
                    },
                    SemValue {
                        value: 0,
                        ncnt: 2,
                        zcnt: 1,
                        pid: 0,
                    },
                ],
            )],
            mappings: vec![ShmMapping {
                pid: 42,
                shmid: 5,
                key: 0x1234,
                start: 0,
                end: 8192,
                offset: 0,
                writable: true,
            }],
            processes: vec![ProcessInfo {
                key: ProcessKey {
                    pid: 42,
                    start_ticks: 0,
                },
                ppid: 1,
                comm: "worker".into(),
                uid: 0,
                state: 'S',
                ipc_ns: 4_026_531_839,
            }],
            posix: vec![
                PosixObject {
                    ty: PosixType::Pshm,
                    name: "/cache".into(),
                    dev: 27,
                    ino: 9,
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                    size: 8192,
                    memory: 4096,
                    atime: 1_700_000_050,
                    mtime: 1_700_000_050,
                    ctime: 1_700_000_000,
                    queue: None,
                },
                PosixObject {
                    ty: PosixType::Pmsg,
                    name: "/jobs".into(),
                    dev: 20,
                    ino: 3,
                    mode: 0o640,
                    uid: 0,
                    gid: 0,
                    size: 80,
                    memory: 0,
                    atime: 1_700_000_090,
                    mtime: 1_700_000_090,
                    ctime: 1_700_000_090,
                    queue: Some(crate::snapshot::MqState {
                        qsize: 24,
                        messages: 3,
                        max_messages: 10,
                        message_size: 8192,
                        notify_pid: 0,
                        notify: 0,
                        signo: 0,
                    }),
                },
            ],
            posix_holders: vec![
                crate::snapshot::PosixHolder {
                    process: ProcessKey {
                        pid: 42,
                        start_ticks: 0,
                    },
                    comm: "worker".into(),
                    uid: 0,
                    ipc_ns: 4_026_531_839,
                    dev: 27,
                    ino: 9,
                    hold: Hold::Map {
                        start: 0x1000,
                        end: 0x3000,
                        writable: true,
                    },
                },
                crate::snapshot::PosixHolder {
                    process: ProcessKey {
                        pid: 42,
                        start_ticks: 0,
                    },
                    comm: "worker".into(),
                    uid: 0,
                    ipc_ns: 4_026_531_839,
                    dev: 27,
                    ino: 9,
                    hold: Hold::Fd {
                        fd: 5,
                        read: true,
                        write: true,
                    },
                },
            ],
            posix_listed: PosixType::ALL.to_vec(),
            ..Snapshot::default()
        };
        Listing {
            scene: Scene::new(snap, 1_600_000_000_000_000_000, 100),
            qbytes: HashMap::from([(7, 16384)]),
        }
    }

    #[test]
    fn namespace_and_column_arguments_parse() {
        assert_eq!(parse_namespace("all"), Ok(NamespaceSel::All));
        assert_eq!(parse_namespace("42"), Ok(NamespaceSel::Pid(42)));
        assert!(parse_namespace("0").is_err());
        assert!(parse_namespace("x").unwrap_err().contains("neither"));
        assert_eq!(parse_column("nattch"), Ok(Column::Nattch));
        assert_eq!(parse_column("USEDBYTES"), Ok(Column::Usedbytes));
        assert!(parse_column("bogus").unwrap_err().contains("KEY,ID"));
        assert_eq!(Column::Usedbytes.json_key(), "usedbytes");
        assert!(Column::Waiters.applies_to(ObjectType::Sysv(IpcType::Msg)));
        assert!(!Column::Waiters.applies_to(ObjectType::Sysv(IpcType::Shm)));
        assert!(Column::Size.applies_to(ObjectType::Posix(PosixType::Pshm)));
        assert!(!Column::Size.applies_to(ObjectType::Posix(PosixType::Pmsg)));
        assert!(Column::Msgs.applies_to(ObjectType::Posix(PosixType::Pmsg)));
        assert!(!Column::Key.applies_to(ObjectType::Posix(PosixType::Psem)));
        assert!(Column::Owner.applies_to(ObjectType::Posix(PosixType::Psem)));
        assert!(!Column::Holders.applies_to(ObjectType::Sysv(IpcType::Shm)));
        assert!(columns_help().contains("HOLDERS"));
        assert!(columns_help().contains("CALIVE"));
        // Every column is in the table once.
        for (c, name, ..) in COLUMNS {
            assert_eq!(c.name(), *name);
            assert_eq!(COLUMNS.iter().filter(|(d, ..)| d == c).count(), 1);
        }
    }

    #[test]
    fn values_format_like_lsipc() {
        assert_eq!(perms_string(0o640), "rw-r-----");
        assert_eq!(perms_string(0o1777), "rwxrwxrwx");
        assert_eq!(time_json(0), Value::Null);
        assert_eq!(time_json(1_700_000_000), json!("2023-11-14T22:13:20Z"));
        assert_eq!(human_age(42), "42s");
        assert_eq!(human_age(312), "5m12s");
        assert_eq!(human_age(3 * 3600 + 60), "3h01m");
        assert_eq!(human_age(86_400 * 2 + 3600 * 4), "2d04h");
    }

    #[test]
    fn json_rows_have_lsipc_keys_and_ipcaudit_extras() {
        let l = listing();
        let table = build(
            std::slice::from_ref(&l),
            &ObjectType::ALL,
            None,
            true,
            false,
        );
        let v: Value = serde_json::from_str(&render_json(&table)).unwrap();
        let shm = &v["sharedmemory"][0];
        assert_eq!(shm["key"], "0x00001234");
        assert_eq!(shm["id"], 5);
        assert_eq!(shm["perms"], "rw-r-----");
        assert_eq!(shm["mode"], "0640");
        assert_eq!(shm["size"], 8192);
        assert_eq!(shm["status"], "dest");
        assert_eq!(shm["attach"], "2023-11-14T22:14:10Z");
        assert_eq!(shm["detach"], Value::Null);
        assert_eq!(shm["age"], 100);
        assert_eq!(shm["calive"], false);
        assert_eq!(shm["command"], Value::Null);
        assert_eq!(shm["lalive"], true);
        assert_eq!(shm["attached"], json!([{"pid": 42, "command": "worker"}]));
        assert_eq!(shm["namespace"], 4_026_531_839u32);
        let sem = &v["semaphores"][0];
        assert_eq!(sem["values"], json!([1, 0]));
        assert_eq!(sem["ncount"], json!([0, 2]));
        assert_eq!(
            sem["sempid"],
            json!([{"pid": 42, "alive": true}, {"pid": 0, "alive": null}])
        );
        assert_eq!(sem["otime"], Value::Null);
        let msg = &v["messages"][0];
        assert_eq!(
            (msg["msgs"].as_u64(), msg["usedbytes"].as_u64()),
            (Some(2), Some(32))
        );
        assert_eq!(msg["qbytes"], 16384);
        assert_eq!(
            (msg["lsalive"].clone(), msg["lralive"].clone()),
            (json!(true), Value::Null)
        );
        let pshm = &v["posix-sharedmemory"][0];
        assert_eq!(pshm["name"], "/cache");
        assert_eq!(pshm["path"], "/dev/shm/cache");
        assert_eq!(
            (pshm["size"].as_u64(), pshm["inode"].as_u64()),
            (Some(8192), Some(9))
        );
        assert_eq!(pshm["age"], 50);
        assert_eq!(
            pshm["holders"],
            json!([{"pid": 42, "command": "worker", "maps": 1, "fds": 1, "read": true, "write": true}])
        );
        assert!(pshm.get("key").is_none() && pshm.get("id").is_none());
        assert_eq!(v["posix-semaphores"], json!([]));
        let pmsg = &v["posix-messages"][0];
        assert_eq!(
            (
                pmsg["msgs"].as_u64(),
                pmsg["usedbytes"].as_u64(),
                pmsg["maxmsg"].as_u64()
            ),
            (Some(3), Some(24), Some(10))
        );
        assert_eq!(pmsg["notifypid"], Value::Null);
        assert_eq!(pmsg["holders"], json!([]));
        // Keys keep the column order.
        let text = render_json(&table);
        assert!(text.find("\"key\"").unwrap() < text.find("\"id\"").unwrap());
    }

    #[test]
    fn chosen_columns_and_the_table() {
        let l = listing();
        let cols = [Column::Id, Column::Nattch, Column::Msgs];
        let table = build(
            std::slice::from_ref(&l),
            &[
                ObjectType::Sysv(IpcType::Shm),
                ObjectType::Sysv(IpcType::Msg),
            ],
            Some(&cols),
            true,
            false,
        );
        let v: Value = serde_json::from_str(&render_json(&table)).unwrap();
        assert_eq!(
            v,
            json!({"sharedmemory": [{"id": 5, "nattch": 1}], "messages": [{"id": 7, "msgs": 2}]})
        );

        let table = build(
            std::slice::from_ref(&l),
            &ObjectType::ALL,
            None,
            false,
            true,
        );
        let text = render_text(&table);
        assert!(
            text.contains("------ Shared Memory Segments --------"),
            "{text}"
        );
        let header = text.lines().nth(1).unwrap();
        assert!(header.trim_start().starts_with("NAMESPACE"), "{header}");
        assert!(text.contains("42(worker)"), "{text}");
        assert!(text.contains("1,0"), "{text}");
        assert!(text.contains("42,0"), "{text}");
        assert!(text.contains("1m40s"), "{text}");
        assert!(
            text.contains("------ POSIX Shared Memory --------"),
            "{text}"
        );
        assert!(text.contains("/cache"), "{text}");
        assert!(
            text.contains("------ POSIX Message Queues --------"),
            "{text}"
        );
        assert!(text.contains("2023-11-14 22:13:20"), "{text}");
        assert!(text.lines().all(|l| l == l.trim_end()));
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }
}
