//! System V shared memory: shmget, shmat, shmdt, shmctl, and the munmap/mremap calls that
//! detach or move an attachment without shmdt.
//!
//! Every program here is on a `syscalls:sys_exit_*` tracepoint, whose format is
//!
//! ```text
//! field:unsigned short common_type;    offset:0;    size:2;    signed:0;
//! field:unsigned char common_flags;    offset:2;    size:1;    signed:0;
//! field:unsigned char common_preempt_count;    offset:3;    size:1;    signed:0;
//! field:int common_pid;    offset:4;    size:4;    signed:1;
//!
//! field:int __syscall_nr;    offset:8;    size:4;    signed:1;
//! field:long ret;    offset:16;    size:8;    signed:1;
//! ```
//!
//! and whose arguments come from the saved user registers (`common::syscall_exit`).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use ipcaudit_ebpf::{SyscallRecord, kind};

use crate::common::{SHM_TASKS, filtered_out, submit_flags, syscall_exit};

/// Records a syscall whose record is the plain `SyscallRecord`.
#[inline(always)]
pub fn emit_plain(ctx: &TracePointContext, kind: u16) -> Result<u32, u32> {
    if filtered_out() {
        return Ok(0);
    }
    let (entry, _, _) = syscall_exit::<SyscallRecord>(ctx, kind, 0).ok_or(1u32)?;
    entry.submit(submit_flags());
    Ok(0)
}

#[tracepoint(category = "syscalls", name = "sys_exit_shmget")]
pub fn sys_exit_shmget(ctx: TracePointContext) -> u32 {
    emit_plain(&ctx, kind::SHMGET).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_shmat")]
pub fn sys_exit_shmat(ctx: TracePointContext) -> u32 {
    try_sys_exit_shmat(&ctx).unwrap_or_else(|e| e)
}

fn try_sys_exit_shmat(ctx: &TracePointContext) -> Result<u32, u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // The attachment makes this process's munmap/mremap worth recording, traced or not.
    // SAFETY: reading the tracepoint's `ret` field.
    let ret: i64 = unsafe { ctx.read_at(16) }.map_err(|_| 1u32)?;
    if !(-4095..0).contains(&ret) {
        let _ = SHM_TASKS.insert(tgid, 1, 0);
    }
    emit_plain(ctx, kind::SHMAT)
}

#[tracepoint(category = "syscalls", name = "sys_exit_shmdt")]
pub fn sys_exit_shmdt(ctx: TracePointContext) -> u32 {
    emit_plain(&ctx, kind::SHMDT).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_shmctl")]
pub fn sys_exit_shmctl(ctx: TracePointContext) -> u32 {
    emit_plain(&ctx, kind::SHMCTL).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_munmap")]
pub fn sys_exit_munmap(ctx: TracePointContext) -> u32 {
    try_unmap_or_remap(&ctx, kind::MUNMAP).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_mremap")]
pub fn sys_exit_mremap(ctx: TracePointContext) -> u32 {
    try_unmap_or_remap(&ctx, kind::MREMAP).unwrap_or_else(|e| e)
}

/// munmap and mremap run constantly in every process (malloc, loaders): decide first, from one
/// map lookup, whether this process could be touching a SysV attachment at all.
#[inline(always)]
fn try_unmap_or_remap(ctx: &TracePointContext, kind: u16) -> Result<u32, u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if SHM_TASKS.get_ptr(tgid).is_none() {
        return Ok(0);
    }
    emit_plain(ctx, kind)
}
