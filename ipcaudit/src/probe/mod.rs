//! The only module that touches aya: checks what the kernel offers, resolves offsets, loads and
//! attaches the programs, and reads the ring buffer and the per-CPU counters.
//!
//! Dropping a [`Probe`] detaches every program; a killed process's links go with its file
//! descriptors, so nothing stays attached after ipcaudit exits, however it exits.

mod batch;
pub mod btf;
pub mod kernel;
pub mod tracefs;

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FExit, Iter, TracePoint},
};
use ipcaudit_ebpf::{Config, MqKey, NO_OFFSET, ObjectId, ScanOffsets, doorbell, flags_index, stat};
use thiserror::Error;

use crate::snapshot::kscan::KernelScan;
use tokio::io::unix::AsyncFd;

/// The eBPF object built by `build.rs` (aya-build) from the `ipcaudit-ebpf` crate.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ipcaudit"));

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(
        "tracing needs root (or CAP_BPF and CAP_PERFMON): run `sudo ipcaudit ...` \
         (the snapshot commands `ls`, `limits` and `leaks` work without it)"
    )]
    NotPrivileged,
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({0}): run `mount -t tracefs tracefs /sys/kernel/tracing` as root"
    )]
    Tracefs(#[source] io::Error),
    #[error(
        "cannot use the kernel's BTF at {}: {reason}. Tracing needs it (Linux 5.8 or later built with \
         CONFIG_DEBUG_INFO_BTF=y, or `--btf FILE` for the running kernel); `ls`, `limits`, \
         `leaks`, `reap` and `replay` work without it",
        path.display()
    )]
    Btf { path: PathBuf, reason: String },
    #[error(
        "the kernel's BTF has no `{0}`: this kernel's layout is not supported for tracing; \
         `ls`, `limits`, `leaks`, `reap` and `replay` work without it"
    )]
    BtfMember(String),
    #[error("not supported on this kernel ({kernel}): {what}")]
    Unsupported { kernel: String, what: String },
    #[error("loading the eBPF programs failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("program `{name}` ({what}) failed: {source}")]
    Program {
        name: String,
        what: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("eBPF program `{0}` is missing from the object: rebuild ipcaudit")]
    MissingProgram(String),
    #[error("eBPF map `{0}` is missing or of the wrong type")]
    Map(&'static str),
    #[error("eBPF map `{name}` operation failed: {source}")]
    MapOp {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("ring buffer: {0}")]
    Io(#[from] io::Error),
}

/// What to attach where.
struct Attachment {
    program: &'static str,
    category: &'static str,
}

/// The traced syscalls. Each has two programs: `fexit_NAME` on `__x64_sys_NAME` (preferred: a
/// BPF trampoline costs only the calls of that syscall) and `sys_exit_NAME` on the
/// `syscalls:sys_exit_NAME` tracepoint (the fallback: enabling any syscall tracepoint sends
/// every syscall of every process through the kernel's slow path, ≈ 25–70 ns each).
const SYSCALLS: &[&str] = &[
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "munmap",
    "mremap",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
];

const SCHED: &[Attachment] = &[
    Attachment {
        program: "sched_process_exec",
        category: "sched",
    },
    Attachment {
        program: "sched_process_exit",
        category: "sched",
    },
];

/// `tp_btf` programs (program name = BTF tracepoint name).
const BTF_TRACEPOINTS: &[&str] = &["sched_process_fork"];

/// Options for [`Probe::start`].
#[derive(Clone, Debug, Default)]
pub struct ProbeOptions {
    /// Ring buffer size in bytes (a power of two multiple of the page size); 0: the default.
    pub ring_bytes: u32,
    /// The kernel's BTF; empty: /sys/kernel/btf/vmlinux.
    pub btf: PathBuf,
    /// Trace only this thread group (in-kernel filter); 0: all.
    pub only_tgid: u32,
    /// In-kernel filters: only these thread groups (when `only_tgid` is 0), only these real
    /// uids, only these IPC families (`ipcaudit_ebpf::family` bits; 0: all). Empty: no filter.
    pub tgids: Vec<u32>,
    pub uids: Vec<u32>,
    pub type_mask: u32,
    /// Aggregate hot operations in-kernel (`watch`); otherwise one record per call (`trace`).
    pub aggregate: bool,
    /// Attach the syscall programs to the `sys_exit_*` tracepoints even when `fexit` works
    /// (to compare the two; the tracepoints are the fallback).
    pub tracepoints: bool,
    /// Record user call stacks at creation and attach (`StackRecord`).
    pub stacks: bool,
}

/// Benchmark knobs (`cargo xtask bench` measures what each design choice buys):
/// `IPCAUDIT_ATTACH=tracepoints` attaches the syscall programs to the tracepoints,
/// `IPCAUDIT_AGGREGATE=0` records every call in `watch` too.
fn knobs(options: &ProbeOptions) -> (bool, bool) {
    let tracepoints = options.tracepoints
        || std::env::var_os("IPCAUDIT_ATTACH").is_some_and(|v| v == "tracepoints");
    let aggregate =
        options.aggregate && std::env::var_os("IPCAUDIT_AGGREGATE").is_none_or(|v| v != "0");
    (tracepoints, aggregate)
}

/// Where the syscall programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// `fexit` on each `__x64_sys_*` function.
    Fexit,
    /// The `syscalls:sys_exit_*` tracepoints.
    Tracepoints,
}

/// Which aggregates [`Probe::flush_aggregates`] writes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushScope {
    /// Objects' totals (semaphore values, queue depths): before the rules are judged.
    Objects,
    /// Objects' totals and every process's usage: before answering a query or reconciling.
    All,
}

/// The maps aggregation needs from userspace.
struct AggregateMaps {
    procs: BpfHashMap<MapData, u32, ipcaudit_ebpf::ProcUsage>,
    semsets: BpfHashMap<MapData, ObjectId, ipcaudit_ebpf::SemTotals>,
    queues: BpfHashMap<MapData, ObjectId, ipcaudit_ebpf::MsgTotals>,
    mqueues: BpfHashMap<MapData, MqKey, ipcaudit_ebpf::MqTotals>,
    waiting: BpfHashMap<MapData, u32, u32>,
    flags: Array<MapData, u32>,
}

/// Loaded and attached programs plus their maps.
pub struct Probe {
    /// The programs and their links; `None` once detached.
    ebpf: Option<Ebpf>,
    ring: AsyncFd<RingBuf<MapData>>,
    stats: PerCpuArray<MapData, u64>,
    /// `Some` when aggregating (`watch`).
    aggregates: Option<AggregateMaps>,
    pub attach_mode: AttachMode,
    pub tracefs: PathBuf,
    /// Which programs run and how, on this kernel (`kernel::Kernel::describe`).
    pub programs: String,
    /// Whether the scan's iterators are loaded (`Self::scan_files`).
    scan: bool,
}

/// One run of each of the scan's iterators (`Probe::scan_files`): what they write is made as
/// it is read.
#[derive(Debug)]
pub struct ScanFiles {
    tasks: std::fs::File,
    vmas: std::fs::File,
    /// Whether the snapshot read them (it reads /proc when it needs what only /proc has).
    pub read: bool,
}

impl KernelScan for ScanFiles {
    fn tasks(&mut self) -> io::Result<Vec<u8>> {
        self.read = true;
        read_all(&mut self.tasks)
    }

    fn vmas(&mut self) -> io::Result<Vec<u8>> {
        read_all(&mut self.vmas)
    }
}

fn read_all(file: &mut std::fs::File) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::with_capacity(64 * 1024);
    file.read_to_end(&mut out)?;
    Ok(out)
}

/// The start-up scan's iterators (`scan.rs` of the kernel programs): the program's name and
/// its iterator target.
const SCAN_ITERATORS: [(&str, &str); 2] = [("scan_tasks", "task"), ("scan_vmas", "task_vma")];

/// Counter totals across CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub lost: u64,
    pub read_failed: u64,
    /// Operations recorded in full because an aggregation map was full.
    pub agg_full: u64,
    /// Call stacks not recorded (over the per-CPU budget, or no ring space).
    pub stacks_dropped: u64,
}

fn is_root_or_capable() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    // CAP_BPF (39) and CAP_PERFMON (38) in the effective set.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 39) != 0 && caps & (1 << 38) != 0)
}

impl Probe {
    /// Loads and attaches everything. Fails with one clear error naming what is missing.
    pub fn start(options: &ProbeOptions) -> Result<Self, ProbeError> {
        if !is_root_or_capable() {
            return Err(ProbeError::NotPrivileged);
        }
        let tracefs = tracefs::ensure_mounted()?;
        let mut config = Config::unresolved();
        let started = std::time::Instant::now();
        let phase = |what: &str| log::debug!("probe: {what} at {:?}", started.elapsed());
        let btf_path = if options.btf.as_os_str().is_empty() {
            PathBuf::from(btf::VMLINUX_BTF)
        } else {
            options.btf.clone()
        };
        let vmlinux = btf::read_vmlinux(&btf_path)?;
        // aya's parse of the kernel BTF is the longest step before loading: it runs on a
        // second thread while this one resolves the offsets and settles the configuration. A
        // third makes the loader, which reads and parses /sys/kernel/btf/vmlinux itself
        // (aya's `EbpfLoader::new`) before it is handed the parse above instead.
        let (kernel_btf, configured, mut loader) = std::thread::scope(|s| {
            let loader = std::thread::Builder::new()
                .name("ipcaudit-loader".into())
                .spawn_scoped(s, EbpfLoader::new);
            let parse = || {
                aya::Btf::parse(&vmlinux, aya::Endianness::default()).map_err(|e| ProbeError::Btf {
                    path: btf_path.clone(),
                    reason: e.to_string(),
                })
            };
            let parsing = std::thread::Builder::new()
                .name("ipcaudit-btf".into())
                .spawn_scoped(s, parse);
            let configured = configure(options, &btf_path, &vmlinux, &tracefs, &mut config);
            phase("offsets resolved");
            let kernel_btf = joined(parsing, parse);
            let loader = joined(loader, EbpfLoader::new);
            (kernel_btf, configured, loader)
        });
        let Configured {
            kernel,
            tracepoints,
            aggregate,
            ring_bytes,
            scan_offsets,
        } = configured?;
        let kernel_btf = kernel_btf?;

        // Pre-5.11 kernels account BPF memory to RLIMIT_MEMLOCK.
        let rlim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: valid pointer to a rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const rlim) } != 0 {
            log::debug!("setrlimit(RLIMIT_MEMLOCK): {}", io::Error::last_os_error());
        }
        phase("kernel BTF parsed");
        let mut ebpf = loader
            .btf(Some(&kernel_btf))
            .override_global("CONFIG", &config, true)
            .override_global(
                "SCAN",
                &scan_offsets.unwrap_or(ScanOffsets::unresolved()),
                true,
            )
            .map_max_entries("EVENTS", ring_bytes)
            .load(EBPF_OBJECT)
            .map_err(|e| ProbeError::Load(Box::new(e)))?;

        phase("object loaded");
        // The filter sets are filled before anything is attached: no record escapes them.
        if config.filter_sets & ipcaudit_ebpf::filter_sets::TGIDS != 0 {
            fill_set(&mut ebpf, "FILTER_TGIDS", &options.tgids, 1u8)?;
        }
        if config.filter_sets & ipcaudit_ebpf::filter_sets::UIDS != 0 {
            fill_set(&mut ebpf, "FILTER_UIDS", &options.uids, 1u8)?;
        }
        let attach_mode = attach_syscalls(&mut ebpf, &kernel_btf, tracepoints, &kernel, &tracefs)?;
        let programs = kernel.describe(attach_mode, config.exit_group_dead != NO_OFFSET);
        phase("syscall programs attached");
        kernel.check_format(&tracefs, "sched", "sched_process_exec", kernel::EXEC_FIELDS)?;
        for attachment in SCHED {
            attach_tracepoint(&mut ebpf, attachment)?;
        }
        for &name in BTF_TRACEPOINTS {
            let program: &mut BtfTracePoint = typed_program(&mut ebpf, name)?;
            program
                .load(name, &kernel_btf)
                .map_err(|e| program_error(name, "load", e))?;
            program
                .attach()
                .map_err(|e| program_error(name, "attach", e))?;
        }
        // The scan is never needed to run: /proc is read when it does not load.
        let scan = scan_offsets.is_some()
            && SCAN_ITERATORS.iter().all(|&(name, target)| {
                load_iterator(&mut ebpf, name, target, &kernel_btf)
                    .inspect_err(|e| log::debug!("no kernel scan: {e}"))
                    .is_ok()
            });
        phase("scan iterators loaded");

        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or(ProbeError::Map("EVENTS"))?)
            .map_err(|e| ProbeError::MapOp {
                name: "EVENTS",
                source: Box::new(e),
            })?;
        let stats = PerCpuArray::try_from(ebpf.take_map("STATS").ok_or(ProbeError::Map("STATS"))?)
            .map_err(|e| ProbeError::MapOp {
                name: "STATS",
                source: Box::new(e),
            })?;
        let aggregates = if aggregate {
            Some(AggregateMaps {
                procs: take_map(&mut ebpf, "PROCS")?,
                semsets: take_map(&mut ebpf, "SEMSETS")?,
                queues: take_map(&mut ebpf, "QUEUES")?,
                mqueues: take_map(&mut ebpf, "MQUEUES")?,
                waiting: take_map(&mut ebpf, "WAITING")?,
                flags: take_map(&mut ebpf, "FLAGS")?,
            })
        } else {
            None
        };
        log::debug!("ring buffer fd {}", ring.as_raw_fd());
        // SAFETY: the RingBuf owns its map fd, which stays open and the same for as long as the
        // AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| ProbeError::Io(e.into()))?;
        phase("ready");
        Ok(Self {
            ebpf: Some(ebpf),
            ring,
            stats,
            aggregates,
            attach_mode,
            tracefs,
            programs,
            scan,
        })
    }

    /// One run of each of the scan's iterators, to read on any thread (`None` when they did not
    /// load on this kernel, or could not be started: logged).
    pub fn scan_files(&mut self) -> Option<ScanFiles> {
        if !self.scan {
            return None;
        }
        let ebpf = self.ebpf.as_mut()?;
        let opened = open_iterator(ebpf, "scan_tasks")
            .and_then(|tasks| Ok((tasks, open_iterator(ebpf, "scan_vmas")?)));
        match opened {
            Ok((tasks, vmas)) => Some(ScanFiles {
                tasks,
                vmas,
                read: false,
            }),
            Err(e) => {
                log::debug!("no kernel scan: {e}");
                None
            }
        }
    }

    /// Tells the kernel side that these processes hold SysV attachments (found at bootstrap),
    /// so that their munmap and mremap calls are recorded.
    pub fn seed_attachers(
        &mut self,
        pids: impl IntoIterator<Item = u32>,
    ) -> Result<(), ProbeError> {
        let ebpf = self.ebpf.as_mut().ok_or(ProbeError::Map("SHM_TASKS"))?;
        // A process maps a segment once or many times: one entry each.
        let mut pids: Vec<u32> = pids.into_iter().collect();
        pids.sort_unstable();
        pids.dedup();
        fill_set(ebpf, "SHM_TASKS", &pids, 1u32)
    }

    /// Detaches every program (the ring buffer stays readable, so what is in it can be drained).
    pub fn detach(&mut self) {
        if let Some(ebpf) = &self.ebpf
            && log::log_enabled!(log::Level::Debug)
        {
            // With `sysctl kernel.bpf_stats_enabled=1` the kernel times every program run.
            for (name, program) in ebpf.programs() {
                if let Ok(info) = program.info()
                    && info.run_count() > 0
                {
                    let runs = info.run_count();
                    let ns = info.run_time().as_nanos() / u128::from(runs);
                    log::debug!("probe: {name}: {runs} runs, {ns} ns each");
                }
            }
        }
        self.ebpf = None;
    }

    /// Waits until the kernel signals records (a batch wakeup) or `timeout` passes, whichever
    /// comes first. Records submitted without a wakeup are picked up on the timeout.
    pub async fn wait(&mut self, timeout: std::time::Duration) -> Result<(), ProbeError> {
        match tokio::time::timeout(timeout, self.ring.readable_mut()).await {
            Ok(guard) => guard?.clear_ready(),
            Err(_elapsed) => {}
        }
        Ok(())
    }

    /// Hands every waiting record to `f`, up to `max`; returns how many were read.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else { break };
            f(&item);
            n += 1;
        }
        n
    }

    /// The kernel counters, summed over CPUs.
    pub fn kernel_stats(&self) -> Result<KernelStats, ProbeError> {
        let sum = |index: u32| -> Result<u64, ProbeError> {
            let values = self.stats.get(&index, 0).map_err(|e| ProbeError::MapOp {
                name: "STATS",
                source: Box::new(e),
            })?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        Ok(KernelStats {
            lost: sum(stat::LOST)?,
            read_failed: sum(stat::READ_FAILED)?,
            agg_full: sum(stat::AGG_FULL)?,
            stacks_dropped: sum(stat::STACKS_DROPPED)?,
        })
    }

    /// Whether hot operations are aggregated in-kernel.
    pub fn aggregating(&self) -> bool {
        self.aggregates.is_some()
    }

    /// Asks the programs to write aggregated totals out (in order with every other record:
    /// drain after this). Only totals that changed since they were last written are. Returns
    /// how many entries were asked for.
    pub fn flush_aggregates(&self, scope: FlushScope) -> usize {
        let Some(maps) = &self.aggregates else {
            return 0;
        };
        let mut asked = 0;
        for key in maps.semsets.keys().filter_map(Result::ok) {
            ring_doorbell(doorbell::SEM_TOTALS, object_arg(key));
            asked += 1;
        }
        for key in maps.queues.keys().filter_map(Result::ok) {
            ring_doorbell(doorbell::MSG_TOTALS, object_arg(key));
            asked += 1;
        }
        for key in maps.mqueues.keys().filter_map(Result::ok) {
            // mqueue inode numbers are 32-bit (`get_next_ino`): ns low, inode high.
            ring_doorbell(
                doorbell::MQ_TOTALS,
                u64::from(key.ns) | (key.ino & 0xffff_ffff) << 32,
            );
            asked += 1;
        }
        if scope == FlushScope::All {
            for tgid in maps.procs.keys().filter_map(Result::ok) {
                ring_doorbell(doorbell::USAGE, u64::from(tgid));
                asked += 1;
            }
        }
        asked
    }

    /// Tells the programs which processes a snapshot saw blocked in semop, msgrcv or msgsnd:
    /// their next operation is recorded in full (so that the model sees them stop waiting).
    pub fn set_waiting(&mut self, tgids: impl IntoIterator<Item = u32>) -> Result<(), ProbeError> {
        let Some(maps) = &mut self.aggregates else {
            return Ok(());
        };
        let map_err = |e| ProbeError::MapOp {
            name: "WAITING",
            source: Box::new(e),
        };
        let old: Vec<u32> = maps.waiting.keys().filter_map(Result::ok).collect();
        for tgid in old {
            let _ = maps.waiting.remove(&tgid);
        }
        let mut n = 0u32;
        for tgid in tgids {
            if maps.waiting.insert(tgid, 1, 0).is_ok() {
                n += 1;
            }
        }
        maps.flags.set(flags_index::WAITING, n, 0).map_err(map_err)
    }
}

/// A `SEMSETS`/`QUEUES` key as the doorbell's argument: ns in the low half, id in the high.
fn object_arg(key: ObjectId) -> u64 {
    u64::from(key.ns) | (u64::from(key.id.cast_unsigned()) << 32)
}

/// `semctl(-1, doorbell::SEMNUM, what, arg)`: fails with EINVAL in the kernel's first check,
/// after which the semctl program, seeing the collector's tgid and this semnum, writes out the
/// entry `arg` of map `what` (`ipcaudit_ebpf::doorbell`).
fn ring_doorbell(what: i32, arg: u64) {
    // SAFETY: semctl with an invalid id touches no memory (the kernel returns EINVAL first).
    unsafe { libc::syscall(libc::SYS_semctl, -1, doorbell::SEMNUM, what, arg) };
}

/// Fills an in-kernel filter set (a `HashMap<u32, u8>`); more values than it holds is an error.
fn fill_set<V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    keys: &[u32],
    value: V,
) -> Result<(), ProbeError> {
    let map = ebpf.map_mut(name).ok_or(ProbeError::Map(name))?;
    let map_err = |e| ProbeError::MapOp {
        name,
        source: Box::new(e),
    };
    // One call where the kernel has batches (5.6+), else one call per key.
    let values = vec![value; keys.len()];
    let batched = match &*map {
        aya::maps::Map::HashMap(data) => batch::update(data.fd().as_fd(), keys, &values),
        _ => Err(io::ErrorKind::InvalidInput.into()),
    };
    if let Err(e) = batched {
        log::debug!("{name}: batch update: {e}: one update per key");
        let mut set: BpfHashMap<_, u32, V> = BpfHashMap::try_from(map).map_err(map_err)?;
        for &key in keys {
            set.insert(key, value, 0).map_err(map_err)?;
        }
    }
    Ok(())
}

fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, ProbeError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    M::try_from(ebpf.take_map(name).ok_or(ProbeError::Map(name))?).map_err(|e| ProbeError::MapOp {
        name,
        source: Box::new(e),
    })
}

/// The result of a scoped thread, or of `inline` run here when no thread could be made; a
/// panic in the thread (a bug) goes on here.
fn joined<T>(
    spawned: io::Result<std::thread::ScopedJoinHandle<'_, T>>,
    inline: impl FnOnce() -> T,
) -> T {
    match spawned {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        Err(_) => inline(),
    }
}

/// What [`configure`] settled besides the programs' configuration.
struct Configured {
    kernel: kernel::Kernel,
    /// Syscalls on their tracepoints even where fexit works.
    tracepoints: bool,
    /// Hot operations aggregated in-kernel.
    aggregate: bool,
    ring_bytes: u32,
    /// The start-up scan's offsets, when the kernel has all its fields.
    scan_offsets: Option<ScanOffsets>,
}

/// Detects the kernel and fills the programs' configuration: offsets from the kernel's BTF,
/// tracepoint fields, filters, and the knobs of `options`.
fn configure(
    options: &ProbeOptions,
    btf_path: &Path,
    vmlinux: &[u8],
    tracefs: &Path,
    config: &mut Config,
) -> Result<Configured, ProbeError> {
    let kernel = kernel::Kernel::detect(btf_path, vmlinux)?;
    config.compat = kernel.compat();
    let scan_offsets = btf::resolve_offsets(btf_path, vmlinux, config)?;
    config.exit_group_dead =
        tracefs::field_offset(tracefs, "sched", "sched_process_exit", "group_dead")
            .unwrap_or(NO_OFFSET);
    if config.exit_group_dead == NO_OFFSET {
        log::warn!(
            "sched_process_exit has no group_dead field on this kernel: a process's exit is taken from its main thread's"
        );
    }
    config.only_tgid = options.only_tgid;
    config.type_mask = options.type_mask;
    if options.only_tgid == 0 && !options.tgids.is_empty() {
        config.filter_sets |= ipcaudit_ebpf::filter_sets::TGIDS;
    }
    if !options.uids.is_empty() {
        config.filter_sets |= ipcaudit_ebpf::filter_sets::UIDS;
    }
    let (tracepoints, aggregate) = knobs(options);
    config.aggregate = u32::from(aggregate);
    config.collector_tgid = std::process::id();
    config.stacks = u32::from(options.stacks);
    if aggregate {
        config.tick_ns = kernel::tick_ns(&kernel.release).unwrap_or_else(|| {
            log::debug!(
                "probe: CONFIG_HZ unknown (no /boot/config-{0}, no /proc/timer_list): \
                 aggregated messages' times from the clock source",
                kernel.release
            );
            0
        });
    }
    let ring_bytes = if options.ring_bytes == 0 {
        8 << 20
    } else {
        options.ring_bytes
    };
    config.wakeup_bytes = ring_bytes / 16;

    Ok(Configured {
        kernel,
        tracepoints,
        aggregate,
        ring_bytes,
        scan_offsets,
    })
}

/// Attaches the syscall programs: `fexit` when the kernel can (and `tracepoints` is not asked
/// for), else the `sys_exit_*` tracepoints. A partial `fexit` set is unloaded before falling
/// back, so that no call is ever recorded twice.
fn attach_syscalls(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    tracepoints: bool,
    kernel: &kernel::Kernel,
    tracefs: &std::path::Path,
) -> Result<AttachMode, ProbeError> {
    if !tracepoints {
        let mut done: Vec<String> = Vec::new();
        let mut failed = None;
        for name in SYSCALLS {
            let program = format!("fexit_{name}");
            let t = std::time::Instant::now();
            let r = attach_fexit(ebpf, btf, &program, &format!("__x64_sys_{name}"));
            log::debug!("probe: {program}: {:?}", t.elapsed());
            match r {
                Ok(()) => done.push(program),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let Some(e) = failed else {
            return Ok(AttachMode::Fexit);
        };
        log::warn!(
            "fexit is not available ({e}): tracing syscalls at their sys_exit tracepoints \
             instead, which puts every syscall on the host on the kernel's slow path (≈ +25–70 ns)"
        );
        for program in done {
            if let Some(p) = ebpf.program_mut(&program) {
                let p: Result<&mut FExit, _> = p.try_into();
                if let Ok(p) = p {
                    let _ = p.unload();
                }
            }
        }
    }
    let enters = kernel.compat() & ipcaudit_ebpf::compat::ARGS_AT_ENTER != 0;
    let mut names: Vec<String> = SYSCALLS
        .iter()
        .map(|name| format!("sys_exit_{name}"))
        .chain(SCHED.iter().map(|a| a.program.to_owned()))
        .collect();
    if enters {
        names.extend(
            kernel::ENTER_ARGS
                .iter()
                .map(|(name, _)| format!("sys_enter_{name}")),
        );
    }
    preload_tracepoints(ebpf, &names);
    if enters {
        attach_sys_enters(ebpf, kernel, tracefs)?;
    }
    for name in SYSCALLS {
        let program = format!("sys_exit_{name}");
        kernel.check_format(tracefs, "syscalls", &program, kernel::SYS_EXIT_FIELDS)?;
        let t = std::time::Instant::now();
        attach_tracepoint_named(ebpf, &program, "syscalls")?;
        log::debug!(
            "probe: {program}: {:?}{}",
            t.elapsed(),
            verified(ebpf, &program)
        );
    }
    Ok(AttachMode::Tracepoints)
}

/// Without `bpf_task_pt_regs`: the `sys_enter_*` programs that save each call's arguments for
/// its `sys_exit_*` program, attached first (so that every exit seen after the exits are
/// attached has its entry saved, calls in flight aside). Each tracepoint's format on this
/// kernel must be what the programs read.
fn attach_sys_enters(
    ebpf: &mut Ebpf,
    kernel: &kernel::Kernel,
    tracefs: &std::path::Path,
) -> Result<(), ProbeError> {
    for &(name, nargs) in kernel::ENTER_ARGS {
        let tracepoint = format!("sys_enter_{name}");
        let unsupported = |why: String| ProbeError::Unsupported {
            kernel: kernel.release.clone(),
            what: format!(
                "tracepoint syscalls:{tracepoint} (needed without bpf_task_pt_regs): {why}"
            ),
        };
        let text = tracefs::format(tracefs, "syscalls", &tracepoint)
            .map_err(|e| unsupported(e.to_string()))?;
        tracefs::check_enter_format(&text, nargs).map_err(unsupported)?;
        attach_tracepoint_named(ebpf, &tracepoint, "syscalls")?;
    }
    Ok(())
}

/// How many instructions the verifier went through for a program (debug output).
fn verified(ebpf: &Ebpf, program: &str) -> String {
    ebpf.program(program)
        .and_then(|p| p.info().ok())
        .map_or_else(String::new, |i| {
            format!(
                ", {} instructions, {} verified",
                i.size_translated().unwrap_or(0) / 8,
                i.verified_instruction_count().unwrap_or(0)
            )
        })
}

fn attach_fexit(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    program: &str,
    function: &str,
) -> Result<(), String> {
    let p: &mut FExit = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} is missing"))?
        .try_into()
        .map_err(|e| format!("{program}: {e}"))?;
    p.load(function, btf)
        .map_err(|e| format!("loading {program} on {function}: {e}"))?;
    p.attach()
        .map_err(|e| format!("attaching {program} to {function}: {e}"))?;
    Ok(())
}

/// Loads the iterator program `name` for the kernel's iterator `target` (`bpf_iter_{target}`).
fn load_iterator(
    ebpf: &mut Ebpf,
    name: &str,
    target: &str,
    btf: &aya::Btf,
) -> Result<(), ProbeError> {
    let program: &mut Iter = typed_program(ebpf, name)?;
    program
        .load(target, btf)
        .map_err(|e| program_error(name, "load", e))
}

/// A run of the loaded iterator `name`: a link and its iterator descriptor.
fn open_iterator(ebpf: &mut Ebpf, name: &str) -> Result<std::fs::File, ProbeError> {
    let program: &mut Iter = typed_program(ebpf, name)?;
    let id = program
        .attach()
        .map_err(|e| program_error(name, "attach", e))?;
    let link = program
        .take_link(id)
        .map_err(|e| program_error(name, "link", e))?;
    link.into_file()
        .map_err(|e| ProbeError::Io(io::Error::other(format!("{name}: {e}"))))
}

/// Program `name` of the object, as the type `P` it must be.
fn typed_program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, ProbeError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| ProbeError::MissingProgram(name.to_owned()))?
        .try_into()
        .map_err(|e| program_error(name, "type", e))
}

fn program_error(name: &str, what: &str, e: aya::programs::ProgramError) -> ProbeError {
    ProbeError::Program {
        name: name.to_owned(),
        what: what.to_owned(),
        source: Box::new(e),
    }
}

fn attach_tracepoint(ebpf: &mut Ebpf, a: &Attachment) -> Result<(), ProbeError> {
    attach_tracepoint_named(ebpf, a.program, a.category)
}

/// Loads (verifies) these tracepoint programs on every CPU at once, nothing attached yet: the
/// kernel's verifier is most of the time to start (300 ms on one CPU for the syscall programs),
/// and each program is verified on its own. A program that fails to load here is loaded again
/// when it is attached, which reports the error.
fn preload_tracepoints(ebpf: &mut Ebpf, names: &[String]) {
    let started = std::time::Instant::now();
    let programs: Vec<(&str, &mut TracePoint)> = ebpf
        .programs_mut()
        .filter(|(name, _)| names.iter().any(|n| n == name))
        .filter_map(|(name, p)| <&mut TracePoint>::try_from(p).ok().map(|p| (name, p)))
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(programs.len());
    if threads <= 1 {
        return;
    }
    let count = programs.len();
    let queue = std::sync::Mutex::new(programs);
    let work = || {
        loop {
            let next = queue.lock().ok().and_then(|mut q| q.pop());
            let Some((name, program)) = next else { break };
            if let Err(e) = program.load() {
                log::debug!("probe: preloading {name}: {e}");
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            if std::thread::Builder::new()
                .name("ipcaudit-load".into())
                .spawn_scoped(s, work)
                .is_err()
            {
                break;
            }
        }
        work();
    });
    log::debug!(
        "probe: {count} tracepoint programs verified on {threads} threads in {:?}",
        started.elapsed()
    );
}

fn attach_tracepoint_named(ebpf: &mut Ebpf, name: &str, category: &str) -> Result<(), ProbeError> {
    let program: &mut TracePoint = typed_program(ebpf, name)?;
    if program.fd().is_err() {
        program.load().map_err(|e| program_error(name, "load", e))?;
    }
    program
        .attach(category, name)
        .map_err(|e| program_error(name, &format!("attach to {category}:{name}"), e))?;
    Ok(())
}
