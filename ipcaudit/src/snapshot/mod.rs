//! The kernel's truth about SysV IPC: /proc/sysvipc/{shm,sem,msg}, the SysV mappings in
//! /proc/PID/maps, process identity from /proc/PID/stat, semaphore values (semctl GETALL,
//! GETNCNT, GETZCNT, GETPID), the processes blocked in semop/msgrcv (/proc/PID/syscall), and the
//! kernel limits. Used alike by bootstrap, resync, `ls`, `leaks` and `reap`.
//!
//! `parse` holds pure parsers (text in, typed rows out, errors naming the line); `read` the thin
//! readers that feed them from the live system.

use serde::{Deserialize, Serialize};

use crate::event::ProcessKey;

pub mod parse;
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
}
