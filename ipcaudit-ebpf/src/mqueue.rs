//! POSIX message queues: mq_open, mq_unlink, mq_timedsend, mq_timedreceive, mq_notify.
//!
//! Each syscall has two attach points (`common::syscall_exit_programs`); the arguments come
//! from the saved user registers. The entry formats of the arguments used here:
//!
//! ```text
//! sys_enter_mq_open:
//! field:const char * u_name;    offset:16;    size:8;    signed:0;
//! field:int oflag;    offset:24;    size:8;    signed:0;
//! field:umode_t mode;    offset:32;    size:8;    signed:0;
//! field:struct mq_attr * u_attr;    offset:40;    size:8;    signed:0;
//! sys_enter_mq_unlink:
//! field:const char * u_name;    offset:16;    size:8;    signed:0;
//! sys_enter_mq_timedsend:
//! field:mqd_t mqdes;    offset:16;    size:8;    signed:0;
//! field:const char * u_msg_ptr;    offset:24;    size:8;    signed:0;
//! field:size_t msg_len;    offset:32;    size:8;    signed:0;
//! field:unsigned int msg_prio;    offset:40;    size:8;    signed:0;
//! field:const struct __kernel_timespec * u_abs_timeout;    offset:48;    size:8;    signed:0;
//! sys_enter_mq_timedreceive:
//! field:mqd_t mqdes;    offset:16;    size:8;    signed:0;
//! field:char * u_msg_ptr;    offset:24;    size:8;    signed:0;
//! field:size_t msg_len;    offset:32;    size:8;    signed:0;
//! field:unsigned int * u_msg_prio;    offset:40;    size:8;    signed:0;
//! field:const struct __kernel_timespec * u_abs_timeout;    offset:48;    size:8;    signed:0;
//! sys_enter_mq_notify:
//! field:mqd_t mqdes;    offset:16;    size:8;    signed:0;
//! field:const struct sigevent * u_notification;    offset:24;    size:8;    signed:0;
//! ```
//!
//! A descriptor is resolved to its queue as the kernel does (`task->files->fdt->fd[mqdes]`, the
//! file's inode, whose superblock must be the mqueue filesystem's: its `s_fs_info` is the IPC
//! namespace). In `watch` a process's first successful send or receive on a queue is recorded in
//! full (after the queue's pending totals) and remembered in `MQ_SEEN`; its later ones only add
//! to the queue's totals (`MQUEUES`), written out by the collector's doorbell.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{
        bpf_probe_read_user,
        generated::{bpf_probe_read_kernel, bpf_probe_read_user_str},
    },
    macros::map,
    maps::{HashMap, LruHashMap},
};
use ipcaudit_ebpf::{
    MQ_NAME_LEN, MQUEUE_MAGIC, MqKey, MqNameRecord, MqRecord, MqSeenKey, MqTotals, MqTotalsRecord,
    NO_OFFSET, family, flag, kind, stat,
};

use crate::common::{
    EVENTS, Sys, aggregating, atomic_add_u64, config, count, current_task_btf, current_tgid,
    family_filtered_out_tgid, fill_header, now_ns, process_start_ns, reserve_syscall, submit,
    syscall_exit_programs, was_waiting,
};

/// Aggregation: per POSIX queue, the aggregated messages' totals.
#[map]
pub static MQUEUES: HashMap<MqKey, MqTotals> = HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// Aggregation: the (process, queue) pairs whose first send or receive was recorded in full,
/// with the `first_ts` of the `MQUEUES` entry they count with. Least recently used pairs go
/// first when it is full (their next operation is then recorded in full again).
#[map]
static MQ_SEEN: LruHashMap<MqSeenKey, u64> = LruHashMap::with_max_entries(32768, 0);

syscall_exit_programs!(
    fexit_mq_open = "__x64_sys_mq_open",
    sys_exit_mq_open = "sys_exit_mq_open",
    |sys| on_name(sys, kind::MQ_OPEN)
);
syscall_exit_programs!(
    fexit_mq_unlink = "__x64_sys_mq_unlink",
    sys_exit_mq_unlink = "sys_exit_mq_unlink",
    |sys| on_name(sys, kind::MQ_UNLINK)
);
syscall_exit_programs!(
    fexit_mq_timedsend = "__x64_sys_mq_timedsend",
    sys_exit_mq_timedsend = "sys_exit_mq_timedsend",
    |sys| on_transfer(sys, kind::MQ_SEND)
);
syscall_exit_programs!(
    fexit_mq_timedreceive = "__x64_sys_mq_timedreceive",
    sys_exit_mq_timedreceive = "sys_exit_mq_timedreceive",
    |sys| on_transfer(sys, kind::MQ_RECEIVE)
);
syscall_exit_programs!(
    fexit_mq_notify = "__x64_sys_mq_notify",
    sys_exit_mq_notify = "sys_exit_mq_notify",
    on_notify
);

/// Reads a `T` at kernel address `base + off` (0 when `off` is unknown or the read faults).
#[inline(always)]
fn read<T: Copy + Default>(base: u64, off: u32) -> T {
    let mut v = T::default();
    if base == 0 || off == NO_OFFSET {
        return v;
    }
    // SAFETY: a fault-checked read into a local of the right size.
    let r = unsafe {
        bpf_probe_read_kernel(
            (&raw mut v).cast(),
            size_of::<T>() as u32,
            (base + u64::from(off)) as *const core::ffi::c_void,
        )
    };
    if r != 0 {
        count(stat::READ_FAILED);
        return T::default();
    }
    v
}

/// The queue behind descriptor `fd` of the current task: (inode, IPC namespace inode), when
/// it is a file of the mqueue filesystem.
#[inline(always)]
fn queue_of(fd: u64) -> Option<(u64, u32)> {
    let task = current_task_btf() as u64;
    let files: u64 = read(task, config!(task_files));
    let fdt: u64 = read(files, config!(files_fdt));
    let max_fds: u32 = read(fdt, config!(fdtable_max_fds));
    if fd >= u64::from(max_fds) {
        return None;
    }
    let array: u64 = read(fdt, config!(fdtable_fd));
    let file: u64 = read(array.checked_add(fd.checked_mul(8)?)?, 0);
    let inode: u64 = read(file, config!(file_inode));
    let sb: u64 = read(inode, config!(inode_sb));
    let magic: u64 = read(sb, config!(sb_magic));
    if magic != MQUEUE_MAGIC {
        return None;
    }
    let ino: u64 = read(inode, config!(inode_ino));
    let ipc_ns: u64 = read(sb, config!(sb_fs_info));
    let ns: u32 = read(ipc_ns, config!(ipc_ns_inum));
    (ino != 0 && ns != 0).then_some((ino, ns))
}

/// mq_open (the queue of the descriptor it returned) and mq_unlink: the name as passed.
#[inline(always)]
fn on_name(sys: impl FnOnce() -> Sys, kind: u16) -> Result<u32, u32> {
    if family_filtered_out_tgid(family::PMSG, current_tgid()) {
        return Ok(0);
    }
    let sys = sys();
    let queue = if kind == kind::MQ_OPEN && sys.ret >= 0 {
        queue_of(sys.ret as u64)
    } else {
        None
    };
    let mut entry = reserve_syscall::<MqNameRecord>(&sys, kind, 0).ok_or(1u32)?;
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points into the reserved entry; the name is read (fault-checked, at
    // most MQ_NAME_LEN bytes with the NUL) from the user memory the task passed.
    unsafe {
        (*record).ino = 0;
        (*record).queue_ns = 0;
        (*record).pad0 = 0;
        if let Some((ino, ns)) = queue {
            (*record).ino = ino;
            (*record).queue_ns = ns;
            (*record).sys.header.flags |= flag::HAS_QUEUE;
        }
        let name = (&raw mut (*record).name).cast::<u8>();
        if bpf_probe_read_user_str(
            name.cast(),
            MQ_NAME_LEN as u32,
            sys.args[0] as *const core::ffi::c_void,
        ) < 0
        {
            *name = 0;
        }
    }
    submit(entry);
    Ok(0)
}

/// The full record of a send, receive or notify.
#[inline(always)]
fn emit(sys: &Sys, kind: u16, queue: Option<(u64, u32)>) -> Result<u32, u32> {
    let mut entry = reserve_syscall::<MqRecord>(sys, kind, 0).ok_or(1u32)?;
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points into the reserved entry.
    unsafe {
        (*record).ino = 0;
        (*record).queue_ns = 0;
        (*record).pad0 = 0;
        if let Some((ino, ns)) = queue {
            (*record).ino = ino;
            (*record).queue_ns = ns;
            (*record).sys.header.flags |= flag::HAS_QUEUE;
        }
        if kind == kind::MQ_SEND {
            (*record).sys.aux = i64::from(sys.args[3] as u32);
            (*record).sys.header.flags |= flag::HAS_PRIO;
        } else if kind == kind::MQ_RECEIVE && sys.ret >= 0 && sys.args[3] != 0 {
            // SAFETY: fault-checked read of the user memory the task passed for the priority.
            if let Ok(prio) = bpf_probe_read_user(sys.args[3] as *const u32) {
                (*record).sys.aux = i64::from(prio);
                (*record).sys.header.flags |= flag::HAS_PRIO;
            }
        }
    }
    submit(entry);
    Ok(0)
}

/// mq_notify: registration (a `sigevent`) or removal (none).
#[inline(always)]
fn on_notify(sys: impl FnOnce() -> Sys) -> Result<u32, u32> {
    if family_filtered_out_tgid(family::PMSG, current_tgid()) {
        return Ok(0);
    }
    let sys = sys();
    let queue = queue_of(sys.args[0]);
    emit(&sys, kind::MQ_NOTIFY, queue)
}

/// Writes out a queue's totals when they changed since they last were (or `always`).
#[inline(always)]
pub fn write_mq_totals(t: *mut MqTotals, always: bool) {
    // SAFETY: a map value, valid for this run.
    let ops = unsafe { (*t).ops };
    if !always && ops == unsafe { (*t).written_ops } {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<MqTotalsRecord>(0) else {
        count(stat::LOST);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points into the reserved entry, `t` at a map value.
    unsafe {
        if bpf_probe_read_kernel(
            (&raw mut (*rec).totals).cast(),
            size_of::<MqTotals>() as u32,
            t.cast(),
        ) != 0
        {
            entry.discard(0);
            count(stat::READ_FAILED);
            return;
        }
        fill_header(&mut (*rec).header, kind::MQ_TOTALS, 0);
        (*t).written_ops = (*rec).totals.ops;
    }
    submit(entry);
}

/// The collector's doorbell for one queue's totals (`ipcaudit_ebpf::doorbell::MQ_TOTALS`).
#[inline(always)]
pub fn doorbell_mq(arg: u64) {
    let key = MqKey {
        ns: arg as u32,
        pad0: 0,
        ino: arg >> 32,
    };
    if let Some(t) = MQUEUES.get_ptr_mut(key) {
        write_mq_totals(t, false);
    }
}

/// Sends and receives: aggregated once the process's first one on the queue was recorded.
#[inline(always)]
fn on_transfer(sys: impl FnOnce() -> Sys, kind: u16) -> Result<u32, u32> {
    let tgid = current_tgid();
    if family_filtered_out_tgid(family::PMSG, tgid) {
        return Ok(0);
    }
    let sys = sys();
    let queue = queue_of(sys.args[0]);
    let ok = sys.ret >= 0;
    let (Some((ino, ns)), true, true) = (queue, ok, aggregating()) else {
        return emit(&sys, kind, queue);
    };
    let key = MqKey { ns, pad0: 0, ino };
    let seen = MqSeenKey {
        tgid,
        ns,
        ino,
        start_ns: process_start_ns(current_task_btf()),
    };
    let bytes = if kind == kind::MQ_SEND {
        sys.args[2]
    } else {
        sys.ret as u64
    };
    if let Some(t) = MQUEUES.get_ptr_mut(key) {
        // SAFETY: a map value, valid for this run.
        let first_ts = unsafe { (*t).first_ts };
        // SAFETY: as above.
        let counted = MQ_SEEN
            .get_ptr(seen)
            // SAFETY: a map value, valid for this run.
            .is_some_and(|ts| unsafe { *ts } == first_ts);
        if counted && !was_waiting(tgid) {
            // SAFETY: a map value; the count goes last.
            unsafe {
                if kind == kind::MQ_SEND {
                    atomic_add_u64(&raw mut (*t).sent, 1);
                    atomic_add_u64(&raw mut (*t).sent_bytes, bytes);
                } else {
                    atomic_add_u64(&raw mut (*t).received, 1);
                    atomic_add_u64(&raw mut (*t).received_bytes, bytes);
                }
                atomic_add_u64(&raw mut (*t).ops, 1);
            }
            return Ok(0);
        }
        // In full: after what was aggregated on the queue before it.
        write_mq_totals(t, false);
    } else {
        let fresh = MqTotals {
            ops: 0,
            ns,
            pad0: 0,
            ino,
            first_ts: now_ns(),
            written_ops: 0,
            sent: 0,
            sent_bytes: 0,
            received: 0,
            received_bytes: 0,
            pad1: 0,
        };
        if MQUEUES.insert(key, fresh, BPF_NOEXIST.into()).is_err() {
            count(stat::AGG_FULL);
        }
    }
    emit(&sys, kind, queue)?;
    if let Some(t) = MQUEUES.get_ptr(key) {
        // SAFETY: a map value.
        let first_ts = unsafe { (*t).first_ts };
        let _ = MQ_SEEN.insert(seen, first_ts, 0);
    }
    Ok(0)
}
