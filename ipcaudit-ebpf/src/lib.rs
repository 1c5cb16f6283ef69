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
pub const ABI_VERSION: u32 = 6;

/// `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;
/// How many `struct sembuf` of one semop/semtimedop call are copied into the record.
/// `SyscallRecord::args[2]` (nsops) says how many there were.
pub const MAX_SEM_OPS: usize = 8;
/// Bytes of the exec'd file name copied into an [`ExecRecord`] (NUL-terminated if shorter).
pub const EXEC_PATH_LEN: usize = 256;
/// Bytes of a POSIX message queue's name copied into an [`MqNameRecord`] (`NAME_MAX` and the
/// leading slash; NUL-terminated if shorter).
pub const MQ_NAME_LEN: usize = 256;
/// `MQUEUE_MAGIC`: the superblock magic of the mqueue filesystem.
pub const MQUEUE_MAGIC: u64 = 0x1980_0202;

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
    /// Aggregation (`watch`): one process's usage totals ([`super::UsageRecord`]).
    pub const USAGE: u16 = 17;
    /// Aggregation (`watch`): one semaphore set's totals ([`super::SemTotalsRecord`]).
    pub const SEM_TOTALS: u16 = 18;
    /// Aggregation (`watch`): one queue's totals ([`super::MsgTotalsRecord`]).
    pub const MSG_TOTALS: u16 = 19;
    /// `mq_open(2)`: an [`super::MqNameRecord`] (the name, and the queue's inode when it
    /// returned a descriptor).
    pub const MQ_OPEN: u16 = 20;
    /// `mq_unlink(2)`: an [`super::MqNameRecord`] (inode 0).
    pub const MQ_UNLINK: u16 = 21;
    /// `mq_timedsend(2)` (glibc's `mq_send` too): an [`super::MqRecord`].
    pub const MQ_SEND: u16 = 22;
    /// `mq_timedreceive(2)` (glibc's `mq_receive` too): an [`super::MqRecord`].
    pub const MQ_RECEIVE: u16 = 23;
    /// `mq_notify(2)`: an [`super::MqRecord`].
    pub const MQ_NOTIFY: u16 = 24;
    /// Aggregation (`watch`): one POSIX queue's totals ([`super::MqTotalsRecord`]).
    pub const MQ_TOTALS: u16 = 25;
    /// The user call stack of a get that may have created an object, or of a successful
    /// `shmat` ([`super::StackRecord`]); it follows that call's record.
    pub const STACK: u16 = 26;
    /// The largest kind; anything above is unknown to this ABI version.
    pub const MAX: u16 = STACK;
}

/// `Header::flags` bits.
pub mod flag {
    /// The call was `semtimedop(2)` (glibc's `semop()` issues it too).
    pub const TIMED: u16 = 1 << 0;
    /// More sem ops were passed than `MAX_SEM_OPS`: the record holds the first ones only.
    pub const OPS_TRUNCATED: u16 = 1 << 1;
    /// `aux` holds a message type read from user memory.
    pub const HAS_MTYPE: u16 = 1 << 2;
    /// `aux` holds a POSIX message's priority (sent, or read from the receiver's memory).
    pub const HAS_PRIO: u16 = 1 << 3;
    /// The descriptor of a POSIX queue record was resolved to the queue (`ino`, `queue_ns`).
    pub const HAS_QUEUE: u16 = 1 << 4;
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

// ----- POSIX message queues -----
//
// A queue is a file of the mqueue filesystem of an IPC namespace, named by its path. The
// programs resolve a queue descriptor to the queue the way the kernel does (`task->files`, the
// file, its inode; the inode's superblock must be the mqueue filesystem's, whose `s_fs_info` is
// the IPC namespace): so a send, receive or notify names its queue exactly (inode and
// namespace), whatever descriptor (a dup, one inherited at fork) it went through.

/// `mq_open` and `mq_unlink` at their exit. 120 + 16 + 256 = 392 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqNameRecord {
    pub sys: SyscallRecord,
    /// The queue's inode (`mq_open` that returned a descriptor; 0 otherwise).
    pub ino: u64,
    /// The queue's IPC namespace (its inode number; 0 when not resolved).
    pub queue_ns: u32,
    /// Explicit padding (always 0).
    pub pad0: u32,
    /// The name as the task passed it (NUL-terminated if shorter).
    pub name: [u8; MQ_NAME_LEN],
}

/// `mq_timedsend`, `mq_timedreceive` and `mq_notify` at their exit: the descriptor's queue
/// (when `flag::HAS_QUEUE`). `SyscallRecord::aux` is the priority (`flag::HAS_PRIO`).
/// 120 + 16 = 136 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqRecord {
    pub sys: SyscallRecord,
    pub ino: u64,
    pub queue_ns: u32,
    /// Explicit padding (always 0).
    pub pad0: u32,
}

/// Key of `MQUEUES`: a POSIX queue. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqKey {
    pub ns: u32,
    /// Explicit padding (always 0).
    pub pad0: u32,
    pub ino: u64,
}

/// The aggregated messages of one POSIX queue since its entry was made (cumulative; the value
/// of `MQUEUES`). A process's *first* successful send or receive on a queue is recorded in full
/// (and remembered in `MQ_SEEN`, keyed by the process's identity and the queue); its later ones
/// only add here. 80 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqTotals {
    /// Messages sent + received (written last, read first).
    pub ops: u64,
    pub ns: u32,
    /// Explicit padding (always 0).
    pub pad0: u32,
    pub ino: u64,
    /// When the entry was made: its identity.
    pub first_ts: u64,
    /// `ops` when totals were last written out.
    pub written_ops: u64,
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub received_bytes: u64,
    /// Explicit padding (always 0).
    pub pad1: u64,
}

/// 56 + 80 = 136 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqTotalsRecord {
    pub header: Header,
    pub totals: MqTotals,
}

/// Key of `MQ_SEEN`: a process (tgid and start time) and a queue. 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqSeenKey {
    pub tgid: u32,
    pub ns: u32,
    pub ino: u64,
    pub start_ns: u64,
}

// ----- Call stacks -----
//
// Only on the low-rate paths: a get that may have created an object (IPC_PRIVATE or IPC_CREAT,
// successful) and a successful shmat. Never on semop/msgsnd/msgrcv. At most
// `STACK_BUDGET` records per CPU per 100 ms; what is over it (or finds no ring space) is
// counted in `stat::STACKS_DROPPED`, not as lost records.

/// Return addresses kept from the kernel's frame-pointer walk.
pub const STACK_FRAMES: usize = 32;
/// Bytes of the user stack copied from the stack pointer (for unwinding with the binaries'
/// `.eh_frame` in userspace, which does not need frame pointers).
pub const STACK_COPY: usize = 8192;
/// Stack records per CPU per 100 ms.
pub const STACK_BUDGET: u64 = 16;

/// `Header::flags` of a [`StackRecord`].
pub mod stack_flag {
    /// `build_ids` holds the frame-pointer walk with build ids (`BPF_F_USER_BUILD_ID`).
    pub const BUILD_IDS: u16 = 1 << 0;
}

/// One frame as `bpf_get_stack(BPF_F_USER_STACK | BPF_F_USER_BUILD_ID)` gives it
/// (`struct bpf_stack_build_id`). 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildIdFrame {
    /// 0: empty, 1: `build_id` and `offset` (a file offset) are valid, 2: only `offset` is, and
    /// it is the instruction pointer.
    pub status: i32,
    pub build_id: [u8; 20],
    pub offset: u64,
}

/// A user call stack at a syscall's exit. 56 + 56 + 256 + 1024 + 8192 = 9584 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackRecord {
    pub header: Header,
    /// The kind of the syscall record it belongs to (`SHMGET`, `SEMGET`, `MSGGET`, `SHMAT`).
    pub of_kind: u16,
    /// Explicit padding (always 0).
    pub pad0: u16,
    /// Valid entries of `frames`.
    pub frames_len: u32,
    /// The syscall's return value (the id made or found; the attach address).
    pub ret: i64,
    /// Its first argument (the key of a get; the shmid of a shmat).
    pub arg0: u64,
    /// The user registers at the syscall: instruction, stack and frame pointers.
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Bytes of `stack` copied (0 when the stack could not be read).
    pub stack_len: u32,
    /// Valid entries of `build_ids`.
    pub build_ids_len: u32,
    /// The kernel's frame-pointer walk: return addresses, innermost first (the first is `ip`).
    pub frames: [u64; STACK_FRAMES],
    /// The same walk with build ids and file offsets (when `stack_flag::BUILD_IDS`).
    pub build_ids: [BuildIdFrame; STACK_FRAMES],
    /// The user stack from `sp` up.
    pub stack: [u8; STACK_COPY],
}

// ----- Aggregation (`watch`) -----
//
// In `watch` the hot operations (semop/semtimedop, msgsnd/msgrcv) are not recorded one by one.
// A process's *first* successful operation on a semaphore (or queue) is recorded in full, and
// installs a usage slot; its later operations only add to
//
// - its slot in [`ProcUsage`] (`PROCS`, per process): what the model needs per process —
//   net adjustments with and without SEM_UNDO, units taken / given, messages sent / received;
// - the object's totals ([`SemTotals`], [`MsgTotals`]; `SEMSETS`, `QUEUES`): what the model
//   needs per object — the semaphores' values, the queue's depth.
//
// Every counter only ever grows or is a sum (never reset while its entry lives), so a record
// carries cumulative totals and the model applies the difference to what it consumed before.
// Totals are written to the ring buffer, in order with every other record:
// - before any full record on the same object (so that the model sees operations in order);
// - by a process's exit, before its exit record: its slots' objects' totals, then its usage;
// - when the collector rings the doorbell (a failing `semctl` of its own, see [`doorbell`]):
//   before it judges (grace ticks), answers `status`/`findings`, or reconciles.
// An object's totals are dropped by IPC_RMID (and a semaphore set's by SETVAL/SETALL, which reset
// adjustments); a slot whose object entry changed (`entry_ts` differs) is stale: the process's
// usage is written out and the slot starts again with a full record.

/// Usage slots per process (semaphores / queues); operations beyond them are recorded in full.
pub const USAGE_SEM_SLOTS: usize = 8;
pub const USAGE_MSG_SLOTS: usize = 4;
/// Semaphores per set whose operations are aggregated (`sem_num` below this).
pub const AGG_SEMNUMS: usize = 16;
/// semop calls with at most this many operations are aggregated (others are recorded in full).
pub const AGG_MAX_OPS: usize = 1;

/// A process's use of one semaphore since its slot was installed (cumulative). 80 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SemUsage {
    /// Calls counted on this slot (the slot of a call's first operation). Written last by
    /// the programs, read first by the copy: a record that shows a call shows all of it.
    pub calls: u64,
    /// IPC namespace inode (0: the slot is free).
    pub ns: u32,
    pub semid: i32,
    pub semnum: u16,
    /// Explicit padding (always 0).
    pub pad0: [u16; 3],
    /// `first_ts` of the [`SemTotals`] entry this slot counts with (stale when it differs).
    pub entry_ts: u64,
    /// When the slot was installed (`bpf_ktime_get_ns`): which generation of the id it is.
    pub first_ts: u64,
    /// When the slot was installed (the hot path reads no clock: the model takes the time of
    /// a flush that shows new calls as their last use).
    pub last_ts: u64,
    /// Sum of the operations without SEM_UNDO.
    pub net: i64,
    /// Sum of the operations with SEM_UNDO.
    pub undo: i64,
    /// Operations < 0 and > 0.
    pub took: u64,
    pub gave: u64,
}

/// A process's use of one queue since its slot was installed (cumulative). 80 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsgUsage {
    /// Messages sent + received (written last, read first).
    pub calls: u64,
    /// IPC namespace inode (0: the slot is free).
    pub ns: u32,
    pub msqid: i32,
    pub entry_ts: u64,
    pub first_ts: u64,
    /// The last message's time. With [`Config::tick_ns`] set, the hot path reads no clock
    /// source: it is `first_ts` plus the jiffies since `first_jiffies` (one tick, a few ms, of
    /// resolution); otherwise `bpf_ktime_get_ns`.
    pub last_ts: u64,
    /// `jiffies_64` when the slot was installed.
    pub first_jiffies: u64,
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub received_bytes: u64,
}

/// One process's usage slots (the value of `PROCS`, keyed by tgid). 1000 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcUsage {
    /// The process's identity (`start_boottime`), uid and name when the entry was made.
    pub start_ns: u64,
    /// `task->nsproxy` when `ns` was read: a process that changes namespaces gets a new one.
    pub nsproxy: u64,
    pub ns: u32,
    pub uid: u32,
    pub comm: [u8; COMM_LEN],
    pub sem: [SemUsage; USAGE_SEM_SLOTS],
    pub msg: [MsgUsage; USAGE_MSG_SLOTS],
}

/// A process's usage totals. The header names the process (whoever wrote the record).
/// 56 + 968 = 1024 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    pub header: Header,
    pub usage: ProcUsage,
}

/// The aggregated operations on one semaphore set since its entry was made (cumulative; the
/// value of `SEMSETS`, keyed by (ns, semid)). 160 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SemTotals {
    /// Operations counted (written last, read first).
    pub ops: u64,
    pub ns: u32,
    pub semid: i32,
    /// When the entry was made: its identity, and which generation of the id it counts for.
    pub first_ts: u64,
    /// `ops` when totals were last written out (kernel bookkeeping: only changed totals are).
    pub written_ops: u64,
    /// Sum of the operations per semaphore number.
    pub delta: [i64; AGG_SEMNUMS],
}

/// The aggregated messages of one queue since its entry was made (cumulative; the value of
/// `QUEUES`, keyed by (ns, msqid)). 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgTotals {
    /// Messages sent + received (written last, read first).
    pub ops: u64,
    pub ns: u32,
    pub msqid: i32,
    pub first_ts: u64,
    pub written_ops: u64,
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub received_bytes: u64,
}

/// 56 + 160 = 216 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SemTotalsRecord {
    pub header: Header,
    pub totals: SemTotals,
}

/// 56 + 64 = 120 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgTotalsRecord {
    pub header: Header,
    pub totals: MsgTotals,
}

/// Key of `SEMSETS` and `QUEUES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectId {
    pub ns: u32,
    pub id: i32,
}

/// The collector asks the programs to write totals out by calling
/// `semctl(-1, doorbell::SEMNUM, what, key)` (it fails with EINVAL before the kernel looks at
/// anything else): the `semctl` program recognises the collector's tgid (`Config::collector_tgid`)
/// and this `semnum`, and writes out the entry `key` of map `what`.
pub mod doorbell {
    /// `semnum` of a doorbell call.
    pub const SEMNUM: i32 = 0x01bc_ad17;
    /// `cmd`: the `SEMSETS` entry whose key (`ObjectId` as a u64: ns low, id high) is the arg.
    pub const SEM_TOTALS: i32 = 1;
    /// `cmd`: the `QUEUES` entry of that key.
    pub const MSG_TOTALS: i32 = 2;
    /// `cmd`: the `PROCS` entry of the tgid in the arg.
    pub const USAGE: i32 = 3;
    /// `cmd`: the `MQUEUES` entry of the POSIX queue in the arg (ns low, inode high: mqueue
    /// inode numbers are 32-bit, `get_next_ino`).
    pub const MQ_TOTALS: i32 = 4;
}

/// Indexes into the `FLAGS` array, written by userspace.
pub mod flags_index {
    /// How many tgids `WAITING` holds (processes a snapshot saw blocked in semop, msgrcv or
    /// msgsnd: their next operation is recorded in full, so that the model sees them leave).
    pub const WAITING: u32 = 0;
    pub const COUNT: u32 = 1;
}

/// "Not found" value for an optional offset in [`Config`].
pub const NO_OFFSET: u32 = u32::MAX;

/// Read-only configuration the loader writes into the programs' `.rodata` before load:
/// kernel struct offsets resolved from `/sys/kernel/btf/vmlinux`, tracepoint field offsets
/// read from tracefs, and tuning. 104 bytes.
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
    /// 1: aggregate hot operations (`watch`); 0: one record per call (`trace`).
    pub aggregate: u32,
    /// The collector's tgid: its doorbell calls (see [`doorbell`]) are recognised by it.
    pub collector_tgid: u32,
    /// In-kernel type filter (`--type`): [`family`] bits of the IPC families traced; 0: all.
    /// Process lifecycle records are not filtered by type.
    pub type_mask: u32,
    /// In-kernel filter sets consulted ([`filter_sets`] bits): `FILTER_TGIDS` (`--pid`, more
    /// than one) and `FILTER_UIDS` (`--uid`), maps the loader fills.
    pub filter_sets: u32,
    /// What this kernel lacks and the programs work around ([`compat`] bits; 0 on 5.15+).
    pub compat: u32,
    /// `task_struct.files`
    pub task_files: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.max_fds`
    pub fdtable_max_fds: u32,
    /// `fdtable.fd`
    pub fdtable_fd: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
    /// `inode.i_sb`
    pub inode_sb: u32,
    /// `super_block.s_magic`
    pub sb_magic: u32,
    /// `super_block.s_fs_info`
    pub sb_fs_info: u32,
    /// 1: record call stacks at creation and attach ([`StackRecord`]).
    pub stacks: u32,
    /// Nanoseconds per jiffy (`1e9 / CONFIG_HZ`), 0 when the loader could not tell: then the
    /// hot paths read the clock source for "last used" times.
    pub tick_ns: u32,
    pub pad0: u32,
}

/// [`Config::type_mask`] bits.
pub mod family {
    pub const SHM: u32 = 1;
    pub const SEM: u32 = 2;
    pub const MSG: u32 = 4;
    /// POSIX message queues (`mqueue.rs`).
    pub const PMSG: u32 = 8;
    /// POSIX shared memory and named semaphores are audited, not traced: no program has
    /// these bits, so a mask of only them traces no IPC family.
    pub const PSHM: u32 = 16;
    pub const PSEM: u32 = 32;
}

/// [`Config::filter_sets`] bits.
pub mod filter_sets {
    /// Only thread groups in `FILTER_TGIDS`.
    pub const TGIDS: u32 = 1;
    /// Only tasks whose real uid is in `FILTER_UIDS`.
    pub const UIDS: u32 = 2;
}

/// [`Config::compat`] bits, set by the loader from the kernel's BTF. The programs test them on
/// load-time constants, so the verifier drops the branch not taken: a kernel never sees a
/// helper it does not have.
pub mod compat {
    /// No `bpf_get_current_task_btf` (Linux < 5.11): task fields are read with
    /// `bpf_probe_read_kernel` from `bpf_get_current_task`, not loaded through BTF pointers.
    pub const TASK_PROBE_READ: u32 = 1;
    /// No `bpf_task_pt_regs` (Linux < 5.15): on the tracepoint path, each syscall's arguments
    /// are saved at its `sys_enter_*` tracepoint and taken back at its `sys_exit_*`.
    pub const ARGS_AT_ENTER: u32 = 2;
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
            aggregate: 0,
            collector_tgid: 0,
            type_mask: 0,
            filter_sets: 0,
            compat: 0,
            task_files: NO_OFFSET,
            files_fdt: NO_OFFSET,
            fdtable_max_fds: NO_OFFSET,
            fdtable_fd: NO_OFFSET,
            file_inode: NO_OFFSET,
            inode_ino: NO_OFFSET,
            inode_sb: NO_OFFSET,
            sb_magic: NO_OFFSET,
            sb_fs_info: NO_OFFSET,
            stacks: 0,
            tick_ns: 0,
            pad0: 0,
        }
    }
}

/// Kernel scan (`scan.rs`): the BPF iterators that read every process and its System V
/// mappings at start-up, where /proc takes a few file reads per process.
///
/// Struct offsets the scan programs read (from the kernel's BTF, like [`Config`]'s); a
/// separate global, so that a kernel missing one of them only loses the scan.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanOffsets {
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.real_cred`
    pub task_real_cred: u32,
    /// `cred.uid`
    pub cred_uid: u32,
    /// `task_struct.comm`
    pub task_comm: u32,
    /// `task_struct.__state` (`state` before 5.14)
    pub task_state: u32,
    /// `task_struct.exit_state`
    pub task_exit_state: u32,
    /// `task_struct.flags`
    pub task_flags: u32,
    /// `vm_area_struct.vm_start`
    pub vma_start: u32,
    /// `vm_area_struct.vm_end`
    pub vma_end: u32,
    /// `vm_area_struct.vm_flags`
    pub vma_flags: u32,
    /// `vm_area_struct.vm_pgoff`
    pub vma_pgoff: u32,
    /// `vm_area_struct.vm_file`
    pub vma_file: u32,
    /// `file.f_path.dentry`
    pub file_dentry: u32,
    /// `dentry.d_parent`
    pub dentry_parent: u32,
    /// `dentry.d_name.name`
    pub dentry_name: u32,
}

impl ScanOffsets {
    pub const fn unresolved() -> Self {
        Self {
            task_pid: NO_OFFSET,
            task_real_parent: NO_OFFSET,
            task_real_cred: NO_OFFSET,
            cred_uid: NO_OFFSET,
            task_comm: NO_OFFSET,
            task_state: NO_OFFSET,
            task_exit_state: NO_OFFSET,
            task_flags: NO_OFFSET,
            vma_start: NO_OFFSET,
            vma_end: NO_OFFSET,
            vma_flags: NO_OFFSET,
            vma_pgoff: NO_OFFSET,
            vma_file: NO_OFFSET,
            file_dentry: NO_OFFSET,
            dentry_parent: NO_OFFSET,
            dentry_name: NO_OFFSET,
        }
    }
}

/// One task, as the task iterator writes it: every thread-group leader, and the other threads
/// of a group whose leader has exited (their state and namespace stand for the group's, as
/// /proc's scan takes them from a live thread). 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanTask {
    pub tid: u32,
    pub tgid: u32,
    /// `real_parent->tgid`
    pub ppid: u32,
    /// `real_cred->uid`
    pub uid: u32,
    /// `nsproxy->ipc_ns->ns.inum`, 0 when the task has no namespaces left.
    pub ipc_ns: u32,
    /// `__state`, `exit_state`: /proc's state letter is made of both.
    pub state: u32,
    pub exit_state: u32,
    /// `task->flags` (`PF_*`).
    pub flags: u32,
    /// `group_leader->start_boottime` in ns.
    pub start_ns: u64,
    pub pad0: u64,
    pub comm: [u8; COMM_LEN],
}

/// One System V shared-memory mapping, as the vma iterator writes it. 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanVma {
    pub tgid: u32,
    pub pad0: u32,
    /// `vm_file`'s inode number: the segment's id.
    pub ino: u64,
    pub start: u64,
    pub end: u64,
    pub pgoff: u64,
    pub vm_flags: u64,
    /// The file's name (`SYSV%08x`, the key in hex), NUL-padded.
    pub name: [u8; 16],
}

/// Index into the per-CPU `STATS` array.
pub mod stat {
    /// Records dropped because the ring buffer was full.
    pub const LOST: u32 = 0;
    /// Kernel reads that failed (a struct offset or user pointer could not be read).
    pub const READ_FAILED: u32 = 1;
    /// An aggregation entry could not be made (its map is full): those operations are recorded
    /// in full instead.
    pub const AGG_FULL: u32 = 2;
    /// Call stacks not recorded (over `STACK_BUDGET`, or no ring space).
    pub const STACKS_DROPPED: u32 = 3;
    pub const COUNT: u32 = 4;
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
    assert!(core::mem::size_of::<Config>() == 112);
    assert!(core::mem::size_of::<ScanOffsets>() == 64);
    assert!(core::mem::size_of::<ScanTask>() == 64);
    assert!(core::mem::size_of::<ScanVma>() == 64);
    assert!(core::mem::offset_of!(ScanTask, start_ns) == 32);
    assert!(core::mem::offset_of!(ScanVma, name) == 48);
    assert!(core::mem::size_of::<MqNameRecord>() == 392);
    assert!(core::mem::size_of::<MqRecord>() == 136);
    assert!(core::mem::size_of::<MqKey>() == 16);
    assert!(core::mem::size_of::<MqTotals>() == 80);
    assert!(core::mem::size_of::<MqTotalsRecord>() == 136);
    assert!(core::mem::size_of::<MqSeenKey>() == 24);
    assert!(core::mem::offset_of!(MqTotals, ops) == 0);
    assert!(core::mem::offset_of!(MqNameRecord, name) == 136);
    assert!(core::mem::size_of::<SemUsage>() == 80);
    assert!(core::mem::size_of::<MsgUsage>() == 80);
    assert!(core::mem::size_of::<ProcUsage>() == 1000);
    assert!(core::mem::size_of::<UsageRecord>() == 1056);
    assert!(core::mem::size_of::<SemTotals>() == 160);
    assert!(core::mem::size_of::<MsgTotals>() == 64);
    assert!(core::mem::size_of::<SemTotalsRecord>() == 216);
    assert!(core::mem::size_of::<MsgTotalsRecord>() == 120);
    assert!(core::mem::size_of::<ObjectId>() == 8);
    assert!(core::mem::size_of::<BuildIdFrame>() == 32);
    assert!(core::mem::size_of::<StackRecord>() == 9584);
    assert!(core::mem::offset_of!(StackRecord, frames) == 112);
    assert!(core::mem::offset_of!(StackRecord, stack) == 1392);
    assert!(core::mem::offset_of!(SemUsage, calls) == 0);
    assert!(core::mem::offset_of!(MsgUsage, calls) == 0);
    assert!(core::mem::offset_of!(SemTotals, ops) == 0);
    assert!(core::mem::offset_of!(MsgTotals, ops) == 0);
    assert!(core::mem::offset_of!(Header, ts_ns) == 24);
    assert!(core::mem::offset_of!(Header, comm) == 40);
    assert!(core::mem::offset_of!(SyscallRecord, args) == 64);
    assert!(core::mem::offset_of!(SemOpRecord, ops) == 120);
};

#[cfg(feature = "user")]
// SAFETY: `Config` is `repr(C)`, made only of `u32`s, with no padding bytes left implicit.
unsafe impl aya::Pod for Config {}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, only `u32`s, no padding.
unsafe impl aya::Pod for ScanOffsets {}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, two `u32`-sized fields, no padding.
unsafe impl aya::Pod for ObjectId {}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, fixed-width integer fields and arrays of `repr(C)` structs of such fields,
// all padding explicit (the size asserts above pin the layout).
unsafe impl aya::Pod for ProcUsage {}

#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for SemTotals {}

#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for MsgTotals {}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, fixed-width integer fields, explicit padding.
unsafe impl aya::Pod for MqKey {}

#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for MqTotals {}
