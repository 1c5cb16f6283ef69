//! ipcaudit's kernel programs. One module per IPC family (`mqueue.rs`: POSIX message queues)
//! plus process lifecycle, and the start-up scan's iterators (`scan.rs`); each program
//! is a thin entry point calling a `try_` function. The records they emit are defined in the
//! lib target (`ipcaudit_ebpf::*`), the ABI shared with userspace.
//!
//! Syscalls are traced at their exit only: the result is there, and the arguments are read back
//! from the task's saved user registers, so each traced call costs one program run, not two.
//! Each has two attach points: `fexit` on its `__x64_sys_*` function (a BPF trampoline on that
//! function only: other syscalls pay nothing) and, as a fallback for kernels without
//! trampolines, its `syscalls:sys_exit_*` tracepoint (enabling any syscall tracepoint sends every
//! syscall on the host through the slow path). In `watch`, hot operations are aggregated
//! in-kernel (`usage.rs`, and the ABI's "Aggregation").
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// `atomic_xadd`: the BPF target has no compare-and-swap, so `core::sync::atomic` has no
// `fetch_add`, but the kernel's `lock xadd` is exactly an atomic add.
#![cfg_attr(
    target_arch = "bpf",
    feature(core_intrinsics),
    expect(
        internal_features,
        reason = "atomic_xadd is the only way to an atomic add on the BPF target"
    )
)]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        clippy::inline_always,
        reason = "helpers are inlined into each program: BPF-to-BPF calls cost on the hot path and constrain the verifier"
    ),
    expect(
        clippy::cast_possible_truncation,
        reason = "helpers pack two u32s in a u64 (pid_tgid, uid_gid): the casts take a half"
    ),
    expect(
        clippy::cast_sign_loss,
        reason = "kernel pointers and registers handled as integers"
    ),
    expect(
        clippy::needless_pass_by_value,
        reason = "the aya program macros hand each entry point its context by value"
    )
)]

#[cfg(target_arch = "bpf")]
mod common;
#[cfg(target_arch = "bpf")]
mod compat;
#[cfg(target_arch = "bpf")]
mod mqueue;
#[cfg(target_arch = "bpf")]
mod msg;
#[cfg(target_arch = "bpf")]
mod process;
#[cfg(target_arch = "bpf")]
mod scan;
#[cfg(target_arch = "bpf")]
mod sem;
#[cfg(target_arch = "bpf")]
mod shm;
#[cfg(target_arch = "bpf")]
mod stack;
#[cfg(target_arch = "bpf")]
mod usage;

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Built for the host (e.g. by `cargo clippy --workspace`) this binary has nothing to do: the
/// programs only exist for the BPF target, which `ipcaudit/build.rs` builds.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
