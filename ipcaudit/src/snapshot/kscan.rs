//! The start-up scan's records — what the kernel's task and vma iterators wrote (`scan.rs` of
//! the kernel programs) — as the snapshot's processes and System V mappings, the same ones
//! /proc gives: the processes of one IPC namespace (and those whose namespace is gone), each
//! with its leader's identity, or a live thread's state and namespace when its leader exited;
//! the mappings of the processes in that namespace. Pure: bytes in, rows out.
//!
//! One difference with /proc: a kernel worker thread's name is its task's (`kworker/0:1`),
//! without the workqueue /proc appends (`kworker/0:1-events`).

use std::collections::{HashMap, HashSet};

use thiserror::Error;

use std::mem::{offset_of, size_of};

use ipcaudit_ebpf::{ScanTask, ScanVma};

use super::{ProcessInfo, ShmMapping, parse::parse_sysv_name};
use crate::decode::{cstr_lossy, u32_at, u64_at};
use crate::event::ProcessKey;

/// Where the scan's records come from (one run of each loaded iterator, `probe::ScanFiles`).
pub trait KernelScan {
    /// Everything the task iterator writes in one run.
    fn tasks(&mut self) -> std::io::Result<Vec<u8>>;
    /// Everything the vma iterator writes in one run.
    fn vmas(&mut self) -> std::io::Result<Vec<u8>>;
}

/// The iterators' output is not whole records.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "kernel scan: the {what} iterator wrote {len} bytes, not a whole number of {RECORD}-byte records"
)]
pub struct ScanError {
    pub what: &'static str,
    pub len: usize,
}

/// Both iterators write 64-byte records ([`ScanTask`], [`ScanVma`]).
const RECORD: usize = 64;
const _: () = assert!(size_of::<ScanTask>() == RECORD && size_of::<ScanVma>() == RECORD);

/// `VM_WRITE`.
const VM_WRITE: u64 = 0x2;

/// The records of `bytes`, or an error when they are not whole.
fn records<'a>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<impl Iterator<Item = &'a [u8; RECORD]>, ScanError> {
    let (whole, rest) = bytes.as_chunks::<RECORD>();
    if rest.is_empty() {
        Ok(whole.iter())
    } else {
        Err(ScanError {
            what,
            len: bytes.len(),
        })
    }
}

/// One task record (`ipcaudit_ebpf::ScanTask`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Task {
    tid: u32,
    tgid: u32,
    ppid: u32,
    uid: u32,
    ipc_ns: u32,
    state: char,
    start_ns: u64,
    comm: String,
}

impl From<&[u8; RECORD]> for Task {
    fn from(b: &[u8; RECORD]) -> Self {
        let u32_of = |off| u32_at(b, off);
        Self {
            tid: u32_of(offset_of!(ScanTask, tid)),
            tgid: u32_of(offset_of!(ScanTask, tgid)),
            ppid: u32_of(offset_of!(ScanTask, ppid)),
            uid: u32_of(offset_of!(ScanTask, uid)),
            ipc_ns: u32_of(offset_of!(ScanTask, ipc_ns)),
            state: state_letter(
                u32_of(offset_of!(ScanTask, state)),
                u32_of(offset_of!(ScanTask, exit_state)),
            ),
            start_ns: u64_at(b, offset_of!(ScanTask, start_ns)),
            comm: cstr_lossy(&b[offset_of!(ScanTask, comm)..]),
        }
    }
}

/// /proc's state letter (`fs/proc/array.c`, `task_state_index`) from a task's `__state` and
/// `exit_state`.
pub fn state_letter(state: u32, exit_state: u32) -> char {
    /// `TASK_REPORT`: running, sleeping, disk sleep, stopped, traced, dead, zombie, parked.
    const REPORT: u32 = 0x7f;
    /// `TASK_IDLE` (`TASK_UNINTERRUPTIBLE | TASK_NOLOAD`), reported as `I`.
    const IDLE: u32 = 0x402;
    const REPORT_IDLE: u32 = 0x80;
    /// `TASK_RTLOCK_WAIT`: a sleeping lock's wait, reported as uninterruptible.
    const RTLOCK_WAIT: u32 = 0x1000;
    let mut report = (state | exit_state) & REPORT;
    if state == IDLE {
        report = REPORT_IDLE;
    }
    if state & RTLOCK_WAIT != 0 {
        report = 2;
    }
    let index = u32::BITS - report.leading_zeros();
    "RSDTtXZPI"
        .chars()
        .nth(usize::try_from(index).unwrap_or(usize::MAX))
        .unwrap_or('?')
}

/// What the task iterator showed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tasks {
    /// The processes of the namespace asked for (and those whose namespace is gone: zombies),
    /// in the iterator's order (by pid).
    pub processes: Vec<ProcessInfo>,
    /// Every thread group it showed, in any namespace.
    pub seen: HashSet<u32>,
}

/// The processes of namespace `only_ns` that `tasks` shows. `ticks`: a start time in ns since
/// boot as /proc's ticks.
pub fn processes(
    tasks: &[u8],
    only_ns: u32,
    ticks: impl Fn(u64) -> u64,
) -> Result<Tasks, ScanError> {
    let mut leaders = Vec::new();
    // Per group whose leader exited: its first live thread's state and namespace.
    let mut live_thread: HashMap<u32, (char, u32)> = HashMap::new();
    for t in records(tasks, "task")?.map(Task::from) {
        if t.tid == t.tgid {
            leaders.push(t);
        } else if !matches!(t.state, 'Z' | 'X') {
            live_thread.entry(t.tgid).or_insert((t.state, t.ipc_ns));
        }
    }
    let seen = leaders.iter().map(|t| t.tgid).collect();
    let processes = leaders
        .into_iter()
        .filter_map(|mut t| {
            if t.state == 'Z'
                && let Some(&(state, ns)) = live_thread.get(&t.tgid)
            {
                (t.state, t.ipc_ns) = (state, ns);
            }
            (t.ipc_ns == only_ns || t.ipc_ns == 0).then(|| ProcessInfo {
                key: ProcessKey {
                    pid: t.tgid,
                    start_ticks: ticks(t.start_ns),
                },
                ppid: t.ppid,
                comm: t.comm,
                uid: t.uid,
                state: t.state,
                ipc_ns: t.ipc_ns,
            })
        })
        .collect();
    Ok(Tasks { processes, seen })
}

/// The System V mappings of the processes of `processes` in namespace `ns`, in the iterator's
/// order (by pid, then address). `page_shift`: log2 of the page size (a mapping's offset is
/// in pages).
pub fn mappings(
    vmas: &[u8],
    processes: &[ProcessInfo],
    ns: u32,
    page_shift: u32,
) -> Result<Vec<ShmMapping>, ScanError> {
    let in_ns: HashSet<u32> = processes
        .iter()
        .filter(|p| p.ipc_ns == ns)
        .map(|p| p.key.pid)
        .collect();
    // A thread that does not share its leader's descriptors is iterated apart, with the same
    // memory: its mappings are the process's, listed once.
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for b in records(vmas, "vma")? {
        let pid = u32_at(b, offset_of!(ScanVma, tgid));
        let start = u64_at(b, offset_of!(ScanVma, start));
        let name = format!("/{}", cstr_lossy(&b[offset_of!(ScanVma, name)..]));
        let ino = u64_at(b, offset_of!(ScanVma, ino));
        let (Some(key), Ok(shmid)) = (parse_sysv_name(&name), i32::try_from(ino)) else {
            continue;
        };
        if !in_ns.contains(&pid) || !seen.insert((pid, start)) {
            continue;
        }
        out.push(ShmMapping {
            pid,
            shmid,
            key,
            start,
            end: u64_at(b, offset_of!(ScanVma, end)),
            offset: u64_at(b, offset_of!(ScanVma, pgoff))
                .checked_shl(page_shift)
                .unwrap_or(u64::MAX),
            writable: u64_at(b, offset_of!(ScanVma, vm_flags)) & VM_WRITE != 0,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(thread: u32, group: u32, ns: u32, state: u32, exit_state: u32, comm: &str) -> Vec<u8> {
        let mut b = vec![0u8; RECORD];
        for (off, v) in [(0, thread), (4, group), (8, 1), (12, 1000), (16, ns)] {
            b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        }
        b[20..24].copy_from_slice(&state.to_ne_bytes());
        b[24..28].copy_from_slice(&exit_state.to_ne_bytes());
        b[32..40].copy_from_slice(&(u64::from(group) * 10_000_000).to_ne_bytes());
        b[48..48 + comm.len()].copy_from_slice(comm.as_bytes());
        b
    }

    fn vma(pid: u32, ino: u64, start: u64, name: &str, flags: u64) -> Vec<u8> {
        let mut b = vec![0u8; RECORD];
        b[0..4].copy_from_slice(&pid.to_ne_bytes());
        for (off, v) in [
            (8, ino),
            (16, start),
            (24, start + 8192),
            (32, 1),
            (40, flags),
        ] {
            b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        }
        b[48..48 + name.len()].copy_from_slice(name.as_bytes());
        b
    }

    const EXIT_ZOMBIE: u32 = 0x20;

    #[test]
    fn state_letters_are_procs() {
        let cases = [
            ((0, 0), 'R'),
            ((1, 0), 'S'),
            ((2, 0), 'D'),
            ((4, 0), 'T'),
            ((8, 0), 't'),
            ((0x80, 0x10), 'X'),
            ((0x80, EXIT_ZOMBIE), 'Z'),
            ((0x40, 0), 'P'),
            ((0x402, 0), 'I'),
            ((0x1000, 0), 'D'),
            // TASK_FREEZABLE and other bits outside the report do not change the letter.
            ((0x2001, 0), 'S'),
        ];
        for ((state, exit), letter) in cases {
            assert_eq!(state_letter(state, exit), letter, "{state:#x} {exit:#x}");
        }
    }

    #[test]
    fn processes_of_one_namespace_with_an_exited_leaders_live_thread() {
        let bytes = [
            task(1, 1, 7, 1, 0, "init"),
            task(5, 5, 9, 1, 0, "other-ns"),
            // A zombie leader (no namespace left) whose thread 11 runs on.
            task(10, 10, 0, 0x80, EXIT_ZOMBIE, "server"),
            task(11, 10, 7, 0, 0, "server"),
            // A zombie with no live thread keeps its state and unknown namespace.
            task(20, 20, 0, 0x80, EXIT_ZOMBIE, "defunct"),
        ]
        .concat();
        let tasks = processes(&bytes, 7, |ns| ns / 10_000_000).unwrap();
        assert_eq!(tasks.seen, HashSet::from([1, 5, 10, 20]));
        let ps = tasks.processes;
        let got: Vec<_> = ps
            .iter()
            .map(|p| {
                (
                    p.key.pid,
                    p.key.start_ticks,
                    p.state,
                    p.ipc_ns,
                    p.comm.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, 1, 'S', 7, "init"),
                (10, 10, 'R', 7, "server"),
                (20, 20, 'Z', 0, "defunct"),
            ]
        );
        assert!(ps.iter().all(|p| p.ppid == 1 && p.uid == 1000));
    }

    #[test]
    fn mappings_are_parsed_deduplicated_and_kept_to_the_namespace() {
        let ps = processes(
            &[task(1, 1, 7, 1, 0, "a"), task(2, 2, 9, 1, 0, "b")].concat(),
            7,
            |ns| ns,
        )
        .unwrap()
        .processes;
        let bytes = [
            vma(1, 65_538, 0x7000, "SYSV0000002a", 0xb),
            vma(1, 65_538, 0x7000, "SYSV0000002a", 0xb),
            vma(1, 3, 0x9000, "SYSVffffffff", 0x9),
            // Not a System V name, an id that is no i32, another namespace.
            vma(1, 4, 0xa000, "SYSVzz", 0xb),
            vma(1, 1 << 40, 0xb000, "SYSV00000001", 0xb),
            vma(2, 5, 0xc000, "SYSV00000001", 0xb),
        ]
        .concat();
        let ms = mappings(&bytes, &ps, 7, 12).unwrap();
        let got: Vec<_> = ms
            .iter()
            .map(|m| (m.pid, m.shmid, m.key, m.start, m.end, m.offset, m.writable))
            .collect();
        assert_eq!(
            got,
            [
                (1, 65_538, 42, 0x7000, 0x9000, 4096, true),
                (1, 3, -1, 0x9000, 0xb000, 4096, false),
            ]
        );
    }

    #[test]
    fn torn_output_is_an_error_naming_the_iterator() {
        let e = processes(&[0u8; 65], 1, |ns| ns).unwrap_err();
        assert_eq!(
            e,
            ScanError {
                what: "task",
                len: 65
            }
        );
        assert!(e.to_string().contains("65 bytes"), "{e}");
        assert!(mappings(&[0u8; 63], &[], 1, 12).is_err());
        assert_eq!(processes(&[], 1, |ns| ns).unwrap(), Tasks::default());
    }
}
