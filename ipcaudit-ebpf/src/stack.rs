//! Call stacks at creation and attach: where in the program an object was made or mapped.
//!
//! Only on the low-rate paths (a successful get that may have created its object, a successful
//! `shmat`), never on semop/msgsnd/msgrcv, and at most `STACK_BUDGET` records per CPU per
//! 100 ms. A [`StackRecord`] holds three views of the user stack, each useful when another
//! fails: the kernel's frame-pointer walk as return addresses and as build id + file offset
//! pairs (these survive the process: userspace symbolizes them by build id), and a copy of the
//! top of the stack with the instruction, stack and frame pointers, which userspace unwinds with
//! the binaries' `.eh_frame` (this needs no frame pointers: distro binaries get full stacks).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_F_USER_BUILD_ID, BPF_F_USER_STACK},
    helpers::{
        bpf_get_current_task_btf, bpf_task_pt_regs,
        generated::{bpf_get_stack, bpf_probe_read_user},
    },
    macros::map,
    maps::PerCpuArray,
};
use ipcaudit_ebpf::{
    BuildIdFrame, STACK_BUDGET, STACK_COPY, STACK_FRAMES, StackRecord, kind, stack_flag, stat,
};

use crate::common::{EVENTS, Sys, config, count, fill_header, now_ns, submit};

/// Per CPU: the start of the current 100 ms window and the stack records made in it.
#[map]
static STACK_WINDOW: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

const WINDOW_NS: u64 = 100_000_000;

/// `IPC_CREAT`.
const IPC_CREAT: u64 = 0o1000;

/// x86_64 `struct pt_regs` offsets (in u64s) of bp, ip and sp.
const PT_REGS_BP: usize = 4;
const PT_REGS_IP: usize = 16;
const PT_REGS_SP: usize = 19;

/// Whether this CPU may record one more stack now.
#[inline(always)]
fn within_budget() -> bool {
    let Some(w) = STACK_WINDOW.get_ptr_mut(0) else {
        return false;
    };
    let now = now_ns();
    // SAFETY: a per-CPU slot, only this CPU touches it while this program runs.
    unsafe {
        if now.wrapping_sub((*w)[0]) > WINDOW_NS {
            (*w)[0] = now;
            (*w)[1] = 0;
        }
        if (*w)[1] >= STACK_BUDGET {
            return false;
        }
        (*w)[1] += 1;
    }
    true
}

/// Whether a get may have created its object: it succeeded, and its key is `IPC_PRIVATE` or its
/// flags ask for `IPC_CREAT` (the model decides; a stack for an open is dropped there).
#[inline(always)]
pub fn get_may_create(sys: &Sys, of_kind: u16) -> bool {
    let flags = if of_kind == kind::MSGGET {
        sys.args[1]
    } else {
        sys.args[2]
    };
    sys.ok() && (sys.args[0] as u32 == 0 || flags & IPC_CREAT != 0)
}

/// Copies `len` bytes (a constant) of the user stack at `sp` into `dst`; whether it worked.
#[inline(always)]
fn copy_stack(dst: *mut u8, len: u32, sp: u64) -> bool {
    // SAFETY: `dst` has room for `STACK_COPY >= len` bytes; a fault is returned, not taken.
    unsafe { bpf_probe_read_user(dst.cast::<c_void>(), len, sp as *const c_void) == 0 }
}

/// Records the user call stack of the current task after a syscall of `of_kind` (`ctx` is the
/// program's context: the tracepoint's or fexit's).
#[inline(always)]
pub fn emit_stack(ctx: *mut c_void, sys: &Sys, of_kind: u16) {
    if config!(stacks) == 0 || !within_budget() {
        if config!(stacks) != 0 {
            count(stat::STACKS_DROPPED);
        }
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<StackRecord>(0) else {
        count(stat::STACKS_DROPPED);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: the entry is `size_of::<StackRecord>()` bytes of ring memory reserved for us; every
    // field is written before it is submitted; the helpers write within the arrays' sizes.
    unsafe {
        fill_header(&mut (*rec).header, kind::STACK, 0);
        (*rec).of_kind = of_kind;
        (*rec).pad0 = 0;
        (*rec).ret = sys.ret;
        (*rec).arg0 = sys.args[0];
        // The user registers (for the stack copy) need `bpf_task_pt_regs` and
        // `bpf_get_current_task_btf` (Linux 5.15): older kernels get the frame-pointer walk only.
        let regs_known = !crate::compat::args_at_enter() && !crate::compat::task_probe_read();
        let sp = if regs_known {
            let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u64;
            (*rec).ip = *regs.add(PT_REGS_IP);
            (*rec).bp = *regs.add(PT_REGS_BP);
            *regs.add(PT_REGS_SP)
        } else {
            (*rec).ip = 0;
            (*rec).bp = 0;
            0
        };
        (*rec).sp = sp;

        let frames = (&raw mut (*rec).frames).cast::<c_void>();
        let n = bpf_get_stack(
            ctx,
            frames,
            (STACK_FRAMES * 8) as u32,
            u64::from(BPF_F_USER_STACK),
        );
        (*rec).frames_len = if n > 0 { (n as u32) / 8 } else { 0 };

        let ids = (&raw mut (*rec).build_ids).cast::<c_void>();
        let size = (STACK_FRAMES * size_of::<BuildIdFrame>()) as u32;
        let n = bpf_get_stack(
            ctx,
            ids,
            size,
            u64::from(BPF_F_USER_STACK | BPF_F_USER_BUILD_ID),
        );
        if n > 0 {
            (*rec).build_ids_len = (n as u32) / size_of::<BuildIdFrame>() as u32;
            (*rec).header.flags = stack_flag::BUILD_IDS;
        } else {
            (*rec).build_ids_len = 0;
        }

        // As much of the stack as the mapping has, up to STACK_COPY (a read that crosses its end
        // fails whole: try smaller constant sizes).
        let dst = (&raw mut (*rec).stack).cast::<u8>();
        (*rec).stack_len = if !regs_known {
            0
        } else if copy_stack(dst, STACK_COPY as u32, sp) {
            STACK_COPY as u32
        } else if copy_stack(dst, (STACK_COPY / 2) as u32, sp) {
            (STACK_COPY / 2) as u32
        } else if copy_stack(dst, (STACK_COPY / 4) as u32, sp) {
            (STACK_COPY / 4) as u32
        } else if copy_stack(dst, (STACK_COPY / 8) as u32, sp) {
            (STACK_COPY / 8) as u32
        } else {
            0
        };
    }
    submit(entry);
}
