//! Where encoded lines go: stdout, a file (appended, mode 0600, reopened on SIGHUP for
//! logrotate), a Unix stream socket (`unix:PATH`: a client that reconnects, with a bounded
//! buffer, counting what it had to drop), or syslog (RFC 5424 datagrams to /dev/log).
//!
//! A failing destination never stops the collector: it is reported once, what could not be
//! written is counted, and writing carries on when the destination comes back.

use std::{
    collections::VecDeque,
    fmt::Write as _,
    io::{self, Write},
    os::unix::{
        fs::OpenOptionsExt as _,
        net::{UnixDatagram, UnixStream},
    },
    path::{Path, PathBuf},
    str::FromStr,
    time::{Duration, Instant},
};

use serde::Serialize;

/// Where to write (`--output`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
    /// A stream socket another program listens on.
    Unix(PathBuf),
    /// The syslog socket (default /dev/log).
    Syslog(PathBuf),
}

pub const DEV_LOG: &str = "/dev/log";

impl FromStr for Destination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "" => return Err("empty output: use -, a file, unix:PATH or syslog".to_owned()),
            "-" => Self::Stdout,
            "syslog" => Self::Syslog(PathBuf::from(DEV_LOG)),
            _ => {
                if let Some(path) = s.strip_prefix("unix:") {
                    if path.is_empty() {
                        return Err("unix: needs a socket path (unix:/run/siem.sock)".to_owned());
                    }
                    Self::Unix(PathBuf::from(path))
                } else if let Some(path) = s.strip_prefix("syslog:") {
                    Self::Syslog(PathBuf::from(path))
                } else {
                    Self::File(PathBuf::from(s))
                }
            }
        })
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdout => f.write_str("stdout"),
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Syslog(p) => write!(f, "syslog:{}", p.display()),
        }
    }
}

/// RFC 5424 severity of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Critical = 2,
    Warning = 4,
    Info = 6,
}

/// What a writer could and could not write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    pub written: u64,
    /// Lines dropped: the destination was away and the buffer full, or a line too large for it.
    pub dropped: u64,
    /// Write errors (each reported once until the destination works again).
    pub errors: u64,
}

/// The most a `unix:` writer keeps while its peer is away.
pub const UNIX_BUFFER: usize = 4 << 20;
/// How often a `unix:` writer tries to reconnect.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// A reconnecting stream-socket client. Lines are queued and written without blocking, so a
/// slow or absent peer never stalls the collector, and a line is never sent half.
struct UnixClient {
    path: PathBuf,
    stream: Option<UnixStream>,
    /// Whole lines waiting, oldest first, and how much of the first one was sent.
    queue: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    head_sent: usize,
    last_attempt: Option<Instant>,
    cap: usize,
}

impl UnixClient {
    fn new(path: PathBuf, cap: usize) -> Self {
        let mut c = Self {
            path,
            stream: None,
            queue: VecDeque::new(),
            queued_bytes: 0,
            head_sent: 0,
            last_attempt: None,
            cap,
        };
        c.connect(true);
        c
    }

    fn connect(&mut self, now_or_never: bool) {
        if self.stream.is_some() {
            return;
        }
        if !now_or_never
            && self
                .last_attempt
                .is_some_and(|t| t.elapsed() < RECONNECT_EVERY)
        {
            return;
        }
        self.last_attempt = Some(Instant::now());
        if let Ok(stream) = UnixStream::connect(&self.path)
            && stream.set_nonblocking(true).is_ok()
        {
            log::info!("output {}: connected", self.path.display());
            self.stream = Some(stream);
        }
    }

    /// Queues a line; returns false when it had to be dropped (buffer full).
    fn push(&mut self, line: &[u8]) -> bool {
        if self.queued_bytes + line.len() + 1 > self.cap {
            return false;
        }
        let mut owned = Vec::with_capacity(line.len() + 1);
        owned.extend_from_slice(line);
        owned.push(b'\n');
        self.queued_bytes += owned.len();
        self.queue.push_back(owned);
        true
    }

    /// Sends what it can. Returns the lines fully sent, or the error that cut the connection
    /// (with the lines lost: a half-sent line is dropped, never resent from its middle).
    fn flush(&mut self) -> Result<u64, (io::Error, u64)> {
        self.connect(false);
        let Some(stream) = self.stream.as_mut() else {
            return Ok(0);
        };
        let mut sent = 0;
        while let Some(head) = self.queue.front() {
            match stream.write(&head[self.head_sent..]) {
                Ok(0) => break,
                Ok(n) => {
                    self.head_sent += n;
                    if self.head_sent == head.len() {
                        self.queued_bytes -= head.len();
                        self.queue.pop_front();
                        self.head_sent = 0;
                        sent += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stream = None;
                    let mut lost = 0;
                    if self.head_sent > 0 {
                        if let Some(head) = self.queue.pop_front() {
                            self.queued_bytes -= head.len();
                        }
                        self.head_sent = 0;
                        lost = 1;
                    }
                    return Err((e, lost));
                }
            }
        }
        Ok(sent)
    }
}

/// RFC 5424 messages on a datagram socket.
struct Syslog {
    path: PathBuf,
    socket: UnixDatagram,
    hostname: String,
    pid: u32,
    message: String,
}

impl Syslog {
    fn open(path: &Path) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            socket,
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "-".to_owned()),
            pid: std::process::id(),
            message: String::new(),
        })
    }

    fn send(&mut self, line: &str, level: Level) -> io::Result<()> {
        // facility daemon (3)
        let pri = 3 * 8 + level as u8;
        self.message.clear();
        let _ = write!(self.message, "<{pri}>1 ");
        crate::clock::rfc3339_nanos(crate::clock::now_wall_ns(), &mut self.message);
        let _ = write!(
            self.message,
            " {} ipcaudit {} - - {line}",
            self.hostname, self.pid
        );
        self.socket.send(self.message.as_bytes()).map(drop)
    }
}

enum Target {
    Stdout(io::Stdout),
    File { path: PathBuf, file: std::fs::File },
    Unix(UnixClient),
    Syslog(Syslog),
    Custom(Box<dyn Write + Send>),
}

/// Writes whole lines to a [`Destination`].
pub struct LineWriter {
    target: Target,
    stats: WriterStats,
    failing: bool,
    /// `Some` when batching ([`LineWriter::batched`]): whole lines waiting for
    /// [`LineWriter::flush`], and how many.
    batch: Option<(Vec<u8>, u64)>,
}

/// A batch is written out once it holds this much, even before [`LineWriter::flush`].
const BATCH_BYTES: usize = 256 << 10;

fn open_file(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl LineWriter {
    pub fn stdout() -> Self {
        Self::with(Target::Stdout(io::stdout()))
    }

    pub fn from_writer(inner: Box<dyn Write + Send>) -> Self {
        Self::with(Target::Custom(inner))
    }

    fn with(target: Target) -> Self {
        Self {
            target,
            stats: WriterStats::default(),
            failing: false,
            batch: None,
        }
    }

    /// Lines to stdout, a file or a custom writer are gathered and written together on
    /// [`LineWriter::flush`] (or once `BATCH_BYTES` wait), one write for many lines: the
    /// collector flushes after each batch of records it reads. Sockets and syslog are
    /// unchanged (they queue or send whole messages).
    #[must_use]
    pub fn batched(mut self) -> Self {
        if matches!(
            self.target,
            Target::Stdout(_) | Target::File { .. } | Target::Custom(_)
        ) {
            self.batch = Some((Vec::with_capacity(BATCH_BYTES + 4096), 0));
        }
        self
    }

    /// Writes out the lines a batched writer gathered.
    pub fn flush(&mut self) {
        let Some((buf, lines)) = self.batch.as_mut() else {
            return;
        };
        if buf.is_empty() {
            return;
        }
        let n = std::mem::take(lines);
        let result = match &mut self.target {
            Target::Stdout(out) => write_all(out, buf),
            Target::File { file, .. } => write_all(file, buf),
            Target::Custom(w) => write_all(w, buf),
            Target::Syslog(_) | Target::Unix(_) => Ok(()),
        };
        buf.clear();
        self.account(result.map(|()| n).map_err(|e| (e, n)));
    }

    /// Opens a destination. A file must be creatable now; a socket peer may come later.
    pub fn open(dest: &Destination) -> io::Result<Self> {
        Ok(Self::with(match dest {
            Destination::Stdout => Target::Stdout(io::stdout()),
            Destination::File(path) => Target::File {
                path: path.clone(),
                file: open_file(path)?,
            },
            Destination::Unix(path) => Target::Unix(UnixClient::new(path.clone(), UNIX_BUFFER)),
            Destination::Syslog(path) => Target::Syslog(Syslog::open(path)?),
        }))
    }

    /// Writes one line (no trailing newline) at severity `level` (used by syslog).
    pub fn record(&mut self, line: &str, level: Level) {
        if let Some((buf, lines)) = self.batch.as_mut() {
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            *lines += 1;
            if buf.len() >= BATCH_BYTES {
                self.flush();
            }
            return;
        }
        let result = match &mut self.target {
            Target::Stdout(out) => write_line(out, line),
            Target::File { file, .. } => write_line(file, line),
            Target::Custom(w) => write_line(w, line),
            Target::Syslog(s) => s.send(line, level),
            Target::Unix(client) => {
                if !client.push(line.as_bytes()) {
                    self.stats.dropped += 1;
                }
                self.poll();
                return;
            }
        };
        self.account(result.map(|()| 1).map_err(|e| (e, 1)));
    }

    /// Writes one line at `Level::Info`.
    pub fn line(&mut self, line: &str) {
        self.record(line, Level::Info);
    }

    /// Sends what a socket writer has queued (call it on a timer: the peer may come back
    /// while nothing new is written).
    pub fn poll(&mut self) {
        if let Target::Unix(client) = &mut self.target {
            let result = client.flush();
            self.account(result);
        }
    }

    fn account(&mut self, result: Result<u64, (io::Error, u64)>) {
        match result {
            Ok(n) => {
                self.stats.written += n;
                if self.failing && n > 0 {
                    self.failing = false;
                    log::warn!("output {}: writing again", self.describe());
                }
            }
            Err((e, lost)) => {
                self.stats.errors += 1;
                self.stats.dropped += lost;
                if !self.failing {
                    self.failing = true;
                    log::error!(
                        "output {}: {e}; counting what is lost and carrying on",
                        self.describe()
                    );
                }
            }
        }
    }

    /// Reopens a file (after logrotate moved it: SIGHUP) or reconnects a socket now.
    pub fn reopen(&mut self) {
        self.flush();
        match &mut self.target {
            Target::File { path, file } => match open_file(path) {
                Ok(new) => {
                    *file = new;
                    log::info!("output {}: reopened", path.display());
                }
                Err(e) => log::error!("output {}: cannot reopen: {e}", path.display()),
            },
            Target::Unix(client) => client.connect(true),
            Target::Syslog(s) => {
                if let Ok(new) = Syslog::open(&s.path) {
                    *s = new;
                }
            }
            Target::Stdout(_) | Target::Custom(_) => {}
        }
    }

    /// What was written and dropped (lines still in a batch are not counted yet).
    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    fn describe(&self) -> String {
        match &self.target {
            Target::Stdout(_) => "stdout".to_owned(),
            Target::File { path, .. } => path.display().to_string(),
            Target::Unix(c) => format!("unix:{}", c.path.display()),
            Target::Syslog(s) => format!("syslog {}", s.path.display()),
            Target::Custom(_) => "writer".to_owned(),
        }
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.flush();
    }
}

fn write_all(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes)?;
    w.flush()
}

fn write_line(w: &mut impl Write, line: &str) -> io::Result<()> {
    w.write_all(line.as_bytes())?;
    w.write_all(b"\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader},
        os::unix::net::UnixListener,
    };

    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ipcaudit-writer-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn destinations_parse() {
        assert_eq!("-".parse(), Ok(Destination::Stdout));
        assert_eq!("syslog".parse(), Ok(Destination::Syslog(DEV_LOG.into())));
        assert_eq!(
            "unix:/run/x.sock".parse(),
            Ok(Destination::Unix("/run/x.sock".into()))
        );
        assert_eq!(
            "out.ndjson".parse(),
            Ok(Destination::File("out.ndjson".into()))
        );
        assert!("unix:".parse::<Destination>().is_err());
        assert!("".parse::<Destination>().is_err());
    }

    #[test]
    fn file_is_0600_and_reopens_after_rotation() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = temp("file");
        let path = dir.join("out.ndjson");
        let mut w = LineWriter::open(&Destination::File(path.clone())).unwrap();
        w.line("one");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::rename(&path, dir.join("out.ndjson.1")).unwrap();
        w.line("two");
        w.reopen();
        w.line("three");
        assert_eq!(
            std::fs::read_to_string(dir.join("out.ndjson.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        assert_eq!(
            w.stats(),
            WriterStats {
                written: 3,
                dropped: 0,
                errors: 0
            }
        );
    }

    #[test]
    fn a_batched_file_gets_whole_lines_on_flush() {
        let dir = temp("batched");
        let path = dir.join("out.ndjson");
        let mut w = LineWriter::open(&Destination::File(path.clone()))
            .unwrap()
            .batched();
        w.line("one");
        w.line("two");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert_eq!(w.stats().written, 0);
        w.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        assert_eq!(w.stats().written, 2);
        // A full batch goes out by itself; the rest on drop.
        let long = "x".repeat(1000);
        for _ in 0..300 {
            w.line(&long);
        }
        let before_drop = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!((2..302).contains(&before_drop), "{before_drop}");
        drop(w);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 302);
    }

    #[test]
    fn unix_client_buffers_while_the_peer_is_away_and_drops_past_the_cap() {
        let dir = temp("unix");
        let path = dir.join("siem.sock");
        let mut c = UnixClient::new(path.clone(), 64);
        // No listener: lines queue up to the cap, then are refused.
        assert!(c.push(b"0123456789"));
        assert!(c.push(b"abcdefghij"));
        let mut refused = 0;
        for _ in 0..10 {
            if !c.push(b"0123456789abcdefghij") {
                refused += 1;
            }
        }
        assert!(refused >= 8);
        assert_eq!(c.flush().unwrap(), 0);
        // The peer comes: the queue goes out, in order, whole lines.
        let listener = UnixListener::bind(&path).unwrap();
        c.connect(true);
        let sent = c.flush().unwrap();
        assert_eq!(
            usize::try_from(sent).unwrap() + c.queue.len(),
            2 + (10 - refused)
        );
        let (conn, _) = listener.accept().unwrap();
        drop(c);
        let lines: Vec<String> = BufReader::new(conn).lines().map(Result::unwrap).collect();
        assert_eq!(&lines[..2], ["0123456789", "abcdefghij"]);
    }

    #[test]
    fn writer_counts_lines_dropped_for_an_absent_peer() {
        let dir = temp("unix-writer");
        let path = dir.join("gone.sock");
        let mut w = LineWriter::open(&Destination::Unix(path)).unwrap();
        let big = "x".repeat(1 << 20);
        for _ in 0..6 {
            w.line(&big);
        }
        assert_eq!(
            w.stats().dropped,
            3,
            "a 4 MiB buffer holds 3 lines of 1 MiB + newline"
        );
    }

    #[test]
    fn syslog_lines_are_rfc5424() {
        let dir = temp("syslog");
        let path = dir.join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut w = LineWriter::open(&Destination::Syslog(path)).unwrap();
        w.record(r#"{"event":{"kind":"alert"}}"#, Level::Critical);
        let mut buf = [0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(msg.starts_with("<26>1 "), "{msg}");
        assert!(
            msg.contains(&format!(" ipcaudit {} - - {{\"event\"", std::process::id())),
            "{msg}"
        );
    }
}
