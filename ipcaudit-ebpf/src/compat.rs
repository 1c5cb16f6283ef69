//! Older kernels (`ipcaudit_ebpf::compat`): what the programs do instead when the kernel lacks a
//! helper. The loader sets the bits from the kernel's BTF; they are load-time constants, so on
//! a new kernel every branch here is dead code the verifier drops, and on an old one the new
//! helpers' calls are.
//!
//! - `TASK_PROBE_READ` (no `bpf_get_current_task_btf`, Linux < 5.11): the current task is a
//!   plain address (`bpf_get_current_task`) and its fields are read with
//!   `bpf_probe_read_kernel`.
//! - `ARGS_AT_ENTER` (no `bpf_task_pt_regs`, Linux < 5.15), tracepoint path only: each traced
//!   syscall's `sys_enter_*` program saves its arguments per thread; its `sys_exit_*` program
//!   takes them back, checking the syscall number, and skips (and counts in `READ_FAILED`) a
//!   call it has no arguments for (one in flight when the programs were attached) rather than
//!   record it with wrong ones. The format of every `sys_enter_*` tracepoint is
//!
//!   ```text
//!   field:int __syscall_nr;    offset:8;    size:4;    signed:1;
//!   field:<arg 0>;    offset:16;    size:8;    signed:..;
//!   ...
//!   field:<arg N-1>;    offset:16 + 8 * (N - 1);    size:8;    signed:..;
//!   ```
//!
//!   (the loader checks it, and the argument count, on the running kernel).

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_NO_PREALLOC,
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel},
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use ipcaudit_ebpf::{compat, stat};

use crate::common::{SHM_TASKS, config, count};

/// x86_64 syscall numbers of the two calls whose `sys_enter_*` program saves only for processes
/// in `SHM_TASKS` (they run constantly everywhere).
const NR_MUNMAP: u32 = 11;
const NR_MREMAP: u32 = 25;

/// A syscall's arguments between its enter and exit tracepoints.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct SavedArgs {
    nr: u64,
    args: [u64; 6],
}

/// Per thread (`pid_tgid`): the arguments of the traced syscall it is in.
#[map]
static SYSCALL_ARGS: HashMap<u64, SavedArgs> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

#[inline(always)]
pub fn task_probe_read() -> bool {
    config!(compat) & compat::TASK_PROBE_READ != 0
}

#[inline(always)]
pub fn args_at_enter() -> bool {
    config!(compat) & compat::ARGS_AT_ENTER != 0
}

/// The current task as a plain address.
#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: no preconditions; the address is only read through `probe_load`.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// A `T` at `base + off` by `bpf_probe_read_kernel`; 0 when the read faults.
#[inline(always)]
pub fn probe_load<T: Copy>(base: *const u8, off: u32) -> T {
    // SAFETY: the helper checks the address and returns an error instead of faulting; the
    // types read here (integers, pointers) are valid when zeroed.
    unsafe {
        bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>())
            .unwrap_or_else(|_| core::mem::zeroed())
    }
}

/// `__syscall_nr` of a `sys_enter_*` or `sys_exit_*` record.
#[inline(always)]
fn syscall_nr(ctx: &TracePointContext) -> u32 {
    // SAFETY: offset 8 is `__syscall_nr` in both formats (a direct context load).
    unsafe { *ctx.as_ptr().cast::<u32>().add(2) }
}

/// Saves the `N` arguments of the syscall entered (`sys_enter_*`), for its exit.
#[inline(always)]
fn save_args<const N: usize>(ctx: &TracePointContext, only_shm_tasks: bool) -> u32 {
    const { assert!(N <= 6) };
    let pid_tgid = bpf_get_current_pid_tgid();
    if only_shm_tasks && SHM_TASKS.get_ptr((pid_tgid >> 32) as u32).is_none() {
        return 0;
    }
    let mut saved = SavedArgs {
        nr: u64::from(syscall_nr(ctx)),
        args: [0; 6],
    };
    let base = ctx.as_ptr().cast::<u64>();
    for (i, arg) in saved.args.iter_mut().enumerate().take(N) {
        // SAFETY: argument `i` is at offset 16 + 8 * i of this tracepoint's record (checked by
        // the loader against the format), inside the record since i < N.
        *arg = unsafe { *base.add(2 + i) };
    }
    if SYSCALL_ARGS.insert(pid_tgid, saved, 0).is_err() {
        count(stat::READ_FAILED);
    }
    0
}

/// At a `sys_exit_*` tracepoint: true when this call's arguments were not saved at its entry
/// (the program then records nothing). A call the entry program was meant to save is counted.
#[inline(always)]
pub fn exit_without_enter(ctx: &TracePointContext) -> bool {
    if !args_at_enter() {
        return false;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let nr = syscall_nr(ctx);
    let saved = SYSCALL_ARGS.get_ptr(pid_tgid);
    // SAFETY: a pointer to this thread's map value, valid for this run.
    if saved.is_some_and(|s| unsafe { (*s).nr } == u64::from(nr)) {
        return false;
    }
    let skipped_at_entry =
        matches!(nr, NR_MUNMAP | NR_MREMAP) && SHM_TASKS.get_ptr((pid_tgid >> 32) as u32).is_none();
    if !skipped_at_entry {
        count(stat::READ_FAILED);
    }
    true
}

/// The arguments saved at this call's entry (after `exit_without_enter` said they are there).
#[inline(always)]
pub fn saved_args() -> [u64; 6] {
    SYSCALL_ARGS
        .get_ptr(bpf_get_current_pid_tgid())
        // SAFETY: as above.
        .map_or([0; 6], |s| unsafe { (*s).args })
}

/// At the end of a `sys_exit_*` program: this thread's saved arguments are used up.
#[inline(always)]
pub fn exit_done() {
    if args_at_enter() {
        let _ = SYSCALL_ARGS.remove(bpf_get_current_pid_tgid());
    }
}

/// One `syscalls:sys_enter_NAME` program per traced syscall, with its argument count (the
/// kernel's `SYSCALL_DEFINEn`). Attached only with `ARGS_AT_ENTER`.
macro_rules! sys_enter_program {
    ($program:ident = $name:tt, $nargs:literal, $only_shm_tasks:literal) => {
        #[tracepoint(category = "syscalls", name = $name)]
        pub fn $program(ctx: TracePointContext) -> u32 {
            save_args::<$nargs>(&ctx, $only_shm_tasks)
        }
    };
}

sys_enter_program!(sys_enter_shmget = "sys_enter_shmget", 3, false);
sys_enter_program!(sys_enter_shmat = "sys_enter_shmat", 3, false);
sys_enter_program!(sys_enter_shmdt = "sys_enter_shmdt", 1, false);
sys_enter_program!(sys_enter_shmctl = "sys_enter_shmctl", 3, false);
sys_enter_program!(sys_enter_semget = "sys_enter_semget", 3, false);
sys_enter_program!(sys_enter_semop = "sys_enter_semop", 3, false);
sys_enter_program!(sys_enter_semtimedop = "sys_enter_semtimedop", 4, false);
sys_enter_program!(sys_enter_semctl = "sys_enter_semctl", 4, false);
sys_enter_program!(sys_enter_msgget = "sys_enter_msgget", 2, false);
sys_enter_program!(sys_enter_msgsnd = "sys_enter_msgsnd", 4, false);
sys_enter_program!(sys_enter_msgrcv = "sys_enter_msgrcv", 5, false);
sys_enter_program!(sys_enter_msgctl = "sys_enter_msgctl", 3, false);
sys_enter_program!(sys_enter_munmap = "sys_enter_munmap", 2, true);
sys_enter_program!(sys_enter_mremap = "sys_enter_mremap", 5, true);
sys_enter_program!(sys_enter_mq_open = "sys_enter_mq_open", 4, false);
sys_enter_program!(sys_enter_mq_unlink = "sys_enter_mq_unlink", 1, false);
sys_enter_program!(sys_enter_mq_timedsend = "sys_enter_mq_timedsend", 5, false);
sys_enter_program!(
    sys_enter_mq_timedreceive = "sys_enter_mq_timedreceive",
    5,
    false
);
sys_enter_program!(sys_enter_mq_notify = "sys_enter_mq_notify", 2, false);
