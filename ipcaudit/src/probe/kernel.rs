//! What the running kernel offers the programs, read from its own BTF at load time (the
//! enumerators of `enum bpf_func_id` and `enum bpf_map_type` are the helpers and map types it
//! has), and what the programs do where it lacks something (`ipcaudit_ebpf::compat`):
//!
//! | needs | since | without it |
//! | --- | --- | --- |
//! | BPF ring buffer (`BPF_MAP_TYPE_RINGBUF`, `bpf_ringbuf_query`) | 5.8 | not supported: ipcaudit refuses to start, saying so |
//! | `bpf_get_current_task_btf` | 5.11 | task fields read with `bpf_probe_read_kernel` |
//! | `bpf_task_pt_regs` | 5.15 | tracepoint path: arguments saved at `sys_enter_*`, taken at `sys_exit_*` |
//!
//! (`sched_process_exit`'s `group_dead` field, 6.x, is read from tracefs by the loader; without
//! it a process's exit is its main thread's.)

use ipcaudit_ebpf::compat;

use super::{AttachMode, ProbeError, btf::Btf};

/// Each traced syscall's argument count (the kernel's `SYSCALL_DEFINEn`): what its
/// `sys_enter_*` program saves, checked against the tracepoint's format on this kernel.
pub const ENTER_ARGS: &[(&str, usize)] = &[
    ("shmget", 3),
    ("shmat", 3),
    ("shmdt", 1),
    ("shmctl", 3),
    ("semget", 3),
    ("semop", 3),
    ("semtimedop", 4),
    ("semctl", 4),
    ("msgget", 2),
    ("msgsnd", 4),
    ("msgrcv", 5),
    ("msgctl", 3),
    ("munmap", 2),
    ("mremap", 5),
    ("mq_open", 4),
    ("mq_unlink", 1),
    ("mq_timedsend", 5),
    ("mq_timedreceive", 5),
    ("mq_notify", 2),
];

/// `sched:sched_process_exec` fields the exec program reads at fixed offsets.
pub const EXEC_FIELDS: &[(&str, u32, u32)] = &[("filename", 8, 4), ("old_pid", 16, 4)];
/// `syscalls:sys_exit_*` fields the exit programs read at fixed offsets.
pub const SYS_EXIT_FIELDS: &[(&str, u32, u32)] = &[("__syscall_nr", 8, 4), ("ret", 16, 8)];

/// The running kernel, as far as the programs care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// `uname -r`.
    pub release: String,
    /// `bpf_get_current_task_btf` (5.11).
    pub current_task_btf: bool,
    /// `bpf_task_pt_regs` (5.15).
    pub task_pt_regs: bool,
}

/// Nanoseconds per jiffy on the running kernel (`1e9 / CONFIG_HZ`), for
/// `Config::tick_ns`: from `/boot/config-RELEASE`, else inferred from `/proc/timer_list`;
/// `None` when neither tells (the programs then read the clock source).
pub fn tick_ns(release: &str) -> Option<u32> {
    let hz = std::fs::read_to_string(format!("/boot/config-{release}"))
        .ok()
        .and_then(|t| hz_from_config(&t))
        .or_else(|| {
            std::fs::read_to_string("/proc/timer_list")
                .ok()
                .and_then(|t| hz_from_timer_list(&t))
        })?;
    Some(1_000_000_000 / hz)
}

/// The values `CONFIG_HZ` can take.
const HZ_CHOICES: [u32; 5] = [100, 250, 300, 500, 1000];

/// `CONFIG_HZ=N` in a kernel configuration.
fn hz_from_config(config: &str) -> Option<u32> {
    let hz: u32 = config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))?
        .trim()
        .parse()
        .ok()?;
    HZ_CHOICES.contains(&hz).then_some(hz)
}

/// `CONFIG_HZ` from `/proc/timer_list`'s `now at T nsecs` (CLOCK_MONOTONIC) and `jiffies: J`:
/// jiffies start at `2^32 - 300 * HZ` and count `HZ` a second, so the `HZ` whose prediction
/// lands nearest `J` is the kernel's, if it lands within 1% of the uptime (the other choices
/// miss by far more).
fn hz_from_timer_list(text: &str) -> Option<u32> {
    let now_ns: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("now at "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let jiffies: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("jiffies: "))?
        .trim()
        .parse()
        .ok()?;
    let (hz, miss) = HZ_CHOICES
        .iter()
        .map(|&hz| {
            let initial = (1u64 << 32) - 300 * u64::from(hz);
            let predicted =
                u128::from(initial) + u128::from(now_ns) * u128::from(hz) / 1_000_000_000;
            (hz, predicted.abs_diff(u128::from(jiffies)))
        })
        .min_by_key(|&(_, miss)| miss)?;
    let uptime_jiffies = u128::from(now_ns) * u128::from(hz) / 1_000_000_000;
    (miss * 100 <= uptime_jiffies.max(100)).then_some(hz)
}

/// The running kernel's release (`uname -r`).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned())
}

impl Kernel {
    /// Reads what the kernel has from its BTF (`btf::read_vmlinux` of `path`). A kernel without
    /// the BPF ring buffer is refused here, with the reason.
    pub fn detect(path: &std::path::Path, vmlinux: &[u8]) -> Result<Self, ProbeError> {
        let btf = Btf::parse(vmlinux).ok_or_else(|| ProbeError::Btf {
            path: path.to_owned(),
            reason: "not well-formed BTF".to_owned(),
        })?;
        Self::from_btf(&btf, release())
    }

    fn from_btf(btf: &Btf<'_>, release: String) -> Result<Self, ProbeError> {
        let helper = |name: &str| btf.enum_has("bpf_func_id", name);
        if !btf.enum_has("bpf_map_type", "BPF_MAP_TYPE_RINGBUF")
            || !helper("BPF_FUNC_ringbuf_query")
        {
            return Err(ProbeError::Unsupported {
                kernel: release,
                what: "the BPF ring buffer (BPF_MAP_TYPE_RINGBUF, Linux 5.8): ipcaudit needs \
                       Linux 5.8 or later"
                    .to_owned(),
            });
        }
        Ok(Self {
            release,
            current_task_btf: helper("BPF_FUNC_get_current_task_btf"),
            task_pt_regs: helper("BPF_FUNC_task_pt_regs"),
        })
    }

    /// Checks that tracepoint `category:name` exists on this kernel and has `fields` where the
    /// programs read them; a clear "not supported on this kernel" error if not.
    pub fn check_format(
        &self,
        tracefs: &std::path::Path,
        category: &str,
        name: &str,
        fields: &[(&str, u32, u32)],
    ) -> Result<(), ProbeError> {
        let unsupported = |why: String| ProbeError::Unsupported {
            kernel: self.release.clone(),
            what: format!("tracepoint {category}:{name}: {why}"),
        };
        let text = super::tracefs::format(tracefs, category, name)
            .map_err(|e| unsupported(e.to_string()))?;
        super::tracefs::check_fields(&text, fields).map_err(unsupported)
    }

    /// The `Config::compat` bits for this kernel.
    pub fn compat(&self) -> u32 {
        let mut bits = 0;
        if !self.current_task_btf {
            bits |= compat::TASK_PROBE_READ;
        }
        if !self.task_pt_regs {
            bits |= compat::ARGS_AT_ENTER;
        }
        bits
    }

    /// One line saying which programs run and how, for the start-up message and the kernel
    /// matrix table.
    pub fn describe(&self, mode: AttachMode, group_dead: bool) -> String {
        let syscalls = match mode {
            AttachMode::Fexit => "syscalls on fexit",
            AttachMode::Tracepoints if self.task_pt_regs => {
                "syscalls on sys_exit tracepoints (arguments from pt_regs)"
            }
            AttachMode::Tracepoints => {
                "syscalls on sys_enter+sys_exit tracepoints (no bpf_task_pt_regs)"
            }
        };
        let task = if self.current_task_btf {
            "task fields by BTF loads"
        } else {
            "task fields by probe reads (no bpf_get_current_task_btf)"
        };
        let exit = if group_dead {
            "exit by group_dead"
        } else {
            "exit by the main thread's (no group_dead)"
        };
        format!(
            "{syscalls}; {task}; fork on tp_btf; {exit}; kernel {}",
            self.release
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_traced_syscall_has_an_argument_count() {
        for name in super::super::SYSCALLS {
            assert!(
                ENTER_ARGS.iter().any(|(n, _)| n == name),
                "{name} has no argument count"
            );
        }
        assert_eq!(ENTER_ARGS.len(), super::super::SYSCALLS.len());
        assert!(ENTER_ARGS.iter().all(|&(_, n)| (1..=6).contains(&n)));
    }

    #[test]
    fn hz_from_a_kernel_config() {
        assert_eq!(
            hz_from_config("# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"),
            Some(250)
        );
        assert_eq!(hz_from_config("CONFIG_HZ=1000\n"), Some(1000));
        assert_eq!(
            hz_from_config("CONFIG_HZ=7\n"),
            None,
            "not a choice Kconfig offers"
        );
        assert_eq!(hz_from_config("CONFIG_HZ_PERIODIC=y\n"), None);
    }

    #[test]
    fn hz_inferred_from_timer_list() {
        // This machine (HZ=250), 10 h after boot: jiffies run ~2 s behind the prediction.
        let text = "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\n\
                    now at 36758315530760 nsecs\n\ncpu: 0\n  .last_jiffies   : 4304082343\n\
                    jiffies: 4304082343\n";
        assert_eq!(hz_from_timer_list(text), Some(250));
        // HZ=1000, one minute after boot.
        let j = (1u64 << 32) - 300_000 + 60_000;
        let text = format!("now at 60000000000 nsecs\njiffies: {j}\n");
        assert_eq!(hz_from_timer_list(&text), Some(1000));
        // HZ=100, a day up.
        let j = (1u64 << 32) - 30_000 + 8_640_000;
        let text = format!("now at 86400000000000 nsecs\njiffies: {j}\n");
        assert_eq!(hz_from_timer_list(&text), Some(100));
        // Jiffies that fit no HZ, and missing lines.
        let text = "now at 86400000000000 nsecs\njiffies: 12345\n";
        assert_eq!(hz_from_timer_list(text), None);
        assert_eq!(hz_from_timer_list("jiffies: 5\n"), None);
        assert_eq!(hz_from_timer_list("now at x nsecs\njiffies: 5\n"), None);
    }

    #[test]
    fn compat_bits_and_description_follow_the_helpers() {
        let new = Kernel {
            release: "6.18.0".into(),
            current_task_btf: true,
            task_pt_regs: true,
        };
        assert_eq!(new.compat(), 0);
        assert_eq!(
            new.describe(AttachMode::Fexit, true),
            "syscalls on fexit; task fields by BTF loads; fork on tp_btf; exit by group_dead; kernel 6.18.0"
        );
        let old = Kernel {
            release: "5.10.0-32-cloud-amd64".into(),
            current_task_btf: false,
            task_pt_regs: false,
        };
        assert_eq!(
            old.compat(),
            compat::TASK_PROBE_READ | compat::ARGS_AT_ENTER
        );
        let d = old.describe(AttachMode::Tracepoints, false);
        assert!(
            d.starts_with("syscalls on sys_enter+sys_exit tracepoints"),
            "{d}"
        );
        assert!(
            d.contains("probe reads") && d.contains("no group_dead"),
            "{d}"
        );
    }

    /// Kernels told apart by their BTF alone: 5.8–5.10 (ring buffer, neither helper), 5.11–5.14
    /// (`bpf_get_current_task_btf` only), 5.15+, and one without the ring buffer (refused).
    #[test]
    fn helpers_come_from_the_btf() {
        use crate::probe::btf::enums_blob;
        let detect = |funcs: &[&str], maps: &[&str]| {
            let blob = enums_blob(&[("bpf_map_type", maps), ("bpf_func_id", funcs)]);
            Kernel::from_btf(&Btf::parse(&blob).unwrap(), "x".to_owned())
        };
        let ringbuf = ["BPF_MAP_TYPE_HASH", "BPF_MAP_TYPE_RINGBUF"];
        let k = detect(&["BPF_FUNC_ringbuf_query"], &ringbuf).unwrap();
        assert_eq!(k.compat(), compat::TASK_PROBE_READ | compat::ARGS_AT_ENTER);
        let k = detect(
            &["BPF_FUNC_ringbuf_query", "BPF_FUNC_get_current_task_btf"],
            &ringbuf,
        )
        .unwrap();
        assert_eq!(k.compat(), compat::ARGS_AT_ENTER);
        let k = detect(
            &[
                "BPF_FUNC_ringbuf_query",
                "BPF_FUNC_get_current_task_btf",
                "BPF_FUNC_task_pt_regs",
            ],
            &ringbuf,
        )
        .unwrap();
        assert_eq!(k.compat(), 0);
        let err = detect(&["BPF_FUNC_map_lookup_elem"], &["BPF_MAP_TYPE_HASH"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not supported on this kernel (x): the BPF ring buffer (BPF_MAP_TYPE_RINGBUF, \
             Linux 5.8): ipcaudit needs Linux 5.8 or later"
        );
    }

    /// This machine's kernel (≥ 5.8 is what the tests run on): detected from its real BTF.
    #[test]
    fn detects_this_kernel() {
        let path = std::path::Path::new(super::super::btf::VMLINUX_BTF);
        let vmlinux = super::super::btf::read_vmlinux(path).unwrap();
        let k = Kernel::detect(path, &vmlinux).unwrap();
        assert_eq!(k.release, release());
        let (major, minor) = {
            let mut parts = k
                .release
                .split(['.', '-'])
                .filter_map(|p| p.parse::<u32>().ok());
            (parts.next().unwrap(), parts.next().unwrap())
        };
        assert_eq!(k.task_pt_regs, (major, minor) >= (5, 15), "{k:?}");
        assert_eq!(k.current_task_btf, (major, minor) >= (5, 11), "{k:?}");
    }
}
