//! Process lifecycle: fork (attachments are inherited), exec and exit (attachments are dropped,
//! SEM_UNDO adjustments are given back). Threads are not processes: a clone that shares the
//! thread group, and the exit of a thread that is not the last one, emit nothing. In `watch`,
//! an exiting process's aggregated usage (and its objects' totals) is written out before its
//! exit record, so that the model has seen everything the process did when it judges its
//! death.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use ipcaudit_ebpf::{ExecRecord, ExitRecord, ForkRecord, NO_OFFSET, kind};

use crate::{
    common::{
        EVENTS, SHM_TASKS, aggregating, config, count, current_task_btf, fill_header, filtered_out,
        process_start_ns, submit, task_exit_code, task_tgid,
    },
    usage::flush_exiting,
};

/// `tp_btf/sched_process_fork`: `TP_PROTO(struct task_struct *parent, struct task_struct *child)`.
/// Runs in the parent.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    try_sched_process_fork(&ctx).unwrap_or_else(|e| e)
}

fn try_sched_process_fork(ctx: &BtfTracePointContext) -> Result<i32, i32> {
    let child: *const u8 = ctx.arg(1);
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let child_tgid = task_tgid(child);
    if child_tgid == parent_tgid {
        return Ok(0); // a new thread
    }
    if SHM_TASKS.get_ptr(parent_tgid).is_some() {
        let _ = SHM_TASKS.insert(child_tgid, 1, 0);
    }
    if filtered_out() {
        return Ok(0);
    }
    let Some(mut entry) = EVENTS.reserve::<ForkRecord>(0) else {
        count(ipcaudit_ebpf::stat::LOST);
        return Err(1);
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points into the reserved entry.
    unsafe {
        fill_header(&mut (*record).header, kind::FORK, 0);
        (*record).child_tgid = child_tgid;
        (*record).pad0 = 0;
        (*record).child_start_ns = process_start_ns(child);
    }
    submit(entry);
    Ok(0)
}

/// `sched:sched_process_exec`, after a successful exec; runs in the new image.
///
/// ```text
/// field:__data_loc char[] filename;    offset:8;    size:4;    signed:0;
/// field:pid_t pid;    offset:12;    size:4;    signed:1;
/// field:pid_t old_pid;    offset:16;    size:4;    signed:1;
/// ```
#[repr(C)]
struct SchedProcessExec {
    common: u64,
    filename_loc: u32,
    pid: i32,
    old_pid: i32,
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    try_sched_process_exec(&ctx).unwrap_or_else(|e| e)
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<u32, u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // exec drops every attachment.
    let _ = SHM_TASKS.remove(tgid);
    if filtered_out() {
        return Ok(0);
    }
    // SAFETY: reading the tracepoint record at the offsets of its format.
    let args: SchedProcessExec = unsafe { ctx.read_at(0) }.map_err(|_| 1u32)?;
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count(ipcaudit_ebpf::stat::LOST);
        return Err(1);
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points into the reserved entry; the string read is fault-checked and
    // bounded by the destination.
    unsafe {
        fill_header(&mut (*record).header, kind::EXEC, 0);
        (*record).old_tid = args.old_pid as u32;
        (*record).pad0 = 0;
        (*record).filename[0] = 0;
        let loc_offset = (args.filename_loc & 0xffff) as usize;
        let src = (ctx_ptr(ctx) as *const u8).add(loc_offset);
        if bpf_probe_read_kernel_str_bytes(src, &mut (*record).filename).is_err() {
            (*record).filename[0] = 0;
        }
    }
    submit(entry);
    Ok(0)
}

fn ctx_ptr(ctx: &TracePointContext) -> *mut core::ffi::c_void {
    aya_ebpf::EbpfContext::as_ptr(ctx)
}

/// `sched:sched_process_exit`, once per exiting thread. `group_dead` (6.x kernels) says the
/// whole process is gone; its offset comes from tracefs at load time.
///
/// ```text
/// field:char comm[16];    offset:8;    size:16;    signed:0;
/// field:pid_t pid;    offset:24;    size:4;    signed:1;
/// field:int prio;    offset:28;    size:4;    signed:1;
/// field:bool group_dead;    offset:32;    size:1;    signed:0;
/// ```
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    try_sched_process_exit(&ctx).unwrap_or_else(|e| e)
}

fn try_sched_process_exit(ctx: &TracePointContext) -> Result<u32, u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let group_dead = match config!(exit_group_dead) {
        // Kernels without the field: the leader's exit stands for the process's.
        NO_OFFSET => pid_tgid as u32 == tgid,
        // SAFETY: the offset was read from this tracepoint's format.
        offset => unsafe { ctx.read_at::<u8>(offset as usize) }.map_err(|_| 1u32)? != 0,
    };
    if !group_dead {
        return Ok(0);
    }
    let _ = SHM_TASKS.remove(tgid);
    if aggregating() {
        flush_exiting(tgid);
    }
    if filtered_out() {
        return Ok(0);
    }
    let Some(mut entry) = EVENTS.reserve::<ExitRecord>(0) else {
        count(ipcaudit_ebpf::stat::LOST);
        return Err(1);
    };
    let exit_code = task_exit_code(current_task_btf());
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points into the reserved entry.
    unsafe {
        fill_header(&mut (*record).header, kind::EXIT, 0);
        (*record).exit_code = exit_code;
        (*record).pad0 = 0;
    }
    submit(entry);
    Ok(0)
}
