//! System V semaphores: semget, semop, semtimedop (glibc's `semop()` issues semtimedop), semctl.
//!
//! Each syscall has two attach points (`common::syscall_exit_programs`): `fexit` on
//! `__x64_sys_NAME(const struct pt_regs *regs)` and the `syscalls:sys_exit_NAME` tracepoint
//! (format in `shm.rs`); the arguments come from the saved user registers. For reference, the
//! entry formats of the arguments used here:
//!
//! ```text
//! sys_enter_semtimedop:
//! field:int semid;    offset:16;    size:8;    signed:0;
//! field:struct sembuf * tsops;    offset:24;    size:8;    signed:0;
//! field:unsigned int nsops;    offset:32;    size:8;    signed:0;
//! field:const struct __kernel_timespec * timeout;    offset:40;    size:8;    signed:0;
//! sys_enter_semctl:
//! field:int semid;    offset:16;    size:8;    signed:0;
//! field:int semnum;    offset:24;    size:8;    signed:0;
//! field:int cmd;    offset:32;    size:8;    signed:0;
//! field:unsigned long arg;    offset:40;    size:8;    signed:0;
//! ```
//!
//! In `watch` (aggregation on) a successful semop of one or two operations on semaphores the
//! process already has usage slots for only adds to its slots and the set's totals; anything
//! else is recorded in full, after the set's pending totals, and installs slots.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_probe_read_user, generated::bpf_probe_read_user as bpf_probe_read_user_raw},
};
use ipcaudit_ebpf::{
    AGG_SEMNUMS, MAX_SEM_OPS, ObjectId, ProcUsage, SemBuf, SemOpRecord, SemTotals, SemUsage,
    USAGE_SEM_SLOTS, doorbell, family, flag, kind, stat,
};

use crate::{
    common::{
        PROCS, QUEUES, SEMSETS, Sys, aggregating, atomic_add_i64, atomic_add_u64, config, count,
        current_ipc_ns, current_task_btf, current_tgid, emit_plain, family_filtered_out,
        family_filtered_out_tgid, now_ns, reserve_syscall, submit, syscall_exit_programs,
        task_tgid, was_waiting,
    },
    usage::{current_usage, ensure_usage, write_msg_totals, write_sem_totals, write_usage},
};

/// `SEM_UNDO` in `sem_flg`.
const SEM_UNDO: i16 = 0x1000;
/// semctl commands (glibc ORs `IPC_64` into them).
const IPC_64: i32 = 0x100;
const IPC_RMID: i32 = 0;
const SETVAL: i32 = 16;
const SETALL: i32 = 17;

syscall_exit_programs!(
    fexit_semget = "__x64_sys_semget",
    sys_exit_semget = "sys_exit_semget",
    with_ctx on_semget
);
syscall_exit_programs!(
    fexit_semctl = "__x64_sys_semctl",
    sys_exit_semctl = "sys_exit_semctl",
    on_semctl
);
#[rustfmt::skip] // `with_task |sys| …` is not an expression
syscall_exit_programs!(
    fexit_semop = "__x64_sys_semop",
    sys_exit_semop = "sys_exit_semop",
    with_task |sys| on_semop(sys, 0)
);
#[rustfmt::skip] // `with_task |sys| …` is not an expression
syscall_exit_programs!(
    fexit_semtimedop = "__x64_sys_semtimedop",
    sys_exit_semtimedop = "sys_exit_semtimedop",
    with_task |sys| on_semop(sys, flag::TIMED)
);

#[inline(always)]
fn on_semget(sys: impl FnOnce() -> Sys, ctx: *mut core::ffi::c_void) -> Result<u32, u32> {
    crate::shm::get_with_stack(sys, ctx, kind::SEMGET, family::SEM)
}

#[inline(always)]
fn on_semctl(sys: impl FnOnce() -> Sys) -> Result<u32, u32> {
    let sys = sys();
    let tgid = current_tgid();
    if tgid == config!(collector_tgid) && sys.args[1] as i32 == doorbell::SEMNUM {
        doorbell_call(&sys);
        return Ok(0);
    }
    if family_filtered_out(family::SEM) {
        return Ok(0);
    }
    let cmd = sys.args[2] as i32 & !IPC_64;
    let resets = sys.ok() && aggregating() && matches!(cmd, IPC_RMID | SETVAL | SETALL);
    let key = ObjectId {
        ns: if resets { current_ipc_ns() } else { 0 },
        id: sys.args[0] as i32,
    };
    if resets
        && cmd != IPC_RMID
        && let Some(t) = SEMSETS.get_ptr_mut(key)
    {
        // SETVAL/SETALL reset adjustments: what was counted before comes first.
        write_sem_totals(t, false);
    }
    emit_plain(&sys, kind::SEMCTL)?;
    if resets {
        // Slots on this set are stale from now on (their entry is gone).
        let _ = SEMSETS.remove(key);
    }
    Ok(0)
}

/// The collector asks for totals (`ipcaudit_ebpf::doorbell`).
#[inline(always)]
fn doorbell_call(sys: &Sys) {
    let arg = sys.args[3];
    let key = ObjectId {
        ns: arg as u32,
        id: (arg >> 32) as i32,
    };
    match sys.args[2] as i32 {
        doorbell::SEM_TOTALS => {
            if let Some(t) = SEMSETS.get_ptr_mut(key) {
                write_sem_totals(t, false);
            }
        }
        doorbell::MSG_TOTALS => {
            if let Some(t) = QUEUES.get_ptr_mut(key) {
                write_msg_totals(t, false);
            }
        }
        doorbell::USAGE => {
            let tgid = arg as u32;
            if let Some(p) = PROCS.get_ptr_mut(tgid) {
                write_usage(tgid, p);
            }
        }
        doorbell::MQ_TOTALS => crate::mqueue::doorbell_mq(arg),
        _ => {}
    }
}

/// The operation of a call that can be aggregated: a successful call of one operation on a
/// semaphore numbered below `AGG_SEMNUMS` (calls of several operations are recorded in full).
#[inline(always)]
fn aggregatable_op(sys: &Sys) -> Option<SemBuf> {
    if sys.ret != 0 || sys.args[2] != 1 {
        return None;
    }
    // SAFETY: fault-checked read of the user memory the task passed to the kernel.
    let op: SemBuf = unsafe { bpf_probe_read_user(sys.args[1] as *const SemBuf) }.ok()?;
    (usize::from(op.sem_num) < AGG_SEMNUMS).then_some(op)
}

/// `semop`/`semtimedop` at exit. The hot path (an aggregated operation) stays in the program's
/// own frame, small enough (< 64 bytes) that the kernel runs it on the task's stack: a frame
/// that large goes on a per-CPU private stack, and then every user-memory read into it pays
/// the hardened-usercopy heap checks (≈ 50 ns a call, measured). Everything else is in
/// [`semop_in_full`], a BPF subprogram with a frame of its own.
#[inline(always)]
pub fn on_semop(sys: impl Fn(*const u8) -> Sys + Copy, flags: u16) -> Result<u32, u32> {
    let task = current_task_btf();
    let tgid = task_tgid(task);
    if family_filtered_out_tgid(family::SEM, tgid) {
        return Ok(0);
    }
    let op = if aggregating() {
        let call = sys(task);
        aggregatable_op(&call).filter(|&op| !was_waiting(tgid) && add_semop(task, tgid, &call, op))
    } else {
        None
    };
    if op.is_some() {
        return Ok(0);
    }
    semop_in_full(sys, tgid, flags)
}

/// A call recorded in full (after what was aggregated on its set before it); in `watch`, a
/// slot for its semaphore afterwards, so that the process's next calls are aggregated.
#[inline(never)]
fn semop_in_full(sys: impl Fn(*const u8) -> Sys, tgid: u32, flags: u16) -> Result<u32, u32> {
    let sys = sys(current_task_btf());
    if !aggregating() {
        return emit_semop(&sys, flags);
    }
    let key = ObjectId {
        ns: current_ipc_ns(),
        id: sys.args[0] as i32,
    };
    if let Some(t) = SEMSETS.get_ptr_mut(key) {
        write_sem_totals(t, false);
    }
    emit_semop(&sys, flags)?;
    if let Some(op) = aggregatable_op(&sys) {
        install(tgid, key, op.sem_num);
    }
    Ok(0)
}

/// Slots are two-way set-associative: semaphore (semid, semnum) may only be in slot `h` or
/// `h ^ 1` (`h` a hash of both). No search loop on the hot path, and a computed index keeps the
/// verifier's work small (a loop's constant indexes multiply the states it explores).
#[inline(always)]
fn slot_hash(semid: i32, num: u16) -> usize {
    let h = (semid as u32).wrapping_mul(0x9e37_79b1) ^ u32::from(num).wrapping_mul(0x85eb_ca6b);
    (h >> 29) as usize & (USAGE_SEM_SLOTS - 1)
}

/// The slot of (ns, semid, semnum), when there is one.
#[inline(always)]
fn find_slot(p: *const ProcUsage, key: ObjectId, num: u16) -> Option<usize> {
    let h = slot_hash(key.id, num);
    for s in [h, h ^ 1] {
        let s = s & (USAGE_SEM_SLOTS - 1);
        // SAFETY: a map value; `s` masked in bounds.
        let u = unsafe { &(*p).sem[s] };
        if u.ns == key.ns && u.semid == key.id && u.semnum == num {
            return Some(s);
        }
    }
    None
}

/// Adds one operation to a slot and the set's totals. (No clock read: the model takes a
/// flush's time as the slot's last use.)
#[inline(always)]
fn add_op(t: *mut SemTotals, u: *mut SemUsage, op: SemBuf) {
    let v = i64::from(op.sem_op);
    let num = usize::from(op.sem_num) & (AGG_SEMNUMS - 1);
    // SAFETY: map values; `num` masked in bounds.
    unsafe {
        atomic_add_i64(&raw mut (*t).delta[num], v);
        if op.sem_flg & SEM_UNDO != 0 {
            atomic_add_i64(&raw mut (*u).undo, v);
        } else {
            atomic_add_i64(&raw mut (*u).net, v);
        }
        if v < 0 {
            atomic_add_u64(&raw mut (*u).took, 1);
        } else if v > 0 {
            atomic_add_u64(&raw mut (*u).gave, 1);
        }
    }
}

/// The hot path: adds the operation to the process's slot and the set's totals. False when
/// the process has no current slot for the semaphore (the call is then recorded in full).
#[inline(always)]
fn add_semop(task: *const u8, tgid: u32, sys: &Sys, op: SemBuf) -> bool {
    let Some((p, ns)) = current_usage(task, tgid) else {
        return false;
    };
    let key = ObjectId {
        ns,
        id: sys.args[0] as i32,
    };
    let Some(t) = SEMSETS.get_ptr_mut(key) else {
        return false;
    };
    let Some(slot) = find_slot(p, key, op.sem_num) else {
        return false;
    };
    let slot = slot & (USAGE_SEM_SLOTS - 1);
    // SAFETY: map values, valid for this run; `slot` masked in bounds.
    unsafe {
        let u: *mut SemUsage = &raw mut (*p).sem[slot];
        if (*u).entry_ts != (*t).first_ts {
            return false;
        }
        add_op(t, u, op);
        // The counts go last: a copy that shows them shows the rest.
        atomic_add_u64(&raw mut (*u).calls, 1);
        atomic_add_u64(&raw mut (*t).ops, 1);
    }
    true
}

/// After a call recorded in full: a slot for its semaphore (and the set's totals entry), so
/// that the process's next calls are aggregated.
#[inline(always)]
fn install(tgid: u32, key: ObjectId, num: u16) {
    let now = now_ns();
    if SEMSETS.get_ptr(key).is_none() {
        let fresh = SemTotals {
            ops: 0,
            ns: key.ns,
            semid: key.id,
            first_ts: now,
            written_ops: 0,
            delta: [0; AGG_SEMNUMS],
        };
        // Another process may have made it meanwhile: either is fine.
        let _ = SEMSETS.insert(key, fresh, BPF_NOEXIST.into());
    }
    let Some(t) = SEMSETS.get_ptr(key) else {
        count(stat::AGG_FULL);
        return;
    };
    // SAFETY: a map value.
    let entry_ts = unsafe { (*t).first_ts };
    let Some(p) = ensure_usage(tgid) else {
        return;
    };
    let (slot, busy) = choose_slot(p, key, num, entry_ts);
    if busy {
        // What the slot counted goes out before it starts again.
        write_usage(tgid, p);
    }
    reset_slot(p, slot, key, num, entry_ts, now);
}

/// The slot semaphore `num` goes to: its own (stale) one, else a free one of its two, else
/// one it evicts; `USAGE_SEM_SLOTS` when its slot is current already. Whether the slot holds
/// counts to write out first.
#[inline(always)]
fn choose_slot(usage: *const ProcUsage, key: ObjectId, num: u16, entry_ts: u64) -> (usize, bool) {
    let home = slot_hash(key.id, num);
    let other = (home ^ 1) & (USAGE_SEM_SLOTS - 1);
    // SAFETY: a map value; indexes masked in bounds.
    let (at_home, at_other) = unsafe { (&(*usage).sem[home], &(*usage).sem[other]) };
    let mine = |u: &SemUsage| u.ns == key.ns && u.semid == key.id && u.semnum == num;
    let (slot, chosen) = if mine(at_home) {
        (home, at_home)
    } else if mine(at_other) || (at_other.ns == 0 && at_home.ns != 0) {
        (other, at_other)
    } else {
        (home, at_home)
    };
    if mine(chosen) && chosen.entry_ts == entry_ts {
        return (USAGE_SEM_SLOTS, false);
    }
    (slot & (USAGE_SEM_SLOTS - 1), chosen.ns != 0)
}

/// Starts slot `slot` (when it is one) for semaphore `num`.
#[inline(always)]
fn reset_slot(p: *mut ProcUsage, slot: usize, key: ObjectId, num: u16, entry_ts: u64, now: u64) {
    if slot >= USAGE_SEM_SLOTS {
        return;
    }
    // SAFETY: a map value; `slot` in bounds.
    unsafe {
        (*p).sem[slot] = SemUsage {
            calls: 0,
            ns: key.ns,
            semid: key.id,
            semnum: num,
            pad0: [0; 3],
            entry_ts,
            first_ts: now,
            last_ts: now,
            net: 0,
            undo: 0,
            took: 0,
            gave: 0,
        };
    }
}

/// The full record: the call, and its first `MAX_SEM_OPS` operations (read at once).
#[inline(always)]
fn emit_semop(sys: &Sys, flags: u16) -> Result<u32, u32> {
    let tsops = sys.args[1];
    let nsops = sys.args[2];
    let truncated = if nsops > MAX_SEM_OPS as u64 {
        flag::OPS_TRUNCATED
    } else {
        0
    };
    let mut entry =
        reserve_syscall::<SemOpRecord>(sys, kind::SEMOP, flags | truncated).ok_or(1u32)?;
    let record = entry.as_mut_ptr();
    let len = (nsops.min(MAX_SEM_OPS as u64) as u32) * size_of::<SemBuf>() as u32;
    // SAFETY: `record` points into the reserved entry; user memory is read with the
    // fault-checking helper, at most the size of the destination.
    unsafe {
        (*record).ops = [SemBuf::default(); MAX_SEM_OPS];
        if len > 0
            && bpf_probe_read_user_raw(
                (&raw mut (*record).ops).cast(),
                len.min((MAX_SEM_OPS * size_of::<SemBuf>()) as u32),
                tsops as *const c_void,
            ) != 0
        {
            count(stat::READ_FAILED);
            (*record).ops = [SemBuf::default(); MAX_SEM_OPS];
        }
    }
    submit(entry);
    Ok(0)
}
