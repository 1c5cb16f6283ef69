//! `cargo xtask test-kernels`: the root integration suites on a matrix of real kernels.
//!
//! 1. Debian's cloud kernels are fetched through a private apt configuration ([`apt`]);
//! 2. the release `ipcaudit`, the `ipc-workload` and the suite binaries are built as for
//!    `cargo xtask test`, and packed with their shared libraries, busybox and the few host tools
//!    the tests call into one initramfs ([`initramfs`]) whose `/init` mounts proc, sys, devtmpfs,
//!    tracefs, debugfs and bpffs and runs the suites;
//! 3. each kernel boots under `qemu-system-x86_64 -accel tcg` with that initramfs; results
//!    stream back over a serial port and are reported per kernel ([`guest`]); a guest that
//!    hangs is killed at the timeout.
//!
//! Results go to `target/kernels/results.json` (the last result of each kernel series);
//! `--update-readme` renders them as README.md's "Supported kernels" table.

mod apt;
mod guest;
mod initramfs;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use guest::{Outcome, Plan, Progress, RunOutcome, Status, Suite};

#[derive(clap::Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "command-line switches, each independent"
)]
pub struct Args {
    /// A kernel series to boot (`5.10`, `6.1`, `6.12`, `7.2`) or a release prefix
    /// (`6.1.0-50`), or `host` for this machine's kernel alone (as `--host`); repeatable.
    /// Default: every series the Debian suites carry.
    #[arg(long = "kernel", value_name = "VERSION")]
    kernels: Vec<String>,
    /// Only tests whose name contains TEST (repeatable; libtest's filter).
    #[arg(long = "filter", value_name = "TEST")]
    filters: Vec<String>,
    /// Only this suite (`tests/tests/NAME.rs`; repeatable). Default: every suite.
    #[arg(long = "suite", value_name = "NAME")]
    suites: Vec<String>,
    /// Seconds before a guest is killed and reported as hung.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// An environment variable for the tests and ipcaudit in the guest (repeatable), e.g.
    /// `IPCAUDIT_ATTACH=tracepoints` to test the tracepoint path where fexit works. A run
    /// with variables is a column of its own.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Extra kernel command line, e.g. `lsm=lockdown,capability,yama,apparmor,bpf`.
    #[arg(long, default_value = "")]
    append: String,
    /// Also run the same suites on this machine's kernel (needs root; under the root-tests lock).
    #[arg(long)]
    host: bool,
    /// Refresh the package lists even when they are less than a day old.
    #[arg(long)]
    refresh: bool,
    /// Rewrite README.md's "Supported kernels" table from the results (after this run).
    #[arg(long)]
    update_readme: bool,
    /// Only resolve and fetch the kernels, and print them.
    #[arg(long)]
    list: bool,
    /// Guests to run at once (each uses two emulated CPUs).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
}

/// The tests call these; the host's own binaries are shipped (busybox covers the rest).
const HOST_TOOLS: &[&str] = &[
    "true", "sleep", "ipcs", "ipcrm", "lsipc", "unshare", "setpriv", "mount", "umount",
];

/// What one kernel's run gave (a row of the table).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KernelRun {
    pub series: String,
    pub release: String,
    /// `package=version (suite)`, or `host` for this machine's kernel.
    pub source: String,
    pub suites: Vec<String>,
    pub filters: Vec<String>,
    /// `KEY=VALUE` set for the run (`--env`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Seconds since the epoch when the run ended.
    pub when: u64,
    #[serde(flatten)]
    pub outcome: RunOutcome,
}

impl KernelRun {
    /// The column: the kernel series, and the variables the run had.
    fn key(&self) -> String {
        std::iter::once(self.series.as_str())
            .chain(self.env.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn count(&self, outcome: Outcome) -> usize {
        self.outcome
            .tests
            .iter()
            .filter(|t| t.outcome == outcome)
            .count()
    }

    fn status(&self) -> Status {
        self.outcome.status.unwrap_or(Status::Crashed)
    }
}

pub fn test_kernels(root: &Path, args: &Args) -> Result<()> {
    let dir = root.join("target/kernels");
    std::fs::create_dir_all(&dir)?;
    let kernels = resolve_kernels(&dir, args)?;
    if args.list {
        for k in &kernels {
            println!(
                "{:6} {:32} {}={} ({}) {}",
                k.series,
                k.release,
                k.package,
                k.version,
                k.suite,
                k.vmlinuz.display()
            );
        }
        return Ok(());
    }
    ensure_tools()?;
    for kv in &args.env {
        if !kv.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty() && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        }) {
            bail!("--env {kv:?}: expected KEY=VALUE");
        }
    }
    let art = build_artifacts(root, &args.suites)?;
    let plan = Plan {
        suites: &art.suites,
        filters: &args.filters,
        env: &args.env,
        ipcaudit: &art.ipcaudit,
        workdir: &art.workdir,
    };
    let cpio = dir.join("initramfs.cpio");
    let size = build_initramfs(root, &dir, &art, &plan, &cpio)?;
    eprintln!(
        "xtask: initramfs {} ({} MiB): suites {}",
        cpio.display(),
        size >> 20,
        art.suites
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let suite_names: Vec<String> = art.suites.iter().map(|s| s.name.clone()).collect();
    let mut runs = Vec::new();
    if args.host || args.kernels.iter().any(|k| k == "host") {
        runs.push(run_host(&dir, args, &plan, &suite_names)?);
    }
    runs.extend(run_guests(&dir, args, &kernels, &cpio, &suite_names)?);

    // Keep the last result of every series (a subset run does not erase the others).
    let results_path = dir.join("results.json");
    let mut all: BTreeMap<String, KernelRun> = std::fs::read_to_string(&results_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    for run in &runs {
        all.insert(run.key(), run.clone());
    }
    std::fs::write(&results_path, serde_json::to_string_pretty(&all)?)?;

    println!("\n{}", summary(&runs));
    for run in &runs {
        for t in run
            .outcome
            .tests
            .iter()
            .filter(|t| t.outcome == Outcome::Failed)
        {
            println!(
                "---- {} {}::{} ----\n{}",
                run.series,
                t.suite,
                t.name,
                t.output.trim_end()
            );
        }
        for note in &run.outcome.notes {
            println!("---- {} ----\n{note}", run.series);
        }
    }
    if args.update_readme {
        let readme = root.join("README.md");
        let text = std::fs::read_to_string(&readme)?;
        std::fs::write(&readme, update_readme(&text, &all)?)?;
        eprintln!(
            "xtask: README.md \"Supported kernels\" table rewritten from {}",
            results_path.display()
        );
    }
    let bad: Vec<String> = runs
        .iter()
        .filter(|r| r.status() != Status::Passed)
        .map(KernelRun::key)
        .collect();
    if !bad.is_empty() {
        bail!("kernel matrix: not passed on {}", bad.join(", "));
    }
    Ok(())
}

fn resolve_kernels(dir: &Path, args: &Args) -> Result<Vec<apt::Kernel>> {
    let guests: Vec<&String> = args.kernels.iter().filter(|k| *k != "host").collect();
    if guests.is_empty() && !args.kernels.is_empty() {
        // `--kernel host` only: no guest.
        return Ok(Vec::new());
    }
    let apt = apt::Apt::new(dir);
    apt.update(args.refresh)?;
    let candidates = apt.candidates()?;
    let mut wanted: Vec<(String, Vec<apt::Candidate>)> = Vec::new();
    if args.kernels.is_empty() {
        wanted.extend(candidates);
    } else {
        for &want in &guests {
            let matching: Vec<apt::Candidate> =
                candidates.get(want).cloned().unwrap_or_else(|| {
                    candidates
                        .values()
                        .flatten()
                        .filter(|c| c.release.starts_with(want.as_str()))
                        .cloned()
                        .collect()
                });
            if matching.is_empty() {
                bail!(
                    "no cloud kernel package matches {want:?}: the series are {}",
                    candidates.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            wanted.push((want.clone(), matching));
        }
    }
    // Oldest series first (numerically: 5.10 before 6.1 before 6.12).
    let key =
        |s: &str| -> Vec<u32> { s.split(['.', '-']).filter_map(|p| p.parse().ok()).collect() };
    wanted.sort_by_key(|(s, _)| key(s));
    wanted.iter().map(|(_, list)| apt.fetch(list)).collect()
}

/// qemu and busybox, installed with the host's apt when missing (cpio is written here).
fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
    ]
    .into_iter()
    .filter(|(bin, _)| which(bin).is_none())
    .map(|(_, pkg)| pkg)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "missing {}: run `sudo apt-get install --no-install-recommends {}`",
            missing.join(", "),
            missing.join(" ")
        );
    }
    crate::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
    .context("installing the kernel matrix tools")
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

struct Artifacts {
    ipcaudit: PathBuf,
    workload: PathBuf,
    suites: Vec<Suite>,
    workdir: PathBuf,
}

/// Suites the guests cannot run, and why (they run in `cargo xtask test` on this machine).
const HOST_ONLY_SUITES: &[(&str, &str)] = &[(
    "explain",
    "builds a C program with gcc and renders the HTML report in headless Chromium, which the \
     guests' initramfs does not carry",
)];

/// The release ipcaudit (as `cargo xtask test` uses) and the test binaries, from cargo's own
/// list of what it built.
fn build_artifacts(root: &Path, only: &[String]) -> Result<Artifacts> {
    crate::build_release()?;
    let mut cmd = crate::cargo();
    cmd.args([
        "test",
        "-p",
        "ipcaudit-tests",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ])
    .stdout(Stdio::piped());
    eprintln!("xtask: cargo test -p ipcaudit-tests --no-run");
    let out = cmd.output().context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut suites = Vec::new();
    let mut workload = None;
    let mut workdir = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let kinds = &v["target"]["kind"];
        let name = v["target"]["name"].as_str().unwrap_or_default();
        if kinds
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"))
        {
            suites.push(Suite {
                name: name.to_owned(),
                exe: exe.into(),
            });
            workdir = v["manifest_path"]
                .as_str()
                .and_then(|m| Path::new(m).parent())
                .map(Path::to_path_buf);
        } else if name == "ipc-workload" && v["profile"]["test"] == false {
            // The binary itself, not its unit-test harness (also a `bin` artifact).
            workload = Some(PathBuf::from(exe));
        }
    }
    suites.sort_by(|a, b| a.name.cmp(&b.name));
    for (name, why) in HOST_ONLY_SUITES {
        if only.iter().any(|w| w == name) {
            bail!("the {name} suite runs on this machine only: it {why}");
        }
        if suites.iter().any(|s| &s.name == name) {
            eprintln!("xtask: the {name} suite is left out of the guests: it {why}");
        }
    }
    suites.retain(|s| !HOST_ONLY_SUITES.iter().any(|(name, _)| *name == s.name));
    if !only.is_empty() {
        for want in only {
            if !suites.iter().any(|s| &s.name == want) {
                bail!(
                    "no suite {want:?}: the suites are {}",
                    suites
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        suites.retain(|s| only.contains(&s.name));
    }
    Ok(Artifacts {
        ipcaudit: root.join("target/release/ipcaudit"),
        workload: workload.context("cargo built no ipc-workload binary")?,
        suites,
        workdir: workdir.context("cargo built no test binary")?,
    })
}

fn build_initramfs(
    root: &Path,
    dir: &Path,
    art: &Artifacts,
    plan: &Plan<'_>,
    out: &Path,
) -> Result<u64> {
    let mut tree = initramfs::Tree::new(Some(dir.join("strip")));
    tree.host_layout();
    let busybox_host = which("busybox").context("busybox not found")?;
    let busybox = tree.executable(&busybox_host)?;
    for tool in HOST_TOOLS {
        if let Some(path) = which(tool) {
            tree.executable(&path)?;
        }
    }
    tree.executable(&art.ipcaudit)?;
    // The call-site tests symbolize the workload's frames down to file:line (a few MiB).
    tree.keep_debug(&art.workload);
    tree.executable(&art.workload)?;
    for suite in &art.suites {
        tree.executable(&suite.exe)?;
    }
    // The record schema every root test validates against (read at run time).
    for entry in std::fs::read_dir(root.join("schema"))? {
        tree.host_file(&entry?.path())?;
    }
    tree.dir(&art.workdir);
    let list = Command::new(&busybox_host)
        .arg("--list-full")
        .output()
        .context("busybox --list-full")?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let path = Path::new("/").join(applet);
        if !tree.exists(&path) {
            tree.symlink(&path, &busybox);
        }
    }
    for d in ["proc", "sys", "dev", "tmp", "run", "root", "etc"] {
        tree.dir(Path::new(d));
    }
    tree.char_dev(Path::new("/dev/console"), 5, 1, 0o600);
    tree.bytes(
        Path::new("/etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        0o644,
    );
    tree.bytes(
        Path::new("/etc/group"),
        "root:x:0:\nnogroup:x:65534:\n",
        0o644,
    );
    tree.bytes(
        Path::new("/init"),
        guest::script(plan, Some(&busybox)),
        0o755,
    );
    tree.write_cpio(out)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn show(series: &str) -> impl FnMut(&Progress) {
    let series = series.to_owned();
    move |p| match p {
        Progress::Booted(uname) => eprintln!("[{series}] booted {uname}"),
        Progress::Test(t) => {
            let what = match t.outcome {
                Outcome::Ok => "ok",
                Outcome::Failed => "FAILED",
                Outcome::Ignored => "ignored",
            };
            eprintln!(
                "[{series}] {}::{} ... {what} ({:.1} s)",
                t.suite, t.name, t.secs
            );
        }
        Progress::Note(n) => eprintln!("[{series}] {n}"),
    }
}

fn run_guests(
    dir: &Path,
    args: &Args,
    kernels: &[apt::Kernel],
    cpio: &Path,
    suites: &[String],
) -> Result<Vec<KernelRun>> {
    let jobs = args.jobs.max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(kernels.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(k) = kernels.get(i) else { break };
                    let run = run_guest(dir, args, k, cpio, suites);
                    results.lock().expect("results lock").push((i, run));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

fn run_guest(
    dir: &Path,
    args: &Args,
    k: &apt::Kernel,
    cpio: &Path,
    suites: &[String],
) -> Result<KernelRun> {
    let logs = dir.join("runs").join(&k.release);
    std::fs::create_dir_all(&logs)?;
    let console = logs.join("console.log");
    let mut cmd = guest::qemu(&k.vmlinuz, cpio, &console, &args.append);
    eprintln!(
        "[{}] booting {} ({}={})",
        k.series, k.release, k.package, k.version
    );
    let started = Instant::now();
    let child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let (mut parser, timed_out) = follow(child, &logs, args, started, &k.series)?;
    parser.out.boot_secs = parser
        .booted_at
        .map_or(0.0, |t| t.duration_since(started).as_secs_f64());
    parser.finish(timed_out, &guest::tail(&console, 30));
    Ok(KernelRun {
        series: k.series.clone(),
        release: k.release.clone(),
        source: format!("{}={} ({})", k.package, k.version, k.suite),
        suites: suites.to_vec(),
        filters: args.filters.clone(),
        env: args.env.clone(),
        when: now_secs(),
        outcome: parser.out,
    })
}

/// Reads a started run's results (also into `logs/results.log`) until it ends or times out;
/// after how long it was killed, if it timed out.
fn follow(
    child: std::process::Child,
    logs: &Path,
    args: &Args,
    started: Instant,
    series: &str,
) -> Result<(guest::Parser, Option<Duration>)> {
    let mut parser = guest::Parser::default();
    let timed_out = guest::stream(
        child,
        &mut parser,
        &logs.join("results.log"),
        Duration::from_secs(args.timeout),
        started,
        show(series),
    )?;
    Ok((parser, timed_out))
}

/// The same script on this machine's kernel, under the root-tests lock.
fn run_host(dir: &Path, args: &Args, plan: &Plan<'_>, suites: &[String]) -> Result<KernelRun> {
    if !crate::is_root() {
        bail!("--host runs the root tests on this machine: it needs root");
    }
    let logs = dir.join("runs/host");
    std::fs::create_dir_all(&logs)?;
    let mut cmd = Command::new("flock");
    cmd.arg("/tmp/ipcaudit-root-tests.lock")
        .args(["sh", "-c", &guest::script(plan, None)])
        .env("CI", std::env::var("CI").unwrap_or_else(|_| "true".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let started = Instant::now();
    let child = cmd.spawn().context("starting the host run")?;
    let (mut parser, timed_out) = follow(child, &logs, args, started, "host")?;
    parser.finish(timed_out, "");
    let release = parser.out.uname.clone();
    Ok(KernelRun {
        series: "host".into(),
        release,
        source: "this machine (`cargo xtask test`)".into(),
        suites: suites.to_vec(),
        filters: args.filters.clone(),
        env: args.env.clone(),
        when: now_secs(),
        outcome: parser.out,
    })
}

fn status_word(run: &KernelRun) -> &'static str {
    match run.status() {
        Status::Passed => "passed",
        Status::Failed => "FAILED",
        Status::TimedOut => "TIMED OUT",
        Status::Crashed => "CRASHED",
    }
}

/// What ipcaudit says it uses on a kernel: its `programs:` line, or why it could not start.
fn features(run: &KernelRun) -> String {
    let lines = &run.outcome.ipcaudit;
    let programs: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once("programs: ").map(|(_, rest)| rest))
        .collect();
    if !programs.is_empty() {
        return programs.join("; ");
    }
    lines
        .iter()
        .find(|l| l.contains("error") || l.contains("not supported"))
        .or_else(|| lines.last())
        .cloned()
        .unwrap_or_default()
}

fn summary(runs: &[KernelRun]) -> String {
    let mut s = String::from("kernel matrix:\n");
    let _ = writeln!(
        s,
        "  {:6} {:30} {:10} {:>6} {:>6} {:>7} {:>7} {:>8}",
        "series", "kernel", "result", "passed", "failed", "ignored", "boot s", "run s"
    );
    for r in runs {
        let _ = writeln!(
            s,
            "  {:6} {:30} {:10} {:>6} {:>6} {:>7} {:>7.1} {:>8.1}",
            r.key(),
            r.release,
            status_word(r),
            r.count(Outcome::Ok),
            r.count(Outcome::Failed),
            r.count(Outcome::Ignored),
            r.outcome.boot_secs,
            r.outcome.run_secs
        );
        let f = features(r);
        if !f.is_empty() {
            let _ = writeln!(s, "         ipcaudit: {f}");
        }
    }
    s
}

const README_BEGIN: &str =
    "<!-- kernels:begin: generated by `cargo xtask test-kernels --update-readme`, do not edit -->";
const README_END: &str = "<!-- kernels:end -->";

fn table(all: &BTreeMap<String, KernelRun>) -> String {
    let mut runs: Vec<&KernelRun> = all.values().collect();
    let key = |s: &str| -> (bool, Vec<u32>) {
        (
            s == "host",
            s.split(['.', '-']).filter_map(|p| p.parse().ok()).collect(),
        )
    };
    runs.sort_by_key(|r| (key(&r.series), r.env.clone()));
    let mut s = String::new();
    s.push_str("| kernel | package | suites | result | passed | failed | ignored | boot | run | features used |\n");
    s.push_str("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for r in runs {
        let failed: Vec<String> = r
            .outcome
            .tests
            .iter()
            .filter(|t| t.outcome == Outcome::Failed)
            .map(|t| format!("{}::{}", t.suite, t.name))
            .chain(
                r.outcome
                    .notes
                    .iter()
                    .map(|n| n.lines().next().unwrap_or_default().to_owned()),
            )
            .collect();
        let result = if failed.is_empty() {
            status_word(r).to_owned()
        } else {
            format!("{} ({})", status_word(r), failed.join(", "))
        };
        let mut suites = r.suites.join(", ");
        if !r.filters.is_empty() {
            let _ = write!(suites, " (filter {})", r.filters.join(", "));
        }
        let mut kernel = r.release.clone();
        for kv in &r.env {
            let _ = write!(kernel, " `{kv}`");
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} s | {:.0} s | {} |",
            kernel,
            r.source,
            suites,
            result,
            r.count(Outcome::Ok),
            r.count(Outcome::Failed),
            r.count(Outcome::Ignored),
            r.outcome.boot_secs,
            r.outcome.run_secs,
            features(r).replace('|', "\\|")
        );
    }
    s
}

fn update_readme(text: &str, all: &BTreeMap<String, KernelRun>) -> Result<String> {
    let (Some(begin), Some(end)) = (text.find(README_BEGIN), text.find(README_END)) else {
        bail!("README.md has no {README_BEGIN} … {README_END} section");
    };
    if end < begin {
        bail!("README.md: {README_END} comes before {README_BEGIN}");
    }
    Ok(format!(
        "{}{README_BEGIN}\n{}{}",
        &text[..begin],
        table(all),
        &text[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest::TestResult;

    fn run(series: &str, outcomes: &[Outcome], notes: &[&str], status: Status) -> KernelRun {
        KernelRun {
            series: series.into(),
            release: format!("{series}.0-1-cloud-amd64"),
            source: "linux-image-x=1 (sid)".into(),
            suites: vec!["trace".into(), "watch".into()],
            filters: vec![],
            env: vec![],
            when: 0,
            outcome: RunOutcome {
                status: Some(status),
                boot_secs: 4.25,
                run_secs: 100.4,
                uname: String::new(),
                ipcaudit: vec![
                    "ipcaudit: programs: syscalls on sys_exit tracepoints | fork on tp_btf".into(),
                ],
                tests: outcomes
                    .iter()
                    .enumerate()
                    .map(|(i, &outcome)| TestResult {
                        suite: "trace".into(),
                        name: format!("t{i}"),
                        outcome,
                        secs: 1.0,
                        output: String::new(),
                    })
                    .collect(),
                notes: notes.iter().map(|&n| n.to_owned()).collect(),
            },
        }
    }

    #[test]
    fn readme_table_is_replaced_between_the_markers() {
        let mut all = BTreeMap::new();
        all.insert(
            "6.1".into(),
            run("6.1", &[Outcome::Ok, Outcome::Ok], &[], Status::Passed),
        );
        all.insert(
            "5.10".into(),
            run("5.10", &[Outcome::Ok, Outcome::Failed], &[], Status::Failed),
        );
        all.insert(
            "host".into(),
            run("host", &[], &["killed after 5 s\nmore"], Status::TimedOut),
        );
        let text = format!("# x\n\n{README_BEGIN}\nold table\n{README_END}\n\nrest\n");
        let new = update_readme(&text, &all).unwrap();
        assert!(!new.contains("old table"));
        assert!(new.ends_with(&format!("{README_END}\n\nrest\n")));
        let rows: Vec<&str> = new
            .lines()
            .filter(|l| l.starts_with("| ") && l.contains("cloud"))
            .collect();
        assert_eq!(rows.len(), 3);
        // 5.10 before 6.1, the host last.
        assert!(rows[0].starts_with("| 5.10.0"), "{rows:?}");
        assert!(rows[0].contains("FAILED (trace::t1)"));
        assert!(
            rows[1].contains("| passed | 2 | 0 | 0 | 4.2 s | 100 s |"),
            "{}",
            rows[1]
        );
        assert!(rows[1].contains("syscalls on sys_exit tracepoints \\| fork on tp_btf"));
        assert!(rows[2].contains("TIMED OUT (killed after 5 s)"));
        assert!(update_readme("no markers", &all).is_err());
    }
}
