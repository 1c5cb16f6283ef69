//! What every program shares: the maps, the loader-written configuration, the record header and
//! the ring-buffer submit policy.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_task_btf, bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_ringbuf_query, bpf_task_pt_regs,
    },
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use ipcaudit_ebpf::{Config, Header, NO_OFFSET, SyscallRecord, stat};

#[cfg(not(bpf_target_arch = "x86_64"))]
compile_error!(
    "ipcaudit reads syscall arguments from x86_64 pt_regs; other architectures are not supported yet"
);

/// Written by the loader before the programs are loaded (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config::unresolved();

/// All records, to the userspace collector.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Per-CPU counters (`ipcaudit_ebpf::stat`), read by userspace.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Thread groups that hold (or held) a SysV shared-memory attachment: only their munmap and
/// mremap calls can detach one, so only theirs are recorded. Seeded by userspace at start from
/// /proc/PID/maps, inherited at fork, dropped at exec and exit.
#[map]
pub static SHM_TASKS: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// Reads one field of the loader-written configuration. Volatile: the compiler must not
/// constant-fold the placeholder values, the loader rewrites them.
macro_rules! config {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const $crate::common::CONFIG.$field) }
    };
}
pub(crate) use config;

pub fn count(index: u32) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *counter += 1 };
    }
}

/// Reads a `T` at `base + offset` in kernel memory; `None` when the offset is unknown on this
/// kernel or the read faults (counted).
#[inline(always)]
pub fn read_field<T: Copy>(base: u64, offset: u32) -> Option<T> {
    if base == 0 || offset == NO_OFFSET {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address and returns an error instead of faulting.
    let value = unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.ok();
    if value.is_none() {
        count(stat::READ_FAILED);
    }
    value
}

/// `task->group_leader->start_boottime`: with the tgid, the identity of a process.
#[inline(always)]
pub fn process_start_ns(task: u64) -> u64 {
    read_field::<u64>(task, config!(task_group_leader))
        .and_then(|leader| read_field::<u64>(leader, config!(task_start_boottime)))
        .unwrap_or(0)
}

/// `task->nsproxy->ipc_ns->ns.inum`, 0 when the task has no namespaces left (late in exit).
#[inline(always)]
fn ipc_ns_inum(task: u64) -> u32 {
    read_field::<u64>(task, config!(task_nsproxy))
        .and_then(|nsproxy| read_field::<u64>(nsproxy, config!(nsproxy_ipc_ns)))
        .and_then(|ipc_ns| read_field::<u32>(ipc_ns, config!(ipc_ns_inum)))
        .unwrap_or(0)
}

/// Fills `header` for the current task.
#[inline(always)]
pub fn fill_header(header: &mut Header, kind: u16, flags: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: returns the current task pointer as an integer; only used with probe reads.
    let task = unsafe { bpf_get_current_task() };
    header.kind = kind;
    header.flags = flags;
    header.tgid = (pid_tgid >> 32) as u32;
    header.tid = pid_tgid as u32;
    header.uid = bpf_get_current_uid_gid() as u32;
    header.ipc_ns = ipc_ns_inum(task);
    header.pad0 = 0;
    // SAFETY: no preconditions.
    header.ts_ns = unsafe { bpf_ktime_get_ns() };
    header.start_ns = process_start_ns(task);
    header.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}

/// Submit flags: no wakeup per record; one wakeup once enough bytes wait. The reader also drains
/// on a short timer, so a lone record is never stuck.
#[inline(always)]
pub fn submit_flags() -> u64 {
    // SAFETY: EVENTS is a ring buffer map; the helper only reads its positions.
    let waiting = unsafe {
        bpf_ringbuf_query(
            (&raw const EVENTS).cast_mut().cast::<c_void>(),
            BPF_RB_AVAIL_DATA.into(),
        )
    };
    if waiting >= u64::from(config!(wakeup_bytes)) {
        BPF_RB_FORCE_WAKEUP.into()
    } else {
        BPF_RB_NO_WAKEUP.into()
    }
}

/// Only one thread group is traced (tests, `--pid` with one pid): is this another one?
#[inline(always)]
pub fn filtered_out() -> bool {
    let only = config!(only_tgid);
    only != 0 && only != (bpf_get_current_pid_tgid() >> 32) as u32
}

/// The return value of a `syscalls:sys_exit_*` tracepoint.
///
/// ```text
/// field:int __syscall_nr;    offset:8;    size:4;    signed:1;
/// field:long ret;    offset:16;    size:8;    signed:1;
/// ```
const SYS_EXIT_RET: usize = 16;

/// x86_64 `struct pt_regs`: r10 is at 7 * 8, then r9, r8, ax, cx, dx, si, di.
const PT_REGS_R10: u64 = 7 * 8;

/// The syscall's six arguments, read back from the task's saved user registers:
/// di, si, dx, r10, r8, r9 (the x86_64 syscall convention).
#[inline(always)]
fn syscall_args() -> Option<[u64; 6]> {
    // SAFETY: the helpers return the current task and its user register frame.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    // r10, r9, r8, ax, cx, dx, si, di: one read.
    let r = read_field::<[u64; 8]>(regs, PT_REGS_R10 as u32)?;
    Some([r[7], r[6], r[5], r[0], r[2], r[1]])
}

/// Reserves a `T` whose first field is a `SyscallRecord` and fills that part: header, result,
/// arguments. The caller fills the rest and submits.
#[inline(always)]
pub fn syscall_exit<T: 'static>(
    ctx: &TracePointContext,
    kind: u16,
    flags: u16,
) -> Option<(aya_ebpf::maps::ring_buf::RingBufEntry<T>, i64, [u64; 6])> {
    // SAFETY: the offset is the `ret` field of every sys_exit tracepoint.
    let ret: i64 = unsafe { ctx.read_at(SYS_EXIT_RET) }.ok()?;
    let args = syscall_args()?;
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count(stat::LOST);
        return None;
    };
    let sys = entry.as_mut_ptr().cast::<SyscallRecord>();
    // SAFETY: `T` starts with a SyscallRecord (checked by the callers' types), and the entry is
    // at least `size_of::<T>()` bytes.
    unsafe {
        fill_header(&mut (*sys).header, kind, flags);
        (*sys).ret = ret;
        (*sys).args = args;
        (*sys).aux = 0;
    }
    Some((entry, ret, args))
}
