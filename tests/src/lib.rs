//! Helpers for the root integration tests: run `ipcaudit` for real around a workload and read
//! back what it wrote.
#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers fail the test by panicking"
)]

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

/// True when the test can run (root). Under `CI=true` a missing capability is a failure with a
/// clear message, never a silent skip; elsewhere the skip is printed.
pub fn require_root() -> bool {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let msg = "this test needs root (it loads eBPF programs): run `sudo -E cargo xtask test`";
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "CI=true: {msg}"
    );
    eprintln!("SKIPPED: {msg}");
    false
}

/// The ipcaudit binary under test (`cargo xtask test` sets `IPCAUDIT_BIN`).
pub fn ipcaudit_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("IPCAUDIT_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("ipcaudit");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "ipcaudit binary not found: build it (`cargo build --release -p ipcaudit`) or set `IPCAUDIT_BIN`"
    )
}

/// A running `ipcaudit` streaming NDJSON to stdout.
pub struct Ipcaudit {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Starts `ipcaudit ARGS --format json` and waits until it says it is attached.
pub fn start(args: &[&str]) -> Ipcaudit {
    let mut child = Command::new(ipcaudit_bin())
        .args(args)
        .args(["--format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ipcaudit");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let err = child.stderr.take().expect("stderr");
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("ready:") {
                let _ = ready_tx.send(());
            }
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        let mut rest = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut rest));
        panic!(
            "ipcaudit did not become ready in 30 s; stderr:\n{}",
            stderr.lock().unwrap()
        );
    }
    Ipcaudit {
        child,
        stdout: rx,
        stderr,
    }
}

impl Ipcaudit {
    /// SIGINT, then every record it wrote (it drains and writes a final metric record).
    pub fn stop(mut self) -> Vec<Value> {
        // Records are read on a short timer: give the last ones time to arrive.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(i32::try_from(self.child.id()).expect("pid"), libc::SIGINT) };
        let status = self.child.wait().expect("wait ipcaudit");
        let lines: Vec<String> = self.stdout.try_iter().collect();
        assert!(
            status.success(),
            "ipcaudit exited with {status}; stderr:\n{}",
            self.stderr.lock().unwrap()
        );
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// Runs the workload scenario and returns what it printed (one JSON object).
pub fn workload(bin: &str, scenario: &str) -> Value {
    let out = Command::new(bin)
        .arg(scenario)
        .output()
        .expect("run ipc-workload");
    assert!(
        out.status.success(),
        "ipc-workload {scenario} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).expect("workload JSON")
}

/// The records of one process (by `process.pid`, or `process.parent.pid` for its forks).
pub fn of_pid(records: &[Value], pid: u64) -> Vec<Value> {
    records
        .iter()
        .filter(|r| {
            r["process"]["pid"].as_u64() == Some(pid)
                || r["process"]["parent"]["pid"].as_u64() == Some(pid)
        })
        .cloned()
        .collect()
}

/// The `event.action` values in order.
pub fn actions(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r["event"]["action"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `f` holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
