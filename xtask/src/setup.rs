//! Makes a fresh machine able to build and run ipcaudit. Idempotent: each step checks first.
//!
//! 1. the nightly toolchain (aya-build builds the kernel programs with it) and its `rust-src`
//!    component (`-Z build-std=core` for the BPF target);
//! 2. `bpf-linker` 0.13, built against nightly's own libLLVM: a permanent prefix directory holds
//!    `lib/libLLVM.so` and `lib/<the exact libLLVM.so.* name>` symlinked to the toolchain's file,
//!    and `LLVM_PREFIX=<dir> cargo install bpf-linker@0.13.0 --no-default-features
//!    --features llvm-<major>`; a linker that no longer runs (the toolchain's LLVM changed) is
//!    reinstalled;
//! 3. tracefs mounted at /sys/kernel/tracing (when root).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::run as run_cmd;

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    nightly_with_rust_src()?;
    bpf_linker()?;
    tracefs();
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nightly_with_rust_src() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).context(
        "rustup is required (it runs the nightly toolchain that builds the eBPF programs)",
    )?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))
        .context("installing the nightly toolchain")?;
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("adding rust-src to the nightly toolchain")?;
    }
    Ok(())
}

/// Nightly's sysroot lib directory and its libLLVM shared object.
fn nightly_llvm() -> Result<(PathBuf, u32)> {
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
            .context("rustc +nightly --print sysroot")?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let version =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"])).unwrap_or_default();
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .context("cannot read nightly's LLVM version from `rustc -vV`")?;
    Ok((llvm, major))
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"),
        PathBuf::from,
    )
}

/// Does an installed bpf-linker run, at the version we want?
fn bpf_linker_works() -> bool {
    output(Command::new("bpf-linker").arg("--version"))
        .or_else(|| output(Command::new(cargo_home().join("bin/bpf-linker")).arg("--version")))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
}

fn bpf_linker() -> Result<()> {
    if bpf_linker_works() {
        return Ok(());
    }
    let (llvm, major) = nightly_llvm()?;
    let prefix = cargo_home().join("ipcaudit-llvm-prefix");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let exact = llvm.file_name().context("libLLVM path has no file name")?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), exact] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link)
            .with_context(|| format!("symlinking {} -> {}", link.display(), llvm.display()))?;
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {} (about a minute)",
        llvm.display()
    );
    run_cmd(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ]),
    )?;
    if !bpf_linker_works() {
        bail!("bpf-linker was installed but does not run: check `bpf-linker --version`");
    }
    Ok(())
}

fn tracefs() {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return;
    }
    let status = Command::new("mount")
        .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
        .status();
    match status {
        Ok(s) if s.success() => eprintln!("xtask: mounted tracefs at /sys/kernel/tracing"),
        _ => eprintln!(
            "xtask: tracefs is not mounted and could not be mounted (not root?); ipcaudit mounts it itself when run as root"
        ),
    }
}
