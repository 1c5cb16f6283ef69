//! Rebuild the kernel programs when the `bpf-linker` binary changes (it is an undeclared
//! build tool of this crate: `cargo xtask setup` installs it), and declare the
//! `bpf_target_arch` cfg the programs are written against.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => {
            println!("cargo:warning=bpf-linker not found ({err}): run `cargo xtask setup`");
            println!("cargo:rerun-if-env-changed=PATH");
        }
    }
    if let Err(err) = aya_build::emit_bpf_target_arch_cfg() {
        println!("cargo:warning=cannot set bpf_target_arch: {err}");
    }
}
