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

/// The record schema (`schema/ipcaudit-event.schema.json`), compiled once.
fn schema() -> &'static jsonschema::Validator {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schema/ipcaudit-event.schema.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
        jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("invalid schema: {e}"))
    })
}

/// Fails the test when a record does not match the schema, naming why.
pub fn assert_schema(record: &Value) {
    let errors: Vec<String> = schema()
        .iter_errors(record)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "record does not match the schema: {errors:?}\n{record}"
    );
}

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

/// Starts `ipcaudit ARGS --format json` (unless ARGS name a format) and waits until it says
/// it is attached.
pub fn start(args: &[&str]) -> Ipcaudit {
    let format: &[&str] = if args.contains(&"--format") {
        &[]
    } else {
        &["--format", "json"]
    };
    let mut child = Command::new(ipcaudit_bin())
        .args(args)
        .args(format)
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
    /// What it wrote on stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The tracer's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the tracer.
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(i32::try_from(self.child.id()).expect("pid"), sig) };
    }

    /// Every line it wrote that was not read yet, up to the end of its output (once it has
    /// exited, the reader thread may still be passing the last ones on; 10 s at most).
    fn rest(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stdout.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }

    /// Waits (up to `timeout`) for the tracer to exit by itself; its records.
    pub fn wait_exit(mut self, timeout: Duration) -> Vec<Value> {
        assert!(
            eventually(timeout, || self.child.try_wait().ok().flatten().is_some()),
            "ipcaudit did not exit by itself"
        );
        let lines = self.rest();
        lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// SIGINT, then every record it wrote (it drains and writes a final metric record).
    pub fn stop(mut self) -> Vec<Value> {
        // Records are read on a short timer: give the last ones time to arrive.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(i32::try_from(self.child.id()).expect("pid"), libc::SIGINT) };
        let status = self.child.wait().expect("wait ipcaudit");
        let lines = self.rest();
        assert!(
            status.success(),
            "ipcaudit exited with {status}; stderr:\n{}",
            self.stderr.lock().unwrap()
        );
        let records: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        // The schema is a contract: every record any root test sees must match it.
        records.iter().for_each(assert_schema);
        records
    }
}

impl Drop for Ipcaudit {
    /// A test that fails half-way must not leave a tracer running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// The event records of one process (by `process.pid`, or `process.parent.pid` for its forks),
/// without the annotations about it ([`is_annotation`]).
pub fn of_pid(records: &[Value], pid: u64) -> Vec<Value> {
    all_of_pid(records, pid)
        .into_iter()
        .filter(|r| !is_annotation(r))
        .collect()
}

/// Like [`of_pid`], with the `call-site` and `process-context` records about the process too.
pub fn all_of_pid(records: &[Value], pid: u64) -> Vec<Value> {
    records
        .iter()
        .filter(|r| {
            r["process"]["pid"].as_u64() == Some(pid)
                || r["process"]["parent"]["pid"].as_u64() == Some(pid)
        })
        .cloned()
        .collect()
}

/// A record about a process or an event rather than an event: a `process-context` record
/// (written before a process's first IPC record when /proc still describes it, so present or
/// not depending on timing) or a `call-site` record (written when its stack is symbolized).
pub fn is_annotation(r: &Value) -> bool {
    r["event"]["action"] == "call-site" || r["event"]["action"] == "process-context"
}

/// The `event.action` values in order. Left out: `call-site` records, which come when their
/// stack is symbolized (`call_sites` has them), and `process-context` records, which say who a
/// process is before its first IPC record.
pub fn actions(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter(|r| !is_annotation(r))
        .filter_map(|r| r["event"]["action"].as_str().map(str::to_owned))
        .collect()
}

/// Whether the running kernel is at least `major.minor` (from `/proc/sys/kernel/osrelease`).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    have >= (major, minor)
}

/// The `call-site` records: (`ipcaudit.call_site_of`, `ipcaudit.call_site.summary`).
pub fn call_sites(records: &[Value]) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|r| r["event"]["action"] == "call-site")
        .map(|r| {
            (
                r["ipcaudit"]["call_site_of"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                r["ipcaudit"]["call_site"]["summary"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
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

/// A workload process that holds state until the test kills it (SIGKILL on drop).
pub struct Held {
    pub child: Child,
    /// What it printed first (one JSON object).
    pub info: Value,
}

impl Held {
    /// Starts `ipc-workload SCENARIO [ARG]` and waits for its first line.
    pub fn start(bin: &str, scenario: &str, arg: Option<&str>) -> Self {
        let mut cmd = Command::new(bin);
        cmd.arg(scenario).args(arg);
        Self::spawn(cmd)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILLs a pid that is not our child (the workload's own children).
pub fn kill_pid(pid: u64) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: sending a signal.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Removes an IPC object by id, ignoring errors (test cleanup).
pub fn ipcrm(kind: &str, id: &Value) {
    if let Some(id) = id.as_i64() {
        let _ = Command::new("ipcrm").args([kind, &id.to_string()]).output();
    }
}

/// A `watch` with short grace and resync periods and its own control socket.
pub struct Watch {
    pub ipcaudit: Ipcaudit,
    pub socket: PathBuf,
}

impl Watch {
    pub fn start(grace_secs: &str) -> Self {
        Self::start_with(grace_secs, "1", &[])
    }

    /// A watch with this resync period and more arguments (e.g. `-o FILE`).
    pub fn start_with(grace_secs: &str, resync_secs: &str, more: &[&str]) -> Self {
        let socket =
            std::env::temp_dir().join(format!("ipcaudit-test-{}.sock", std::process::id()));
        let s = socket.to_string_lossy().into_owned();
        let mut args = vec![
            "watch",
            "--grace",
            grace_secs,
            "--resync",
            resync_secs,
            "--socket",
            &s,
        ];
        args.extend_from_slice(more);
        let ipcaudit = start(&args);
        Self { ipcaudit, socket }
    }

    /// Asks the daemon (`ipcaudit status|findings --json`).
    pub fn ask(&self, what: &str) -> Value {
        let out = Command::new(ipcaudit_bin())
            .args([what, "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .expect("run ipcaudit client");
        assert!(
            out.status.success(),
            "ipcaudit {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON answer")
    }

    /// The active findings of `rule` on object `id` (or all of `rule` with `id` None).
    pub fn findings(&self, rule: &str, id: Option<&Value>) -> Vec<Value> {
        self.ask("findings")["findings"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f["rule"] == rule && id.is_none_or(|id| &f["object"]["id"] == id))
            .collect()
    }

    /// Waits (up to 15 s) for a finding of `rule` on `id`.
    pub fn wait_finding(&self, rule: &str, id: &Value) -> Value {
        let mut found = None;
        eventually(Duration::from_secs(15), || {
            found = self.findings(rule, Some(id)).into_iter().next();
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no {rule} finding on {id}; findings: {:#}",
                self.ask("findings")
            )
        })
    }

    /// The model's view of one object.
    pub fn object(&self, ty: &str, id: &Value) -> Value {
        self.ask("status")["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .rfind(|o| o["type"] == ty && &o["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("the model has no {ty} {id}"))
    }
}

/// A column of /proc/sysvipc/{shm,sem,msg} for object `id`.
pub fn sysvipc(table: &str, id: &Value, column: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/sysvipc/{table}")).ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let id_col = header.iter().position(|h| h.ends_with("id"))?;
    let col = header.iter().position(|h| *h == column)?;
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(id_col).and_then(|v| v.parse::<i64>().ok()) == id.as_i64())
        .and_then(|f| f.get(col)?.parse().ok())
}

/// semctl(id, 0, cmd) for GETVAL / GETNCNT.
pub fn semctl0(id: &Value, cmd: i32) -> i32 {
    let id = i32::try_from(id.as_i64().expect("semid")).expect("semid");
    // SAFETY: a query command with no argument buffer.
    unsafe { libc::semctl(id, 0, cmd) }
}

/// Runs `ipcaudit ARGS` to completion: (exit code, stdout, stderr).
pub fn run_ipcaudit(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(ipcaudit_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ipcaudit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `ipc-workload SCENARIO ARG` to completion and returns what it printed (one JSON object).
pub fn workload_with(bin: &str, scenario: &str, arg: &str) -> Value {
    let out = Command::new(bin)
        .args([scenario, arg])
        .output()
        .expect("run ipc-workload");
    assert!(
        out.status.success(),
        "ipc-workload {scenario} {arg} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).expect("workload JSON")
}

impl Held {
    /// Starts a prepared command (e.g. the workload under `unshare --ipc`) and waits for its
    /// first line.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn held command");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("held command printed nothing in 10 s");
        let info = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("held command said {line:?}: {e}"));
        Self { child, info }
    }
}

/// An IPC object a test made, removed on drop (also when the test fails) — but only while it is
/// still the same object (same ctime in /proc/sysvipc), so an id reused by someone else is
/// never hit.
pub struct Owned {
    /// `shm`, `sem` or `msg`.
    pub table: &'static str,
    pub id: Value,
    ctime: Option<u64>,
}

impl Owned {
    pub fn new(table: &'static str, id: &Value) -> Self {
        Self {
            table,
            id: id.clone(),
            ctime: sysvipc(table, id, "ctime"),
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if self.ctime.is_some() && sysvipc(self.table, &self.id, "ctime") == self.ctime {
            let flag = match self.table {
                "shm" => "-m",
                "sem" => "-s",
                _ => "-q",
            };
            ipcrm(flag, &self.id);
        }
    }
}

/// Names of the BPF programs loaded on the system (BPF_PROG_GET_NEXT_ID / OBJ_GET_INFO_BY_FD).
pub fn loaded_bpf_programs() -> Vec<String> {
    const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let mut names = Vec::new();
    let mut id = 0u32;
    loop {
        let mut attr = [0u8; 128];
        attr[..4].copy_from_slice(&id.to_ne_bytes());
        // SAFETY: bpf(2) with a zeroed attr large enough for the command.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_GET_NEXT_ID,
                attr.as_mut_ptr(),
                attr.len(),
            )
        };
        if rc != 0 {
            break;
        }
        id = u32::from_ne_bytes(attr[4..8].try_into().expect("4 bytes"));
        let mut attr = [0u8; 128];
        attr[..4].copy_from_slice(&id.to_ne_bytes());
        // SAFETY: as above.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_GET_FD_BY_ID,
                attr.as_mut_ptr(),
                attr.len(),
            )
        };
        let Ok(fd) = i32::try_from(fd) else { continue };
        if fd < 0 {
            continue;
        }
        let mut info = [0u8; 256];
        let mut attr = [0u8; 128];
        attr[..4].copy_from_slice(&fd.cast_unsigned().to_ne_bytes());
        attr[4..8].copy_from_slice(&256u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
        // SAFETY: as above; `info` outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_GET_INFO_BY_FD,
                attr.as_mut_ptr(),
                attr.len(),
            )
        };
        // SAFETY: closing the fd we were given.
        unsafe { libc::close(fd) };
        if rc == 0 {
            let name = &info[64..80];
            let end = name.iter().position(|&c| c == 0).unwrap_or(16);
            names.push(String::from_utf8_lossy(&name[..end]).into_owned());
        }
    }
    names
}

/// Nanoseconds since the epoch of an RFC 3339 UTC timestamp as ipcaudit writes them.
pub fn timestamp_ns(s: &str) -> u64 {
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let (y, mo, d, h, mi, se) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    );
    let nanos = s
        .get(20..29)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // Days from civil (H. Hinnant).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if mo > 2 { mo - 3 } else { mo + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    (days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000_000 + nanos
}

/// POSIX objects a test made (`pshm`, `psem` or `pmsg`, and `/NAME`), unlinked on drop (also
/// when the test fails). Names carry the test's pid, so no one else's object is hit.
pub struct PosixOwned {
    pub objects: Vec<(&'static str, String)>,
}

impl PosixOwned {
    pub fn new(objects: &[(&'static str, &str)]) -> Self {
        Self {
            objects: objects.iter().map(|(t, n)| (*t, (*n).to_owned())).collect(),
        }
    }

    /// Whether the object still exists (its file; a queue: mq_open of it works).
    pub fn exists(ty: &str, name: &str) -> bool {
        let bare = name.trim_start_matches('/');
        match ty {
            "pshm" => std::path::Path::new(&format!("/dev/shm/{bare}")).exists(),
            "psem" => std::path::Path::new(&format!("/dev/shm/sem.{bare}")).exists(),
            _ => {
                let Ok(c) = std::ffi::CString::new(name) else {
                    return false;
                };
                // SAFETY: opening (and closing) a queue by name.
                let q = unsafe { libc::mq_open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
                if q >= 0 {
                    // SAFETY: a descriptor we own.
                    unsafe { libc::mq_close(q) };
                }
                q >= 0
            }
        }
    }
}

impl Drop for PosixOwned {
    fn drop(&mut self) {
        for (ty, name) in &self.objects {
            let Ok(c) = std::ffi::CString::new(name.as_str()) else {
                continue;
            };
            // SAFETY: unlinking by name; errors (already gone) are ignored.
            unsafe {
                match *ty {
                    "pshm" => libc::shm_unlink(c.as_ptr()),
                    "psem" => libc::sem_unlink(c.as_ptr()),
                    _ => libc::mq_unlink(c.as_ptr()),
                };
            }
        }
    }
}

impl Watch {
    /// The active findings of `rule` on the POSIX object `name`.
    pub fn posix_findings(&self, rule: &str, name: &str) -> Vec<Value> {
        self.ask("findings")["findings"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f["rule"] == rule && f["posix"]["name"] == name)
            .collect()
    }

    /// Waits (up to 15 s) for a finding of `rule` on the POSIX object `name`.
    pub fn wait_posix_finding(&self, rule: &str, name: &str) -> Value {
        let mut found = None;
        eventually(Duration::from_secs(15), || {
            found = self.posix_findings(rule, name).into_iter().next();
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no {rule} finding on {name}; findings: {:#}",
                self.ask("findings")
            )
        })
    }

    /// The model's view of the POSIX object `name`, if it has one.
    pub fn posix_object(&self, name: &str) -> Option<Value> {
        self.ask("status")["posix_objects"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["object"]["name"] == name)
            .cloned()
    }

    /// The pids the model has as holders of the POSIX object `name`.
    pub fn posix_holders(&self, name: &str) -> Vec<u64> {
        self.posix_object(name)
            .and_then(|o| {
                o["holders"].as_array().map(|h| {
                    h.iter()
                        .filter_map(|h| h["process"]["pid"].as_u64())
                        .collect()
                })
            })
            .unwrap_or_default()
    }
}

/// The headless browser the HTML report is checked in (Debian's `chromium`): found on PATH,
/// or installed with apt-get when missing (CI starts from a fresh machine). `None` when it is
/// missing and cannot be installed outside CI (the caller skips, saying so); under `CI=true`
/// that is a failure.
pub fn ensure_chromium() -> Option<PathBuf> {
    let find = || {
        ["chromium", "chromium-browser"].iter().find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|dir| PathBuf::from(dir).join(name))
                .find(|p| p.is_file())
        })
    };
    if let Some(p) = find() {
        return Some(p);
    }
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if root {
        eprintln!("installing chromium with apt-get (the HTML report test renders in it)");
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let _ = apt(&["update", "-qq"]);
        let _ = apt(&[
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "chromium",
            "fonts-dejavu-core",
        ]);
    }
    let found = find();
    assert!(
        found.is_some() || !ci,
        "CI=true: chromium is missing and `apt-get install chromium` did not provide it"
    );
    if found.is_none() {
        eprintln!("SKIPPED: chromium is not installed (run as root to let the test install it)");
    }
    found
}

/// What headless Chromium made of a page.
pub struct Rendered {
    /// The DOM after the page's scripts ran.
    pub dom: String,
    /// Messages the page wrote to the console (errors, uncaught exceptions, failed loads).
    pub console: Vec<String>,
    /// The screenshot (PNG), when one was asked for.
    pub screenshot: Option<Vec<u8>>,
}

/// Renders `page` in headless Chromium (run as root: --no-sandbox; a fresh profile; no
/// network: every host name resolves to nothing), returning the DOM, the console messages and
/// optionally a screenshot.
pub fn render_in_chromium(
    chromium: &std::path::Path,
    page: &std::path::Path,
    screenshot: bool,
) -> Rendered {
    let dir = std::env::temp_dir().join(format!(
        "ipcaudit-chromium-{}-{}",
        std::process::id(),
        page.file_name().and_then(|n| n.to_str()).unwrap_or("page")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("profile dir");
    let common = |cmd: &mut Command| {
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .stdin(Stdio::null());
    };
    let url = format!("file://{}", page.display());
    let run = |extra: &[String]| {
        let mut cmd = Command::new(chromium);
        common(&mut cmd);
        cmd.args(extra).arg(&url);
        let out = cmd.output().expect("run chromium");
        assert!(
            out.status.success(),
            "chromium failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let dumped = run(&["--dump-dom".to_owned()]);
    let mut console: Vec<String> = String::from_utf8_lossy(&dumped.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    let shot = screenshot.then(|| {
        let png = dir.join("shot.png");
        let out = run(&[format!("--screenshot={}", png.display())]);
        console.extend(
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| l.contains(":CONSOLE"))
                .map(str::to_owned),
        );
        std::fs::read(&png).expect("chromium wrote no screenshot")
    });
    let _ = std::fs::remove_dir_all(&dir);
    Rendered {
        dom: String::from_utf8_lossy(&dumped.stdout).into_owned(),
        console,
        screenshot: shot,
    }
}

/// Width and height of a PNG (from its IHDR chunk).
pub fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.get(..8)? != b"\x89PNG\r\n\x1a\n" || png.get(12..16)? != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(png.get(16..20)?.try_into().ok()?);
    let h = u32::from_be_bytes(png.get(20..24)?.try_into().ok()?);
    Some((w, h))
}
