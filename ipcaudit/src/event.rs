//! The domain events: what happened, decoded from the kernel's records (`decode`) or parsed back
//! from a recorded NDJSON stream (`sink::json::parse_line`). The model consumes these; sinks
//! encode them. No IO here.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

/// Identity of a process across PID reuse: its tgid and its start time in clock ticks since
/// boot (field 22 of /proc/PID/stat, `start_boottime / (NSEC_PER_SEC / USER_HZ)`). The eBPF
/// records and /proc agree on both, so processes seen at bootstrap and in events match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessKey {
    pub pid: u32,
    pub start_ticks: u64,
}

impl fmt::Display for ProcessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.pid, self.start_ticks)
    }
}

/// The task an event came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub process: ProcessKey,
    /// Thread id.
    pub tid: u32,
    /// `comm`, lossily decoded (invalid UTF-8 becomes U+FFFD; sinks escape the rest).
    pub comm: String,
    pub uid: u32,
}

impl Task {
    /// No process: the task of records the collector makes itself (`events-lost`).
    pub fn kernel() -> Self {
        Self {
            process: ProcessKey {
                pid: 0,
                start_ticks: 0,
            },
            tid: 0,
            comm: String::new(),
            uid: 0,
        }
    }
}

/// A kernel error number, as returned by a failed syscall (positive: `EINVAL` is 22).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// The symbolic name (`EINVAL`), or `E<number>` for one this table does not know.
    pub fn name(self) -> String {
        crate::names::errno_name(self.0).map_or_else(|| format!("E{}", self.0), str::to_owned)
    }
}

/// A syscall's outcome.
pub type SysResult<T> = Result<T, Errno>;

/// The three System V IPC families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpcType {
    Shm,
    Sem,
    Msg,
}

impl IpcType {
    pub const ALL: [Self; 3] = [Self::Shm, Self::Sem, Self::Msg];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shm => "shm",
            Self::Sem => "sem",
            Self::Msg => "msg",
        }
    }

    /// The `ipcrm` option that removes an object of this type by id.
    pub fn ipcrm_flag(self) -> &'static str {
        match self {
            Self::Shm => "-m",
            Self::Sem => "-s",
            Self::Msg => "-q",
        }
    }
}

impl fmt::Display for IpcType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three POSIX IPC families. They are files: shared memory objects (`shm_open`) and named
/// semaphores (`sem_open`, `sem.NAME`) in /dev/shm, message queues (`mq_open`) in the mqueue
/// filesystem of the IPC namespace. Each is named by its path (`/NAME`), not by an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosixType {
    Pshm,
    Psem,
    Pmsg,
}

impl PosixType {
    pub const ALL: [Self; 3] = [Self::Pshm, Self::Psem, Self::Pmsg];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pshm => "pshm",
            Self::Psem => "psem",
            Self::Pmsg => "pmsg",
        }
    }

    /// In words: "POSIX shared memory object".
    pub fn describe(self) -> &'static str {
        match self {
            Self::Pshm => "POSIX shared memory object",
            Self::Psem => "POSIX named semaphore",
            Self::Pmsg => "POSIX message queue",
        }
    }
}

impl fmt::Display for PosixType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A type `--type` selects: one of the System V families or one of the POSIX ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    Sysv(IpcType),
    Posix(PosixType),
}

impl ObjectType {
    /// Every type, System V first (the order `ls` prints its sections in).
    pub const ALL: [Self; 6] = [
        Self::Sysv(IpcType::Shm),
        Self::Sysv(IpcType::Sem),
        Self::Sysv(IpcType::Msg),
        Self::Posix(PosixType::Pshm),
        Self::Posix(PosixType::Psem),
        Self::Posix(PosixType::Pmsg),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sysv(t) => t.as_str(),
            Self::Posix(t) => t.as_str(),
        }
    }

    /// Parses `shm`, `sem`, `msg`, `pshm`, `psem` or `pmsg`.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!("unknown IPC type {s:?}: expected shm, sem, msg, pshm, psem or pmsg")
            })
    }

    /// The System V types of a selection (all of them when it is empty).
    pub fn sysv(types: &[Self]) -> Vec<IpcType> {
        if types.is_empty() {
            return IpcType::ALL.to_vec();
        }
        let mut out: Vec<IpcType> = types
            .iter()
            .filter_map(|t| match t {
                Self::Sysv(t) => Some(*t),
                Self::Posix(_) => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The POSIX types of a selection (all of them when it is empty).
    pub fn posix(types: &[Self]) -> Vec<PosixType> {
        if types.is_empty() {
            return PosixType::ALL.to_vec();
        }
        let mut out: Vec<PosixType> = types
            .iter()
            .filter_map(|t| match t {
                Self::Posix(t) => Some(*t),
                Self::Sysv(_) => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Serialize for ObjectType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ObjectType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `struct sembuf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemOp {
    pub num: u16,
    pub op: i16,
    /// Raw `sem_flg`: `IPC_NOWAIT` (0o4000) and `SEM_UNDO` (0x1000).
    pub flags: i16,
}

impl SemOp {
    pub const IPC_NOWAIT: i16 = 0o4000;
    pub const SEM_UNDO: i16 = 0x1000;

    pub fn undo(self) -> bool {
        self.flags & Self::SEM_UNDO != 0
    }

    pub fn nowait(self) -> bool {
        self.flags & Self::IPC_NOWAIT != 0
    }
}

/// What happened. Arguments are as the task passed them; results as the kernel returned them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    ShmGet {
        key: i32,
        size: u64,
        flags: i32,
        result: SysResult<i32>,
    },
    /// `result` is the attach address.
    ShmAt {
        shmid: i32,
        addr: u64,
        flags: i32,
        result: SysResult<u64>,
    },
    ShmDt {
        addr: u64,
        result: SysResult<()>,
    },
    ShmCtl {
        shmid: i32,
        cmd: i32,
        result: SysResult<i64>,
    },
    SemGet {
        key: i32,
        nsems: i32,
        flags: i32,
        result: SysResult<i32>,
    },
    /// `semop` or `semtimedop`. `ops` holds the first operations (at most
    /// `ipcaudit_ebpf::MAX_SEM_OPS`); `nsops` how many were passed.
    SemOp {
        semid: i32,
        ops: Vec<SemOp>,
        nsops: u32,
        timed: bool,
        result: SysResult<()>,
    },
    /// `arg` is the fourth argument as passed (the value for SETVAL).
    SemCtl {
        semid: i32,
        semnum: i32,
        cmd: i32,
        arg: u64,
        result: SysResult<i64>,
    },
    MsgGet {
        key: i32,
        flags: i32,
        result: SysResult<i32>,
    },
    MsgSnd {
        msqid: i32,
        size: u64,
        flags: i32,
        mtype: Option<i64>,
        result: SysResult<()>,
    },
    /// `result` is the size of the message received; `mtype` its type.
    MsgRcv {
        msqid: i32,
        max_size: u64,
        want_type: i64,
        flags: i32,
        mtype: Option<i64>,
        result: SysResult<u64>,
    },
    MsgCtl {
        msqid: i32,
        cmd: i32,
        result: SysResult<i64>,
    },
    /// Only recorded for processes that hold (or held) a SysV attachment.
    Munmap {
        addr: u64,
        len: u64,
        result: SysResult<()>,
    },
    /// Only recorded for processes that hold (or held) a SysV attachment. `result` is the new
    /// address of the mapping.
    Mremap {
        old_addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u32,
        result: SysResult<u64>,
    },
    /// `task` forked a new process (not a thread).
    Fork {
        child: ProcessKey,
    },
    /// `task` is the process after a successful exec; `old_tid` the thread that called it.
    Exec {
        filename: String,
        old_tid: u32,
    },
    /// The last thread of `task`'s process exited. `code` is `task->exit_code`: the signal
    /// number in the low 7 bits, or the exit status shifted left by 8.
    Exit {
        code: u32,
    },
    /// Records the kernel could not deliver (ring buffer full) since the previous such event.
    Lost {
        count: u64,
    },
    /// `mq_open`: `name` as passed, `flags` (`O_CREAT`, `O_EXCL`, the access mode), and the
    /// queue of the descriptor it returned.
    MqOpen {
        name: String,
        flags: i32,
        mode: u32,
        queue: Option<MqId>,
        result: SysResult<i32>,
    },
    /// `mq_unlink`.
    MqUnlink {
        name: String,
        result: SysResult<()>,
    },
    /// `mq_timedsend` (glibc's `mq_send` too); `queue`: the descriptor's queue.
    MqSend {
        fd: i32,
        queue: Option<MqId>,
        size: u64,
        prio: u32,
        result: SysResult<()>,
    },
    /// `mq_timedreceive` (glibc's `mq_receive` too); `result` is the message's size, `prio`
    /// its priority (when the caller asked for it).
    MqReceive {
        fd: i32,
        queue: Option<MqId>,
        max_size: u64,
        prio: Option<u32>,
        result: SysResult<u64>,
    },
    /// `mq_notify`: `register` a notification (a `sigevent` was passed), or remove one.
    MqNotify {
        fd: i32,
        queue: Option<MqId>,
        register: bool,
        result: SysResult<()>,
    },
}

/// A POSIX message queue as the kernel programs name it: its IPC namespace and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MqId {
    pub ns: u32,
    pub ino: u64,
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Wall-clock time, nanoseconds since the Unix epoch (UTC).
    pub time_ns: u64,
    /// Inode number of the IPC namespace the task was in (0 if unknown).
    pub ipc_ns: u32,
    pub task: Task,
    pub kind: EventKind,
}

impl EventKind {
    /// The IPC family an event concerns, if any (munmap/mremap/lifecycle: none).
    pub fn ipc_type(&self) -> Option<IpcType> {
        match self {
            Self::ShmGet { .. } | Self::ShmAt { .. } | Self::ShmDt { .. } | Self::ShmCtl { .. } => {
                Some(IpcType::Shm)
            }
            Self::SemGet { .. } | Self::SemOp { .. } | Self::SemCtl { .. } => Some(IpcType::Sem),
            Self::MsgGet { .. }
            | Self::MsgSnd { .. }
            | Self::MsgRcv { .. }
            | Self::MsgCtl { .. } => Some(IpcType::Msg),
            Self::Munmap { .. }
            | Self::Mremap { .. }
            | Self::Fork { .. }
            | Self::Exec { .. }
            | Self::Exit { .. }
            | Self::Lost { .. }
            | Self::MqOpen { .. }
            | Self::MqUnlink { .. }
            | Self::MqSend { .. }
            | Self::MqReceive { .. }
            | Self::MqNotify { .. } => None,
        }
    }

    /// The POSIX family an event concerns, if any.
    pub fn posix_type(&self) -> Option<PosixType> {
        match self {
            Self::MqOpen { .. }
            | Self::MqUnlink { .. }
            | Self::MqSend { .. }
            | Self::MqReceive { .. }
            | Self::MqNotify { .. } => Some(PosixType::Pmsg),
            _ => None,
        }
    }

    /// The family (System V or POSIX) an event concerns, if any.
    pub fn object_type(&self) -> Option<ObjectType> {
        self.ipc_type()
            .map(ObjectType::Sysv)
            .or_else(|| self.posix_type().map(ObjectType::Posix))
    }

    /// Whether the syscall failed.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::ShmGet { result, .. }
            | Self::SemGet { result, .. }
            | Self::MsgGet { result, .. }
            | Self::MqOpen { result, .. } => result.err(),
            Self::ShmAt { result, .. }
            | Self::Mremap { result, .. }
            | Self::MsgRcv { result, .. }
            | Self::MqReceive { result, .. } => result.err(),
            Self::ShmDt { result, .. }
            | Self::SemOp { result, .. }
            | Self::MsgSnd { result, .. }
            | Self::Munmap { result, .. }
            | Self::MqUnlink { result, .. }
            | Self::MqSend { result, .. }
            | Self::MqNotify { result, .. } => result.err(),
            Self::ShmCtl { result, .. }
            | Self::SemCtl { result, .. }
            | Self::MsgCtl { result, .. } => result.err(),
            Self::Fork { .. } | Self::Exec { .. } | Self::Exit { .. } | Self::Lost { .. } => None,
        }
    }
}

/// `event.action` values. Which one an IPC syscall gets can depend on state (a get of a key
/// that created the object or opened an existing one; an RMID or detach that really freed the
/// segment), so the model assigns them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    ShmCreate,
    ShmOpen,
    ShmAttach,
    ShmDetach,
    ShmRemove,
    ShmDestroy,
    ShmControl,
    SemCreate,
    SemOpen,
    SemOp,
    SemControl,
    SemRemove,
    MsgCreate,
    MsgOpen,
    MsgSend,
    MsgReceive,
    MsgControl,
    MsgRemove,
    ProcessFork,
    ProcessExec,
    ProcessExit,
    EventsLost,
    MqCreate,
    MqOpen,
    MqSend,
    MqReceive,
    MqNotify,
    MqRemove,
}

impl Action {
    pub const ALL: [Self; 28] = [
        Self::ShmCreate,
        Self::ShmOpen,
        Self::ShmAttach,
        Self::ShmDetach,
        Self::ShmRemove,
        Self::ShmDestroy,
        Self::ShmControl,
        Self::SemCreate,
        Self::SemOpen,
        Self::SemOp,
        Self::SemControl,
        Self::SemRemove,
        Self::MsgCreate,
        Self::MsgOpen,
        Self::MsgSend,
        Self::MsgReceive,
        Self::MsgControl,
        Self::MsgRemove,
        Self::ProcessFork,
        Self::ProcessExec,
        Self::ProcessExit,
        Self::EventsLost,
        Self::MqCreate,
        Self::MqOpen,
        Self::MqSend,
        Self::MqReceive,
        Self::MqNotify,
        Self::MqRemove,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ShmCreate => "shm-create",
            Self::ShmOpen => "shm-open",
            Self::ShmAttach => "shm-attach",
            Self::ShmDetach => "shm-detach",
            Self::ShmRemove => "shm-remove",
            Self::ShmDestroy => "shm-destroy",
            Self::ShmControl => "shm-control",
            Self::SemCreate => "sem-create",
            Self::SemOpen => "sem-open",
            Self::SemOp => "sem-op",
            Self::SemControl => "sem-control",
            Self::SemRemove => "sem-remove",
            Self::MsgCreate => "msg-create",
            Self::MsgOpen => "msg-open",
            Self::MsgSend => "msg-send",
            Self::MsgReceive => "msg-receive",
            Self::MsgControl => "msg-control",
            Self::MsgRemove => "msg-remove",
            Self::ProcessFork => "process-fork",
            Self::ProcessExec => "process-exec",
            Self::ProcessExit => "process-exit",
            Self::EventsLost => "events-lost",
            Self::MqCreate => "mq-create",
            Self::MqOpen => "mq-open",
            Self::MqSend => "mq-send",
            Self::MqReceive => "mq-receive",
            Self::MqNotify => "mq-notify",
            Self::MqRemove => "mq-remove",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An ancestor of a process (its parent, the parent's parent, ... up to pid 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub executable: Option<String>,
}

/// Who a process is, beyond its identity: what a human needs to know whom to blame. Read from
/// /proc when the process first does IPC (`enrich`), or parsed back from a recording.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessDetails {
    /// `/proc/PID/exe`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub executable: Option<String>,
    /// The arguments joined by spaces, at most [`ProcessDetails::MAX_COMMAND_LINE`] bytes
    /// (cut on a character boundary, ending in `…` when cut).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub command_line: Option<String>,
    /// Parent first, up to pid 1 (at most [`ProcessDetails::MAX_ANCESTORS`]).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub ancestors: Vec<Ancestor>,
    /// The systemd unit whose cgroup it runs in (`nginx.service`, `session-3.scope`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit: Option<String>,
    /// Container id (docker, containerd, cri-o, podman, kubepods): 64 hex digits.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub container_id: Option<String>,
}

impl ProcessDetails {
    pub const MAX_COMMAND_LINE: usize = 512;
    pub const MAX_ANCESTORS: usize = 32;

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The service a human would blame for what this process did: its systemd service, its
    /// container, or its executable (with the session or scope it runs in).
    pub fn service(&self, comm: &str) -> Option<String> {
        let program = self
            .executable
            .as_deref()
            .or((!comm.is_empty()).then_some(comm));
        if let Some(unit) = self.unit.as_deref()
            && unit.ends_with(".service")
            && !unit.starts_with("user@")
        {
            return Some(unit.to_owned());
        }
        if let Some(id) = self.container_id.as_deref() {
            let short: String = id.chars().take(12).collect();
            return Some(format!("container {short}"));
        }
        match (program, self.unit.as_deref()) {
            (Some(p), Some(unit)) => Some(format!("{p} ({unit})")),
            (Some(p), None) => Some(p.to_owned()),
            (None, Some(unit)) => Some(unit.to_owned()),
            (None, None) => None,
        }
    }
}

/// One frame of a user call stack, symbolized.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The function (demangled), when the module has symbols.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub function: Option<String>,
    /// Source file and line (DWARF line info), when the module has it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub line: Option<u32>,
    /// The ELF file the address is in.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub module: Option<String>,
    /// Its GNU build id (hex).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub build_id: Option<String>,
    /// The address: a file offset into `module` when it is known, else the virtual address.
    pub address: u64,
}

impl Frame {
    /// `cache_init (src/cache.c:120)`, `shmget (libc.so.6)`, or `0x1234 (module)`.
    pub fn label(&self) -> String {
        let module = self
            .module
            .as_deref()
            .map(|m| m.rsplit('/').next().unwrap_or(m));
        let name = self
            .function
            .clone()
            .unwrap_or_else(|| format!("{:#x}", self.address));
        match (&self.file, self.line, module) {
            (Some(file), Some(line), _) => format!("{name} ({file}:{line})"),
            (Some(file), None, _) => format!("{name} ({file})"),
            (None, _, Some(m)) => format!("{name} ({m})"),
            (None, _, None) => name,
        }
    }
}

/// Where in the code an object was created or attached: the user stack at the syscall.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSite {
    /// Innermost first (frame 0 is where the syscall was made).
    pub frames: Vec<Frame>,
    /// How the stack was walked: `eh-frame` (the binaries' unwind tables over a copy of the
    /// stack), `frame-pointers` (the kernel's walk of the frame pointer chain).
    pub method: String,
    /// Why the stack is shorter than the program's real one, when it is.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

impl CallSite {
    /// How many leading frames are the C library's syscall wrapper (`shmget` in libc): the
    /// summary starts at its caller.
    pub fn wrapper_frames(&self) -> usize {
        self.frames
            .iter()
            .take_while(|f| {
                let module = f.module.as_deref().unwrap_or("");
                let file = module.rsplit('/').next().unwrap_or(module);
                file.starts_with("libc.so") || file.starts_with("libc-")
            })
            .count()
            .min(self.frames.len().saturating_sub(1))
    }

    /// `cache_init (src/cache.c:120) ← main (src/main.c:40)`: at most `max` frames from the
    /// caller of the syscall wrapper.
    pub fn summary(&self, max: usize) -> String {
        let skip = self.wrapper_frames();
        let shown: Vec<String> = self
            .frames
            .iter()
            .skip(skip)
            .take(max)
            .map(Frame::label)
            .collect();
        let mut s = shown.join(" ← ");
        let rest = self.frames.len().saturating_sub(skip + max);
        if rest > 0 {
            let _ = write!(s, " ← … ({rest} more)");
        }
        if s.is_empty() {
            s.push_str("(no frames)");
        }
        s
    }
}
