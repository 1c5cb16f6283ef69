//! Command-line definitions (clap). Kept apart from `main.rs` so that the man page and shell
//! completions can be generated from the same definitions.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    event::{IpcType, ObjectType},
    sink::Format,
};

#[derive(Debug, Parser)]
#[command(
    name = "ipcaudit",
    version,
    about = "Who owns which System V and POSIX IPC object, right now, and what leaked",
    long_about = "ipcaudit traces System V shared memory, semaphores and message queues, and POSIX \
                  message queues, with eBPF, audits POSIX shared memory and named semaphores, and \
                  keeps an exact per-process ownership model of every object."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream every SysV IPC event (create, attach, detach, operate, remove, process lifecycle).
    Trace(TraceArgs),
    /// Trace and keep the ownership model: events, findings (leaks) and resync notes.
    Watch(WatchArgs),
    /// Rebuild the model from a recorded NDJSON stream and print the findings it implies.
    Replay(ReplayArgs),
    /// The live model of a running `watch`: every object with its holders, users and state.
    Status(AskArgs),
    /// The active findings of a running `watch`.
    Findings(AskArgs),
    /// One object's story: created when, by whom, where in the code; every attach and detach;
    /// what each process did with it; who holds it now; the verdict, why, and the fix.
    #[command(
        after_help = "From the running `watch` (its control socket), or with --replay from a \
                      recording (`watch -o FILE`), rebuilt with the same model."
    )]
    Explain(ExplainArgs),
    /// A self-contained HTML page (no network): every object's lifetime on a timeline, the
    /// processes holding each, findings, and per-executable created-vs-removed counts.
    Report(ReportArgs),
    /// Write the man page and shell completions (bash, zsh, fish) into a directory
    /// (`cargo xtask dist` runs it).
    #[command(hide = true)]
    Generate {
        /// Where to write `ipcaudit.1` and the completion scripts.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Every SysV IPC object with owners, creator and users (alive?), attachments and waiters:
    /// a superset of `lsipc` / `ipcs`. Works without eBPF.
    #[command(after_help = crate::ls::columns_help())]
    Ls(LsArgs),
    /// Every kernel IPC limit with what is used of it, per namespace (`lsipc -g`, `ipcs -l -u`).
    Limits(LimitsArgs),
    /// What leaked: a running `watch`'s exact findings, else what a snapshot can judge.
    Leaks(LeaksArgs),
    /// Remove leaked objects, rechecked immediately before each removal (dry run unless --yes).
    #[command(
        after_help = "Every removal and every refusal is one NDJSON record (event.action \
                      reap-remove or reap-skip, event.reason, ipcaudit.reap.code).\n\
                      Exit status: 0 when nothing was refused, 3 when something was, 1 on error."
    )]
    Reap(ReapArgs),
}

#[derive(Debug, Clone, Args)]
pub struct AskArgs {
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The control socket of the `watch` to ask.
    #[arg(long, default_value = crate::control::DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
}

/// Which events to keep.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only events of this process (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Only events of processes running as this user (real uid; a number or a name; repeatable).
    /// Applied in the kernel.
    #[arg(long = "uid", value_name = "USER", value_parser = parse_user)]
    pub uids: Vec<u32>,
    /// Only events of processes whose name (`comm`) matches this glob (repeatable).
    #[arg(long = "comm", value_name = "GLOB", value_parser = parse_glob)]
    pub comms: Vec<glob::Pattern>,
    /// Leave out processes whose name matches this glob (repeatable).
    #[arg(long = "exclude-comm", value_name = "GLOB", value_parser = parse_glob)]
    pub exclude_comms: Vec<glob::Pattern>,
    /// Only events of processes whose executable path matches this glob (repeatable).
    #[arg(long = "exe", value_name = "GLOB", value_parser = parse_glob)]
    pub exes: Vec<glob::Pattern>,
    /// Only events on objects of this type (repeatable: shm, sem, msg, or pmsg for POSIX
    /// message queues); process lifecycle events are then left out.
    #[arg(long = "type", value_name = "TYPE", value_parser = ObjectType::parse)]
    pub types: Vec<ObjectType>,
    /// Only events on objects whose IPC key is in this range (`0x1000-0x1fff`, or one key;
    /// repeatable); events without an object are then left out.
    #[arg(long = "key", value_name = "RANGE", value_parser = parse_key_range)]
    pub keys: Vec<(i32, i32)>,
    /// Only events in this IPC namespace (its inode, as in `ipc.namespace`; repeatable).
    #[arg(long = "namespace", value_name = "INODE")]
    pub namespaces: Vec<u32>,
}

/// Output options shared by the streaming commands.
#[derive(Debug, Clone, Default, Args)]
pub struct OutputArgs {
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Where records go: `-` (stdout), FILE (appended, mode 0600, reopened on SIGHUP),
    /// `unix:PATH` (a stream socket; reconnects, buffers up to 4 MiB), `syslog` (RFC 5424 to
    /// /dev/log) or `syslog:PATH`.
    #[arg(long, short, value_name = "DEST")]
    pub output: Option<crate::sink::Destination>,
    /// Output format (default: text on a terminal, json otherwise).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Stop after writing this many event records.
    #[arg(long, value_name = "N")]
    pub max_events: Option<u64>,
    /// Write a `metric`/`stats` record every SECS seconds (rates, lag, lost records).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub stats_every: Option<Duration>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Drop to this user once the programs are attached (keeping only CAP_BPF, which reading
    /// the kernel's counters needs); resync and reaping are then off.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Ring buffer size in MiB (power of two).
    #[arg(long, default_value_t = 8, value_name = "MIB", value_parser = parse_ring_mib)]
    pub ring_mib: u32,
    /// The kernel's BTF (type information), for kernels that do not expose
    /// /sys/kernel/btf/vmlinux (e.g. a file from BTFHub for the running kernel).
    #[arg(long, value_name = "FILE", default_value = crate::probe::btf::VMLINUX_BTF)]
    pub btf: PathBuf,
    /// Do not record where in the code objects are created and attached (the user call stack
    /// at each create and shmat, symbolized in a `call-site` record).
    #[arg(long)]
    pub no_call_stacks: bool,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// How long a leak condition must hold before it is reported.
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = parse_secs)]
    pub grace: Duration,
    /// Reconcile the model with the kernel every SECS seconds (and at once after lost records).
    #[arg(long, default_value = "30", value_name = "SECS", value_parser = parse_secs)]
    pub resync: Duration,
    /// Write the whole model as `state` records every SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub snapshot_every: Option<Duration>,
    /// Where to serve `status` and `findings` (mode 0600, root only).
    #[arg(long, default_value = crate::control::DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Remove leaked objects that match this TOML policy once their finding has held for the
    /// rule's grace (through the same recheck as `reap`). Without it nothing is removed.
    #[arg(long, value_name = "FILE")]
    pub reap_policy: Option<PathBuf>,
    /// Bounded memory: track at most N processes (dead ones are forgotten first, live ones that
    /// hold something never); what is evicted is counted in the summary and metrics.
    #[arg(long, default_value_t = 1 << 18, value_name = "N", value_parser = clap::value_parser!(u32).range(16..))]
    pub max_processes: u32,
    /// Track at most N objects (destroyed ones are forgotten oldest first; live ones never).
    #[arg(long, default_value_t = 1 << 17, value_name = "N", value_parser = clap::value_parser!(u32).range(16..))]
    pub max_objects: u32,
}

#[derive(Debug, Clone, Args)]
pub struct LsArgs {
    /// Only objects of this type (repeatable): System V `shm`, `sem`, `msg`; POSIX `pshm`
    /// (/dev/shm), `psem` (/dev/shm/sem.*), `pmsg` (message queues).
    #[arg(long = "type", value_name = "TYPE", value_parser = ObjectType::parse)]
    pub types: Vec<ObjectType>,
    /// One JSON document in the shape of `lsipc --json`.
    #[arg(long)]
    pub json: bool,
    /// The columns, by lsipc's names (comma separated; see below).
    #[arg(short = 'o', long = "output", value_name = "COLUMNS", value_delimiter = ',', value_parser = crate::ls::parse_column)]
    pub columns: Vec<crate::ls::Column>,
    /// Read the IPC namespace of process PID, or of every process (`all`); rows are labelled.
    #[arg(long, value_name = "PID|all", value_parser = crate::ls::parse_namespace)]
    pub namespace: Option<crate::ls::NamespaceSel>,
}

#[derive(Debug, Clone, Args)]
pub struct LimitsArgs {
    /// JSON in the shape of `lsipc -g --json`.
    #[arg(long)]
    pub json: bool,
    /// Read the IPC namespace of process PID, or of every process (`all`).
    #[arg(long, value_name = "PID|all", value_parser = crate::ls::parse_namespace)]
    pub namespace: Option<crate::ls::NamespaceSel>,
}

#[derive(Debug, Clone, Args)]
pub struct LeaksArgs {
    /// JSON: `{"source": "watch"|"snapshot", "findings": [...]}`.
    #[arg(long)]
    pub json: bool,
    /// The control socket of a running `watch`, asked first.
    #[arg(long, default_value = crate::control::DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Judge a snapshot even when a `watch` is running.
    #[arg(long)]
    pub snapshot: bool,
    /// Judge snapshots of the IPC namespace of process PID, or of every process (`all`).
    #[arg(long, value_name = "PID|all", value_parser = crate::ls::parse_namespace)]
    pub namespace: Option<crate::ls::NamespaceSel>,
    /// Only findings on objects of this type (repeatable; shm, sem, msg, pshm, psem, pmsg).
    #[arg(long = "type", value_name = "TYPE", value_parser = ObjectType::parse)]
    pub types: Vec<ObjectType>,
    /// A snapshot calls a POSIX object nobody holds orphaned once it has not changed for this
    /// long (a running `watch` uses its own --grace).
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = parse_secs)]
    pub grace: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ReapArgs {
    /// Only objects of this type (repeatable): shm, sem, msg, pshm, psem, pmsg.
    #[arg(long = "type", value_name = "TYPE", value_parser = ObjectType::parse)]
    pub types: Vec<ObjectType>,
    /// Only the POSIX object with this name (`/NAME`, repeatable; with --type pshm, psem or
    /// pmsg).
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// Only this id (repeatable); an id that is not leaked gets a refusal record.
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<i32>,
    /// Only the object with this key (repeatable; 0x… or decimal; never IPC_PRIVATE).
    #[arg(long = "key", value_name = "KEY", value_parser = crate::reap::parse_key)]
    pub keys: Vec<i32>,
    /// Only objects idle (not used, not changed) for longer than this (90s, 10m, 2h, 1d).
    #[arg(long, default_value = "0", value_name = "DUR", value_parser = crate::reap::parse_duration)]
    pub older_than: Duration,
    /// Only objects owned or created by this uid (repeatable).
    #[arg(long = "uid", value_name = "UID")]
    pub uids: Vec<u32>,
    /// Only objects whose creator had this command name (repeatable; known from a running
    /// `watch`, or for a zombie creator).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Remove. Without it, a dry run: what would be removed, and why.
    #[arg(long)]
    pub yes: bool,
    /// Remove semaphore sets even with processes blocked on them (they get EIDRM).
    #[arg(long)]
    pub force_waiters: bool,
    /// Append the NDJSON records to FILE (mode 0600) and print one line each on stdout.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// The control socket of a running `watch`, whose findings are used when it answers.
    #[arg(long, default_value = crate::control::DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Judge a snapshot even when a `watch` is running.
    #[arg(long)]
    pub snapshot: bool,
    /// Reap in the IPC namespace of process PID, or in every one (`all`).
    #[arg(long, value_name = "PID|all", value_parser = crate::ls::parse_namespace)]
    pub namespace: Option<crate::ls::NamespaceSel>,
    /// A snapshot calls a POSIX object nobody holds orphaned once it has not changed for this
    /// long (a running `watch` uses its own --grace).
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = parse_secs)]
    pub grace: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// The object's id (as `ipcs` and `ls` show it).
    #[arg(
        value_name = "ID",
        required_unless_present = "key",
        conflicts_with = "key"
    )]
    pub id: Option<i32>,
    /// The object's IPC key instead (0x… or decimal).
    #[arg(long, value_name = "KEY", value_parser = parse_key)]
    pub key: Option<i32>,
    /// The object's type, when the id or key is used by several types.
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_sysv_type)]
    pub ty: Option<IpcType>,
    /// The IPC namespace (inode), when the id exists in several.
    #[arg(long, value_name = "INODE")]
    pub namespace: Option<u32>,
    /// Rebuild the story from this recording instead of asking the running `watch`.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// With --replay: the grace period the recording's `watch` used.
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = parse_secs)]
    pub grace: Duration,
    /// One JSON document: `{"source": "watch"|"replay", "explanation": {...}}`.
    #[arg(long)]
    pub json: bool,
    /// The control socket of the `watch` to ask.
    #[arg(long, default_value = crate::control::DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Write the HTML page here.
    #[arg(long, value_name = "FILE")]
    pub html: PathBuf,
    /// Build it from this recording instead of asking the running `watch`.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// With --replay: the grace period the recording's `watch` used.
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = parse_secs)]
    pub grace: Duration,
    /// The page's title.
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
    /// The control socket of the `watch` to ask.
    #[arg(long, default_value = crate::control::DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// A recorded NDJSON stream (`ipcaudit watch -o FILE` or `trace --format json`); `-` for stdin.
    pub file: PathBuf,
    /// Grace period the findings are judged with.
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = parse_secs)]
    pub grace: Duration,
    /// Print every record (events too), not just the findings.
    #[arg(long)]
    pub all: bool,
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

/// A uid: a number, or a user name from the password database.
/// A System V type (`explain` explains System V objects).
fn parse_sysv_type(s: &str) -> Result<IpcType, String> {
    match ObjectType::parse(s)? {
        ObjectType::Sysv(t) => Ok(t),
        other @ ObjectType::Posix(_) => Err(format!(
            "{}: explain knows System V objects (shm, sem or msg)",
            other.as_str()
        )),
    }
}

fn parse_user(s: &str) -> Result<u32, String> {
    if let Ok(uid) = s.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(s) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!(
            "no user named {s:?} (give a name or a numeric uid)"
        )),
        Err(e) => Err(format!("cannot look up user {s:?}: {e}")),
    }
}

fn parse_glob(s: &str) -> Result<glob::Pattern, String> {
    glob::Pattern::new(s).map_err(|e| format!("bad glob {s:?}: {e}"))
}

/// A key: decimal or 0x-hex, as `ipcs` prints them (hex keys above 0x7fffffff wrap negative).
pub(crate) fn parse_key(s: &str) -> Result<i32, String> {
    let s = s.trim();
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16)
            .map(u32::cast_signed)
            .map_err(|e| e.to_string()),
        None => s.parse::<i32>().map_err(|e| e.to_string()),
    };
    parsed.map_err(|e| format!("bad IPC key {s:?}: {e}"))
}

fn parse_key_range(s: &str) -> Result<(i32, i32), String> {
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) if !lo.is_empty() => (parse_key(lo)?, parse_key(hi)?),
        _ => {
            let k = parse_key(s)?;
            (k, k)
        }
    };
    if lo > hi {
        return Err(format!("key range {s:?} is empty (start above end)"));
    }
    Ok((lo, hi))
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!(
            "{s:?} is not a duration between 0 and 10^9 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_ring_mib(s: &str) -> Result<u32, String> {
    let mib: u32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of MiB"))?;
    if !mib.is_power_of_two() || mib > 1024 {
        return Err(format!(
            "{mib} MiB: the ring buffer size must be a power of two up to 1024"
        ));
    }
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::IpcType;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_trace_filters() {
        let cli = Cli::try_parse_from([
            "ipcaudit",
            "trace",
            "--pid",
            "1",
            "--pid",
            "2",
            "--type",
            "sem",
            "--duration",
            "1.5",
            "--format",
            "json",
        ])
        .unwrap();
        let Command::Trace(t) = cli.command else {
            panic!()
        };
        assert_eq!(t.filter.pids, vec![1, 2]);
        assert_eq!(t.filter.types, vec![ObjectType::Sysv(IpcType::Sem)]);
        assert_eq!(t.output.duration, Some(Duration::from_millis(1500)));
        assert_eq!(t.output.format, Some(Format::Json));
        let cli = Cli::try_parse_from([
            "ipcaudit",
            "trace",
            "--key",
            "0x1000-0x1fff",
            "--key",
            "7",
            "--exclude-comm",
            "sshd*",
        ])
        .unwrap();
        let Command::Trace(t) = cli.command else {
            panic!()
        };
        assert_eq!(t.filter.keys, vec![(0x1000, 0x1fff), (7, 7)]);
        assert!(t.filter.exclude_comms[0].matches("sshd-session"));
        assert_eq!(parse_key("0xffffffff"), Ok(-1));
    }

    #[test]
    fn explain_takes_an_id_or_a_key() {
        let cli = Cli::try_parse_from(["ipcaudit", "explain", "123", "--type", "shm"]).unwrap();
        let Command::Explain(e) = cli.command else {
            panic!()
        };
        assert_eq!((e.id, e.key, e.ty), (Some(123), None, Some(IpcType::Shm)));
        let cli = Cli::try_parse_from([
            "ipcaudit", "explain", "--key", "0x1234", "--replay", "f", "--json",
        ])
        .unwrap();
        let Command::Explain(e) = cli.command else {
            panic!()
        };
        assert_eq!((e.id, e.key), (None, Some(0x1234)));
        assert!(e.json && e.replay.is_some());
        assert!(Cli::try_parse_from(["ipcaudit", "explain"]).is_err());
        assert!(Cli::try_parse_from(["ipcaudit", "explain", "1", "--key", "2"]).is_err());
        assert!(Cli::try_parse_from(["ipcaudit", "report"]).is_err());
        let cli = Cli::try_parse_from(["ipcaudit", "report", "--html", "r.html", "--replay", "x"])
            .unwrap();
        assert!(matches!(cli.command, Command::Report(_)));
    }

    #[test]
    fn bad_values_are_named() {
        let err = Cli::try_parse_from(["ipcaudit", "trace", "--type", "pipe"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown IPC type \"pipe\""), "{err}");
        let err = Cli::try_parse_from(["ipcaudit", "trace", "--duration=-3"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--duration"), "{err}");
        let err = Cli::try_parse_from(["ipcaudit", "trace", "--key", "0x20-0x10"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("is empty"), "{err}");
        let err = Cli::try_parse_from(["ipcaudit", "trace", "--comm", "[x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad glob"), "{err}");
        let err = Cli::try_parse_from(["ipcaudit", "trace", "--ring-mib", "3"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("power of two"), "{err}");
    }
}
