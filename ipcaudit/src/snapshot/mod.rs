//! The kernel's truth about SysV IPC: /proc/sysvipc/{shm,sem,msg}, the SysV mappings in
//! /proc/PID/maps, process identity from /proc/PID/stat, semaphore values (semctl GETALL,
//! GETNCNT, GETZCNT, GETPID), the processes blocked in semop/msgrcv (/proc/PID/syscall), and the
//! kernel limits. Used alike by bootstrap, resync, `ls`, `leaks` and `reap`.
//!
//! `parse` holds pure parsers (text in, typed rows out, errors naming the line); `read` the thin
//! readers that feed them from the live system.

use serde::{Deserialize, Serialize};

use crate::event::{PosixType, ProcessKey};

pub mod kscan;
pub mod parse;
pub mod posix;
pub mod read;

/// `struct ipc64_perm` as /proc/sysvipc shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcPerm {
    pub key: i32,
    pub id: i32,
    /// Permission bits plus, for shm, `SHM_DEST` (0o1000) and `SHM_LOCKED` (0o2000).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
}

/// `SHM_DEST`: IPC_RMID was done, the segment goes when its last attachment does.
pub const SHM_DEST: u32 = 0o1000;
/// `SHM_LOCKED`: SHM_LOCK was done.
pub const SHM_LOCKED: u32 = 0o2000;

/// One line of /proc/sysvipc/shm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShmSegment {
    pub perm: IpcPerm,
    pub size: u64,
    pub cpid: u32,
    pub lpid: u32,
    pub nattch: u64,
    /// Seconds since the epoch; 0 = never.
    pub atime: i64,
    pub dtime: i64,
    pub ctime: i64,
    /// Resident and swapped bytes.
    pub rss: u64,
    pub swap: u64,
}

/// One line of /proc/sysvipc/sem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemSet {
    pub perm: IpcPerm,
    pub nsems: u32,
    pub otime: i64,
    pub ctime: i64,
}

/// One line of /proc/sysvipc/msg.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgQueue {
    pub perm: IpcPerm,
    pub cbytes: u64,
    pub qnum: u64,
    pub lspid: u32,
    pub lrpid: u32,
    pub stime: i64,
    pub rtime: i64,
    pub ctime: i64,
}

/// One semaphore of a set: semctl GETVAL / GETNCNT / GETZCNT / GETPID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemValue {
    pub value: i32,
    /// Processes waiting for the value to increase.
    pub ncnt: u32,
    /// Processes waiting for the value to become zero.
    pub zcnt: u32,
    /// The last process that operated on it.
    pub pid: u32,
}

/// A SysV shared-memory mapping of one process: a `/SYSV<key> (deleted)` line of
/// /proc/PID/maps, whose inode is the shmid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShmMapping {
    pub pid: u32,
    pub shmid: i32,
    pub key: i32,
    pub start: u64,
    pub end: u64,
    /// Offset into the segment (a partially unmapped or mremapped attachment starts later).
    pub offset: u64,
    pub writable: bool,
}

/// A process as /proc/PID/stat and status show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub key: ProcessKey,
    pub ppid: u32,
    pub comm: String,
    pub uid: u32,
    /// `Z`: exited, not yet reaped (dead for ownership purposes); `X`: dead.
    pub state: char,
    /// Inode of /proc/PID/ns/ipc.
    pub ipc_ns: u32,
}

impl ProcessInfo {
    /// A zombie has exited: it holds nothing any more.
    pub fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// What a process blocked in an IPC syscall waits on (/proc/PID/syscall).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Blocked {
    /// In semop/semtimedop on this set.
    Sem { semid: i32 },
    /// In msgrcv on this queue.
    MsgRcv { msqid: i32 },
    /// In msgsnd on this queue (it is full).
    MsgSnd { msqid: i32 },
}

/// A task blocked in an IPC syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub pid: u32,
    pub tid: u32,
    pub on: Blocked,
}

/// Kernel limits of one IPC namespace (/proc/sys/kernel/{shmmax,shmall,shmmni,sem,msgmni,...}).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub shmmax: u64,
    /// In pages.
    pub shmall: u64,
    pub shmmni: u64,
    /// `sem`: SEMMSL SEMMNS SEMOPM SEMMNI.
    pub semmsl: u64,
    pub semmns: u64,
    pub semopm: u64,
    pub semmni: u64,
    pub msgmax: u64,
    pub msgmnb: u64,
    pub msgmni: u64,
    pub page_size: u64,
}

/// Everything known about one IPC namespace at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Inode of the IPC namespace this describes.
    pub ipc_ns: u32,
    /// Wall clock when it was taken, ns since the epoch.
    pub taken_ns: u64,
    pub shm: Vec<ShmSegment>,
    pub sem: Vec<SemSet>,
    pub msg: Vec<MsgQueue>,
    /// Per semaphore set (by id), its semaphores in order.
    pub sem_values: Vec<(i32, Vec<SemValue>)>,
    /// The SysV mappings of every process in the namespace.
    pub mappings: Vec<ShmMapping>,
    /// The processes in this IPC namespace (zombies included: their namespace link is gone,
    /// they are kept so that a dead creator is known to be dead, not unknown).
    pub processes: Vec<ProcessInfo>,
    pub waiters: Vec<Waiter>,
    pub limits: Limits,
    /// The POSIX objects: /dev/shm (shared memory and named semaphores: read only in
    /// ipcaudit's own namespaces) and the namespace's mqueue filesystem. Absent from
    /// recordings made before POSIX IPC was covered.
    #[serde(default)]
    pub posix: Vec<PosixObject>,
    /// Every process mapping a POSIX object or holding a descriptor of it (any namespace).
    #[serde(default)]
    pub posix_holders: Vec<PosixHolder>,
    /// Processes whose descriptors and mappings could not be read (no permission): when not 0,
    /// `posix_holders` may miss some, and no POSIX object is judged unheld.
    #[serde(default)]
    pub posix_hidden: u32,
    /// Processes whose descriptors and mappings could not be read even with CAP_SYS_PTRACE
    /// (another security domain, such as a sandbox's init): taken to hold no POSIX object.
    #[serde(default)]
    pub posix_protected: Vec<u32>,
    /// The POSIX types this snapshot lists (a type it could not read is left out: the model
    /// then keeps what it had of it).
    #[serde(default)]
    pub posix_listed: Vec<PosixType>,
    /// What could not be listed, and why (e.g. the mqueue filesystem could not be mounted).
    #[serde(default)]
    pub posix_notes: Vec<String>,
}

/// A POSIX IPC object: a file in /dev/shm or in the mqueue filesystem, as `fstatat` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosixObject {
    #[serde(rename = "type")]
    pub ty: PosixType,
    /// The name the API takes: `/NAME` (`shm_open`, `sem_open` and `mq_open` all add the
    /// slash; a semaphore's file is `sem.NAME`).
    pub name: String,
    /// `st_dev` and `st_ino`: what a mapping (/proc/PID/maps) or a descriptor (/proc/PID/fd)
    /// of it shows.
    pub dev: u64,
    pub ino: u64,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// `st_size`: the object's size (a queue's file says 80 whatever it holds).
    pub size: u64,
    /// Memory it takes (`st_blocks` * 512).
    pub memory: u64,
    /// Seconds since the epoch. A queue's times move with every send and receive; reading a
    /// queue's file (as a snapshot does) moves its atime and ctime, not its mtime.
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    /// A message queue's state (None for the other types, or when it could not be read).
    pub queue: Option<MqState>,
}

impl PosixObject {
    /// The latest time the object was created, changed or (a queue) used: seconds. A queue's
    /// ctime is left out: reading its file (which every snapshot does) sets it.
    pub fn last_change(&self) -> i64 {
        match self.ty {
            PosixType::Pmsg => self.mtime,
            PosixType::Pshm | PosixType::Psem => self.mtime.max(self.ctime),
        }
    }
}

/// A POSIX message queue's state: its file (`QSIZE:… NOTIFY:… SIGNO:… NOTIFY_PID:…`) and
/// `mq_getattr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqState {
    /// Bytes of message data queued (`QSIZE`; a zero-length message adds none).
    pub qsize: u64,
    /// Messages queued (`mq_curmsgs`).
    pub messages: u64,
    /// Capacity: messages (`mq_maxmsg`) and bytes per message (`mq_msgsize`).
    pub max_messages: u64,
    pub message_size: u64,
    /// The process registered with `mq_notify` (0: none), and how (`NOTIFY`: 0 signal, 1 none,
    /// 2 thread) with which signal.
    pub notify_pid: u32,
    pub notify: u32,
    pub signo: u32,
}

/// How a process holds a POSIX object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "lowercase")]
pub enum Hold {
    /// A mapping of the file (/proc/PID/maps).
    Map {
        start: u64,
        end: u64,
        writable: bool,
    },
    /// An open descriptor (/proc/PID/fd), with its access mode (/proc/PID/fdinfo `flags`).
    Fd { fd: u32, read: bool, write: bool },
}

/// One mapping or descriptor of a POSIX object in one process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosixHolder {
    pub process: ProcessKey,
    pub comm: String,
    pub uid: u32,
    /// The holder's IPC namespace (0: unknown).
    pub ipc_ns: u32,
    /// The object, by `st_dev` and `st_ino`.
    pub dev: u64,
    pub ino: u64,
    #[serde(flatten)]
    pub hold: Hold,
}
