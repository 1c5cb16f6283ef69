//! Thin readers of the live system, feeding the parsers in [`super::parse`]: /proc/sysvipc,
//! /proc/PID/{stat,status,maps,ns/ipc,task/TID/syscall}, /proc/sys/kernel and `semctl`.
//!
//! Everything here reads the caller's current IPC namespace (the one of the calling thread:
//! /proc/sysvipc, /proc/sys/kernel and semctl all go by it).
//!
//! Processes come and go while /proc is scanned. Each one is read through a descriptor of its
//! /proc/PID directory, so that everything read for it is about the same process even if its
//! PID is reused meanwhile (a lookup under the directory of a process that is gone fails), and a
//! process that vanishes (ENOENT, ESRCH) is skipped silently. Other failures for one process are
//! logged (`debug`) and skip that process; they never fail the whole scan.
//!
//! One scan reuses one read buffer: no allocation per line, few per process.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::ptr;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::Mode;

use std::collections::HashSet;

use nix::fcntl::AtFlags;

use super::kscan::{self, KernelScan};
use super::parse::{
    self, ParseError, access_mode, parse_fdinfo_flags, parse_maps_files, parse_maps_sysv,
    parse_ns_link, parse_stat, parse_stat_num_threads, parse_status_uid, parse_syscall,
    parse_sysvipc_msg, parse_sysvipc_sem, parse_sysvipc_shm,
};
use super::{
    Hold, Limits, MsgQueue, PosixHolder, PosixObject, ProcessInfo, SemSet, SemValue, ShmMapping,
    ShmSegment, Snapshot, Waiter,
};
use crate::event::ProcessKey;

/// A read of the live system that failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading a file (or link) failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A file was read but its text did not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The semaphore set no longer exists (semctl: EIDRM or EINVAL), or has fewer semaphores
    /// than expected (it was removed and its id reused).
    #[error("semaphore set {semid}: gone ({errno})")]
    SemGone { semid: i32, errno: Errno },
    /// No read permission on the semaphore set (semctl: EACCES or EPERM).
    #[error("semaphore set {semid}: permission denied ({errno})")]
    SemDenied { semid: i32, errno: Errno },
    /// Any other semctl failure.
    #[error("semaphore set {semid}: semctl({semnum}, {cmd}): {errno}")]
    Semctl {
        semid: i32,
        semnum: u32,
        cmd: &'static str,
        errno: Errno,
    },
}

impl ReadError {
    fn io(path: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// The object or process read went away meanwhile: a file or process that no longer
    /// exists (ENOENT, ESRCH), or a semaphore set that is gone.
    pub fn is_gone(&self) -> bool {
        match self {
            Self::Io { source, .. } => vanished(source),
            Self::SemGone { .. } => true,
            Self::Parse(_) | Self::SemDenied { .. } | Self::Semctl { .. } => false,
        }
    }

    /// Permission was denied (EACCES, EPERM).
    pub fn is_denied(&self) -> bool {
        match self {
            Self::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::EACCES | libc::EPERM))
            }
            Self::SemDenied { .. } => true,
            Self::Parse(_) | Self::SemGone { .. } | Self::Semctl { .. } => false,
        }
    }
}

/// ENOENT or ESRCH: the process (or the file) went away.
fn vanished(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH))
}

/// EACCES or EPERM: not ours to read.
fn denied(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

/// Whether this process may inspect every other one (CAP_SYS_PTRACE in its effective set): a
/// process it still may not inspect is protected by another security domain.
fn can_inspect_all() -> bool {
    /// `CAP_SYS_PTRACE`.
    const CAP_SYS_PTRACE: u32 = 19;
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_PTRACE) != 0)
}

// ---------------------------------------------------------------------------------------------
// Small files

const SHM_PATH: &str = "/proc/sysvipc/shm";
const SEM_PATH: &str = "/proc/sysvipc/sem";
const MSG_PATH: &str = "/proc/sysvipc/msg";

/// A whole (small) file, lossily decoded.
fn read_text(path: &str) -> Result<String, ReadError> {
    let bytes = std::fs::read(path).map_err(|e| ReadError::io(path, e))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The three tables of /proc/sysvipc.
pub type SysvipcTables = (Vec<ShmSegment>, Vec<SemSet>, Vec<MsgQueue>);

/// /proc/sysvipc/{shm,sem,msg} of the caller's IPC namespace.
pub fn read_sysvipc() -> Result<SysvipcTables, ReadError> {
    let shm = parse_sysvipc_shm(&read_text(SHM_PATH)?, SHM_PATH)?;
    let sem = parse_sysvipc_sem(&read_text(SEM_PATH)?, SEM_PATH)?;
    let msg = parse_sysvipc_msg(&read_text(MSG_PATH)?, MSG_PATH)?;
    Ok((shm, sem, msg))
}

/// The kernel limits of the caller's IPC namespace. A limit that cannot be read is 0 (logged).
pub fn read_limits() -> Limits {
    fn number(name: &str) -> u64 {
        let path = format!("/proc/sys/kernel/{name}");
        match read_text(&path).and_then(|t| Ok(parse::parse_number(&t, &path)?)) {
            Ok(n) => n,
            Err(e) => {
                log::debug!("limit unknown: {e}");
                0
            }
        }
    }
    const SEM: &str = "/proc/sys/kernel/sem";
    let sem = read_text(SEM)
        .and_then(|t| Ok(parse::parse_sem_limits(&t, SEM)?))
        .unwrap_or_else(|e| {
            log::debug!("limits unknown: {e}");
            parse::SemLimits::default()
        });
    Limits {
        shmmax: number("shmmax"),
        shmall: number("shmall"),
        shmmni: number("shmmni"),
        semmsl: sem.semmsl,
        semmns: sem.semmns,
        semopm: sem.semopm,
        semmni: sem.semmni,
        msgmax: number("msgmax"),
        msgmnb: number("msgmnb"),
        msgmni: number("msgmni"),
        page_size: page_size(),
    }
}

fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) => u64::try_from(n).unwrap_or(0),
        Ok(None) | Err(_) => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Semaphore values

/// The semaphores of a set, in order: value, ncnt, zcnt and last pid (semctl GETVAL, GETNCNT,
/// GETZCNT, GETPID on each; GETALL is not used because it writes as many values as the set
/// has *now*, which a set removed and recreated under the same id could make more than
/// `nsems`).
pub fn read_sem_values(semid: i32, nsems: u32) -> Result<Vec<SemValue>, ReadError> {
    let mut out = Vec::with_capacity(usize::try_from(nsems.min(4096)).unwrap_or(0));
    for semnum in 0..nsems {
        let value = semctl(semid, semnum, libc::GETVAL, "GETVAL")?;
        let ncnt = semctl(semid, semnum, libc::GETNCNT, "GETNCNT")?;
        let zcnt = semctl(semid, semnum, libc::GETZCNT, "GETZCNT")?;
        let pid = semctl(semid, semnum, libc::GETPID, "GETPID")?;
        out.push(SemValue {
            value,
            ncnt: u32::try_from(ncnt).unwrap_or(0),
            zcnt: u32::try_from(zcnt).unwrap_or(0),
            pid: u32::try_from(pid).unwrap_or(0),
        });
    }
    Ok(out)
}

/// One semctl command that takes no fourth argument and returns an int.
fn semctl(semid: i32, semnum: u32, cmd: i32, name: &'static str) -> Result<i32, ReadError> {
    let gone = |errno| ReadError::SemGone { semid, errno };
    let num = i32::try_from(semnum).map_err(|_| gone(Errno::EINVAL))?;
    // SAFETY: GETVAL, GETNCNT, GETZCNT and GETPID read no fourth argument and write no memory
    // of ours; any semid and semnum are valid inputs (the kernel checks them).
    let r = unsafe { libc::semctl(semid, num, cmd) };
    if r >= 0 {
        return Ok(r);
    }
    Err(match Errno::last() {
        e @ (Errno::EIDRM | Errno::EINVAL) => gone(e),
        e @ (Errno::EACCES | Errno::EPERM) => ReadError::SemDenied { semid, errno: e },
        errno => ReadError::Semctl {
            semid,
            semnum,
            cmd: name,
            errno,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Namespaces

/// The IPC namespace (inode of /proc/PID/ns/ipc) of a process; None if it has none (a zombie)
/// or cannot be read.
pub fn ipc_ns_of(pid: u32) -> Option<u32> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/ipc")).ok()?;
    parse_ns_link(link.to_str()?)
}

/// The IPC namespace of the calling thread (the one /proc/sysvipc and semctl show).
pub fn own_ipc_ns() -> Result<u32, ReadError> {
    const PATH: &str = "/proc/thread-self/ns/ipc";
    let link = std::fs::read_link(PATH).map_err(|e| ReadError::io(PATH, e))?;
    let text = link.to_string_lossy();
    parse_ns_link(&text).ok_or_else(|| {
        ReadError::Parse(ParseError {
            path: PATH.to_owned(),
            line: 1,
            field: "link",
            problem: parse::Problem::Malformed,
            text: text.chars().take(64).collect(),
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Every process (thread group) in /proc, whatever its namespace. `ipc_ns` is 0 for one that
/// has none (a zombie) or whose namespace we may not read (no ptrace access to it).
pub fn read_processes() -> Vec<ProcessInfo> {
    in_parallel(&proc_pids(), |scan, dir, out: &mut Vec<ProcessInfo>| {
        if let Some((p, _)) = scan.process(dir, None) {
            out.push(p);
        }
    })
}

/// The System V shared-memory mappings of these processes. Processes that are gone are
/// skipped.
pub fn read_mappings(pids: &[u32]) -> Vec<ShmMapping> {
    in_parallel(pids, Scanner::mappings)
}

/// The tasks of these processes blocked in semop/semtimedop, msgsnd or msgrcv.
pub fn read_waiters(pids: &[u32]) -> Vec<Waiter> {
    in_parallel(pids, |scan, dir, out| scan.waiters(dir, None, out))
}

/// Everything about the caller's IPC namespace, now: the sysvipc tables, the values of every
/// semaphore set, the processes in the namespace (and those whose namespace is unknown,
/// `ipc_ns` 0: zombies, and processes we may not inspect), the System V mappings and the tasks
/// blocked in IPC of those in the namespace, and the limits; the POSIX objects
/// ([`super::posix::read_objects`]) and every process, of any namespace, that maps one or holds
/// a descriptor of one.
/// `now_ns` (the wall clock, ns since the epoch) becomes `taken_ns`.
///
/// Sets removed while their values are read are left out of `sem_values`, as are sets the
/// caller may not read (logged).
///
/// Two scans are skipped when the tables show they cannot find anything: the mappings when no
/// segment is attached (every attachment counts in some `nattch`), the waiters when there is
/// no message queue and no semaphore has a waiter (`ncnt`, `zcnt`).
pub fn take_snapshot(now_ns: u64) -> Result<Snapshot, ReadError> {
    take_snapshot_with(now_ns, None)
}

/// [`take_snapshot`], with the processes and their System V mappings from the kernel's
/// iterators (`kernel`) when they can give all that is wanted: no POSIX object to find the
/// holders of, no waiter to find (both need each process's files), and ipcaudit in the
/// initial PID and user namespaces (the iterators see global pids and uids, /proc ours). Falls
/// back to /proc when the iterators fail.
pub fn take_snapshot_with(
    now_ns: u64,
    kernel: Option<&mut dyn KernelScan>,
) -> Result<Snapshot, ReadError> {
    let ipc_ns = own_ipc_ns()?;
    let (shm, sem, msg) = read_sysvipc()?;
    let mut sem_values = Vec::with_capacity(sem.len());
    let mut sem_unknown = false;
    for set in &sem {
        match read_sem_values(set.perm.id, set.nsems) {
            Ok(values) => sem_values.push((set.perm.id, values)),
            Err(e) if e.is_gone() => {}
            Err(e) => {
                log::debug!("{e}");
                sem_unknown = true;
            }
        }
    }
    let posix = super::posix::read_objects();
    let targets = PosixTargets::new(&posix.objects);
    let want_mappings = shm.iter().any(|s| s.nattch > 0);
    let want_waiters = !msg.is_empty()
        || sem_unknown
        || sem_values
            .iter()
            .flat_map(|(_, v)| v)
            .any(|v| v.ncnt > 0 || v.zcnt > 0);

    let Found {
        processes,
        mappings,
        waiters,
        posix_holders,
        posix_hidden,
        posix_protected,
    } = match kernel {
        Some(k) if targets.is_empty() && !want_waiters && in_initial_namespaces() => {
            kernel_scan(k, ipc_ns, want_mappings)
        }
        _ => None,
    }
    .unwrap_or_else(|| scan_proc(&proc_pids(), ipc_ns, &targets, want_mappings, want_waiters));
    let mut posix_notes = posix.notes;
    if !posix_protected.is_empty() {
        log::info!(
            "the descriptors and mappings of protected process(es) {posix_protected:?} could not \
             be read even with CAP_SYS_PTRACE (another security domain): they are taken to hold \
             no POSIX object"
        );
    }
    if posix_hidden > 0 {
        posix_notes.push(format!(
            "the holders of POSIX objects are not all known: the descriptors and mappings of \
             {posix_hidden} process(es) could not be read (no permission; run as root), so no \
             POSIX object is judged leaked"
        ));
    }

    Ok(Snapshot {
        ipc_ns,
        taken_ns: now_ns,
        shm,
        sem,
        msg,
        sem_values,
        mappings,
        processes,
        waiters,
        limits: read_limits(),
        posix: posix.objects,
        posix_holders,
        posix_hidden,
        posix_protected,
        posix_listed: posix.listed,
        posix_notes,
    })
}

/// The processes, mappings, waiters and POSIX holders of a /proc scan of `pids` (see
/// [`take_snapshot`]).
fn scan_proc(
    pids: &[u32],
    ipc_ns: u32,
    targets: &PosixTargets,
    want_mappings: bool,
    want_waiters: bool,
) -> Found {
    in_parallel(pids, |scan, dir, found: &mut Found| {
        let Some((p, extra)) = scan.process(dir, Some(ipc_ns)) else {
            // A process of another IPC namespace may still map a /dev/shm object, or hold a
            // queue's descriptor it was passed.
            if !targets.is_empty() {
                scan.posix_holders_outside(dir, targets, &mut found.posix_holders);
                found.take_denied(scan);
            }
            return;
        };
        if p.ipc_ns == ipc_ns {
            if want_mappings {
                scan.mappings_of(dir, extra.live_tid, &mut found.mappings);
            }
            if want_waiters {
                scan.waiters(dir, extra.threads, &mut found.waiters);
            }
        }
        if !targets.is_empty() && p.is_alive() {
            scan.posix_holders_of(dir, extra.live_tid, &p, targets, &mut found.posix_holders);
            found.take_denied(scan);
        }
        found.processes.push(p);
    })
}

/// The processes and mappings from the kernel's iterators; `None` (logged) when they fail. A
/// process /proc lists that the iterators did not show (a kernel may hide some, e.g. a
/// sandbox's init) is read from /proc.
fn kernel_scan(kernel: &mut dyn KernelScan, ipc_ns: u32, want_mappings: bool) -> Option<Found> {
    // Start times as the events' (`Clocks::start_ticks`), so that both name a process alike.
    let clocks = crate::clock::Clocks::sample();
    let mut scanned = || -> Result<Found, Box<dyn std::error::Error>> {
        let started = std::time::Instant::now();
        let kscan::Tasks { processes, seen } =
            kscan::processes(&kernel.tasks()?, ipc_ns, |ns| clocks.start_ticks(ns))?;
        let mappings = if want_mappings {
            kscan::mappings(
                &kernel.vmas()?,
                &processes,
                ipc_ns,
                page_size().trailing_zeros(),
            )?
        } else {
            Vec::new()
        };
        let (from_kernel, mapped) = (processes.len(), mappings.len());
        let mut found = Found {
            processes,
            mappings,
            ..Found::default()
        };
        let unseen: Vec<u32> = proc_pids()
            .into_iter()
            .filter(|pid| !seen.contains(pid))
            .collect();
        if !unseen.is_empty() {
            let none = PosixTargets::default();
            found.append(scan_proc(&unseen, ipc_ns, &none, want_mappings, false));
            found.processes.sort_by_key(|p| p.key.pid);
            found.mappings.sort_by_key(|m| m.pid);
        }
        log::debug!(
            "snapshot: {from_kernel} processes and {mapped} System V mappings read by the \
             kernel's iterators, {} processes it did not show read from /proc, in {:?}",
            unseen.len(),
            started.elapsed()
        );
        Ok(found)
    };
    scanned()
        .inspect_err(|e| log::info!("{e}: reading /proc instead"))
        .ok()
}

/// Whether ipcaudit runs in the initial PID and user namespaces, where the pids and uids the
/// kernel's iterators see are the ones /proc shows.
fn in_initial_namespaces() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let one_pid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .is_some_and(|pids| pids.split_whitespace().count() == 1);
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let whole_uid_range =
        uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    one_pid && whole_uid_range
}

/// What [`take_snapshot`] finds in /proc.
#[derive(Default)]
struct Found {
    processes: Vec<ProcessInfo>,
    mappings: Vec<ShmMapping>,
    waiters: Vec<Waiter>,
    posix_holders: Vec<PosixHolder>,
    /// Processes whose POSIX holdings could not be read (no permission).
    posix_hidden: u32,
    /// Processes whose POSIX holdings could not be read even with CAP_SYS_PTRACE.
    posix_protected: Vec<u32>,
}

impl Found {
    /// Moves what the scanner could not read of the process it just scanned.
    fn take_denied(&mut self, scan: &mut Scanner) {
        self.posix_hidden += std::mem::take(&mut scan.posix_hidden);
        self.posix_protected.append(&mut scan.posix_protected);
    }
}

impl Part for Found {
    fn append(&mut self, mut other: Self) {
        self.processes.append(&mut other.processes);
        self.mappings.append(&mut other.mappings);
        self.waiters.append(&mut other.waiters);
        self.posix_holders.append(&mut other.posix_holders);
        self.posix_hidden += other.posix_hidden;
        self.posix_protected.append(&mut other.posix_protected);
    }
}

/// The holders of some POSIX objects, and how many processes could not be inspected.
#[derive(Default)]
pub struct PosixHolders {
    pub holders: Vec<PosixHolder>,
    /// Processes whose descriptors or mappings could not be read (no permission): when not 0,
    /// nobody may be said not to hold an object.
    pub hidden: u32,
    /// Processes that could not be read even with CAP_SYS_PTRACE (another security domain):
    /// taken to hold nothing.
    pub protected: Vec<u32>,
}

impl Part for PosixHolders {
    fn append(&mut self, mut other: Self) {
        self.holders.append(&mut other.holders);
        self.hidden += other.hidden;
        self.protected.append(&mut other.protected);
    }
}

/// The POSIX objects whose holders a scan looks for, by device and inode.
#[derive(Clone, Debug, Default)]
pub struct PosixTargets {
    files: HashSet<(u64, u64)>,
    /// Some of them can be mapped (a /dev/shm file; a queue cannot): the maps are read.
    mappable: bool,
}

impl PosixTargets {
    pub fn new(objects: &[PosixObject]) -> Self {
        Self {
            files: objects.iter().map(|o| (o.dev, o.ino)).collect(),
            mappable: objects
                .iter()
                .any(|o| o.ty != crate::event::PosixType::Pmsg),
        }
    }

    /// One file (for a recheck).
    pub fn one(dev: u64, ino: u64, mappable: bool) -> Self {
        Self {
            files: HashSet::from([(dev, ino)]),
            mappable,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn contains(&self, dev: u64, ino: u64) -> bool {
        self.files.contains(&(dev, ino))
    }
}

/// Every process (any namespace) that maps one of `targets` or holds a descriptor of one: what
/// `reap` rechecks immediately before it unlinks an object.
pub fn read_posix_holders(targets: &PosixTargets) -> PosixHolders {
    in_parallel(&proc_pids(), |scan, dir, out: &mut PosixHolders| {
        scan.posix_holders_outside(dir, targets, &mut out.holders);
        out.hidden += std::mem::take(&mut scan.posix_hidden);
        out.protected.append(&mut scan.posix_protected);
    })
}

/// The numeric entries of /proc: one per thread group.
fn proc_pids() -> Vec<u32> {
    let entries = match std::fs::read_dir("/proc") {
        Ok(entries) => entries,
        Err(e) => {
            log::debug!("/proc: {e}");
            return Vec::new();
        }
    };
    entries
        .filter_map(|entry| {
            std::str::from_utf8(entry.ok()?.file_name().as_bytes())
                .ok()?
                .parse()
                .ok()
        })
        .collect()
}

/// What a scan of part of /proc collects: parts are appended in order.
trait Part: Default + Send {
    fn append(&mut self, other: Self);
}

impl<T: Send> Part for Vec<T> {
    fn append(&mut self, mut other: Self) {
        Vec::append(self, &mut other);
    }
}

/// Runs `each` on every process of `pids` that still exists, with a scanner, collecting into
/// an `R`. Large scans are split, in order, among a few threads (/proc reads cost system time,
/// which parallelizes); the parts are joined in the order of `pids`.
fn in_parallel<R, F>(pids: &[u32], each: F) -> R
where
    R: Part,
    F: Fn(&mut Scanner, &ProcDir, &mut R) + Sync,
{
    /// Below this many processes one thread is fast enough.
    const MIN_PER_THREAD: usize = 256;
    const MAX_THREADS: usize = 8;
    let scan = |chunk: &[u32]| {
        let mut scanner = Scanner::new();
        let mut out = R::default();
        for &pid in chunk {
            if let Some(dir) = scanner.open(pid) {
                each(&mut scanner, &dir, &mut out);
            }
        }
        out
    };
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = cpus
        .min(MAX_THREADS)
        .min(pids.len() / MIN_PER_THREAD)
        .max(1);
    if threads == 1 {
        return scan(pids);
    }
    let chunk_len = pids.len().div_ceil(threads);
    std::thread::scope(|s| {
        let mut pending = Vec::with_capacity(threads);
        for chunk in pids.chunks(chunk_len) {
            match std::thread::Builder::new()
                .name("ipcaudit-scan".into())
                .spawn_scoped(s, || scan(chunk))
            {
                Ok(handle) => pending.push(Err(handle)),
                // No thread: do this part here.
                Err(_) => pending.push(Ok(scan(chunk))),
            }
        }
        let mut out = R::default();
        for part in pending {
            out.append(match part {
                Ok(done) => done,
                // A panic in a scan (a bug) goes on in the caller.
                Err(handle) => handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            });
        }
        out
    })
}

/// What [`Scanner::process`] learns that the other reads of the process need.
struct Extra {
    /// The number of threads, if the main thread's syscall file shows them all (one thread,
    /// the main one, alive).
    threads: Option<u32>,
    /// A live thread, when the main thread has exited: its maps are the process's.
    live_tid: Option<u32>,
}

/// Whether a maps file showed a memory map.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Memory {
    Some,
    /// None: a kernel thread, a zombie, or a main thread that exited.
    None,
    /// Could not be read (logged).
    Unknown,
}

/// An open /proc/PID directory: everything read through it is about that one process.
struct ProcDir {
    pid: u32,
    fd: OwnedFd,
}

/// Reads /proc for a scan, reusing one buffer and one path string.
struct Scanner {
    buf: Vec<u8>,
    path: String,
    /// Whether `PROCMAP_QUERY` works (Linux 6.11+); else the maps text is parsed.
    procmap_query: bool,
    /// Processes whose POSIX holdings could not be read (no permission), since last taken.
    posix_hidden: u32,
    /// Processes whose POSIX holdings could not be read even with CAP_SYS_PTRACE (another
    /// security domain, e.g. a sandbox's init), since last taken.
    posix_protected: Vec<u32>,
    /// Whether we have CAP_SYS_PTRACE: then a denial is a protected process, not our blindness.
    privileged: bool,
}

impl Scanner {
    fn new() -> Self {
        Self {
            buf: vec![0; 16 * 1024],
            path: String::with_capacity(64),
            procmap_query: true,
            posix_hidden: 0,
            posix_protected: Vec::new(),
            privileged: can_inspect_all(),
        }
    }

    /// `/proc/{pid}/{rel}`, in the reused path string.
    fn path_of(&mut self, pid: u32, rel: &str) -> &str {
        self.path.clear();
        let _ = write!(self.path, "/proc/{pid}/{rel}");
        &self.path
    }

    /// Logs a failure about one process, unless it just vanished.
    fn skip(&mut self, pid: u32, rel: &str, e: &io::Error) {
        if !vanished(e) {
            log::debug!("{}: {e}", self.path_of(pid, rel));
        }
    }

    fn open(&mut self, pid: u32) -> Option<ProcDir> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        match nix::fcntl::open(self.path_of(pid, ""), flags, Mode::empty()) {
            Ok(fd) => Some(ProcDir { pid, fd }),
            Err(e) => {
                self.skip(pid, "", &e.into());
                None
            }
        }
    }

    /// Reads a whole file into the buffer; returns its length. `one_record`: the file is a
    /// single-record seq file (stat, status, syscall), which a read with room to spare returns
    /// whole, so no second read is needed to see the end.
    fn read_file(&mut self, file: &mut File, one_record: bool) -> io::Result<usize> {
        let mut len = 0;
        loop {
            if len == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match file.read(&mut self.buf[len..]) {
                Ok(0) => return Ok(len),
                Ok(n) => {
                    len += n;
                    if one_record && len < self.buf.len() {
                        return Ok(len);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the single-record file `rel` under the process directory, decoded lossily; logs
    /// a failure (unless the process vanished).
    fn text(&mut self, dir: &ProcDir, rel: &str) -> Option<Cow<'_, str>> {
        let read = openat(
            dir.fd.as_fd(),
            rel,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)
        .and_then(|fd| self.read_file(&mut File::from(fd), true));
        match read {
            Ok(len) => Some(String::from_utf8_lossy(&self.buf[..len])),
            Err(e) => {
                self.skip(dir.pid, rel, &e);
                None
            }
        }
    }

    /// The process, if it is in namespace `only_ns` (when given) or its namespace is unknown
    /// (a zombie; no access), with what the other reads need to know about it.
    fn process(&mut self, dir: &ProcDir, only_ns: Option<u32>) -> Option<(ProcessInfo, Extra)> {
        let pid = dir.pid;
        let outside = |ns: u32| only_ns.is_some_and(|only| only != ns && ns != 0);
        let mut ipc_ns = match readlinkat(dir.fd.as_fd(), "ns/ipc") {
            Ok(link) => {
                let ns = std::str::from_utf8(link.as_bytes())
                    .ok()
                    .and_then(parse_ns_link);
                if ns.is_none() {
                    log::debug!(
                        "/proc/{pid}/ns/ipc: unexpected link {}",
                        link.to_string_lossy()
                    );
                }
                ns?
            }
            // ENOENT: no namespace: a zombie, or a process exiting (or gone: the stat read
            // tells). EACCES, EPERM: not ours to inspect (no ptrace access): the namespace is
            // unknown. Either way the process is kept, so that it is known to exist (a zombie
            // is known dead, an uninspectable process known alive).
            Err(Errno::ENOENT | Errno::EACCES | Errno::EPERM) => 0,
            Err(e) => {
                self.skip(pid, "ns/ipc", &e.into());
                return None;
            }
        };
        if outside(ipc_ns) {
            return None;
        }

        let (mut stat, threads) = {
            let text = self.text(dir, "stat")?;
            let path = format!("/proc/{pid}/stat");
            match parse_stat(&text, &path) {
                Ok(stat) => (stat, parse_stat_num_threads(&text)),
                Err(e) => {
                    log::debug!("{e}");
                    return None;
                }
            }
        };
        let mut extra = Extra {
            threads,
            live_tid: None,
        };
        // A main thread that exited while other threads run shows as a zombie, with no
        // namespace and no memory: the process is alive, as one of its live threads shows.
        if stat.state == 'Z' && threads.is_some_and(|n| n > 1) {
            extra.threads = None; // The main thread's syscall file is not the others'.
            if let Some((tid, state, ns)) = self.live_thread(dir) {
                extra.live_tid = Some(tid);
                stat.state = state;
                ipc_ns = ns;
                if outside(ipc_ns) {
                    return None;
                }
            }
        }
        let uid = {
            let text = self.text(dir, "status")?;
            let uid = parse_status_uid(&text);
            if uid.is_none() {
                log::debug!("/proc/{pid}/status: no Uid line");
            }
            uid?
        };
        let info = ProcessInfo {
            key: ProcessKey {
                pid,
                start_ticks: stat.start_ticks,
            },
            ppid: stat.ppid,
            comm: stat.comm,
            uid,
            state: stat.state,
            ipc_ns,
        };
        Some((info, extra))
    }

    /// A thread of the process that has not exited: its tid, state and IPC namespace (0 if
    /// unreadable).
    fn live_thread(&mut self, dir: &ProcDir) -> Option<(u32, char, u32)> {
        let entries = std::fs::read_dir(self.path_of(dir.pid, "task")).ok()?;
        let mut rel = String::with_capacity(32);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(tid) = std::str::from_utf8(name.as_bytes())
                .ok()
                .and_then(|s| s.parse().ok())
            else {
                continue;
            };
            rel.clear();
            let _ = write!(rel, "task/{tid}/stat");
            let state = self
                .text(dir, &rel)
                .and_then(|t| parse_stat(&t, "").ok())
                .map(|s| s.state);
            if state.is_none_or(|s| matches!(s, 'Z' | 'X' | 'x')) {
                continue;
            }
            rel.clear();
            let _ = write!(rel, "task/{tid}/ns/ipc");
            let ns = readlinkat(dir.fd.as_fd(), rel.as_str())
                .ok()
                .and_then(|link| parse_ns_link(std::str::from_utf8(link.as_bytes()).ok()?))
                .unwrap_or(0);
            return Some((tid, state?, ns));
        }
        None
    }

    /// Appends the System V mappings of the process (through a live thread if its main
    /// thread exited).
    fn mappings(&mut self, dir: &ProcDir, out: &mut Vec<ShmMapping>) {
        if self.mappings_of(dir, None, out) == Memory::None {
            // No memory: a kernel thread, a zombie, or a main thread that exited.
            let leader_exited = self.text(dir, "stat").is_some_and(|t| {
                parse_stat(&t, "").is_ok_and(|s| s.state == 'Z')
                    && parse_stat_num_threads(&t).is_some_and(|n| n > 1)
            });
            if leader_exited && let Some((tid, _, _)) = self.live_thread(dir) {
                self.mappings_of(dir, Some(tid), out);
            }
        }
    }

    /// Appends the System V mappings in the maps of the process, or of its thread `tid`.
    fn mappings_of(
        &mut self,
        dir: &ProcDir,
        tid: Option<u32>,
        out: &mut Vec<ShmMapping>,
    ) -> Memory {
        let pid = dir.pid;
        let mut rel = String::new();
        let rel = match tid {
            None => "maps",
            Some(tid) => {
                let _ = write!(rel, "task/{tid}/maps");
                rel.as_str()
            }
        };
        let fd = match openat(
            dir.fd.as_fd(),
            rel,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                self.skip(pid, rel, &e.into());
                return Memory::Unknown;
            }
        };
        if self.procmap_query {
            let before = out.len();
            match query_sysv_mappings(fd.as_fd(), pid, out) {
                Ok(()) => return Memory::Some,
                Err(Errno::ESRCH) => return Memory::None,
                Err(e @ (Errno::ENOTTY | Errno::EINVAL | Errno::EOPNOTSUPP)) => {
                    log::debug!("PROCMAP_QUERY: {e}: reading the maps text instead");
                    self.procmap_query = false;
                    out.truncate(before);
                }
                Err(e) => {
                    out.truncate(before);
                    self.skip(pid, rel, &e.into());
                    return Memory::Unknown;
                }
            }
        }
        let len = match self.read_file(&mut File::from(fd), false) {
            Ok(0) => return Memory::None,
            Ok(len) => len,
            Err(e) => {
                self.skip(pid, rel, &e);
                return Memory::Unknown;
            }
        };
        let path = format!("/proc/{pid}/{rel}");
        let text = String::from_utf8_lossy(&self.buf[..len]);
        match parse_maps_sysv(&text, pid, &path) {
            Ok(found) => out.extend(found),
            Err(e) => log::debug!("{e}"),
        }
        Memory::Some
    }

    /// A process whose POSIX holdings could not be read.
    fn posix_denied(&mut self, pid: u32) {
        if self.privileged {
            if !self.posix_protected.contains(&pid) {
                self.posix_protected.push(pid);
            }
        } else {
            self.posix_hidden += 1;
        }
    }

    /// The POSIX holdings of a process not read yet (another namespace's, or a recheck's):
    /// looked for first, and the process read only when it holds something.
    fn posix_holders_outside(
        &mut self,
        dir: &ProcDir,
        targets: &PosixTargets,
        out: &mut Vec<PosixHolder>,
    ) {
        let mut held = Vec::new();
        self.posix_holdings(dir, None, targets, &mut held);
        if held.is_empty() {
            // A main thread that exited while others run has no descriptors or maps of its own.
            let leader_exited = self.text(dir, "stat").is_some_and(|t| {
                parse_stat(&t, "").is_ok_and(|s| s.state == 'Z')
                    && parse_stat_num_threads(&t).is_some_and(|n| n > 1)
            });
            if !leader_exited {
                return;
            }
        }
        let Some((p, extra)) = self.process(dir, None) else {
            return;
        };
        if !p.is_alive() {
            return;
        }
        if held.is_empty() {
            self.posix_holdings(dir, extra.live_tid, targets, &mut held);
        }
        out.extend(
            held.into_iter()
                .map(|(dev, ino, hold)| holder(&p, dev, ino, hold)),
        );
    }

    /// The POSIX holdings of a process already read.
    fn posix_holders_of(
        &mut self,
        dir: &ProcDir,
        tid: Option<u32>,
        p: &ProcessInfo,
        targets: &PosixTargets,
        out: &mut Vec<PosixHolder>,
    ) {
        let mut held = Vec::new();
        self.posix_holdings(dir, tid, targets, &mut held);
        out.extend(
            held.into_iter()
                .map(|(dev, ino, hold)| holder(p, dev, ino, hold)),
        );
    }

    /// Appends the descriptors (/proc/PID/fd, access mode from fdinfo) and mappings of the
    /// process (or of its thread `tid`) that are of one of `targets`, by device and inode.
    fn posix_holdings(
        &mut self,
        dir: &ProcDir,
        tid: Option<u32>,
        targets: &PosixTargets,
        out: &mut Vec<(u64, u64, Hold)>,
    ) {
        let base = match tid {
            None => String::new(),
            Some(tid) => format!("task/{tid}/"),
        };
        let fd_dir = format!("{base}fd");
        let listing = std::fs::read_dir(self.path_of(dir.pid, &fd_dir));
        match listing {
            Ok(entries) => {
                let mut rel = String::with_capacity(32);
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let Some(fd) = std::str::from_utf8(name.as_bytes())
                        .ok()
                        .and_then(|s| s.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    rel.clear();
                    let _ = write!(rel, "{fd_dir}/{fd}");
                    // Sockets, pipes and anonymous files link to `type:[inode]`: no file.
                    let is_path = readlinkat(dir.fd.as_fd(), rel.as_str())
                        .is_ok_and(|l| l.as_bytes().first() == Some(&b'/'));
                    if !is_path {
                        continue;
                    }
                    let Ok(st) =
                        nix::sys::stat::fstatat(dir.fd.as_fd(), rel.as_str(), AtFlags::empty())
                    else {
                        continue;
                    };
                    if !targets.contains(st.st_dev, st.st_ino) {
                        continue;
                    }
                    rel.clear();
                    let _ = write!(rel, "{base}fdinfo/{fd}");
                    let (read, write) = self
                        .text(dir, &rel)
                        .and_then(|t| parse_fdinfo_flags(&t))
                        .map_or((true, true), access_mode);
                    out.push((st.st_dev, st.st_ino, Hold::Fd { fd, read, write }));
                }
            }
            Err(e) => {
                if denied(&e) {
                    self.posix_denied(dir.pid);
                    return;
                }
                self.skip(dir.pid, &fd_dir, &e);
            }
        }
        if !targets.mappable {
            return;
        }
        let maps = format!("{base}maps");
        let fd = match openat(
            dir.fd.as_fd(),
            maps.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                let e = io::Error::from(e);
                if denied(&e) {
                    self.posix_denied(dir.pid);
                    return;
                }
                return self.skip(dir.pid, &maps, &e);
            }
        };
        if self.procmap_query {
            let before = out.len();
            match query_file_mappings(fd.as_fd(), targets, out) {
                Ok(()) | Err(Errno::ESRCH) => return,
                Err(e @ (Errno::ENOTTY | Errno::EINVAL | Errno::EOPNOTSUPP)) => {
                    log::debug!("PROCMAP_QUERY: {e}: reading the maps text instead");
                    self.procmap_query = false;
                    out.truncate(before);
                }
                Err(e) => {
                    out.truncate(before);
                    return self.skip(dir.pid, &maps, &e.into());
                }
            }
        }
        let len = match self.read_file(&mut File::from(fd), false) {
            Ok(len) => len,
            Err(e) => return self.skip(dir.pid, &maps, &e),
        };
        let path = format!("/proc/{}/{maps}", dir.pid);
        let text = String::from_utf8_lossy(&self.buf[..len]);
        match parse_maps_files(&text, &path) {
            Ok(found) => {
                for m in found {
                    let dev = libc::makedev(m.dev_major, m.dev_minor);
                    if targets.contains(dev, m.inode) {
                        out.push((
                            dev,
                            m.inode,
                            Hold::Map {
                                start: m.start,
                                end: m.end,
                                writable: m.writable,
                            },
                        ));
                    }
                }
            }
            Err(e) => log::debug!("{e}"),
        }
    }

    /// Appends the tasks of the process that are blocked in an IPC syscall. `threads`: the
    /// thread count, if known; with one thread, only the main thread's file is read.
    fn waiters(&mut self, dir: &ProcDir, threads: Option<u32>, out: &mut Vec<Waiter>) {
        let pid = dir.pid;
        if threads == Some(1) {
            if let Some(text) = self.text(dir, "syscall")
                && let Some(w) = parse_syscall(&text, pid, pid)
            {
                out.push(w);
            }
            return;
        }
        // The listing goes by path; each task is then read through the process directory, so
        // a listing of another process that took the PID meanwhile reads nothing.
        let entries = match std::fs::read_dir(self.path_of(pid, "task")) {
            Ok(entries) => entries,
            Err(e) => return self.skip(pid, "task", &e),
        };
        let mut rel = String::with_capacity(32);
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => return self.skip(pid, "task", &e),
            };
            let name = entry.file_name();
            let Some(tid) = std::str::from_utf8(name.as_bytes())
                .ok()
                .and_then(|s| s.parse().ok())
            else {
                continue;
            };
            rel.clear();
            let _ = write!(rel, "task/{tid}/syscall");
            if let Some(text) = self.text(dir, &rel)
                && let Some(w) = parse_syscall(&text, pid, tid)
            {
                out.push(w);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PROCMAP_QUERY: the shared file mappings of a process, without the text of all its mappings.

/// `struct procmap_query` (include/uapi/linux/fs.h, Linux 6.11+).
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

const _: () = assert!(size_of::<ProcmapQuery>() == 104);

/// `_IOWR('f', 17, struct procmap_query)`.
const PROCMAP_QUERY: libc::c_ulong = 0xC068_6611;
const PROCMAP_QUERY_VMA_WRITABLE: u64 = 0x02;
const PROCMAP_QUERY_VMA_SHARED: u64 = 0x08;
const PROCMAP_QUERY_COVERING_OR_NEXT_VMA: u64 = 0x10;
const PROCMAP_QUERY_FILE_BACKED_VMA: u64 = 0x20;

/// Appends the System V mappings among the shared file mappings of the process whose maps
/// file is `maps`: one ioctl per shared file mapping, plus one.
fn query_sysv_mappings(
    maps: BorrowedFd<'_>,
    pid: u32,
    out: &mut Vec<ShmMapping>,
) -> Result<(), Errno> {
    // Longer than any System V name ("/SYSV00000000 (deleted)" and its NUL: 24 bytes).
    let mut name = [0u8; 64];
    let mut addr = 0;
    loop {
        let mut q = ProcmapQuery {
            size: 104,
            query_flags: PROCMAP_QUERY_COVERING_OR_NEXT_VMA
                | PROCMAP_QUERY_VMA_SHARED
                | PROCMAP_QUERY_FILE_BACKED_VMA,
            query_addr: addr,
            vma_name_size: 64,
            vma_name_addr: name.as_mut_ptr().expose_provenance() as u64,
            ..ProcmapQuery::default()
        };
        if let Err(e) = procmap_query(maps, &mut q) {
            match e {
                // No mapping at or after `addr`.
                Errno::ENOENT => return Ok(()),
                // A name longer than the buffer: not a System V one. Find where it ends.
                Errno::ENAMETOOLONG => {
                    q.vma_name_size = 0;
                    q.vma_name_addr = 0;
                    procmap_query(maps, &mut q)?;
                }
                e => return Err(e),
            }
        }
        if q.vma_end <= addr {
            return Ok(()); // Cannot happen; guarantees the loop ends.
        }
        addr = q.vma_end;
        let len = usize::try_from(q.vma_name_size)
            .unwrap_or(0)
            .min(name.len());
        let text = &name[..len];
        let text = text.split(|&b| b == 0).next().unwrap_or_default();
        let key = std::str::from_utf8(text)
            .ok()
            .and_then(parse::parse_sysv_name);
        if let (Some(key), Ok(shmid)) = (key, i32::try_from(q.inode)) {
            out.push(ShmMapping {
                pid,
                shmid,
                key,
                start: q.vma_start,
                end: q.vma_end,
                offset: q.vma_offset,
                writable: q.vma_flags & PROCMAP_QUERY_VMA_WRITABLE != 0,
            });
        }
    }
}

/// A POSIX holder record.
fn holder(p: &ProcessInfo, dev: u64, ino: u64, hold: Hold) -> PosixHolder {
    PosixHolder {
        process: p.key,
        comm: p.comm.clone(),
        uid: p.uid,
        ipc_ns: p.ipc_ns,
        dev,
        ino,
        hold,
    }
}

/// Appends the file mappings of `targets` in the process whose maps file is `maps`: one ioctl
/// per file mapping (names are not fetched: the device and inode tell).
fn query_file_mappings(
    maps: BorrowedFd<'_>,
    targets: &PosixTargets,
    out: &mut Vec<(u64, u64, Hold)>,
) -> Result<(), Errno> {
    let mut addr = 0;
    loop {
        let mut q = ProcmapQuery {
            size: 104,
            query_flags: PROCMAP_QUERY_COVERING_OR_NEXT_VMA | PROCMAP_QUERY_FILE_BACKED_VMA,
            query_addr: addr,
            ..ProcmapQuery::default()
        };
        match procmap_query(maps, &mut q) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        }
        if q.vma_end <= addr {
            return Ok(());
        }
        addr = q.vma_end;
        let dev = libc::makedev(q.dev_major, q.dev_minor);
        if targets.contains(dev, q.inode) {
            out.push((
                dev,
                q.inode,
                Hold::Map {
                    start: q.vma_start,
                    end: q.vma_end,
                    writable: q.vma_flags & PROCMAP_QUERY_VMA_WRITABLE != 0,
                },
            ));
        }
    }
}

fn procmap_query(maps: BorrowedFd<'_>, q: &mut ProcmapQuery) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: `q` is a valid `struct procmap_query` whose `size` says so; its name pointer, if
    // any, points to a live buffer of `vma_name_size` bytes (the caller's), and its build-id
    // size is 0 (the kernel writes no build id).
    let r = unsafe { libc::ioctl(maps.as_raw_fd(), PROCMAP_QUERY, ptr::from_mut(q)) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    //! Against the live system (run as root). Every object is `IPC_PRIVATE` and found by id, so
    //! tests running in parallel in this process do not see each other's objects.

    use std::ptr;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::snapshot::Blocked;

    fn errno() -> Errno {
        Errno::last()
    }

    fn our_pid() -> u32 {
        std::process::id()
    }

    fn gettid() -> u32 {
        u32::try_from(nix::unistd::gettid().as_raw()).unwrap()
    }

    /// A segment, attached once; detached and removed on drop (also when a test fails).
    struct Shm {
        id: i32,
        addr: *mut libc::c_void,
    }

    impl Shm {
        fn new(size: usize) -> Self {
            // SAFETY: plain syscalls; shmat maps a fresh region that nothing else uses.
            unsafe {
                let id = libc::shmget(libc::IPC_PRIVATE, size, libc::IPC_CREAT | 0o600);
                assert!(id >= 0, "shmget: {}", errno());
                let addr = libc::shmat(id, ptr::null(), 0);
                if addr as isize == -1 {
                    let e = errno();
                    libc::shmctl(id, libc::IPC_RMID, ptr::null_mut());
                    panic!("shmat: {e}");
                }
                Self { id, addr }
            }
        }
    }

    impl Drop for Shm {
        fn drop(&mut self) {
            // SAFETY: `addr` is our attachment; nothing refers to it any more.
            unsafe {
                libc::shmdt(self.addr);
                libc::shmctl(self.id, libc::IPC_RMID, ptr::null_mut());
            }
        }
    }

    /// A semaphore set or a queue, removed on drop.
    struct Ipc {
        id: i32,
        sem: bool,
    }

    impl Ipc {
        fn sem(nsems: i32) -> Self {
            // SAFETY: a plain syscall.
            let id = unsafe { libc::semget(libc::IPC_PRIVATE, nsems, libc::IPC_CREAT | 0o600) };
            assert!(id >= 0, "semget: {}", errno());
            Self { id, sem: true }
        }

        fn msg() -> Self {
            // SAFETY: a plain syscall.
            let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
            assert!(id >= 0, "msgget: {}", errno());
            Self { id, sem: false }
        }

        fn remove(&self) {
            // SAFETY: plain syscalls; IPC_RMID reads no fourth argument.
            unsafe {
                if self.sem {
                    libc::semctl(self.id, 0, libc::IPC_RMID);
                } else {
                    libc::msgctl(self.id, libc::IPC_RMID, ptr::null_mut());
                }
            }
        }
    }

    impl Drop for Ipc {
        fn drop(&mut self) {
            self.remove();
        }
    }

    fn setval(semid: i32, semnum: i32, value: i32) {
        // SAFETY: SETVAL reads `union semun` by value: its `val` member, passed as a long.
        let r = unsafe { libc::semctl(semid, semnum, libc::SETVAL, libc::c_long::from(value)) };
        assert_eq!(r, 0, "semctl SETVAL: {}", errno());
    }

    #[repr(C)]
    struct Msg {
        mtype: libc::c_long,
        text: [u8; 5],
    }

    /// Polls `f` until it gives Some, for up to 10 s.
    fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(t) = f() {
                return t;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn snapshot_sees_segment_and_mapping() {
        let shm = Shm::new(12345);
        let t0 = Instant::now();
        let snap = take_snapshot(42).unwrap();
        eprintln!(
            "take_snapshot: {:?} ({} processes, {} mappings, {} waiters)",
            t0.elapsed(),
            snap.processes.len(),
            snap.mappings.len(),
            snap.waiters.len()
        );
        assert_eq!(snap.taken_ns, 42);
        assert_eq!(snap.ipc_ns, own_ipc_ns().unwrap());
        assert_eq!(snap.limits.page_size, 4096);

        let seg = snap
            .shm
            .iter()
            .find(|s| s.perm.id == shm.id)
            .expect("segment in the table");
        assert_eq!(seg.size, 12345);
        assert_eq!(seg.nattch, 1);
        assert_eq!(seg.cpid, our_pid());
        assert_eq!(seg.lpid, our_pid());
        assert_eq!(seg.perm.key, 0);
        assert_eq!(seg.perm.mode, 0o600);
        assert_eq!(seg.perm.cuid, nix::unistd::getuid().as_raw());

        let m: Vec<_> = snap.mappings.iter().filter(|m| m.shmid == shm.id).collect();
        assert_eq!(m.len(), 1, "{m:?}");
        let addr = shm.addr as u64;
        assert_eq!(
            *m[0],
            ShmMapping {
                pid: our_pid(),
                shmid: shm.id,
                key: 0,
                start: addr,
                end: addr + 16384,
                offset: 0,
                writable: true,
            }
        );
        // The same through read_mappings.
        assert!(read_mappings(&[our_pid()]).contains(m[0]));

        // Ourselves, with the identity /proc/self/stat gives.
        let me = snap
            .processes
            .iter()
            .find(|p| p.key.pid == our_pid())
            .expect("ourselves");
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").unwrap(), "s").unwrap();
        assert_eq!(me.key.start_ticks, stat.start_ticks);
        assert_eq!(me.comm, stat.comm);
        assert_eq!(me.ppid, stat.ppid);
        assert_eq!(me.uid, nix::unistd::getuid().as_raw());
        assert_eq!(me.ipc_ns, snap.ipc_ns);
        assert!(me.is_alive());
        // Everyone listed is in our namespace, or a zombie.
        assert!(
            snap.processes
                .iter()
                .all(|p| p.ipc_ns == snap.ipc_ns || p.ipc_ns == 0)
        );
    }

    #[test]
    fn partially_unmapped_attachment() {
        let shm = Shm::new(3 * 4096);
        // SAFETY: unmaps the first page of our own attachment, which nothing uses.
        let r = unsafe { libc::munmap(shm.addr, 4096) };
        assert_eq!(r, 0);
        let m: Vec<_> = read_mappings(&[our_pid()])
            .into_iter()
            .filter(|m| m.shmid == shm.id)
            .collect();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].start, shm.addr as u64 + 4096);
        assert_eq!((m[0].offset, m[0].end - m[0].start), (4096, 8192));
    }

    #[test]
    fn maps_text_and_procmap_query_agree() {
        let shm = Shm::new(2 * 4096);
        let mut ioctl = Scanner::new();
        let mut text = Scanner::new();
        text.procmap_query = false;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let dir = ioctl.open(our_pid()).expect("our /proc dir");
        assert!(ioctl.mappings_of(&dir, None, &mut a) == Memory::Some);
        assert!(text.mappings_of(&dir, None, &mut b) == Memory::Some);
        assert!(ioctl.procmap_query, "PROCMAP_QUERY works on Linux 6.11+");
        a.retain(|m| m.shmid == shm.id);
        b.retain(|m| m.shmid == shm.id);
        assert_eq!(a.len(), 1);
        assert_eq!(a, b);
        // A thread's maps are the process's.
        let mut c = Vec::new();
        text.mappings_of(&dir, Some(gettid()), &mut c);
        assert!(c.contains(&a[0]));
        // Kernel threads have no memory (kthreadd is PID 2 when the PID namespace is the
        // host's; whatever else PID 2 is, it must not read as unknown).
        if let Some(two) = ioctl.open(2) {
            let mut found = Vec::new();
            assert!(ioctl.mappings_of(&two, None, &mut found) != Memory::Unknown);
        }
    }

    #[test]
    fn other_namespace_left_out() {
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let spawned = std::process::Command::new("unshare")
            .args(["--ipc", "sleep", "30"])
            .spawn();
        let Ok(child) = spawned else {
            eprintln!("no unshare(1): skipped");
            return;
        };
        let child = Kill(child);
        let pid = child.0.id();
        let ours = own_ipc_ns().unwrap();
        let theirs = eventually("the new namespace", || {
            ipc_ns_of(pid).filter(|&ns| ns != ours)
        });
        let all = read_processes();
        assert!(all.iter().any(|p| p.key.pid == pid && p.ipc_ns == theirs));
        let snap = take_snapshot(0).unwrap();
        assert!(!snap.processes.iter().any(|p| p.key.pid == pid));
    }

    #[test]
    fn semaphore_values() {
        let set = Ipc::sem(3);
        setval(set.id, 1, 7);
        let values = read_sem_values(set.id, 3).unwrap();
        let zero = SemValue {
            value: 0,
            ncnt: 0,
            zcnt: 0,
            pid: 0,
        };
        assert_eq!(
            values,
            vec![
                zero,
                SemValue {
                    value: 7,
                    pid: our_pid(),
                    ..zero
                },
                zero
            ]
        );

        let snap = take_snapshot(0).unwrap();
        let row = snap
            .sem
            .iter()
            .find(|s| s.perm.id == set.id)
            .expect("set in the table");
        assert_eq!((row.nsems, row.perm.key, row.perm.mode), (3, 0, 0o600));
        let (_, v) = snap
            .sem_values
            .iter()
            .find(|(id, _)| *id == set.id)
            .expect("values");
        assert_eq!(v, &values);

        // More semaphores than the set has: gone (the set we knew is not this one).
        assert!(matches!(
            read_sem_values(set.id, 4),
            Err(ReadError::SemGone { .. })
        ));
        set.remove();
        let e = read_sem_values(set.id, 3).unwrap_err();
        assert!(e.is_gone() && !e.is_denied(), "{e}");
        assert!(matches!(
            e,
            ReadError::SemGone {
                errno: Errno::EINVAL | Errno::EIDRM,
                ..
            }
        ));
        assert!(read_sem_values(set.id, 0).unwrap().is_empty());
    }

    #[test]
    fn queue_counts() {
        let q = Ipc::msg();
        let msg = Msg {
            mtype: 1,
            text: *b"hello",
        };
        // SAFETY: `msg` is a valid msgbuf with 5 bytes of text.
        let r = unsafe { libc::msgsnd(q.id, ptr::from_ref(&msg).cast(), 5, libc::IPC_NOWAIT) };
        assert_eq!(r, 0, "msgsnd: {}", errno());
        let (_, _, msgs) = read_sysvipc().unwrap();
        let row = msgs
            .iter()
            .find(|m| m.perm.id == q.id)
            .expect("queue in the table");
        assert_eq!(
            (row.qnum, row.cbytes, row.lspid, row.lrpid),
            (1, 5, our_pid(), 0)
        );
        assert!(row.stime > 0 && row.rtime == 0);
    }

    #[test]
    fn blocked_in_semop_and_msgrcv() {
        let set = Ipc::sem(2);
        let q = Ipc::msg();
        let (semid, msqid) = (set.id, q.id);
        let sem_waiter = std::thread::spawn(move || {
            let tid = gettid();
            let mut op = libc::sembuf {
                sem_num: 1,
                sem_op: -1,
                sem_flg: 0,
            };
            // SAFETY: one valid sembuf.
            let r = unsafe { libc::semop(semid, &raw mut op, 1) };
            (tid, r)
        });
        let msg_waiter = std::thread::spawn(move || {
            let tid = gettid();
            let mut buf = Msg {
                mtype: 0,
                text: [0; 5],
            };
            // SAFETY: `buf` has room for 5 bytes of text.
            let r = unsafe { libc::msgrcv(msqid, ptr::from_mut(&mut buf).cast(), 5, 0, 0) };
            (tid, r)
        });

        let ws = eventually("both waiters", || {
            let ws = read_waiters(&[our_pid()]);
            let sem = ws.iter().find(|w| w.on == Blocked::Sem { semid })?;
            let msg = ws.iter().find(|w| w.on == Blocked::MsgRcv { msqid })?;
            Some((*sem, *msg))
        });
        assert_eq!((ws.0.pid, ws.1.pid), (our_pid(), our_pid()));
        let v = read_sem_values(semid, 2).unwrap();
        assert_eq!((v[1].value, v[1].ncnt, v[0].ncnt), (0, 1, 0));
        let snap = take_snapshot(0).unwrap();
        assert!(snap.waiters.contains(&ws.0) && snap.waiters.contains(&ws.1));

        // Release both (the removal wakes them with EIDRM) and check the tids.
        set.remove();
        q.remove();
        let (sem_tid, r) = sem_waiter.join().unwrap();
        assert_eq!((sem_tid, r), (ws.0.tid, -1));
        let (msg_tid, r) = msg_waiter.join().unwrap();
        assert_eq!((msg_tid, r), (ws.1.tid, -1));
        assert_ne!(sem_tid, msg_tid);
    }

    #[test]
    fn zombie_has_no_namespace() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let zombie = eventually("the zombie", || {
            read_processes()
                .into_iter()
                .find(|p| p.key.pid == pid && p.state == 'Z')
        });
        assert_eq!(zombie.ipc_ns, 0);
        assert_eq!(zombie.ppid, our_pid());
        assert!(!zombie.is_alive());
        assert_eq!(ipc_ns_of(pid), None);
        let snap = take_snapshot(0).unwrap();
        assert!(snap.processes.iter().any(|p| p.key.pid == pid));
        assert!(!snap.mappings.iter().any(|m| m.pid == pid));
        child.wait().unwrap();
    }

    #[test]
    fn vanished_and_self() {
        let ns = own_ipc_ns().unwrap();
        assert_eq!(ipc_ns_of(our_pid()), Some(ns));
        // No such process: silently nothing.
        assert_eq!(ipc_ns_of(u32::MAX), None);
        assert!(read_mappings(&[u32::MAX, 0]).is_empty());
        assert!(read_waiters(&[u32::MAX]).is_empty());
        // PID 1, whatever our rights on it (its namespace may be unreadable: 0).
        let all = read_processes();
        assert!(
            all.iter()
                .any(|p| p.key.pid == 1 && p.ppid == 0 && p.is_alive())
        );
        let snap = take_snapshot(0).unwrap();
        let init = snap.processes.iter().find(|p| p.key.pid == 1);
        match ipc_ns_of(1) {
            // In another namespace than ours: left out.
            Some(other) if other != ns => assert!(init.is_none()),
            // Ours, or unreadable (kept, namespace unknown).
            _ => assert!(init.is_some_and(|p| p.ipc_ns == ns || p.ipc_ns == 0)),
        }
    }

    #[test]
    fn limits_are_read() {
        let l = read_limits();
        assert_eq!(l.page_size, 4096);
        assert!(l.shmmni > 0 && l.shmmax > 0 && l.shmall > 0);
        assert!(l.semmsl > 0 && l.semmns > 0 && l.semopm > 0 && l.semmni > 0);
        assert!(l.msgmax > 0 && l.msgmnb > 0 && l.msgmni > 0);
    }

    /// `cargo test -- --ignored snapshot_timing`: `take_snapshot` with 5,000 more processes.
    #[test]
    #[ignore = "spawns 5,000 processes"]
    fn snapshot_timing_5000_processes() {
        struct Children(Vec<std::process::Child>);
        impl Drop for Children {
            fn drop(&mut self) {
                for c in &mut self.0 {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        let mut children = Children(Vec::new());
        for _ in 0..5000 {
            children.0.push(
                std::process::Command::new("sleep")
                    .arg("600")
                    .spawn()
                    .unwrap(),
            );
        }
        let _shm = Shm::new(4096);
        let _ = take_snapshot(0).unwrap();
        let mut best = Duration::MAX;
        let cpu = || {
            let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
            // SAFETY: getrusage fills the struct it is given.
            let u = unsafe {
                libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr());
                u.assume_init()
            };
            let ms = |t: libc::timeval| t.tv_sec * 1000 + t.tv_usec / 1000;
            (ms(u.ru_utime), ms(u.ru_stime))
        };
        for _ in 0..5 {
            let (user, sys) = cpu();
            let start = Instant::now();
            let snap = take_snapshot(0).unwrap();
            let took = start.elapsed();
            let (user2, sys2) = cpu();
            best = best.min(took);
            eprintln!(
                "take_snapshot: {took:?} for {} processes (cpu: user {} ms, system {} ms)",
                snap.processes.len(),
                user2 - user,
                sys2 - sys,
            );
        }
        eprintln!("best: {best:?}");
    }

    #[test]
    fn posix_holders_are_found_by_mapping_and_descriptor() {
        let name = format!("/ipcaudit-read-{}", our_pid());
        let c = std::ffi::CString::new(name.clone()).unwrap();
        // SAFETY: plain libc calls on an object of our own; the mapping is not touched.
        let (fd, addr) = unsafe {
            let fd = libc::shm_open(c.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o600);
            assert!(fd >= 0, "shm_open: {}", io::Error::last_os_error());
            assert_eq!(libc::ftruncate(fd, 4096), 0);
            let addr = libc::mmap(
                ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            (fd, addr)
        };
        let snap = take_snapshot(0).unwrap();
        let o = snap
            .posix
            .iter()
            .find(|o| o.name == name)
            .cloned()
            .expect("listed");
        let ours: Vec<&PosixHolder> = snap
            .posix_holders
            .iter()
            .filter(|h| h.process.pid == our_pid() && (h.dev, h.ino) == (o.dev, o.ino))
            .collect();
        let again = read_posix_holders(&PosixTargets::one(o.dev, o.ino, true)).holders;
        // SAFETY: undoing the above.
        unsafe {
            libc::munmap(addr, 4096);
            libc::close(fd);
            libc::shm_unlink(c.as_ptr());
        }
        let fd = u32::try_from(fd).unwrap();
        assert!(
            ours.iter().any(|h| h.hold
                == Hold::Fd {
                    fd,
                    read: true,
                    write: true
                }),
            "{ours:?}"
        );
        assert!(
            ours.iter().any(|h| matches!(h.hold, Hold::Map { start, writable: true, .. } if start == addr as u64)),
            "{ours:?}"
        );
        assert_eq!(
            again.iter().filter(|h| h.process.pid == our_pid()).count(),
            ours.len()
        );
    }
}
