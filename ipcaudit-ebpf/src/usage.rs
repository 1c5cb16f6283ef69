//! Aggregation (`watch`), shared by the semaphore and queue programs, the exit program and the
//! collector's doorbell: usage entries per process, and writing totals out. The layouts and the
//! protocol are described in the ABI (`ipcaudit_ebpf`, "Aggregation").

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_uid_gid, generated::bpf_probe_read_kernel,
};
use ipcaudit_ebpf::{
    MsgTotals, MsgTotalsRecord, ObjectId, ProcUsage, SemTotals, SemTotalsRecord, USAGE_MSG_SLOTS,
    USAGE_SEM_SLOTS, UsageRecord, kind, stat,
};

use crate::common::{
    EVENTS, PROCS, QUEUES, SEMSETS, ZERO_USAGE, count, current_task_btf, fill_header, now_ns,
    nsproxy_ipc_ns, process_start_ns, submit, task_nsproxy,
};

/// The current process's (`task`, `tgid`) usage entry and its IPC namespace, when it has one made in the
/// namespace it is in now (a process that changed namespaces goes through the full path, which
/// updates its entry).
#[inline(always)]
pub fn current_usage(task: *const u8, tgid: u32) -> Option<(*mut ProcUsage, u32)> {
    let p = PROCS.get_ptr_mut(tgid)?;
    let nsproxy = task_nsproxy(task) as u64;
    // SAFETY: a map value, valid for this run.
    unsafe { ((*p).nsproxy == nsproxy && nsproxy != 0).then(|| (p, (*p).ns)) }
}

/// The current process's usage entry, made when missing; `None` when the map is full.
#[inline(always)]
pub fn ensure_usage(tgid: u32) -> Option<*mut ProcUsage> {
    let task = current_task_btf();
    let nsproxy = task_nsproxy(task);
    if let Some(p) = PROCS.get_ptr_mut(tgid) {
        // SAFETY: a map value, valid for this run.
        unsafe {
            if (*p).nsproxy != nsproxy as u64 {
                (*p).nsproxy = nsproxy as u64;
                (*p).ns = nsproxy_ipc_ns(nsproxy);
            }
        }
        return Some(p);
    }
    let zero = ZERO_USAGE.get_ptr(0)?;
    // SAFETY: `zero` is a map value of the right type; insert copies it.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the 1000-byte struct would be copied to the 512-byte BPF stack"
    )]
    let inserted = PROCS.insert(tgid, unsafe { &*zero }, 0);
    if inserted.is_err() {
        count(stat::AGG_FULL);
        return None;
    }
    let p = PROCS.get_ptr_mut(tgid)?;
    // SAFETY: the entry just made.
    unsafe {
        (*p).start_ns = process_start_ns(task);
        (*p).nsproxy = nsproxy as u64;
        (*p).ns = nsproxy_ipc_ns(nsproxy);
        (*p).uid = bpf_get_current_uid_gid() as u32;
        (*p).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    Some(p)
}

/// Copies `len` bytes of a map value into a ring-buffer record.
#[inline(always)]
fn copy<T>(dst: *mut T, src: *const T) -> bool {
    // SAFETY: both point at a `T`: a reserved record field and a map value.
    unsafe { bpf_probe_read_kernel(dst.cast(), size_of::<T>() as u32, src.cast()) == 0 }
}

/// Writes out a process's usage totals. The header names the process, whoever writes it.
#[inline(always)]
pub fn write_usage(tgid: u32, p: *const ProcUsage) {
    let Some(mut entry) = EVENTS.reserve::<UsageRecord>(0) else {
        count(stat::LOST);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points into the reserved entry, `p` at a map value.
    unsafe {
        if !copy(&raw mut (*rec).usage, p) {
            entry.discard(0);
            count(stat::READ_FAILED);
            return;
        }
        let h = &mut (*rec).header;
        h.kind = kind::USAGE;
        h.flags = 0;
        h.tgid = tgid;
        h.tid = tgid;
        h.uid = (*p).uid;
        h.ipc_ns = (*p).ns;
        h.pad0 = 0;
        h.ts_ns = now_ns();
        h.start_ns = (*p).start_ns;
        h.comm = (*p).comm;
    }
    submit(entry);
}

/// Writes out a semaphore set's totals when they changed since they last were (or `always`).
#[inline(always)]
pub fn write_sem_totals(t: *mut SemTotals, always: bool) {
    // SAFETY: a map value, valid for this run.
    let ops = unsafe { (*t).ops };
    if !always && ops == unsafe { (*t).written_ops } {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<SemTotalsRecord>(0) else {
        count(stat::LOST);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points into the reserved entry.
    unsafe {
        if !copy(&raw mut (*rec).totals, t) {
            entry.discard(0);
            count(stat::READ_FAILED);
            return;
        }
        fill_header(&mut (*rec).header, kind::SEM_TOTALS, 0);
        (*t).written_ops = (*rec).totals.ops;
    }
    submit(entry);
}

/// Writes out a queue's totals when they changed since they last were (or `always`).
#[inline(always)]
pub fn write_msg_totals(t: *mut MsgTotals, always: bool) {
    // SAFETY: a map value, valid for this run.
    let ops = unsafe { (*t).ops };
    if !always && ops == unsafe { (*t).written_ops } {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<MsgTotalsRecord>(0) else {
        count(stat::LOST);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points into the reserved entry.
    unsafe {
        if !copy(&raw mut (*rec).totals, t) {
            entry.discard(0);
            count(stat::READ_FAILED);
            return;
        }
        fill_header(&mut (*rec).header, kind::MSG_TOTALS, 0);
        (*t).written_ops = (*rec).totals.ops;
    }
    submit(entry);
}

/// A process leaves: the totals of every object it has a slot for, then its usage, are
/// written out (before its exit record), and its entry is dropped.
#[inline(always)]
pub fn flush_exiting(tgid: u32) {
    let Some(p) = PROCS.get_ptr_mut(tgid) else {
        return;
    };
    for i in 0..USAGE_SEM_SLOTS {
        // SAFETY: `p` is a map value; `i` is in bounds.
        let (ns, id) = unsafe { ((*p).sem[i].ns, (*p).sem[i].semid) };
        if ns != 0
            && let Some(t) = SEMSETS.get_ptr_mut(ObjectId { ns, id })
        {
            write_sem_totals(t, false);
        }
    }
    for i in 0..USAGE_MSG_SLOTS {
        // SAFETY: as above.
        let (ns, id) = unsafe { ((*p).msg[i].ns, (*p).msg[i].msqid) };
        if ns != 0
            && let Some(t) = QUEUES.get_ptr_mut(ObjectId { ns, id })
        {
            write_msg_totals(t, false);
        }
    }
    write_usage(tgid, p);
    let _ = PROCS.remove(tgid);
}
