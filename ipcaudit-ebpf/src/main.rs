//! ipcaudit's kernel programs. One module per IPC family plus process lifecycle; each program
//! is a thin entry point calling a `try_` function. The records they emit are defined in the
//! lib target (`ipcaudit_ebpf::*`), the ABI shared with userspace.
//!
//! Syscalls are traced at their *exit* tracepoint only: the result is there, and the arguments
//! are read back from the task's saved user registers (`bpf_task_pt_regs`), so each traced call
//! costs one program run, not two.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
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
mod msg;
#[cfg(target_arch = "bpf")]
mod process;
#[cfg(target_arch = "bpf")]
mod sem;
#[cfg(target_arch = "bpf")]
mod shm;

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
