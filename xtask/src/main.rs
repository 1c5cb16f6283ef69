//! `cargo xtask`: set up a machine, build, run, test, lint. Every command runs `setup` first,
//! which is idempotent and installs only what is missing.

mod bench;
mod kernels;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "ipcaudit's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what this machine lacks: nightly rust-src, bpf-linker (built against nightly's
    /// LLVM), a tracefs mount. Idempotent.
    Setup,
    /// Build ipcaudit (release).
    Build,
    /// Build, then run ipcaudit with ARGS (as root), e.g. `cargo xtask run -- watch`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Every test: unit, model and property tests, then the root integration tests on the real
    /// kernel. Under CI=true a missing capability is a failure, never a skip.
    Test {
        /// Only run tests whose name contains this (passed to the test harnesses).
        filter: Option<String>,
    },
    /// rustfmt --check, clippy (pedantic) on the workspace and on the eBPF crate.
    Lint,
    /// Run the fuzz targets (cargo fuzz, nightly; installed when missing), each for SECONDS.
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value_t = 30)]
        seconds: u32,
        /// Targets to run (default: all of them).
        targets: Vec<String>,
    },
    /// Build a release and lay out what a package needs in target/dist: the binary, the man
    /// page, bash/zsh/fish completions (generated from the clap definitions) and the systemd unit.
    Dist,
    /// The benchmark (root): hot IPC loops bare, under `watch`, `trace` and bpftrace; the
    /// collector's throughput, loss, memory and start-up; residue after exit. Reports, never
    /// gates; results in bench/results/.
    Bench(bench::Args),
    /// The root integration suites on a matrix of real kernels: Debian's cloud kernels (5.10,
    /// 6.1, 6.12, the newest) fetched with apt-get into target/kernels, booted under qemu (TCG)
    /// with an initramfs holding the test binaries; pass/fail per kernel.
    TestKernels(kernels::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match cli.command {
        Task::Setup => setup::run(),
        Task::Build => {
            setup::run()?;
            build_release()
        }
        Task::Run { args } => {
            setup::run()?;
            build_release()?;
            let bin = root.join("target/release/ipcaudit");
            let status = Command::new(&bin)
                .args(&args)
                .status()
                .with_context(|| format!("running {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Test { filter } => {
            setup::run()?;
            test(filter.as_deref())
        }
        Task::Lint => {
            setup::run()?;
            lint()
        }
        Task::Fuzz { seconds, targets } => {
            setup::run()?;
            fuzz(&root, seconds, &targets)
        }
        Task::Dist => {
            setup::run()?;
            build_release()?;
            dist(&root)
        }
        Task::Bench(args) => {
            setup::run()?;
            bench::bench(&root, &args)
        }
        Task::TestKernels(args) => {
            setup::run()?;
            kernels::test_kernels(&root, &args)
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

/// Runs a command, failing with its name when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", display(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", display(cmd));
    }
    Ok(())
}

fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn build_release() -> Result<()> {
    run(cargo().args(["build", "--release", "-p", "ipcaudit"]))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn test(filter: Option<&str>) -> Result<()> {
    let with_filter = |cmd: &mut Command| {
        if let Some(f) = filter {
            cmd.args(["--", f]);
        }
    };
    // Tier 1 and 2: unit, model and property tests (no root needed).
    let mut unit = cargo();
    unit.args(["test", "-p", "ipcaudit", "-p", "xtask"]);
    with_filter(&mut unit);
    run(&mut unit)?;

    // Tier 3: root integration tests against the real kernel.
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !is_root() {
        let msg =
            "root integration tests need root (eBPF, tracefs): run `sudo -E cargo xtask test`";
        if ci {
            bail!("CI=true and not root: {msg}");
        }
        eprintln!("xtask: SKIPPED {msg}");
        return Ok(());
    }
    build_release()?;
    let bin = std::env::current_dir()?.join("target/release/ipcaudit");
    let mut root_tests = cargo();
    root_tests
        .args(["test", "-p", "ipcaudit-tests"])
        .env("IPCAUDIT_BIN", &bin);
    let mut args = vec!["--test-threads=1".to_owned()];
    if let Some(f) = filter {
        args.push(f.to_owned());
    }
    root_tests.arg("--").args(&args);
    run(&mut root_tests)
}

fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The fuzz targets are a crate of their own (cargo fuzz builds them with nightly and
    // sanitizers); check them here so an API change cannot break them unseen.
    run(cargo().args([
        "clippy",
        "--manifest-path",
        "ipcaudit/fuzz/Cargo.toml",
        "--bins",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The kernel programs, for the BPF target they are built for.
    run(Command::new("rustup").args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "-p",
        "ipcaudit-ebpf",
        "--bins",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))
}

fn dist(root: &Path) -> Result<()> {
    let out = root.join("target/dist");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("bin"))?;
    let bin = root.join("target/release/ipcaudit");
    std::fs::copy(&bin, out.join("bin/ipcaudit"))
        .with_context(|| format!("copying {}", bin.display()))?;
    run(Command::new(&bin)
        .arg("generate")
        .arg("--out")
        .arg(out.join("share")))?;
    std::fs::copy(
        root.join("dist/ipcaudit.service"),
        out.join("ipcaudit.service"),
    )?;
    eprintln!("xtask: packaged into {}", out.display());
    Ok(())
}

/// The fuzz targets in ipcaudit/fuzz (their corpora are committed under fuzz/corpus).
const FUZZ_TARGETS: &[&str] = &[
    "decode",
    "replay_line",
    "sysvipc",
    "proc_pid",
    "reap_policy",
];

fn fuzz(root: &Path, seconds: u32, targets: &[String]) -> Result<()> {
    let has_cargo_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_cargo_fuzz {
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let targets: Vec<&str> = if targets.is_empty() {
        FUZZ_TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    for target in targets {
        if !FUZZ_TARGETS.contains(&target) {
            bail!(
                "unknown fuzz target {target:?}: one of {}",
                FUZZ_TARGETS.join(", ")
            );
        }
        run(Command::new("rustup")
            .current_dir(root.join("ipcaudit"))
            .args([
                "run",
                "nightly",
                "cargo",
                "fuzz",
                "run",
                target,
                "--",
                &format!("-max_total_time={seconds}"),
            ]))?;
    }
    Ok(())
}
