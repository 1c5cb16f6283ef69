//! System V shared memory: shmget, shmat, shmdt, shmctl, and the munmap/mremap calls that
//! detach or move an attachment without shmdt. Every call is recorded (attachments are the
//! ownership the model tracks exactly; these calls cost microseconds in the kernel already).
//!
//! Each syscall has two attach points (`common::syscall_exit_programs`): `fexit` on
//! `__x64_sys_NAME(const struct pt_regs *regs)` — the context holds `regs`, then the return
//! value — and the `syscalls:sys_exit_NAME` tracepoint, whose format is
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
//! In both cases the arguments come from the saved user registers (`common::Sys`).

use ipcaudit_ebpf::{family, kind};

use crate::{
    common::{
        SHM_TASKS, Sys, current_tgid, emit_plain, family_filtered_out, syscall_exit_programs,
    },
    stack::{emit_stack, get_may_create},
};

syscall_exit_programs!(
    fexit_shmget = "__x64_sys_shmget",
    sys_exit_shmget = "sys_exit_shmget",
    with_ctx get_shm
);
syscall_exit_programs!(
    fexit_shmat = "__x64_sys_shmat",
    sys_exit_shmat = "sys_exit_shmat",
    with_ctx on_shmat
);
syscall_exit_programs!(
    fexit_shmdt = "__x64_sys_shmdt",
    sys_exit_shmdt = "sys_exit_shmdt",
    |sys| plain(sys, kind::SHMDT, family::SHM)
);
syscall_exit_programs!(
    fexit_shmctl = "__x64_sys_shmctl",
    sys_exit_shmctl = "sys_exit_shmctl",
    |sys| plain(sys, kind::SHMCTL, family::SHM)
);
syscall_exit_programs!(
    fexit_munmap = "__x64_sys_munmap",
    sys_exit_munmap = "sys_exit_munmap",
    |sys| unmap_or_remap(sys, kind::MUNMAP)
);
syscall_exit_programs!(
    fexit_mremap = "__x64_sys_mremap",
    sys_exit_mremap = "sys_exit_mremap",
    |sys| unmap_or_remap(sys, kind::MREMAP)
);

/// Records a call of IPC family `family` whose record is the plain `SyscallRecord`.
#[inline(always)]
pub fn plain(sys: impl FnOnce() -> Sys, kind: u16, family: u32) -> Result<u32, u32> {
    if family_filtered_out(family) {
        return Ok(0);
    }
    emit_plain(&sys(), kind)
}

/// A get (shmget, semget, msgget) of IPC family `family`: its record, then, when it may have
/// created the object, the call stack that made it.
#[inline(always)]
pub fn get_with_stack(
    sys: impl FnOnce() -> Sys,
    ctx: *mut core::ffi::c_void,
    kind: u16,
    family: u32,
) -> Result<u32, u32> {
    if family_filtered_out(family) {
        return Ok(0);
    }
    let sys = sys();
    let r = emit_plain(&sys, kind);
    if get_may_create(&sys, kind) {
        emit_stack(ctx, &sys, kind);
    }
    r
}

#[inline(always)]
fn get_shm(sys: impl FnOnce() -> Sys, ctx: *mut core::ffi::c_void) -> Result<u32, u32> {
    get_with_stack(sys, ctx, kind::SHMGET, family::SHM)
}

#[inline(always)]
fn on_shmat(sys: impl FnOnce() -> Sys, ctx: *mut core::ffi::c_void) -> Result<u32, u32> {
    let sys = sys();
    // The attachment makes this process's munmap/mremap worth recording, traced or not.
    // (A lookup first: the map allocates on insert, and a process that attaches again is in
    // it already.)
    if sys.ok() {
        let tgid = current_tgid();
        if SHM_TASKS.get_ptr(tgid).is_none() {
            let _ = SHM_TASKS.insert(tgid, 1, 0);
        }
    }
    if family_filtered_out(family::SHM) {
        return Ok(0);
    }
    let r = emit_plain(&sys, kind::SHMAT);
    if sys.ok() {
        emit_stack(ctx, &sys, kind::SHMAT);
    }
    r
}

/// munmap and mremap run constantly in every process (malloc, loaders): decide first, from one
/// map lookup, whether this process could be touching a SysV attachment at all.
#[inline(always)]
fn unmap_or_remap(sys: impl FnOnce() -> Sys, kind: u16) -> Result<u32, u32> {
    if SHM_TASKS.get_ptr(current_tgid()).is_none() {
        return Ok(0);
    }
    plain(sys, kind, family::SHM)
}
