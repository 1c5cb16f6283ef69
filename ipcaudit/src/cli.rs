//! Command-line definitions (clap). Kept apart from `main.rs` so that the man page and shell
//! completions can be generated from the same definitions.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{event::IpcType, sink::Format};

#[derive(Debug, Parser)]
#[command(
    name = "ipcaudit",
    version,
    about = "Who owns which System V IPC object, right now, and what leaked",
    long_about = "ipcaudit traces System V shared memory, semaphores and message queues with eBPF \
                  and keeps an exact per-process ownership model of every object."
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
    /// Only events of processes with this name (`comm`, repeatable).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Only events on objects of this type (repeatable); process lifecycle events are then left out.
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_ipc_type)]
    pub types: Vec<IpcType>,
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

fn parse_ipc_type(s: &str) -> Result<IpcType, String> {
    match s {
        "shm" => Ok(IpcType::Shm),
        "sem" => Ok(IpcType::Sem),
        "msg" => Ok(IpcType::Msg),
        other => Err(format!(
            "unknown IPC type {other:?}: expected shm, sem or msg"
        )),
    }
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
        assert_eq!(t.filter.types, vec![IpcType::Sem]);
        assert_eq!(t.output.duration, Some(Duration::from_millis(1500)));
        assert_eq!(t.output.format, Some(Format::Json));
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
        let err = Cli::try_parse_from(["ipcaudit", "trace", "--ring-mib", "3"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("power of two"), "{err}");
    }
}
