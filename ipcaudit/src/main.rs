//! `ipcaudit`: parse the command line, run the command, report errors in one line.

use std::{io::IsTerminal as _, process::ExitCode};

use anyhow::Result;
use clap::Parser as _;
use ipcaudit::{
    cli::{AskArgs, Cli, Command, OutputArgs, TraceArgs},
    collector::{self, Mode, Options, WatchOptions},
    control::Request,
    sink::{Destination, Format},
    status,
};

/// The model and the encoders allocate many small, short-lived values: mimalloc serves them
/// with a fraction of glibc malloc's work (the collector bench uses it too). Built without
/// transparent huge pages (`no_thp` in the workspace): with them every first touch of a 2 MiB
/// region zeroes all of it, which cost start-up time and rounded the heap up by megabytes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ipcaudit: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Returns mimalloc's free pages to the system (and settles pages freed by other threads).
fn release_memory() {
    // SAFETY: mi_collect only walks the allocator's own state.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Text on a terminal, JSON when piped or written to a file.
fn format_for(output: &OutputArgs) -> Format {
    output.format.unwrap_or(
        if matches!(output.output, None | Some(Destination::Stdout))
            && std::io::stdout().is_terminal()
        {
            Format::Text
        } else {
            Format::Json
        },
    )
}

fn session_options(t: &TraceArgs, mode: Mode) -> Options {
    Options {
        filter: (&t.filter).into(),
        format: format_for(&t.output),
        output: t.output.output.clone(),
        duration: t.output.duration,
        ring_bytes: t.ring_mib << 20,
        btf: t.btf.clone(),
        mode,
        max_events: t.output.max_events,
        stats_every: t.output.stats_every,
        metrics: t.output.metrics,
        user: t.output.user.clone(),
        call_stacks: !t.no_call_stacks,
        release_memory,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Asks a running `watch` and prints its answer.
fn ask(args: &AskArgs, request: Request) -> Result<()> {
    let answer = runtime()?.block_on(ipcaudit::control::ask(&args.socket, request))?;
    if args.json {
        println!("{answer}");
    } else if request == Request::Status {
        println!("{}", status::render_status(&answer));
    } else {
        println!("{}", status::render_findings(&answer));
    }
    Ok(())
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Trace(t) => {
            runtime()?.block_on(collector::run(session_options(&t, Mode::Trace)))?;
        }
        Command::Watch(w) => {
            // The reap policy is read (and rejected with file, line and field) before anything
            // is loaded.
            let reap_policy = w
                .reap_policy
                .as_deref()
                .map(ipcaudit::policy::load)
                .transpose()?;
            let mode = Mode::Watch(WatchOptions {
                grace: w.grace,
                resync: w.resync,
                snapshot_every: w.snapshot_every,
                socket: w.socket.clone(),
                reap_policy,
                max_processes: w.max_processes as usize,
                max_objects: w.max_objects as usize,
            });
            runtime()?.block_on(collector::run(session_options(&w.trace, mode)))?;
        }
        Command::Generate { out } => {
            for path in ipcaudit::generate::write_all(&out)? {
                println!("{}", path.display());
            }
        }
        Command::Status(a) => ask(&a, Request::Status)?,
        Command::Findings(a) => ask(&a, Request::Findings)?,
        Command::Replay(r) => {
            let format = r.format.unwrap_or(if std::io::stdout().is_terminal() {
                Format::Text
            } else {
                Format::Json
            });
            return Ok(ipcaudit::replay::run(&r, format)?);
        }
        Command::Ls(a) => return Ok(ipcaudit::ls::run(&a)?),
        Command::Limits(a) => return Ok(ipcaudit::limits::run(&a)?),
        Command::Leaks(a) => return Ok(ipcaudit::leaks::run(&a)?),
        Command::Reap(a) => return Ok(ipcaudit::reap::run(&a)?),
        Command::Explain(a) => return Ok(ipcaudit::explain::run(&a)?),
        Command::Report(a) => return Ok(ipcaudit::report::run(&a)?),
    }
    Ok(ExitCode::SUCCESS)
}
