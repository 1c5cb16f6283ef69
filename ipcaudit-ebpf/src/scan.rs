//! Kernel scan: two BPF iterators read at start-up instead of /proc. `scan_tasks` (`iter/task`,
//! Linux 5.8+) writes every thread-group leader, and the other threads of a group whose leader
//! has exited; `scan_vmas` (`iter/task_vma`, 5.12+) writes every System V shared-memory
//! mapping. One `read` of each gives what /proc gives in four file reads per process (the
//! namespace link, `stat`, `status`, the maps), without making a dentry for each. Userspace
//! falls back to /proc when they do not load.
//!
//! Both run once per read, never on a hot path. The vma iterator runs for every mapping of
//! every process (a few hundred thousand on a busy host): its first two reads, which turn away
//! nearly all of them, are plain loads the verifier checks against the kernel's BTF; every
//! other field is read with `bpf_probe_read_kernel` (the offsets are load-time constants of
//! [`SCAN`] and `CONFIG`).
//!
//! The contexts (`include/linux/bpf.h`, `kernel/bpf/task_iter.c`):
//!
//! ```text
//! struct bpf_iter_meta { struct seq_file *seq; u64 session_id; u64 seq_num; };
//! struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; };
//! struct bpf_iter__task_vma { struct bpf_iter_meta *meta; struct task_struct *task;
//!                             struct vm_area_struct *vma; };
//! ```

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_probe_read_kernel_str_bytes, generated::bpf_seq_write};
use ipcaudit_ebpf::{COMM_LEN, ScanOffsets, ScanTask, ScanVma};

use crate::{
    common::{config, nsproxy_ipc_ns, task_nsproxy},
    compat::probe_load,
};

/// Written by the loader with the scan's offsets (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
pub static SCAN: ScanOffsets = ScanOffsets::unresolved();

/// Reads one offset of [`SCAN`] (volatile, as `config!`: the loader rewrites the placeholders).
macro_rules! scan {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const SCAN.$field) }
    };
}

/// `VM_MAYSHARE`: every System V attachment is a shared mapping (`VM_SHARED` is not set on a
/// read-only one: the kernel clears it for a shared mapping of a file not open for writing).
const VM_MAYSHARE: u64 = 0x80;

#[repr(C)]
struct IterMeta {
    seq: *mut c_void,
    session_id: u64,
    seq_num: u64,
}

#[repr(C)]
struct IterTask {
    meta: *const IterMeta,
    task: *const u8,
}

#[repr(C)]
struct IterTaskVma {
    meta: *const IterMeta,
    task: *const u8,
    vma: *const u8,
}

/// `iter/task`: one [`ScanTask`] per thread-group leader (and per thread of a group whose
/// leader exited).
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub extern "C" fn scan_tasks(ctx: *mut c_void) -> i32 {
    try_scan_tasks(ctx.cast::<IterTask>().cast_const());
    0
}

fn try_scan_tasks(ctx: *const IterTask) {
    // SAFETY: the iterator's context (see the module's doc); `meta` is never null.
    let (seq, task) = unsafe { ((*(*ctx).meta).seq, (*ctx).task) };
    if task.is_null() {
        return; // The end of the iteration.
    }
    let thread: u32 = probe_load(task, scan!(task_pid));
    let tgid: u32 = probe_load(task, config!(task_tgid));
    let leader: *const u8 = probe_load(task, config!(task_group_leader));
    if thread != tgid && probe_load::<u32>(leader, scan!(task_exit_state)) == 0 {
        return; // A thread of a group whose leader is alive: the leader stands for it.
    }
    let parent: *const u8 = probe_load(task, scan!(task_real_parent));
    let cred: *const u8 = probe_load(task, scan!(task_real_cred));
    let record = ScanTask {
        tid: thread,
        tgid,
        ppid: if parent.is_null() {
            0
        } else {
            probe_load(parent, config!(task_tgid))
        },
        uid: if cred.is_null() {
            0
        } else {
            probe_load(cred, scan!(cred_uid))
        },
        // The iterator's task is BTF-typed, as the events' tasks: their walk.
        ipc_ns: nsproxy_ipc_ns(task_nsproxy(task)),
        state: probe_load(task, scan!(task_state)),
        exit_state: probe_load(task, scan!(task_exit_state)),
        flags: probe_load(task, scan!(task_flags)),
        start_ns: probe_load(leader, config!(task_start_boottime)),
        pad0: 0,
        comm: probe_load::<[u8; COMM_LEN]>(task, scan!(task_comm)),
    };
    write(seq, &record);
}

/// `iter/task_vma`: one [`ScanVma`] per System V mapping: a shared file mapping whose file is
/// a root dentry named `SYSV...` (the kernel's shm files are pseudo files on its internal
/// mount: /proc shows them as `/SYSV%08x (deleted)`; userspace checks the name's form).
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_vma")]
pub extern "C" fn scan_vmas(ctx: *mut c_void) -> i32 {
    try_scan_vmas(ctx.cast::<IterTaskVma>().cast_const());
    0
}

fn try_scan_vmas(ctx: *const IterTaskVma) {
    // SAFETY: the iterator's context (see the module's doc); `meta` is never null.
    let (seq, task, vma) = unsafe { ((*(*ctx).meta).seq, (*ctx).task, (*ctx).vma) };
    if task.is_null() || vma.is_null() {
        return;
    }
    let file: *const u8 = btf_load(vma, scan!(vma_file));
    if file.is_null() {
        return;
    }
    let vm_flags: u64 = btf_load(vma, scan!(vma_flags));
    if vm_flags & VM_MAYSHARE == 0 {
        return;
    }
    let dentry: *const u8 = probe_load(file, scan!(file_dentry));
    if dentry.is_null() || probe_load::<*const u8>(dentry, scan!(dentry_parent)) != dentry {
        return;
    }
    let name_ptr: *const u8 = probe_load(dentry, scan!(dentry_name));
    let mut name = [0u8; 16];
    // SAFETY: the helper reads at most 16 bytes, stopping at the NUL, and fails on a bad address.
    if unsafe { bpf_probe_read_kernel_str_bytes(name_ptr, &mut name) }.is_err()
        || name[..4] != *b"SYSV"
    {
        return;
    }
    let inode: *const u8 = probe_load(file, config!(file_inode));
    let record = ScanVma {
        tgid: probe_load(task, config!(task_tgid)),
        pad0: 0,
        ino: if inode.is_null() {
            u64::MAX
        } else {
            probe_load(inode, config!(inode_ino))
        },
        start: probe_load(vma, scan!(vma_start)),
        end: probe_load(vma, scan!(vma_end)),
        pgoff: probe_load(vma, scan!(vma_pgoff)),
        vm_flags,
        name,
    };
    write(seq, &record);
}

/// A `T` at `base + off`, `base` the iterator's BTF-typed `vma`: a plain load (0 if it faults)
/// where a `bpf_probe_read_kernel` costs a helper call.
fn btf_load<T: Copy>(base: *const u8, off: u32) -> T {
    // SAFETY: the verifier rejects the program if `off` is not a field of `T`'s size.
    unsafe { *base.add(off as usize).cast::<T>() }
}

/// Appends `record` to the iterator's output.
fn write<T>(seq: *mut c_void, record: &T) {
    // SAFETY: `seq` is the iterator's seq_file; `record` is on the stack, `size_of::<T>()`
    // bytes (64: the records are small).
    unsafe {
        bpf_seq_write(
            seq.cast(),
            core::ptr::from_ref(record).cast(),
            core::mem::size_of::<T>() as u32,
        );
    }
}
