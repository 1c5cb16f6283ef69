//! What every program shares: the maps, the loader-written configuration, the record header,
//! the syscall result and arguments (from either attach point) and the ring-buffer submit
//! policy.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_NO_PREALLOC, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task_btf,
        bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_ringbuf_query, bpf_task_pt_regs,
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf, ring_buf::RingBufEntry},
    programs::{FExitContext, TracePointContext},
};
use ipcaudit_ebpf::{
    Config, Header, MsgTotals, ObjectId, ProcUsage, SemTotals, SyscallRecord, filter_sets,
    flags_index, stat,
};

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
pub static SHM_TASKS: HashMap<u32, u32> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Aggregation (`watch`): per process (tgid), its usage slots. Entries are made at a process's
/// first aggregated use and dropped at its exit (after its totals are written out).
#[map]
pub static PROCS: HashMap<u32, ProcUsage> = HashMap::with_max_entries(32768, BPF_F_NO_PREALLOC);

/// Aggregation: per semaphore set, the aggregated operations' totals.
#[map]
pub static SEMSETS: HashMap<ObjectId, SemTotals> =
    HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Aggregation: per queue, the aggregated messages' totals.
#[map]
pub static QUEUES: HashMap<ObjectId, MsgTotals> =
    HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// Processes the last snapshot saw blocked in semop/msgrcv/msgsnd (written by userspace):
/// their next operation is recorded in full, so that the model sees them stop waiting.
#[map]
pub static WAITING: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// In-kernel filter (`--pid` with several pids): the thread groups traced, when
/// `Config::filter_sets` has `TGIDS`. Filled by the loader before attaching.
#[map]
pub static FILTER_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// In-kernel filter (`--uid`): the real uids traced, when `Config::filter_sets` has `UIDS`.
#[map]
pub static FILTER_UIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Small values userspace writes (`ipcaudit_ebpf::flags_index`).
#[map]
pub static FLAGS: Array<u32> = Array::with_max_entries(flags_index::COUNT, 0);

/// A zeroed `ProcUsage`, never written: what a new `PROCS` entry is made from (the struct is
/// larger than the BPF stack).
#[map]
pub static ZERO_USAGE: Array<ProcUsage> = Array::with_max_entries(1, 0);

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

/// The current thread group id.
#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// `bpf_ktime_get_ns()`.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Loads a `T` at `base + off`, `base` a BTF-typed kernel pointer (the current task from
/// `bpf_get_current_task_btf`, a `tp_btf` argument, or a pointer loaded from one): a plain
/// load the verifier checks against the struct's BTF at load time (`off` is a load-time
/// constant of `CONFIG`), which reads 0 if the memory faults. No helper call: on the hot
/// paths a `bpf_probe_read_kernel` costs tens of ns each.
///
/// On kernels without `bpf_get_current_task_btf` (`compat::TASK_PROBE_READ`) the pointers are
/// plain addresses and the load is a `bpf_probe_read_kernel` (0 if it faults).
#[inline(always)]
fn btf_load<T: Copy>(base: *const u8, off: u32) -> T {
    if crate::compat::task_probe_read() {
        return crate::compat::probe_load(base, off);
    }
    // SAFETY: see above; the verifier rejects the program if `off` is not a field of `T`'s size.
    unsafe { *base.add(off as usize).cast::<T>() }
}

/// The current task, BTF-typed (a plain address with `compat::TASK_PROBE_READ`).
#[inline(always)]
pub fn current_task_btf() -> *const u8 {
    if crate::compat::task_probe_read() {
        return crate::compat::current_task();
    }
    // SAFETY: no preconditions.
    unsafe { bpf_get_current_task_btf() }
        .cast::<u8>()
        .cast_const()
}

/// `task->group_leader->start_boottime`: with the tgid, the identity of a process.
#[inline(always)]
pub fn process_start_ns(task: *const u8) -> u64 {
    let leader: *const u8 = btf_load(task, config!(task_group_leader));
    if leader.is_null() {
        return 0;
    }
    btf_load(leader, config!(task_start_boottime))
}

/// `task->nsproxy` (0 late in exit).
#[inline(always)]
pub fn task_nsproxy(task: *const u8) -> *const u8 {
    btf_load(task, config!(task_nsproxy))
}

/// `task->tgid`.
#[inline(always)]
pub fn task_tgid(task: *const u8) -> u32 {
    btf_load(task, config!(task_tgid))
}

/// `task->exit_code`.
#[inline(always)]
pub fn task_exit_code(task: *const u8) -> u32 {
    btf_load(task, config!(task_exit_code))
}

/// `nsproxy->ipc_ns->ns.inum`, 0 when unknown.
#[inline(always)]
pub fn nsproxy_ipc_ns(nsproxy: *const u8) -> u32 {
    if nsproxy.is_null() {
        return 0;
    }
    let ipc_ns: *const u8 = btf_load(nsproxy, config!(nsproxy_ipc_ns));
    if ipc_ns.is_null() {
        return 0;
    }
    btf_load(ipc_ns, config!(ipc_ns_inum))
}

/// The IPC namespace inode of the current task.
///
/// A global BPF function (as is [`current_start_ns`]): the verifier checks a global function
/// once per program, where it checks an inlined copy on every path that reaches it. That
/// matters here: walking a pointer field of the trusted task makes the verifier scan the
/// kernel's BTF by name (for `task_struct__safe_trusted` and kin), four scans per walk, and
/// with the walks inlined those scans were a quarter of ipcaudit's start-up time. The call
/// costs a few ns, on full records only.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn current_ipc_ns() -> u32 {
    nsproxy_ipc_ns(task_nsproxy(current_task_btf()))
}

/// `process_start_ns` of the current task; a global BPF function (see [`current_ipc_ns`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn current_start_ns() -> u64 {
    process_start_ns(current_task_btf())
}

/// Fills `header` for the current task.
#[inline(always)]
pub fn fill_header(header: &mut Header, kind: u16, flags: u16) {
    let pid_tgid = bpf_get_current_pid_tgid();
    header.kind = kind;
    header.flags = flags;
    header.tgid = (pid_tgid >> 32) as u32;
    header.tid = pid_tgid as u32;
    header.uid = bpf_get_current_uid_gid() as u32;
    header.ipc_ns = current_ipc_ns();
    header.pad0 = 0;
    header.ts_ns = now_ns();
    header.start_ns = current_start_ns();
    header.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}

/// Submit flags: no wakeup per record; one wakeup each time the data waiting crosses a multiple
/// of `wakeup_bytes` (not on every record above it: a reader that lags behind is busy reading
/// already, and a wakeup per record would cost the traced process ~1 µs each). The reader also
/// drains on a short timer, so a lone record is never stuck.
#[inline(always)]
pub fn submit_flags(record_bytes: u64) -> u64 {
    // SAFETY: EVENTS is a ring buffer map; the helper only reads its positions.
    let waiting = unsafe {
        bpf_ringbuf_query(
            (&raw const EVENTS).cast_mut().cast::<c_void>(),
            BPF_RB_AVAIL_DATA.into(),
        )
    };
    let every = u64::from(config!(wakeup_bytes)).max(4096);
    // `waiting` includes this record (reserved, not yet committed).
    if waiting / every == waiting.saturating_sub(record_bytes) / every {
        BPF_RB_NO_WAKEUP.into()
    } else {
        BPF_RB_FORCE_WAKEUP.into()
    }
}

/// Submits a reserved record with [`submit_flags`].
#[inline(always)]
pub fn submit<T>(entry: RingBufEntry<T>) {
    entry.submit(submit_flags(size_of::<T>() as u64 + 8));
}

/// The in-kernel process filters (`--pid`, `--uid`): is the current task left out? Decided
/// before anything is read or reserved, so that filtered-out work costs a compare or a lookup.
#[inline(always)]
pub fn filtered_out() -> bool {
    filtered_out_tgid(current_tgid())
}

/// [`filtered_out`] for a tgid already at hand.
#[inline(always)]
pub fn filtered_out_tgid(tgid: u32) -> bool {
    let only = config!(only_tgid);
    if only != 0 {
        return only != tgid;
    }
    let sets = config!(filter_sets);
    if sets == 0 {
        return false;
    }
    if sets & filter_sets::TGIDS != 0 && FILTER_TGIDS.get_ptr(tgid).is_none() {
        return true;
    }
    sets & filter_sets::UIDS != 0
        && FILTER_UIDS
            .get_ptr(bpf_get_current_uid_gid() as u32)
            .is_none()
}

/// [`filtered_out`] for a record of IPC family `family` ([`ipcaudit_ebpf::family`]): the type
/// filter (`--type`) first, a constant compare.
#[inline(always)]
pub fn family_filtered_out(family: u32) -> bool {
    let mask = config!(type_mask);
    (mask != 0 && mask & family == 0) || filtered_out()
}

/// [`family_filtered_out`] for a tgid already at hand.
#[inline(always)]
pub fn family_filtered_out_tgid(family: u32, tgid: u32) -> bool {
    let mask = config!(type_mask);
    (mask != 0 && mask & family == 0) || filtered_out_tgid(tgid)
}

/// Whether hot operations are aggregated (`watch`).
#[inline(always)]
pub fn aggregating() -> bool {
    config!(aggregate) != 0
}

/// A syscall at its exit: its result and its six arguments as the task passed them.
pub struct Sys {
    pub ret: i64,
    pub args: [u64; 6],
}

/// x86_64 `struct pt_regs` offsets of the syscall argument registers, in argument order:
/// di, si, dx, r10, r8, r9.
const PT_REGS_ARGS: [usize; 6] = [14, 13, 12, 7, 9, 8];

/// The six arguments in a user register frame (the x86_64 syscall convention). `regs` is a
/// BTF-typed `struct pt_regs *` (from `bpf_task_pt_regs` or an fexit argument): the loads are
/// plain loads the verifier checks against `pt_regs`, not a helper call each (which costs tens
/// of ns on the hot path).
#[inline(always)]
fn args_from_regs(regs: *const u64) -> [u64; 6] {
    // SAFETY: `regs` is a trusted `struct pt_regs *`; every offset is an 8-byte field of it.
    unsafe { PT_REGS_ARGS.map(|i| *regs.add(i)) }
}

/// The return value of a `syscalls:sys_exit_*` tracepoint.
///
/// ```text
/// field:int __syscall_nr;    offset:8;    size:4;    signed:1;
/// field:long ret;    offset:16;    size:8;    signed:1;
/// ```
const SYS_EXIT_RET: usize = 16;

impl Sys {
    /// At a `syscalls:sys_exit_*` tracepoint (the fallback attach point): the result from the
    /// tracepoint, the arguments from the task's saved user registers.
    ///
    /// On kernels without `bpf_task_pt_regs` (`compat::ARGS_AT_ENTER`) the arguments are the
    /// ones the `sys_enter_*` program saved (`compat::exit_without_enter` has checked they are
    /// there).
    #[inline(always)]
    pub fn from_tracepoint(ctx: &TracePointContext) -> Self {
        if crate::compat::args_at_enter() {
            return Self::from_tracepoint_of(ctx, core::ptr::null());
        }
        // SAFETY: no preconditions.
        let task = unsafe { bpf_get_current_task_btf() }
            .cast::<u8>()
            .cast_const();
        Self::from_tracepoint_of(ctx, task)
    }

    /// [`Sys::from_tracepoint`] with the current task (`bpf_get_current_task_btf`) at hand:
    /// one helper call fewer on the hot paths.
    #[inline(always)]
    pub fn from_tracepoint_of(ctx: &TracePointContext, task: *const u8) -> Self {
        if crate::compat::args_at_enter() {
            // SAFETY: as below.
            let ret = unsafe { *ctx.as_ptr().cast::<i64>().add(SYS_EXIT_RET / 8) };
            return Self {
                ret,
                args: crate::compat::saved_args(),
            };
        }
        // SAFETY: the offset is the `ret` field of every sys_exit tracepoint (a direct context
        // load); the helpers return the current task and its user register frame.
        unsafe {
            let ret = *ctx.as_ptr().cast::<i64>().add(SYS_EXIT_RET / 8);
            let regs = bpf_task_pt_regs(task.cast_mut().cast()) as *const u64;
            Self {
                ret,
                args: args_from_regs(regs),
            }
        }
    }

    /// At `fexit/__x64_sys_*(const struct pt_regs *regs)`: the context holds the argument
    /// (the user register frame) then the return value.
    #[inline(always)]
    pub fn from_fexit(ctx: &FExitContext) -> Self {
        let ctx = ctx.as_ptr().cast::<u64>();
        // SAFETY: a tracing program's context is an array of u64: the arguments, then the
        // return value.
        let (regs, ret) = unsafe { (*ctx as *const u64, *ctx.add(1)) };
        Self {
            ret: ret.cast_signed(),
            args: args_from_regs(regs),
        }
    }

    /// Whether the call succeeded.
    #[inline(always)]
    pub fn ok(&self) -> bool {
        !(-4095..0).contains(&self.ret)
    }
}

/// Reserves a `T` whose first field is a `SyscallRecord` and fills that part: header, result,
/// arguments. The caller fills the rest and submits.
#[inline(always)]
pub fn reserve_syscall<T: 'static>(sys: &Sys, kind: u16, flags: u16) -> Option<RingBufEntry<T>> {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count(stat::LOST);
        return None;
    };
    let rec = entry.as_mut_ptr().cast::<SyscallRecord>();
    // SAFETY: `T` starts with a SyscallRecord (checked by the callers' types), and the entry is
    // at least `size_of::<T>()` bytes.
    unsafe {
        fill_header(&mut (*rec).header, kind, flags);
        (*rec).ret = sys.ret;
        (*rec).args = sys.args;
        (*rec).aux = 0;
    }
    Some(entry)
}

/// Records a syscall whose record is the plain `SyscallRecord`.
#[inline(always)]
pub fn emit_plain(sys: &Sys, kind: u16) -> Result<u32, u32> {
    let entry = reserve_syscall::<SyscallRecord>(sys, kind, 0).ok_or(1u32)?;
    submit(entry);
    Ok(0)
}

/// `*p += v`, atomically (threads of one process share its usage entry, processes share an
/// object's totals). The result is unused, so this is one `lock xadd`. (The BPF target has no
/// compare-and-swap, so `core::sync::atomic` offers no `fetch_add`: the intrinsic it would use.)
#[inline(always)]
pub fn atomic_add_u64(p: *mut u64, v: u64) {
    // SAFETY: `p` points into a map value, 8-byte aligned, that stays valid for this run.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            p, v,
        );
    }
}

/// `*p += v` for a signed counter.
#[inline(always)]
pub fn atomic_add_i64(p: *mut i64, v: i64) {
    atomic_add_u64(p.cast::<u64>(), v as u64);
}

/// A userspace-written flag.
#[inline(always)]
pub fn flag(index: u32) -> u32 {
    FLAGS.get(index).copied().unwrap_or(0)
}

/// Whether the last snapshot saw this process blocked: then it is forgotten there, and its
/// operation is recorded in full.
#[inline(always)]
pub fn was_waiting(tgid: u32) -> bool {
    if flag(flags_index::WAITING) == 0 || WAITING.get_ptr(tgid).is_none() {
        return false;
    }
    let _ = WAITING.remove(tgid);
    true
}

/// One syscall's two attach points, both calling `$handler` with a way to read the call:
/// `fexit/__x64_sys_NAME` (preferred: a BPF trampoline on that function only) and
/// `syscalls:sys_exit_NAME` (the fallback on kernels without trampolines: enabling any syscall
/// tracepoint sends every syscall on the host through the slow path). The loader attaches one
/// set. The handler reads the call (`Sys`) only once it has decided to look at it.
macro_rules! syscall_exit_programs {
    // The handler reads the call with the current task at hand (`current_task_btf`).
    ($fexit:ident = $function:tt, $tracepoint:ident = $name:tt, with_task $handler:expr) => {
        #[aya_ebpf::macros::fexit(function = $function)]
        pub fn $fexit(ctx: aya_ebpf::programs::FExitContext) -> i32 {
            #[expect(
                clippy::cast_possible_wrap,
                reason = "the program's return value is 0 or 1"
            )]
            let r = ($handler)(|_task: *const u8| $crate::common::Sys::from_fexit(&ctx))
                .unwrap_or_else(|e| e) as i32;
            r
        }

        #[aya_ebpf::macros::tracepoint(category = "syscalls", name = $name)]
        pub fn $tracepoint(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            if $crate::compat::exit_without_enter(&ctx) {
                return 0;
            }
            let r =
                ($handler)(|task: *const u8| $crate::common::Sys::from_tracepoint_of(&ctx, task))
                    .unwrap_or_else(|e| e);
            $crate::compat::exit_done();
            r
        }
    };
    ($fexit:ident = $function:tt, $tracepoint:ident = $name:tt, $handler:expr) => {
        #[aya_ebpf::macros::fexit(function = $function)]
        pub fn $fexit(ctx: aya_ebpf::programs::FExitContext) -> i32 {
            #[expect(
                clippy::cast_possible_wrap,
                reason = "the program's return value is 0 or 1"
            )]
            let r =
                ($handler)(|| $crate::common::Sys::from_fexit(&ctx)).unwrap_or_else(|e| e) as i32;
            r
        }

        #[aya_ebpf::macros::tracepoint(category = "syscalls", name = $name)]
        pub fn $tracepoint(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            if $crate::compat::exit_without_enter(&ctx) {
                return 0;
            }
            let r = ($handler)(|| $crate::common::Sys::from_tracepoint(&ctx)).unwrap_or_else(|e| e);
            $crate::compat::exit_done();
            r
        }
    };
    // The handler also gets the program's context (for `bpf_get_stack`).
    ($fexit:ident = $function:tt, $tracepoint:ident = $name:tt, with_ctx $handler:expr) => {
        #[aya_ebpf::macros::fexit(function = $function)]
        pub fn $fexit(ctx: aya_ebpf::programs::FExitContext) -> i32 {
            use aya_ebpf::EbpfContext as _;
            #[expect(
                clippy::cast_possible_wrap,
                reason = "the program's return value is 0 or 1"
            )]
            let r = ($handler)(|| $crate::common::Sys::from_fexit(&ctx), ctx.as_ptr())
                .unwrap_or_else(|e| e) as i32;
            r
        }

        #[aya_ebpf::macros::tracepoint(category = "syscalls", name = $name)]
        pub fn $tracepoint(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            use aya_ebpf::EbpfContext as _;
            if $crate::compat::exit_without_enter(&ctx) {
                return 0;
            }
            let r = ($handler)(|| $crate::common::Sys::from_tracepoint(&ctx), ctx.as_ptr())
                .unwrap_or_else(|e| e);
            $crate::compat::exit_done();
            r
        }
    };
}
pub(crate) use syscall_exit_programs;
