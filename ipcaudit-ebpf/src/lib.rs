//! The wire ABI shared by the kernel programs (`src/main.rs`, built for `bpfel-unknown-none`)
//! and the userspace collector (`ipcaudit`, which decodes records with `ipcaudit::decode`).
//!
//! Every record starts with a [`Header`]; `Header::kind` says which body follows. All fields
//! are fixed-width, padding is explicit, and each struct's size is asserted at compile time so
//! that a change on one side that the other side does not know about fails the build, not the
//! decoder. Userspace never transmutes these structs: it reads fields at their offsets
//! (the `*_OFF` constants and `core::mem::offset_of!`).
#![no_std]

/// Bumped whenever a layout below changes.
pub const ABI_VERSION: u32 = 1;

/// `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;
/// How many `struct sembuf` of one semop/semtimedop call are copied into the record.
/// `SyscallRecord::args[2]` (nsops) says how many there were.
pub const MAX_SEM_OPS: usize = 8;
/// Bytes of the exec'd file name copied into an [`ExecRecord`] (NUL-terminated if shorter).
pub const EXEC_PATH_LEN: usize = 256;

/// Record kinds (`Header::kind`).
pub mod kind {
    pub const SHMGET: u16 = 1;
    pub const SHMAT: u16 = 2;
    pub const SHMDT: u16 = 3;
    pub const SHMCTL: u16 = 4;
    pub const SEMGET: u16 = 5;
    /// `semop(2)` and `semtimedop(2)`; the body is a [`super::SemOpRecord`].
    pub const SEMOP: u16 = 6;
    pub const SEMCTL: u16 = 7;
    pub const MSGGET: u16 = 8;
    pub const MSGSND: u16 = 9;
    pub const MSGRCV: u16 = 10;
    pub const MSGCTL: u16 = 11;
    /// `munmap(2)` by a process that holds (or held) a SysV attachment.
    pub const MUNMAP: u16 = 12;
    /// `mremap(2)` by a process that holds (or held) a SysV attachment.
    pub const MREMAP: u16 = 13;
    pub const FORK: u16 = 14;
    pub const EXEC: u16 = 15;
    pub const EXIT: u16 = 16;
    /// The largest kind; anything above is unknown to this ABI version.
    pub const MAX: u16 = EXIT;
}

/// `Header::flags` bits.
pub mod flag {
    /// The call was `semtimedop(2)` (glibc's `semop()` issues it too).
    pub const TIMED: u16 = 1 << 0;
    /// More sem ops were passed than `MAX_SEM_OPS`: the record holds the first ones only.
    pub const OPS_TRUNCATED: u16 = 1 << 1;
    /// `aux` holds a message type read from user memory.
    pub const HAS_MTYPE: u16 = 1 << 2;
}

/// Common to every record. 56 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// One of [`kind`].
    pub kind: u16,
    /// Bits of [`flag`].
    pub flags: u16,
    /// Thread group id (the userspace PID).
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Real uid of the task.
    pub uid: u32,
    /// Inode number of the task's IPC namespace (0 when the task has no namespaces left).
    pub ipc_ns: u32,
    /// Explicit padding (always 0).
    pub pad0: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// `group_leader->start_boottime` in ns: with the pid, the identity of the process.
    pub start_ns: u64,
    /// `comm` of the task (NUL-padded).
    pub comm: [u8; COMM_LEN],
}

/// An IPC syscall (or munmap/mremap) at its exit. 56 + 64 = 120 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallRecord {
    pub header: Header,
    /// The syscall's return value (negative errno on failure).
    pub ret: i64,
    /// The six syscall arguments as the task passed them.
    pub args: [u64; 6],
    /// Per kind: the message type sent (msgsnd) or received (msgrcv) when `flag::HAS_MTYPE`.
    pub aux: i64,
}

/// One `struct sembuf` as user space passed it. 6 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SemBuf {
    pub sem_num: u16,
    pub sem_op: i16,
    pub sem_flg: i16,
}

/// `semop`/`semtimedop`: a syscall record followed by the first `MAX_SEM_OPS` operations.
/// 120 + 48 = 168 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SemOpRecord {
    pub sys: SyscallRecord,
    pub ops: [SemBuf; MAX_SEM_OPS],
}

/// A new process (not a thread). The header is the parent's. 56 + 16 = 72 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkRecord {
    pub header: Header,
    pub child_tgid: u32,
    /// Explicit padding (always 0).
    pub pad0: u32,
    pub child_start_ns: u64,
}

/// A successful exec. The header is the task after exec. 56 + 8 + 256 = 320 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecRecord {
    pub header: Header,
    /// The tid that called exec (it becomes the tgid).
    pub old_tid: u32,
    /// Explicit padding (always 0).
    pub pad0: u32,
    pub filename: [u8; EXEC_PATH_LEN],
}

/// The last thread of a process exited. 56 + 8 = 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    pub header: Header,
    /// `task->exit_code`: `status << 8` for exit(), or the signal number.
    pub exit_code: u32,
    /// Explicit padding (always 0).
    pub pad0: u32,
}

/// "Not found" value for an optional offset in [`Config`].
pub const NO_OFFSET: u32 = u32::MAX;

/// Read-only configuration the loader writes into the programs' `.rodata` before load:
/// kernel struct offsets resolved from `/sys/kernel/btf/vmlinux`, tracepoint field offsets
/// read from tracefs, and tuning. 48 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub abi_version: u32,
    /// `task_struct.group_leader`
    pub task_group_leader: u32,
    /// `task_struct.start_boottime`
    pub task_start_boottime: u32,
    /// `task_struct.nsproxy`
    pub task_nsproxy: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.exit_code`
    pub task_exit_code: u32,
    /// `nsproxy.ipc_ns`
    pub nsproxy_ipc_ns: u32,
    /// `ipc_namespace.ns.inum`
    pub ipc_ns_inum: u32,
    /// `sched_process_exit`'s `group_dead` field, or [`NO_OFFSET`] on kernels without it.
    pub exit_group_dead: u32,
    /// Submit with a wakeup once this many bytes wait in the ring buffer; below, records are
    /// submitted without one and the reader picks them up on its timer.
    pub wakeup_bytes: u32,
    /// Only trace this thread group (0: all). Set by the integration tests and `--pid` with one pid.
    pub only_tgid: u32,
    /// Explicit padding (always 0).
    pub pad0: u32,
}

impl Config {
    /// Defaults before offsets are known: everything "absent".
    pub const fn unresolved() -> Self {
        Self {
            abi_version: ABI_VERSION,
            task_group_leader: NO_OFFSET,
            task_start_boottime: NO_OFFSET,
            task_nsproxy: NO_OFFSET,
            task_tgid: NO_OFFSET,
            task_exit_code: NO_OFFSET,
            nsproxy_ipc_ns: NO_OFFSET,
            ipc_ns_inum: NO_OFFSET,
            exit_group_dead: NO_OFFSET,
            wakeup_bytes: 256 * 1024,
            only_tgid: 0,
            pad0: 0,
        }
    }
}

/// Index into the per-CPU `STATS` array.
pub mod stat {
    /// Records dropped because the ring buffer was full.
    pub const LOST: u32 = 0;
    /// Kernel reads that failed (a struct offset or user pointer could not be read).
    pub const READ_FAILED: u32 = 1;
    pub const COUNT: u32 = 2;
}

// Compile-time layout checks: a change here must be mirrored by the decoder.
const _: () = {
    assert!(core::mem::size_of::<Header>() == 56);
    assert!(core::mem::size_of::<SyscallRecord>() == 120);
    assert!(core::mem::size_of::<SemBuf>() == 6);
    assert!(core::mem::size_of::<SemOpRecord>() == 168);
    assert!(core::mem::size_of::<ForkRecord>() == 72);
    assert!(core::mem::size_of::<ExecRecord>() == 320);
    assert!(core::mem::size_of::<ExitRecord>() == 64);
    assert!(core::mem::size_of::<Config>() == 48);
    assert!(core::mem::offset_of!(Header, ts_ns) == 24);
    assert!(core::mem::offset_of!(Header, comm) == 40);
    assert!(core::mem::offset_of!(SyscallRecord, args) == 64);
    assert!(core::mem::offset_of!(SemOpRecord, ops) == 120);
};

#[cfg(feature = "user")]
// SAFETY: `Config` is `repr(C)`, made only of `u32`s, with no padding bytes left implicit.
unsafe impl aya::Pod for Config {}
