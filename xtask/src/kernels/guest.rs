//! One run of the root test suites: inside a qemu guest (TCG) booted from a Debian kernel and
//! the initramfs, or on the host. Both run the same script, which brackets everything it does
//! with `@@kt` marker lines and runs the test binaries with libtest's JSON output; the results
//! stream back line by line (the guest's second serial port is a results-only channel, its
//! first one is the kernel console) and are parsed here.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// A test binary to run (`tests/tests/NAME.rs`).
#[derive(Clone, Debug)]
pub struct Suite {
    pub name: String,
    pub exe: PathBuf,
}

/// What the script runs.
pub struct Plan<'a> {
    pub suites: &'a [Suite],
    pub filters: &'a [String],
    /// `KEY=VALUE` exported for the tests (and the `ipcaudit` they start).
    pub env: &'a [String],
    pub ipcaudit: &'a Path,
    /// The tests' working directory (the `ipcaudit-tests` package, as under `cargo test`).
    pub workdir: &'a Path,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    Failed,
    Ignored,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestResult {
    pub suite: String,
    pub name: String,
    pub outcome: Outcome,
    pub secs: f64,
    /// The captured output of a failed test (its panic message).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Every test passed (ignored ones aside).
    Passed,
    /// At least one test failed, or a suite binary did not finish properly.
    Failed,
    /// Killed at the timeout.
    TimedOut,
    /// The guest (or the script) ended without reporting completion.
    Crashed,
}

/// What one run produced.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunOutcome {
    pub status: Option<Status>,
    /// Wall-clock seconds from starting qemu to the guest's init running.
    pub boot_secs: f64,
    /// Seconds from init to the end of the last suite.
    pub run_secs: f64,
    /// The kernel release the guest (or host) reported.
    pub uname: String,
    /// What `ipcaudit` said at start on this kernel (its `ready:` line and any warnings).
    pub ipcaudit: Vec<String>,
    pub tests: Vec<TestResult>,
    /// Why the run is not `passed` when no test says it: timeout, crash, a suite's exit code.
    pub notes: Vec<String>,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script run as the guest's `/init` (with `mounts`) or on the host (without).
pub fn script(plan: &Plan<'_>, busybox: Option<&Path>) -> String {
    let mut s = String::new();
    match busybox {
        Some(bb) => {
            let _ = writeln!(s, "#!{} sh", bb.display());
            // No tmpfs on /tmp: the checkout (binaries, schema, the tests' working directory)
            // is copied into the initramfs at its host path, which may be under /tmp; the
            // initramfs is already in memory.
            s.push_str(
                "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
                 m() { mkdir -p \"$3\"; mount -t \"$1\" \"$2\" \"$3\" || echo \"@@kt warn mount $1 on $3 failed\" >/dev/ttyS1; }\n\
                 m proc proc /proc\n\
                 m sysfs sysfs /sys\n\
                 m devtmpfs devtmpfs /dev\n\
                 m devpts devpts /dev/pts\n\
                 m tmpfs tmpfs /dev/shm\n\
                 mkdir -p /tmp; chmod 1777 /tmp\n\
                 m tmpfs tmpfs /run\n\
                 m tracefs tracefs /sys/kernel/tracing\n\
                 m debugfs debugfs /sys/kernel/debug\n\
                 m bpf bpf /sys/fs/bpf\n\
                 ip link set lo up\n\
                 tr -d - </proc/sys/kernel/random/uuid >/etc/machine-id\n\
                 hostname ipcaudit-guest\n\
                 exec >/dev/ttyS1 2>&1 </dev/null\n\
                 export HOME=/root TMPDIR=/tmp CI=true\n",
            );
        }
        None => s.push_str("set +e\n"),
    }
    s.push_str("up() { cut -d' ' -f1 /proc/uptime; }\n");
    s.push_str("echo \"@@kt boot $(uname -r) $(up)\"\n");
    let _ = writeln!(
        s,
        "export IPCAUDIT_BIN={}",
        quote(&plan.ipcaudit.to_string_lossy())
    );
    // libtest's JSON output is behind -Z unstable-options; the harness accepts it from a
    // stable build with RUSTC_BOOTSTRAP set.
    s.push_str("export RUSTC_BOOTSTRAP=1 RUST_BACKTRACE=0\n");
    for kv in plan.env {
        let _ = writeln!(s, "export {}", quote(kv));
    }
    let _ = writeln!(s, "cd {} || exit 1", quote(&plan.workdir.to_string_lossy()));
    // What ipcaudit itself says it uses on this kernel (or why it cannot run).
    s.push_str(
        "\"$IPCAUDIT_BIN\" trace --duration 1 --format json >/dev/null 2>/tmp/ipcaudit-start.txt\n\
         rc=$?\n\
         while IFS= read -r l; do echo \"@@kt ipcaudit $l\"; done </tmp/ipcaudit-start.txt\n\
         echo \"@@kt ipcaudit-exit $rc\"\n",
    );
    let mut filters = String::new();
    for f in plan.filters {
        let _ = write!(filters, " {}", quote(f));
    }
    for suite in plan.suites {
        let _ = writeln!(s, "echo \"@@kt suite {} begin $(up)\"", suite.name);
        let _ = writeln!(
            s,
            "{} --test-threads=1 -Z unstable-options --format json{filters}",
            quote(&suite.exe.to_string_lossy())
        );
        let _ = writeln!(s, "echo \"@@kt suite {} end $? $(up)\"", suite.name);
    }
    s.push_str("echo \"@@kt done $(up)\"\n");
    if busybox.is_some() {
        s.push_str("sync\npoweroff -f\n");
    }
    s
}

/// Parses the marker and libtest JSON lines as they arrive.
#[derive(Default)]
pub struct Parser {
    pub out: RunOutcome,
    suite: String,
    /// The test running now and when it started.
    current: Option<(String, Instant)>,
    boot_uptime: f64,
    pub done: bool,
    pub booted_at: Option<Instant>,
}

/// A parsed line worth showing while the run goes.
pub enum Progress {
    Booted(String),
    Test(TestResult),
    Note(String),
}

impl Parser {
    pub fn running(&self) -> Option<&str> {
        self.current.as_ref().map(|(n, _)| n.as_str())
    }

    pub fn line(&mut self, raw: &str) -> Option<Progress> {
        let line = raw.trim_end_matches(['\r', '\n']);
        if let Some(rest) = line.strip_prefix("@@kt ") {
            return self.marker(rest);
        }
        // libtest JSON, possibly after output a child process wrote without a newline.
        let json = line.find("{ \"type\": ").map(|i| &line[i..])?;
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        if v["type"] != "test" {
            return None;
        }
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        let outcome = match v["event"].as_str()? {
            "started" => {
                self.current = Some((name, Instant::now()));
                return None;
            }
            "ok" => Outcome::Ok,
            "failed" => Outcome::Failed,
            "ignored" => Outcome::Ignored,
            _ => return None,
        };
        let secs = match self.current.take() {
            Some((n, t)) if n == name => t.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        let result = TestResult {
            suite: self.suite.clone(),
            name,
            outcome,
            secs,
            output: v["stdout"].as_str().unwrap_or_default().to_owned(),
        };
        self.out.tests.push(result.clone());
        Some(Progress::Test(result))
    }

    fn marker(&mut self, rest: &str) -> Option<Progress> {
        let mut words = rest.split_whitespace();
        match words.next()? {
            "boot" => {
                words
                    .next()
                    .unwrap_or_default()
                    .clone_into(&mut self.out.uname);
                self.boot_uptime = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
                self.booted_at = Some(Instant::now());
                Some(Progress::Booted(self.out.uname.clone()))
            }
            "ipcaudit" => {
                let text = rest
                    .strip_prefix("ipcaudit")
                    .unwrap_or(rest)
                    .trim()
                    .to_owned();
                self.out.ipcaudit.push(text.clone());
                Some(Progress::Note(format!("ipcaudit: {text}")))
            }
            "ipcaudit-exit" => {
                let rc = words.next().unwrap_or("?");
                (rc != "0").then(|| {
                    let note = format!("`ipcaudit trace` exited with {rc} at start");
                    self.out.notes.push(note.clone());
                    Progress::Note(note)
                })
            }
            "warn" => {
                let note = rest.strip_prefix("warn").unwrap_or(rest).trim().to_owned();
                self.out.notes.push(note.clone());
                Some(Progress::Note(note))
            }
            "suite" => {
                let name = words.next().unwrap_or_default().to_owned();
                match words.next() {
                    Some("begin") => {
                        self.suite = name;
                        None
                    }
                    Some("end") => {
                        let rc = words.next().unwrap_or("?");
                        let failed_tests = self
                            .out
                            .tests
                            .iter()
                            .any(|t| t.suite == name && t.outcome == Outcome::Failed);
                        // A non-zero exit without a failed test: the harness itself died.
                        (rc != "0" && !failed_tests).then(|| {
                            let running = self
                                .current
                                .take()
                                .map(|(n, _)| format!(" while running {n}"))
                                .unwrap_or_default();
                            let note = format!("suite {name} exited with {rc}{running}");
                            self.out.notes.push(note.clone());
                            Progress::Note(note)
                        })
                    }
                    _ => None,
                }
            }
            "done" => {
                let up: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
                self.out.run_secs = (up - self.boot_uptime).max(0.0);
                self.done = true;
                None
            }
            _ => None,
        }
    }

    /// The final status once the stream has ended.
    pub fn finish(&mut self, timed_out: Option<Duration>, console_tail: &str) {
        let status = if let Some(after) = timed_out {
            let running = self
                .running()
                .map(|n| format!(" while running {}::{n}", self.suite))
                .unwrap_or_default();
            self.out
                .notes
                .push(format!("killed after {} s{running}", after.as_secs()));
            Status::TimedOut
        } else if !self.done {
            let at = self
                .running()
                .map(|n| format!(" while running {}::{n}", self.suite))
                .unwrap_or_default();
            self.out.notes.push(format!(
                "ended without finishing{at}; console tail:\n{console_tail}"
            ));
            Status::Crashed
        } else if self.out.tests.iter().any(|t| t.outcome == Outcome::Failed)
            || !self.out.notes.is_empty()
        {
            Status::Failed
        } else {
            Status::Passed
        };
        self.out.status = Some(status);
    }
}

/// Streams `child`'s stdout through `parser` until it ends or `timeout` passes (then the child
/// is killed). `show` gets every progress item.
pub fn stream(
    mut child: Child,
    parser: &mut Parser,
    log: &Path,
    timeout: Duration,
    started: Instant,
    mut show: impl FnMut(&Progress),
) -> Result<Option<Duration>> {
    let stdout = child.stdout.take().context("child stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let mut log = std::io::BufWriter::new(
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?,
    );
    let deadline = started + timeout;
    let mut timed_out = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(line) => {
                use std::io::Write as _;
                // Flushed per line: the log is readable while the run goes.
                let _ = log.write_all(line.as_bytes()).and_then(|()| log.flush());
                if let Some(p) = parser.line(&line) {
                    show(&p);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline {
                    timed_out = Some(timeout);
                    // Our own child, by its handle.
                    let _ = child.kill();
                    break;
                }
            }
        }
    }
    let _ = child.wait();
    Ok(timed_out)
}

/// The qemu command for one guest.
pub fn qemu(vmlinuz: &Path, initramfs: &Path, console_log: &Path, append: &str) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    // Always TCG: /dev/kvm on these machines is a paravirtual backend stock kernels die on.
    cmd.args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024"])
        .args([
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
            "-monitor",
            "none",
        ])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 oops=panic quiet loglevel=4 random.trust_cpu=on {append}"
        ))
        // ttyS0: the kernel console, to a file; ttyS1: the results, to our stdin.
        .arg("-serial")
        .arg(format!("file:{}", console_log.display()))
        .args(["-serial", "stdio"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// The last `n` lines of a file (for a crashed guest's console).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.trim_end_matches('\r'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(p: &mut Parser, text: &str) {
        for l in text.lines() {
            p.line(l);
        }
    }

    #[test]
    fn parses_markers_and_libtest_json() {
        let mut p = Parser::default();
        feed(
            &mut p,
            "junk from the kernel\r\n\
             @@kt boot 5.10.0-32-cloud-amd64 2.50\r\n\
             @@kt ipcaudit ipcaudit: ready: tracing SysV IPC\r\n\
             @@kt ipcaudit-exit 0\r\n\
             @@kt suite trace begin 3.0\r\n\
             { \"type\": \"suite\", \"event\": \"started\", \"test_count\": 3 }\r\n\
             { \"type\": \"test\", \"event\": \"started\", \"name\": \"a\" }\r\n\
             child output without newline{ \"type\": \"test\", \"name\": \"a\", \"event\": \"ok\" }\r\n\
             { \"type\": \"test\", \"event\": \"started\", \"name\": \"b\" }\r\n\
             { \"type\": \"test\", \"name\": \"b\", \"event\": \"failed\", \"stdout\": \"assertion failed\\n\" }\r\n\
             { \"type\": \"test\", \"name\": \"c\", \"event\": \"ignored\" }\r\n\
             @@kt suite trace end 101 9.0\r\n\
             @@kt done 12.5\r\n",
        );
        p.finish(None, "");
        let out = &p.out;
        assert_eq!(out.uname, "5.10.0-32-cloud-amd64");
        assert_eq!(out.ipcaudit, ["ipcaudit: ready: tracing SysV IPC"]);
        assert!((out.run_secs - 10.0).abs() < 1e-9);
        let outcomes: Vec<_> = out
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("a", Outcome::Ok),
                ("b", Outcome::Failed),
                ("c", Outcome::Ignored)
            ]
        );
        assert_eq!(out.tests[1].output, "assertion failed\n");
        assert_eq!(out.tests[1].suite, "trace");
        // A failing test explains the suite's exit code: no extra note.
        assert!(out.notes.is_empty(), "{:?}", out.notes);
        assert_eq!(out.status, Some(Status::Failed));
    }

    #[test]
    fn a_run_that_stops_early_is_a_crash_naming_the_test() {
        let mut p = Parser::default();
        feed(
            &mut p,
            "@@kt boot 6.1.0 1.0\n@@kt suite watch begin 2\n\
             { \"type\": \"test\", \"event\": \"started\", \"name\": \"x\" }\n",
        );
        p.finish(None, "Kernel panic");
        assert_eq!(p.out.status, Some(Status::Crashed));
        assert!(p.out.notes[0].contains("watch::x"), "{:?}", p.out.notes);
        assert!(p.out.notes[0].contains("Kernel panic"));

        let mut p = Parser::default();
        feed(
            &mut p,
            "@@kt boot 6.1.0 1.0\n@@kt suite watch begin 2\n@@kt suite watch end 101 3\n@@kt done 4\n",
        );
        p.finish(None, "");
        assert_eq!(p.out.status, Some(Status::Failed));
        assert_eq!(p.out.notes, ["suite watch exited with 101"]);

        let mut p = Parser::default();
        feed(&mut p, "@@kt boot 6.1.0 1.0\n@@kt done 4\n");
        p.finish(Some(Duration::from_secs(5)), "");
        assert_eq!(p.out.status, Some(Status::TimedOut));
    }

    #[test]
    fn the_script_runs_each_suite_with_json_output() {
        let suites = [Suite {
            name: "trace".into(),
            exe: "/w/target/debug/deps/trace-abc".into(),
        }];
        let filters = ["shm it's".to_owned()];
        let env = ["IPCAUDIT_ATTACH=tracepoints".to_owned()];
        let plan = Plan {
            suites: &suites,
            filters: &filters,
            env: &env,
            ipcaudit: Path::new("/w/target/release/ipcaudit"),
            workdir: Path::new("/w/tests"),
        };
        let guest = script(&plan, Some(Path::new("/usr/bin/busybox")));
        assert!(guest.starts_with("#!/usr/bin/busybox sh\n"));
        assert!(guest.contains("m tracefs tracefs /sys/kernel/tracing"));
        assert!(guest.contains(
            "'/w/target/debug/deps/trace-abc' --test-threads=1 -Z unstable-options --format json 'shm it'\\''s'"
        ));
        assert!(guest.ends_with("poweroff -f\n"));
        assert!(guest.contains("export 'IPCAUDIT_ATTACH=tracepoints'\n"));
        let host = script(&plan, None);
        assert!(!host.contains("mount"));
        assert!(!host.contains("poweroff"));
    }
}
