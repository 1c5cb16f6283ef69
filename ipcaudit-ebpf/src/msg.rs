//! System V message queues: msgget, msgsnd, msgrcv, msgctl.
//!
//! Programs on `syscalls:sys_exit_*` (format in `shm.rs`); arguments from the saved registers.
//! The message type is read from the caller's buffer (`struct msgbuf { long mtype; ... }`):
//! as sent for msgsnd, as received for a successful msgrcv.

use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use ipcaudit_ebpf::{SyscallRecord, flag, kind};

use crate::{
    common::{filtered_out, submit_flags, syscall_exit},
    shm::emit_plain,
};

#[tracepoint(category = "syscalls", name = "sys_exit_msgget")]
pub fn sys_exit_msgget(ctx: TracePointContext) -> u32 {
    emit_plain(&ctx, kind::MSGGET).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_msgctl")]
pub fn sys_exit_msgctl(ctx: TracePointContext) -> u32 {
    emit_plain(&ctx, kind::MSGCTL).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_msgsnd")]
pub fn sys_exit_msgsnd(ctx: TracePointContext) -> u32 {
    try_msg_transfer(&ctx, kind::MSGSND).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_msgrcv")]
pub fn sys_exit_msgrcv(ctx: TracePointContext) -> u32 {
    try_msg_transfer(&ctx, kind::MSGRCV).unwrap_or_else(|e| e)
}

fn try_msg_transfer(ctx: &TracePointContext, kind: u16) -> Result<u32, u32> {
    if filtered_out() {
        return Ok(0);
    }
    let (mut entry, ret, args) = syscall_exit::<SyscallRecord>(ctx, kind, 0).ok_or(1u32)?;
    // msgsnd(msqid, msgp, ...), msgrcv(msqid, msgp, ...): the type is the buffer's first long.
    if ret >= 0 {
        // SAFETY: fault-checked read of user memory the task just passed to the kernel.
        if let Ok(mtype) = unsafe { bpf_probe_read_user(args[1] as *const i64) } {
            let record = entry.as_mut_ptr();
            // SAFETY: `record` points into the reserved entry.
            unsafe {
                (*record).aux = mtype;
                (*record).header.flags |= flag::HAS_MTYPE;
            }
        }
    }
    entry.submit(submit_flags());
    Ok(0)
}
