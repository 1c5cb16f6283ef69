//! System V message queues: msgget, msgsnd, msgrcv, msgctl.
//!
//! Each syscall has two attach points (`common::syscall_exit_programs`; formats in `shm.rs`);
//! the arguments come from the saved user registers. For reference, the entry formats of the
//! arguments used here:
//!
//! ```text
//! sys_enter_msgsnd:
//! field:int msqid;    offset:16;    size:8;    signed:0;
//! field:struct msgbuf * msgp;    offset:24;    size:8;    signed:0;
//! field:size_t msgsz;    offset:32;    size:8;    signed:0;
//! field:int msgflg;    offset:40;    size:8;    signed:0;
//! sys_enter_msgrcv:
//! field:int msqid;    offset:16;    size:8;    signed:0;
//! field:struct msgbuf * msgp;    offset:24;    size:8;    signed:0;
//! field:size_t msgsz;    offset:32;    size:8;    signed:0;
//! field:long msgtyp;    offset:40;    size:8;    signed:0;
//! field:int msgflg;    offset:48;    size:8;    signed:0;
//! ```
//!
//! A full record carries the message type, read from the caller's buffer (`struct msgbuf
//! { long mtype; ... }`): as sent for msgsnd, as received for a successful msgrcv.
//!
//! In `watch` (aggregation on) a successful send or receive on a queue the process already has
//! a usage slot for only adds to its slot and the queue's totals; anything else is recorded in
//! full, after the queue's pending totals, and installs a slot.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_probe_read_user, generated::bpf_jiffies64},
};
use ipcaudit_ebpf::{
    MsgTotals, MsgUsage, ObjectId, ProcUsage, SyscallRecord, USAGE_MSG_SLOTS, family, flag, kind,
    stat,
};

use crate::{
    common::{
        QUEUES, Sys, aggregating, atomic_add_u64, config, count, current_ipc_ns, current_task_btf,
        emit_plain, family_filtered_out, family_filtered_out_tgid, now_ns, reserve_syscall, submit,
        syscall_exit_programs, task_tgid, was_waiting,
    },
    shm::get_with_stack,
    usage::{current_usage, ensure_usage, write_msg_totals, write_usage},
};

const IPC_64: i32 = 0x100;
const IPC_RMID: i32 = 0;
const MSG_NOERROR: u64 = 0o10000;
const MSG_COPY: u64 = 0o40000;

syscall_exit_programs!(
    fexit_msgget = "__x64_sys_msgget",
    sys_exit_msgget = "sys_exit_msgget",
    with_ctx on_msgget
);

#[inline(always)]
fn on_msgget(sys: impl FnOnce() -> Sys, ctx: *mut core::ffi::c_void) -> Result<u32, u32> {
    get_with_stack(sys, ctx, kind::MSGGET, family::MSG)
}
syscall_exit_programs!(
    fexit_msgctl = "__x64_sys_msgctl",
    sys_exit_msgctl = "sys_exit_msgctl",
    on_msgctl
);
#[rustfmt::skip] // `with_task |sys| …` is not an expression
syscall_exit_programs!(
    fexit_msgsnd = "__x64_sys_msgsnd",
    sys_exit_msgsnd = "sys_exit_msgsnd",
    with_task |sys| on_transfer(sys, kind::MSGSND)
);
#[rustfmt::skip] // `with_task |sys| …` is not an expression
syscall_exit_programs!(
    fexit_msgrcv = "__x64_sys_msgrcv",
    sys_exit_msgrcv = "sys_exit_msgrcv",
    with_task |sys| on_transfer(sys, kind::MSGRCV)
);

#[inline(always)]
fn on_msgctl(sys: impl FnOnce() -> Sys) -> Result<u32, u32> {
    if family_filtered_out(family::MSG) {
        return Ok(0);
    }
    let sys = sys();
    emit_plain(&sys, kind::MSGCTL)?;
    if aggregating() && sys.ok() && sys.args[1] as i32 & !IPC_64 == IPC_RMID {
        // Slots on this queue are stale from now on.
        let _ = QUEUES.remove(ObjectId {
            ns: current_ipc_ns(),
            id: sys.args[0] as i32,
        });
    }
    Ok(0)
}

/// Bytes moved by a successful send or receive that can be aggregated (not `MSG_COPY`, which
/// does not dequeue, nor a receive that may have truncated the message).
#[inline(always)]
fn aggregatable(sys: &Sys, kind: u16) -> Option<u64> {
    if kind == kind::MSGSND {
        return (sys.ret == 0).then_some(sys.args[2]);
    }
    let flags = sys.args[4];
    if sys.ret < 0
        || flags & MSG_COPY != 0
        || (flags & MSG_NOERROR != 0 && sys.ret as u64 == sys.args[2])
    {
        return None;
    }
    Some(sys.ret as u64)
}

/// msgsnd/msgrcv at exit. As for semop (`sem::on_semop`): the hot path (an aggregated
/// message) in the program's own small frame, the rest in [`transfer_in_full`].
#[inline(always)]
pub fn on_transfer(sys: impl Fn(*const u8) -> Sys + Copy, kind: u16) -> Result<u32, u32> {
    let task = current_task_btf();
    let tgid = task_tgid(task);
    if family_filtered_out_tgid(family::MSG, tgid) {
        return Ok(0);
    }
    if aggregating() {
        let call = sys(task);
        if let Some(bytes) = aggregatable(&call, kind)
            && !was_waiting(tgid)
            && add_transfer(task, tgid, &call, kind, bytes)
        {
            return Ok(0);
        }
    }
    transfer_in_full(sys, tgid, kind)
}

/// A call recorded in full (after what was aggregated on its queue before it); in `watch`, a
/// slot for the queue afterwards when the call moved a message.
#[inline(never)]
fn transfer_in_full(sys: impl Fn(*const u8) -> Sys, tgid: u32, kind: u16) -> Result<u32, u32> {
    let sys = sys(current_task_btf());
    if !aggregating() {
        return emit_transfer(&sys, kind);
    }
    let key = ObjectId {
        ns: current_ipc_ns(),
        id: sys.args[0] as i32,
    };
    if let Some(t) = QUEUES.get_ptr_mut(key) {
        write_msg_totals(t, false);
    }
    emit_transfer(&sys, kind)?;
    if aggregatable(&sys, kind).is_some() {
        install(tgid, key);
    }
    Ok(0)
}

/// Slots are two-way set-associative (see `sem.rs`): queue `msqid` may only be in slot `h` or
/// `h ^ 1`.
#[inline(always)]
fn slot_hash(msqid: i32) -> usize {
    ((msqid as u32).wrapping_mul(0x9e37_79b1) >> 30) as usize & (USAGE_MSG_SLOTS - 1)
}

/// The slot of (ns, msqid), when there is one.
#[inline(always)]
fn find_slot(p: *const ProcUsage, key: ObjectId) -> Option<usize> {
    let h = slot_hash(key.id);
    for s in [h, h ^ 1] {
        let s = s & (USAGE_MSG_SLOTS - 1);
        // SAFETY: a map value; `s` masked in bounds.
        let u = unsafe { &(*p).msg[s] };
        if u.ns == key.ns && u.msqid == key.id {
            return Some(s);
        }
    }
    None
}

/// The hot path: adds the message to the process's slot and the queue's totals.
#[inline(always)]
fn add_transfer(task: *const u8, tgid: u32, sys: &Sys, kind: u16, bytes: u64) -> bool {
    let Some((p, ns)) = current_usage(task, tgid) else {
        return false;
    };
    let key = ObjectId {
        ns,
        id: sys.args[0] as i32,
    };
    let Some(t) = QUEUES.get_ptr_mut(key) else {
        return false;
    };
    let Some(slot) = find_slot(p, key) else {
        return false;
    };
    let slot = slot & (USAGE_MSG_SLOTS - 1);
    // SAFETY: map values; `slot` masked in bounds. The counts go last.
    unsafe {
        let u: *mut MsgUsage = &raw mut (*p).msg[slot];
        if (*u).entry_ts != (*t).first_ts {
            return false;
        }
        if kind == kind::MSGSND {
            atomic_add_u64(&raw mut (*u).sent, 1);
            atomic_add_u64(&raw mut (*u).sent_bytes, bytes);
            atomic_add_u64(&raw mut (*t).sent, 1);
            atomic_add_u64(&raw mut (*t).sent_bytes, bytes);
        } else {
            atomic_add_u64(&raw mut (*u).received, 1);
            atomic_add_u64(&raw mut (*u).received_bytes, bytes);
            atomic_add_u64(&raw mut (*t).received, 1);
            atomic_add_u64(&raw mut (*t).received_bytes, bytes);
        }
        (*u).last_ts = last_use((*u).first_ts, (*u).first_jiffies);
        atomic_add_u64(&raw mut (*u).calls, 1);
        atomic_add_u64(&raw mut (*t).ops, 1);
    }
    true
}

/// The time of a message on the hot path: from `jiffies_64` (a load the verifier inlines) and
/// the slot's install time when the loader knows the tick (`Config::tick_ns`); a clock source
/// read, which costs ≈ 45 ns in a VM, only otherwise.
#[inline(always)]
fn last_use(first_ts: u64, first_jiffies: u64) -> u64 {
    let tick = u64::from(config!(tick_ns));
    if tick == 0 {
        return now_ns();
    }
    // SAFETY: no preconditions.
    let jiffies = unsafe { bpf_jiffies64() };
    first_ts + jiffies.wrapping_sub(first_jiffies) * tick
}

/// After a send or receive recorded in full: a slot for the queue (and its totals entry): its
/// own stale one, else a free one of its two, else it evicts one (whose counts are written out
/// first).
#[inline(always)]
fn install(tgid: u32, key: ObjectId) {
    let now = now_ns();
    if QUEUES.get_ptr(key).is_none() {
        let fresh = MsgTotals {
            ops: 0,
            ns: key.ns,
            msqid: key.id,
            first_ts: now,
            written_ops: 0,
            sent: 0,
            sent_bytes: 0,
            received: 0,
            received_bytes: 0,
        };
        let _ = QUEUES.insert(key, fresh, BPF_NOEXIST.into());
    }
    let Some(totals) = QUEUES.get_ptr(key) else {
        count(stat::AGG_FULL);
        return;
    };
    // SAFETY: a map value.
    let entry_ts = unsafe { (*totals).first_ts };
    let Some(usage) = ensure_usage(tgid) else {
        return;
    };
    let home = slot_hash(key.id);
    let other = (home ^ 1) & (USAGE_MSG_SLOTS - 1);
    // SAFETY: a map value; indexes masked in bounds.
    let (at_home, at_other) = unsafe { (&(*usage).msg[home], &(*usage).msg[other]) };
    let mine = |u: &MsgUsage| u.ns == key.ns && u.msqid == key.id;
    let slot = if mine(at_home) {
        home
    } else if mine(at_other) || (at_other.ns == 0 && at_home.ns != 0) {
        other
    } else {
        home
    } & (USAGE_MSG_SLOTS - 1);
    // SAFETY: as above.
    let chosen: *mut MsgUsage = unsafe { &raw mut (*usage).msg[slot] };
    // SAFETY: as above.
    let (taken, current) = unsafe {
        (
            (*chosen).ns != 0,
            mine(&*chosen) && (*chosen).entry_ts == entry_ts,
        )
    };
    if current {
        return;
    }
    if taken {
        write_usage(tgid, usage);
    }
    // SAFETY: as above.
    unsafe {
        *chosen = MsgUsage {
            calls: 0,
            ns: key.ns,
            msqid: key.id,
            entry_ts,
            first_ts: now,
            last_ts: now,
            first_jiffies: bpf_jiffies64(),
            sent: 0,
            sent_bytes: 0,
            received: 0,
            received_bytes: 0,
        };
    }
}

/// The full record, with the message type when the call moved a message.
#[inline(always)]
fn emit_transfer(sys: &Sys, kind: u16) -> Result<u32, u32> {
    let mut entry = reserve_syscall::<SyscallRecord>(sys, kind, 0).ok_or(1u32)?;
    // msgsnd(msqid, msgp, ...), msgrcv(msqid, msgp, ...): the type is the buffer's first long.
    if sys.ret >= 0 {
        // SAFETY: fault-checked read of user memory the task just passed to the kernel.
        if let Ok(mtype) = unsafe { bpf_probe_read_user(sys.args[1] as *const i64) } {
            let record = entry.as_mut_ptr();
            // SAFETY: `record` points into the reserved entry.
            unsafe {
                (*record).aux = mtype;
                (*record).header.flags |= flag::HAS_MTYPE;
            }
        }
    }
    submit(entry);
    Ok(0)
}
