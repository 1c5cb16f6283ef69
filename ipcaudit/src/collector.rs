//! The live collector behind `trace` and `watch`: probe → decode → model → sinks, plus the
//! timers (lost-record counters, grace ticks, resync) and a clean stop (detach, drain, summary).
//!
//! This is the IO edge: it reads clocks and the kernel, and hands the pure layers what they need.

use std::{path::PathBuf, time::Duration};

use thiserror::Error;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    clock::{self, Clocks},
    decode::decode,
    event::{Action, Event, EventKind, ProcessKey, Task},
    filter::Filter,
    model::ObjectRef,
    model::{Applied, Model, ModelConfig},
    probe::{Probe, ProbeError, ProbeOptions},
    sink::{Encoder, Format, LineWriter, Printer, Session, Summary},
    snapshot,
};

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("cannot open output {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the kernel's IPC state: {0}")]
    Snapshot(#[from] snapshot::read::ReadError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

/// What a session does besides streaming events.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Events only.
    Trace,
    /// Events, findings and resync notes.
    Watch {
        grace: Duration,
        resync: Duration,
        snapshot_every: Option<Duration>,
    },
}

#[derive(Clone, Debug)]
pub struct Options {
    pub filter: Filter,
    pub format: Format,
    pub output: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub ring_bytes: u32,
    pub mode: Mode,
}

/// How often the reader drains records submitted without a wakeup.
const POLL: Duration = Duration::from_millis(25);
/// How often the kernel's lost-record counters are read.
const STATS_EVERY: Duration = Duration::from_millis(250);
/// Records handed to the model per drain, so that timers and signals are never starved.
const BATCH: usize = 4096;

struct Output {
    printer: Printer,
    filter: Filter,
    summary: Summary,
}

impl Output {
    fn event(&mut self, ev: &Event, action: Action, object: Option<&ObjectRef>) {
        if !self.filter.matches(ev, object.map(|o| o.ty)) {
            return;
        }
        *self.summary.counts.entry(action).or_default() += 1;
        self.printer.event(ev, action, object);
    }

    fn applied(&mut self, ev: &Event, applied: &Applied) {
        if let Some(action) = applied.action {
            self.event(ev, action, applied.object.as_ref());
        }
        for (action, object) in &applied.derived {
            self.event(ev, *action, Some(object));
        }
    }
}

/// Runs a session until SIGINT/SIGTERM or `--duration`; returns its summary.
pub async fn run(options: Options) -> Result<Summary, RunError> {
    let clocks = Clocks::sample();
    let session = Session::from_system();
    let started = clock::now_wall_ns();
    let writer = match &options.output {
        None => LineWriter::stdout(),
        Some(path) => LineWriter::file(path).map_err(|source| RunError::Output {
            path: path.clone(),
            source,
        })?,
    };
    let mut out = Output {
        printer: Printer::new(
            Encoder {
                format: options.format,
                session,
            },
            writer,
        ),
        filter: options.filter.clone(),
        summary: Summary::default(),
    };
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signal)?;

    let mut probe = Probe::start(&ProbeOptions {
        ring_bytes: options.ring_bytes,
        only_tgid: options.filter.single_pid().unwrap_or(0),
    })?;
    // Programs are attached before the snapshot is taken: what changes in between is in the
    // ring buffer, so nothing falls between bootstrap and the stream.
    let grace = match options.mode {
        Mode::Watch { grace, .. } => grace,
        Mode::Trace => Duration::from_mins(1),
    };
    let mut model = Model::new(ModelConfig {
        grace_ns: u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX),
        boot_time_ns: clocks.boot_wall_ns,
        ticks_per_sec: clocks.ticks_per_sec,
        ..ModelConfig::default()
    });
    let snap = snapshot::read::take_snapshot(clock::now_wall_ns())?;
    probe.seed_attachers(snap.mappings.iter().map(|m| m.pid))?;
    model.bootstrap(&snap);
    eprintln!(
        "ipcaudit: ready: tracing SysV IPC ({} segments, {} semaphore sets, {} queues present); Ctrl-C to stop",
        snap.shm.len(),
        snap.sem.len(),
        snap.msg.len()
    );
    out.printer.with(Encoder::header);

    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut stats_timer = tokio::time::interval(STATS_EVERY);
    let mut lost_seen = 0u64;
    loop {
        tokio::select! {
            r = probe.wait(POLL) => r?,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = stats_timer.tick() => {
                report_lost(&probe, &mut lost_seen, &mut model, &mut out);
                continue;
            }
        }
        drain(&mut probe, &clocks, &mut model, &mut out);
    }

    // Stop: detach first so nothing new arrives, then drain what the kernel already wrote.
    probe.detach();
    while drain(&mut probe, &clocks, &mut model, &mut out) > 0 {}
    report_lost(&probe, &mut lost_seen, &mut model, &mut out);
    let now = clock::now_wall_ns();
    out.summary.duration_ns = now.saturating_sub(started);
    let summary = out.summary;
    out.printer.with(|e, line| e.summary(now, &summary, line));
    Ok(summary)
}

fn drain(probe: &mut Probe, clocks: &Clocks, model: &mut Model, out: &mut Output) -> usize {
    probe.drain(BATCH, |bytes| match decode(bytes, clocks) {
        Ok(ev) => {
            let applied = model.apply(&ev);
            out.applied(&ev, &applied);
        }
        Err(e) => {
            out.summary.undecodable += 1;
            log::warn!("undecodable record: {e}");
        }
    })
}

/// Turns growth of the kernel's lost counter into an `events-lost` record.
fn report_lost(probe: &Probe, seen: &mut u64, model: &mut Model, out: &mut Output) {
    let Ok(stats) = probe.kernel_stats() else {
        return;
    };
    if stats.lost > *seen {
        let count = stats.lost - *seen;
        *seen = stats.lost;
        out.summary.lost += count;
        let ev = Event {
            time_ns: clock::now_wall_ns(),
            ipc_ns: 0,
            task: Task {
                process: ProcessKey {
                    pid: 0,
                    start_ticks: 0,
                },
                tid: 0,
                comm: String::new(),
                uid: 0,
            },
            kind: EventKind::Lost { count },
        };
        let applied = model.apply(&ev);
        out.applied(&ev, &applied);
    }
}
