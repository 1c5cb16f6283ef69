//! System V semaphores: semget, semop, semtimedop (glibc's `semop()` issues semtimedop), semctl.
//!
//! Programs on `syscalls:sys_exit_*` (format in `shm.rs`); arguments from the saved registers.
//! For reference, the entry format of semtimedop, whose arguments are recorded:
//!
//! ```text
//! field:int semid;    offset:16;    size:8;    signed:0;
//! field:struct sembuf * tsops;    offset:24;    size:8;    signed:0;
//! field:unsigned int nsops;    offset:32;    size:8;    signed:0;
//! field:const struct __kernel_timespec * timeout;    offset:40;    size:8;    signed:0;
//! ```

use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use ipcaudit_ebpf::{MAX_SEM_OPS, SemBuf, SemOpRecord, flag, kind, stat};

use crate::{
    common::{count, filtered_out, submit_flags, syscall_exit},
    shm::emit_plain,
};

#[tracepoint(category = "syscalls", name = "sys_exit_semget")]
pub fn sys_exit_semget(ctx: TracePointContext) -> u32 {
    emit_plain(&ctx, kind::SEMGET).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_semctl")]
pub fn sys_exit_semctl(ctx: TracePointContext) -> u32 {
    emit_plain(&ctx, kind::SEMCTL).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_semop")]
pub fn sys_exit_semop(ctx: TracePointContext) -> u32 {
    try_semop(&ctx, 0).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_semtimedop")]
pub fn sys_exit_semtimedop(ctx: TracePointContext) -> u32 {
    try_semop(&ctx, flag::TIMED).unwrap_or_else(|e| e)
}

fn try_semop(ctx: &TracePointContext, flags: u16) -> Result<u32, u32> {
    if filtered_out() {
        return Ok(0);
    }
    let (mut entry, _, args) = syscall_exit::<SemOpRecord>(ctx, kind::SEMOP, flags).ok_or(1u32)?;
    let tsops = args[1];
    let nsops = args[2];
    let record = entry.as_mut_ptr();
    let mut truncated = 0;
    if nsops > MAX_SEM_OPS as u64 {
        truncated = flag::OPS_TRUNCATED;
    }
    // SAFETY: `record` points into the reserved entry; user memory is read with the
    // fault-checking helper.
    unsafe {
        (*record).sys.header.flags |= truncated;
        for i in 0..MAX_SEM_OPS {
            let op = if (i as u64) < nsops {
                bpf_probe_read_user((tsops as *const SemBuf).add(i)).unwrap_or_else(|_| {
                    count(stat::READ_FAILED);
                    SemBuf::default()
                })
            } else {
                SemBuf::default()
            };
            (*record).ops[i] = op;
        }
    }
    entry.submit(submit_flags());
    Ok(0)
}
