//! The only module that touches aya: checks what the kernel offers, resolves offsets, loads and
//! attaches the programs, and reads the ring buffer and the per-CPU counters.
//!
//! Dropping a [`Probe`] detaches every program; a killed process's links go with its file
//! descriptors, so nothing stays attached after ipcaudit exits, however it exits.

pub mod btf;
pub mod tracefs;

use std::{io, os::fd::AsRawFd as _, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, TracePoint},
};
use ipcaudit_ebpf::{Config, NO_OFFSET, stat};
use thiserror::Error;
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
        "cannot read kernel BTF at {path}: {reason} (a kernel built with CONFIG_DEBUG_INFO_BTF=y is required)"
    )]
    Btf { path: &'static str, reason: String },
    #[error("kernel BTF has no `{0}`: this kernel's layout is not supported")]
    BtfMember(String),
    #[error("loading the eBPF programs failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("program `{name}` ({what}) failed: {source}")]
    Program {
        name: &'static str,
        what: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("eBPF program `{0}` is missing from the object: rebuild ipcaudit")]
    MissingProgram(&'static str),
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

/// Programs on `syscalls:sys_exit_*` (program name = tracepoint name).
const SYSCALL_EXITS: &[&str] = &[
    "sys_exit_shmget",
    "sys_exit_shmat",
    "sys_exit_shmdt",
    "sys_exit_shmctl",
    "sys_exit_semget",
    "sys_exit_semop",
    "sys_exit_semtimedop",
    "sys_exit_semctl",
    "sys_exit_msgget",
    "sys_exit_msgsnd",
    "sys_exit_msgrcv",
    "sys_exit_msgctl",
    "sys_exit_munmap",
    "sys_exit_mremap",
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
    /// Trace only this thread group (in-kernel filter); 0: all.
    pub only_tgid: u32,
}

/// Loaded and attached programs plus their maps.
pub struct Probe {
    /// The programs and their links; `None` once detached.
    ebpf: Option<Ebpf>,
    ring: AsyncFd<RingBuf<MapData>>,
    stats: PerCpuArray<MapData, u64>,
    pub tracefs: PathBuf,
}

/// Counter totals across CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub lost: u64,
    pub read_failed: u64,
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
        btf::resolve_offsets(&mut config)?;
        config.exit_group_dead =
            tracefs::field_offset(&tracefs, "sched", "sched_process_exit", "group_dead")
                .unwrap_or(NO_OFFSET);
        if config.exit_group_dead == NO_OFFSET {
            log::warn!(
                "sched_process_exit has no group_dead field on this kernel: a process's exit is taken from its main thread's"
            );
        }
        config.only_tgid = options.only_tgid;
        let ring_bytes = if options.ring_bytes == 0 {
            8 << 20
        } else {
            options.ring_bytes
        };
        config.wakeup_bytes = ring_bytes / 16;

        // Pre-5.11 kernels account BPF memory to RLIMIT_MEMLOCK.
        let rlim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: valid pointer to a rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const rlim) } != 0 {
            log::debug!("setrlimit(RLIMIT_MEMLOCK): {}", io::Error::last_os_error());
        }

        let kernel_btf = aya::Btf::from_sys_fs().map_err(|e| ProbeError::Btf {
            path: btf::VMLINUX_BTF,
            reason: e.to_string(),
        })?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&kernel_btf))
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", ring_bytes)
            .load(EBPF_OBJECT)
            .map_err(|e| ProbeError::Load(Box::new(e)))?;

        for &name in SYSCALL_EXITS {
            attach_tracepoint(
                &mut ebpf,
                &Attachment {
                    program: name,
                    category: "syscalls",
                },
            )?;
        }
        for attachment in SCHED {
            attach_tracepoint(&mut ebpf, attachment)?;
        }
        for &name in BTF_TRACEPOINTS {
            let program: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingProgram(name))?
                .try_into()
                .map_err(|e| program_error(name, "type", e))?;
            program
                .load(name, &kernel_btf)
                .map_err(|e| program_error(name, "load", e))?;
            program
                .attach()
                .map_err(|e| program_error(name, "attach", e))?;
        }

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
        log::debug!("ring buffer fd {}", ring.as_raw_fd());
        // SAFETY: the RingBuf owns its map fd, which stays open and the same for as long as the
        // AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| ProbeError::Io(e.into()))?;
        Ok(Self {
            ebpf: Some(ebpf),
            ring,
            stats,
            tracefs,
        })
    }

    /// Tells the kernel side that these processes hold SysV attachments (found at bootstrap),
    /// so that their munmap and mremap calls are recorded.
    pub fn seed_attachers(
        &mut self,
        pids: impl IntoIterator<Item = u32>,
    ) -> Result<(), ProbeError> {
        let map = self
            .ebpf
            .as_mut()
            .and_then(|ebpf| ebpf.map_mut("SHM_TASKS"))
            .ok_or(ProbeError::Map("SHM_TASKS"))?;
        let mut map: BpfHashMap<_, u32, u32> =
            BpfHashMap::try_from(map).map_err(|e| ProbeError::MapOp {
                name: "SHM_TASKS",
                source: Box::new(e),
            })?;
        for pid in pids {
            map.insert(pid, 1, 0).map_err(|e| ProbeError::MapOp {
                name: "SHM_TASKS",
                source: Box::new(e),
            })?;
        }
        Ok(())
    }

    /// Detaches every program (the ring buffer stays readable, so what is in it can be drained).
    pub fn detach(&mut self) {
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
        })
    }
}

fn program_error(name: &'static str, what: &str, e: aya::programs::ProgramError) -> ProbeError {
    ProbeError::Program {
        name,
        what: what.to_owned(),
        source: Box::new(e),
    }
}

fn attach_tracepoint(ebpf: &mut Ebpf, a: &Attachment) -> Result<(), ProbeError> {
    let name = a.program;
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(|e| program_error(name, "type", e))?;
    program.load().map_err(|e| program_error(name, "load", e))?;
    program
        .attach(a.category, name)
        .map_err(|e| program_error(name, &format!("attach to {}:{name}", a.category), e))?;
    Ok(())
}
