//! The live collector behind `trace` and `watch`: probe → decode → model → sinks, plus the
//! timers (lost-record counters, grace ticks, resync) and a clean stop (detach, drain, summary).
//!
//! This is the IO edge: it reads clocks and the kernel, and hands the pure layers what they need.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use thiserror::Error;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    clock::{self, Clocks},
    decode::{Record, decode_record},
    event::{Action, Event, EventKind, ProcessKey, Task},
    filter::Filter,
    model::ObjectRef,
    model::{Applied, Model, ModelConfig},
    probe::{FlushScope, Probe, ProbeError, ProbeOptions},
    sink::{Encoder, Format, LineWriter, Printer, Session, Summary},
    snapshot::{self, kscan::KernelScan},
};

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("cannot open output {dest}: {source}")]
    Output {
        dest: crate::sink::Destination,
        source: std::io::Error,
    },
    #[error("cannot read the kernel's IPC state: {0}")]
    Snapshot(#[from] snapshot::read::ReadError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Privileges(#[from] crate::privdrop::DropError),
}

/// What a session does besides streaming events.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Events only.
    Trace,
    /// Events, findings and resync notes, and a control socket serving the live model.
    Watch(WatchOptions),
}

#[derive(Clone, Debug)]
pub struct WatchOptions {
    pub grace: Duration,
    pub resync: Duration,
    pub snapshot_every: Option<Duration>,
    pub socket: PathBuf,
    /// `--reap-policy`: remove what it covers (None: report only).
    pub reap_policy: Option<crate::policy::Policy>,
    /// Caps on what the model tracks (`--max-processes`, `--max-objects`).
    pub max_processes: usize,
    pub max_objects: usize,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub filter: Filter,
    pub format: Format,
    pub output: Option<crate::sink::Destination>,
    pub duration: Option<Duration>,
    pub ring_bytes: u32,
    /// The kernel's BTF (`--btf`).
    pub btf: PathBuf,
    pub mode: Mode,
    /// Stop after this many event records.
    pub max_events: Option<u64>,
    /// Write a stats record this often.
    pub stats_every: Option<Duration>,
    /// Serve Prometheus metrics here.
    pub metrics: Option<std::net::SocketAddr>,
    /// Drop to this user after attaching.
    pub user: Option<String>,
    /// Record where in the code objects are created and attached (user call stacks).
    pub call_stacks: bool,
    /// Gives the allocator's free memory back to the system: called after the start-up and
    /// after each resync, whose transient allocations (the kernel's BTF parsed twice, a scan
    /// of every process) would otherwise stay in the process's RSS, and at each grace tick
    /// (once a second): mimalloc purges what was freed more than its purge delay (1 s) ago
    /// only when the thread allocates again, so the tables the model outgrew as objects
    /// arrived stayed resident once the traffic stopped (~85 bytes per object at 30k objects).
    pub release_memory: fn(),
}

/// How often the reader drains records submitted without a wakeup.
const POLL: Duration = Duration::from_millis(25);
/// How often the kernel's lost-record counters are read.
const STATS_EVERY: Duration = Duration::from_millis(250);
/// Call stacks symbolized per process and second, at most.
const STACKS_PER_PROCESS: u32 = 16;
/// Records handed to the model per drain, so that timers and signals are never starved.
const BATCH: usize = 4096;

struct Output {
    printer: Printer,
    filter: Filter,
    summary: Summary,
    /// Watch prints findings; trace only events.
    findings: bool,
    /// Reaping (`watch --reap-policy`).
    reaper: Option<crate::policy::Reaper>,
    /// Container and PID-namespace context per process.
    enricher: crate::enrich::Enricher,
    /// A process's context read for the event being handled: written as a `process-context`
    /// record just before that event's record.
    announced: Option<(Task, crate::enrich::ProcessContext)>,
    /// Unwinds and symbolizes call stacks off the collector's thread.
    stacks: Option<crate::stack::Worker>,
    /// Call stacks the kernel did not record, so far.
    stacks_dropped: u64,
    /// Per process: the second and the number of its stacks symbolized in it.
    stack_rate: std::collections::HashMap<crate::event::ProcessKey, (u64, u32)>,
    /// Creates and attaches written whose call site has not come yet.
    written_sites: std::collections::HashSet<(
        crate::event::ProcessKey,
        crate::event::IpcType,
        i32,
        Option<u64>,
    )>,
    /// Event records written (for `--max-events` and `--stats-every`).
    events: u64,
    /// `--max-events`: nothing more is written once it is reached.
    max_events: u64,
    gauges: crate::metrics::Gauges,
    /// The last usage record written per process: the kernel writes a process's usage out
    /// whenever it is asked for, changed or not; an unchanged one is not written again.
    usage_written: HashMap<ProcessKey, crate::model::Usage>,
    /// [`Options::release_memory`].
    release_memory: fn(),
}

impl Output {
    fn event(
        &mut self,
        ev: &Event,
        action: Action,
        object: Option<&ObjectRef>,
        posix: Option<&crate::model::PosixRef>,
    ) {
        // A fork record is about the child.
        let subject = match &ev.kind {
            EventKind::Fork { child } => *child,
            _ => ev.task.process,
        };
        let exe = if self.filter.needs_exe() {
            self.enricher
                .context(ev.task.process)
                .executable()
                .map(str::to_owned)
        } else {
            None
        };
        let ty = object
            .map(|o| crate::event::ObjectType::Sysv(o.ty))
            .or_else(|| posix.map(|p| crate::event::ObjectType::Posix(p.ty)));
        if !self
            .filter
            .matches(ev, ty, object.and_then(|o| o.key), exe.as_deref())
        {
            return;
        }
        if self.events >= self.max_events {
            return;
        }
        *self.summary.counts.entry(action).or_default() += 1;
        self.events += 1;
        if let Some((task, context)) = self.announced.take_if(|(task, _)| task.process == subject) {
            self.printer
                .with(|e, line| e.process_context(ev.time_ns, &task, &context, line));
        }
        let context = self.enricher.context(subject);
        self.printer.event(ev, action, object, posix, context);
        // Its call site, when it comes, is written too (only for what was written).
        let site = match (action, object, &ev.kind) {
            (Action::ShmCreate | Action::SemCreate | Action::MsgCreate, Some(o), _) => {
                Some((ev.task.process, o.ty, o.id, None))
            }
            (Action::ShmAttach, Some(o), EventKind::ShmAt { result: Ok(a), .. }) => {
                Some((ev.task.process, o.ty, o.id, Some(*a)))
            }
            _ => None,
        };
        if let Some(site) = site
            && self.stacks.is_some()
        {
            if self.written_sites.len() >= 4096 {
                self.written_sites.clear();
            }
            self.written_sites.insert(site);
        }
        if matches!(ev.kind, EventKind::Exit { .. }) {
            self.enricher.forget(subject);
            self.usage_written.remove(&subject);
        }
    }

    /// Before an event is applied: the first time a process does IPC (or inherits a segment at
    /// fork, or execs after doing IPC), what /proc says about it goes to the model — and, with
    /// the event's record, into the output, so that `replay` describes it the same way.
    fn describe(&mut self, ev: &Event, model: &mut Model) {
        self.announced = None;
        let key = ev.task.process;
        let (subject, comm) = match &ev.kind {
            EventKind::Exec { .. } => {
                if !self.enricher.was_announced(key) {
                    return;
                }
                self.enricher.forget(key);
                (key, &ev.task.comm)
            }
            EventKind::Fork { child } => {
                if model.process(key).is_none_or(|p| p.attachments.is_empty()) {
                    return;
                }
                (*child, &ev.task.comm)
            }
            EventKind::Exit { .. } | EventKind::Lost { .. } => return,
            _ => (key, &ev.task.comm),
        };
        if let Some(context) = self.enricher.announce(subject) {
            model.describe_process(subject, context.details.clone());
            let task = Task {
                process: subject,
                tid: subject.pid,
                comm: comm.clone(),
                uid: ev.task.uid,
            };
            self.announced = Some((task, context.clone()));
        }
    }

    fn applied(&mut self, ev: &Event, applied: &Applied) {
        // Reaping hook: the reaper remembers who created what (for `exe` rules).
        if let Some(reaper) = self.reaper.as_mut() {
            reaper.observe(ev, applied);
        }
        if let Some(action) = applied.action {
            self.event(ev, action, applied.object.as_ref(), applied.posix.as_ref());
        }
        for (action, object) in &applied.derived {
            self.event(ev, *action, Some(object), None);
        }
        if self.findings {
            for change in &applied.findings {
                self.finding(ev.time_ns, change, false);
            }
        }
    }

    /// A user call stack the kernel recorded after a create or attach: when the model still
    /// wants it, it goes to the symbolizer with the process's memory map, read now (the
    /// process may not live long).
    fn stack(&mut self, raw: crate::stack::RawStack, model: &Model) {
        let Some(worker) = self.stacks.as_mut() else {
            return;
        };
        let Some(of) = raw.site_of() else { return };
        if !model.wants_call_site(of.ns, of.ty, of.id, raw.task.process, of.attach) {
            return;
        }
        // A process that creates or attaches in a loop is not a low-rate path: at most
        // `STACKS_PER_PROCESS` of its stacks a second are symbolized.
        let second = raw.time_ns / 1_000_000_000;
        if self.stack_rate.len() > 4096 {
            self.stack_rate.clear();
        }
        let rate = self
            .stack_rate
            .entry(raw.task.process)
            .or_insert((second, 0));
        if rate.0 != second {
            *rate = (second, 0);
        }
        if rate.1 >= STACKS_PER_PROCESS {
            return;
        }
        rate.1 += 1;
        let maps = crate::stack::maps::read(raw.task.process.pid);
        // The executable, to find its build id if the process is gone: /proc's, else its exec.
        let exe = self
            .enricher
            .context(raw.task.process)
            .executable()
            .map(str::to_owned)
            .or_else(|| {
                model
                    .process(raw.task.process)
                    .and_then(|p| p.exe.map(str::to_owned))
            });
        worker.submit(crate::stack::Job { raw, of, maps, exe });
    }

    /// Call sites the symbolizer resolved: to the model, and a `call-site` record each.
    fn call_sites(&mut self, model: &mut Model, resolved: Vec<crate::stack::Resolved>) {
        for r in resolved {
            let of = r.of;
            let Some(object) = model.set_call_site(
                of.ns,
                of.ty,
                of.id,
                r.task.process,
                of.attach,
                r.site.clone(),
            ) else {
                continue;
            };
            // Written only with the create or attach it belongs to, and within --max-events
            // (a call-site record counts as an event record).
            if !self
                .written_sites
                .remove(&(r.task.process, of.ty, of.id, of.attach))
                || self.events >= self.max_events
            {
                continue;
            }
            self.events += 1;
            self.printer.with(|e, line| e.call_site(&r, &object, line));
        }
    }

    /// Totals the kernel aggregated: a metric record (so that a replay rebuilds the same
    /// model), then the findings they raised or cleared.
    fn aggregated(&mut self, agg: &crate::model::Aggregate, applied: &Applied) {
        let unchanged = match agg {
            crate::model::Aggregate::Usage(u) => {
                let same = self.usage_written.get(&u.task.process).is_some_and(|w| {
                    w.ns == u.ns && w.task == u.task && w.sem == u.sem && w.msg == u.msg
                });
                if !same {
                    self.usage_written.insert(u.task.process, u.clone());
                }
                same
            }
            // The kernel writes an object's totals only when they changed.
            crate::model::Aggregate::Set(_)
            | crate::model::Aggregate::Queue(_)
            | crate::model::Aggregate::Mqueue(_) => false,
        };
        if !unchanged && self.filter.matches_aggregate(agg) && self.events < self.max_events {
            self.printer.with(|e, line| e.aggregate(agg, line));
        }
        if self.findings {
            for change in &applied.findings {
                self.finding(agg.time_ns(), change, false);
            }
        }
    }

    /// A finding raised or cleared (`tick`: by a grace tick), unless the filter leaves out
    /// its object's type or namespace.
    fn finding(&mut self, time_ns: u64, change: &crate::model::FindingChange, tick: bool) {
        if !self.filter.matches_finding(change.finding()) {
            return;
        }
        if tick {
            self.printer.tick_finding(time_ns, change);
        } else {
            self.printer.finding(time_ns, change);
        }
    }

    /// A `stats` record's figures.
    fn stats(&self, rate: f64) -> crate::sink::Stats {
        crate::sink::Stats {
            records: self.events,
            rate,
            lost: self.summary.lost,
            lag_seconds: self.gauges.lag_seconds,
            resync_corrections: self.gauges.resync_corrections,
            output: self.printer.writer.stats(),
        }
    }

    /// Reaping hook: after findings are raised or ticked, removes what the policy covers and
    /// has held for its grace (through `reap`'s recheck), and writes a record for each removal
    /// and refusal.
    fn reap(&mut self, model: &Model, now: u64) {
        let Some(reaper) = self.reaper.as_mut() else {
            return;
        };
        for record in reaper.tick(model, now) {
            self.printer.with(|e, line| match e.format {
                Format::Text => line.push_str(&record.to_text()),
                Format::Json | Format::Ecs | Format::Ocsf => e.native(record.to_json(), line),
            });
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
        Some(dest) => LineWriter::open(dest).map_err(|source| RunError::Output {
            dest: dest.clone(),
            source,
        })?,
    }
    .batched();
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
        findings: matches!(options.mode, Mode::Watch(_)),
        reaper: match &options.mode {
            Mode::Watch(w) => w.reap_policy.clone().map(crate::policy::Reaper::new),
            Mode::Trace => None,
        },
        enricher: crate::enrich::Enricher::default(),
        announced: None,
        stacks: options.call_stacks.then(crate::stack::Worker::start),
        stacks_dropped: 0,
        written_sites: std::collections::HashSet::new(),
        stack_rate: std::collections::HashMap::new(),
        events: 0,
        max_events: options.max_events.unwrap_or(u64::MAX),
        gauges: crate::metrics::Gauges::default(),
        usage_written: HashMap::new(),
        release_memory: options.release_memory,
    };
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(RunError::Signal)?;

    let mut probe = Probe::start(&ProbeOptions {
        ring_bytes: options.ring_bytes,
        btf: options.btf.clone(),
        only_tgid: options.filter.single_pid().unwrap_or(0),
        tgids: options.filter.pids().to_vec(),
        uids: options.filter.uids().to_vec(),
        type_mask: options.filter.type_mask(),
        // `watch` aggregates hot operations in-kernel; `trace` records every call.
        aggregate: matches!(options.mode, Mode::Watch(_)),
        stacks: options.call_stacks,
        ..ProbeOptions::default()
    })?;
    // Programs are attached before the snapshot is taken: what changes in between is in the
    // ring buffer, so nothing falls between bootstrap and the stream.
    let watch = match &options.mode {
        Mode::Watch(w) => Some(w.clone()),
        Mode::Trace => None,
    };
    let grace = watch.as_ref().map_or(Duration::from_mins(1), |w| w.grace);
    let mut model = Model::new(ModelConfig {
        grace_ns: u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX),
        boot_time_ns: clocks.boot_wall_ns,
        ticks_per_sec: clocks.ticks_per_sec,
        max_processes: watch
            .as_ref()
            .map_or(ModelConfig::default().max_processes, |w| w.max_processes),
        max_objects: watch
            .as_ref()
            .map_or(ModelConfig::default().max_objects, |w| w.max_objects),
        ..ModelConfig::default()
    });
    let bootstrap_started = std::time::Instant::now();
    let phase = |what: &str| {
        log::debug!("bootstrap: {what} at {:?}", bootstrap_started.elapsed());
    };
    let mut scan = probe.scan_files();
    let snap = snapshot::read::take_snapshot_with(
        clock::now_wall_ns(),
        scan.as_mut().map(|s| s as &mut dyn KernelScan),
    )?;
    if scan.is_some_and(|s| s.read) {
        log::info!("bootstrap: processes and mappings read by the kernel's iterators");
    }
    phase("snapshot taken");
    probe.seed_attachers(snap.mappings.iter().map(|m| m.pid))?;
    probe.set_waiting(snap.waiters.iter().map(|w| w.pid))?;
    phase("kernel maps seeded");
    model.bootstrap(&snap);
    if let Some(reaper) = out.reaper.as_mut() {
        reaper.seed(&snap);
    }
    phase("model bootstrapped");
    let control = match &watch {
        Some(w) => Some(crate::control::Server::bind(&w.socket).await?),
        None => None,
    };
    let metrics = match options.metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Metrics { addr, source })?,
        ),
        None => None,
    };
    // Everything that needs root is open now: drop to the user asked for.
    let unprivileged = match &options.user {
        Some(user) => {
            let (uid, gid) = crate::privdrop::drop_to(user)?;
            eprintln!(
                "ipcaudit: running as {user} (uid {uid}, gid {gid}) with CAP_BPF only; resync and reaping are off"
            );
            out.reaper = None;
            true
        }
        None => false,
    };
    eprintln!("ipcaudit: programs: {}", probe.programs);
    // Ready: the programs are attached and the model holds the snapshot. The snapshot's record
    // (thousands of processes on a busy host) is written next, before any event.
    eprintln!(
        "ipcaudit: ready: tracing SysV IPC ({} segments, {} semaphore sets, {} queues present) and POSIX IPC ({} objects); Ctrl-C to stop",
        snap.shm.len(),
        snap.sem.len(),
        snap.msg.len(),
        snap.posix.len()
    );
    if watch.is_some() {
        let ticks = out.findings;
        out.printer.with(|e, line| e.snapshot(&snap, ticks, line));
        phase("snapshot written");
    }
    out.printer.with(Encoder::header);
    (out.release_memory)();

    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut stats_timer = tokio::time::interval(STATS_EVERY);
    let mut lost_seen = 0u64;
    let mut timers = watch.as_ref().map(WatchTimers::new);
    let mut stats_every = options.stats_every.map(|d| {
        let mut i = tokio::time::interval_at(
            tokio::time::Instant::now() + d,
            d.max(Duration::from_millis(100)),
        );
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut last_stats = (tokio::time::Instant::now(), 0u64);
    // A full batch means more records are waiting: the next round reads them at once instead
    // of waiting for a wakeup (the kernel wakes the reader only each `wakeup_bytes`).
    let mut backlog = false;
    loop {
        // What the last round wrote goes out in one write before waiting again.
        out.printer.writer.flush();
        tokio::select! {
            r = probe.wait(if backlog { Duration::ZERO } else { POLL }) => r?,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = stats_timer.tick() => {
                report_lost(&probe, &mut lost_seen, &mut model, &mut out);
                out.printer.writer.poll();
                continue;
            }            _ = sighup.recv() => {
                out.printer.writer.reopen();
                continue;
            }
            () = async { match stats_every.as_mut() { Some(i) => { i.tick().await; } None => std::future::pending().await } } => {
                drain(&mut probe, &clocks, &mut model, &mut out);
                let now = tokio::time::Instant::now();
                let rate = f64::from(u32::try_from(out.events - last_stats.1).unwrap_or(u32::MAX))
                    / now.duration_since(last_stats.0).as_secs_f64().max(1e-9);
                last_stats = (now, out.events);
                let stats = out.stats(rate);
                out.printer.with(|e, line| e.stats(clock::now_wall_ns(), &stats, line));
                continue;
            }
            accepted = async { match metrics.as_ref() { Some(l) => l.accept().await, None => std::future::pending().await } } => {
                drain(&mut probe, &clocks, &mut model, &mut out);
                if let Ok((stream, _)) = accepted {
                    let mut summary = out.summary.clone();
                    summary.output = out.printer.writer.stats();
                    summary.evicted = model.evicted();
                    let body = crate::metrics::render(&summary, watch.is_some().then_some(&model), out.gauges);
                    serve_metrics(stream, &body).await;
                }
                continue;
            }
            due = async { match timers.as_mut() { Some(t) => t.next().await, None => std::future::pending().await } } => {
                // The model must have seen everything the kernel did before it is judged
                // (aggregated totals too: values and depths before a tick, all before a dump).
                probe.flush_aggregates(if matches!(due, Due::Tick) { FlushScope::Objects } else { FlushScope::All });
                drain(&mut probe, &clocks, &mut model, &mut out);
                match due {
                    Due::Tick => {
                        let now = clock::now_wall_ns();
                        for change in model.tick(now) {
                            out.finding(now, &change, true);
                        }
                        out.reap(&model, now);
                        (out.release_memory)();
                        if !unprivileged && model.needs_reconcile() && timers.as_mut().is_some_and(WatchTimers::resync_allowed) {
                            resync(&mut probe, &clocks, &mut model, &mut out).await?;
                        }
                    }
                    Due::Resync if !unprivileged => resync(&mut probe, &clocks, &mut model, &mut out).await?,
                    Due::Resync => {}
                    Due::State => {
                        let now = clock::now_wall_ns();
                        for object in model.objects() {
                            out.printer.with(|e, line| e.state(now, &object, line));
                        }
                    }
                }
                continue;
            }
            accepted = async { match control.as_ref() { Some(c) => c.accept().await, None => std::future::pending().await } } => {
                probe.flush_aggregates(FlushScope::All);
                drain(&mut probe, &clocks, &mut model, &mut out);
                match accepted {
                    Ok(stream) => match crate::control::read_request(stream).await {
                        Ok(Some((request, stream))) => {
                            crate::control::answer(stream, &crate::status::answer(&model, request)).await;
                        }
                        Ok(None) => {}
                        Err(e) => log::warn!("control socket: {e}"),
                    },
                    Err(e) => log::warn!("control socket: {e}"),
                }
                continue;
            }
        }
        backlog = drain(&mut probe, &clocks, &mut model, &mut out) >= BATCH;
        if options.max_events.is_some_and(|max| out.events >= max) {
            break;
        }
    }
    drop(control);

    // Stop: detach first so nothing new arrives, then drain what the kernel already wrote
    // (aggregated totals are asked for while the programs are still there).
    probe.flush_aggregates(FlushScope::All);
    probe.detach();
    while drain(&mut probe, &clocks, &mut model, &mut out) > 0 {}
    // Call sites still being symbolized (bounded: a stuck binary cannot hold the exit).
    if let Some(resolved) = out
        .stacks
        .as_mut()
        .map(|w| w.finish(Duration::from_secs(3)))
    {
        out.call_sites(&mut model, resolved);
    }
    report_lost(&probe, &mut lost_seen, &mut model, &mut out);
    let now = clock::now_wall_ns();
    out.summary.duration_ns = now.saturating_sub(started);
    out.printer.writer.flush();
    out.printer.writer.poll();
    out.summary.output = out.printer.writer.stats();
    out.summary.evicted = model.evicted();
    let summary = out.summary;
    out.printer.with(|e, line| e.summary(now, &summary, line));
    out.printer.writer.flush();
    Ok(summary)
}

/// What the watch timers say is due.
enum Due {
    Tick,
    Resync,
    State,
}

/// The watch mode's periodic work: grace ticks every second, resync, state records.
struct WatchTimers {
    tick: tokio::time::Interval,
    resync: tokio::time::Interval,
    state: Option<tokio::time::Interval>,
    last_resync: tokio::time::Instant,
}

impl WatchTimers {
    fn new(w: &WatchOptions) -> Self {
        let start = tokio::time::Instant::now();
        let every = |d: Duration| {
            let mut i = tokio::time::interval_at(start + d, d.max(Duration::from_millis(100)));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        };
        Self {
            tick: every(Duration::from_secs(1)),
            resync: every(w.resync),
            state: w.snapshot_every.map(every),
            last_resync: start,
        }
    }

    async fn next(&mut self) -> Due {
        tokio::select! {
            _ = self.tick.tick() => Due::Tick,
            _ = self.resync.tick() => {
                self.last_resync = tokio::time::Instant::now();
                Due::Resync
            }
            () = async { match self.state.as_mut() { Some(s) => { s.tick().await; } None => std::future::pending().await } } => Due::State,
        }
    }

    /// After lost records, resync at once, but not more than every 2 s under a storm.
    fn resync_allowed(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.last_resync) < Duration::from_secs(2) {
            return false;
        }
        self.last_resync = now;
        true
    }
}

/// Reconciles the model with a fresh snapshot (read on a blocking thread: it takes up to a few
/// hundred ms on a busy host) and reports what differed.
async fn resync(
    probe: &mut Probe,
    clocks: &Clocks,
    model: &mut Model,
    out: &mut Output,
) -> Result<(), RunError> {
    probe.flush_aggregates(FlushScope::All);
    drain(probe, clocks, model, out);
    // The iterators are started here (they need the programs) and read on that thread.
    let mut scan = probe.scan_files();
    let snap = tokio::task::spawn_blocking(move || {
        snapshot::read::take_snapshot_with(
            clock::now_wall_ns(),
            scan.as_mut().map(|s| s as &mut dyn KernelScan),
        )
    })
    .await
    .map_err(|e| RunError::Signal(std::io::Error::other(e)))??;
    if let Err(e) = probe.set_waiting(snap.waiters.iter().map(|w| w.pid)) {
        log::warn!("{e}");
    }
    let reconciled = model.reconcile(&snap);
    out.gauges.resync_corrections += u64::try_from(reconciled.differences.len()).unwrap_or(0);
    if !reconciled.differences.is_empty() {
        log::info!("resync: {} corrections", reconciled.differences.len());
        out.printer.with(|e, line| e.snapshot(&snap, false, line));
        out.printer
            .with(|e, line| e.resync(snap.taken_ns, &reconciled.differences, line));
    } else if reconciled.posix_changed {
        // POSIX objects and holders are audited, not traced: the snapshot is what `replay`
        // rebuilds them from.
        out.printer.with(|e, line| e.snapshot(&snap, false, line));
    }
    // A reconcile ticks the model at the snapshot's time: its findings are marked as a tick's,
    // so that a replay (which sees the snapshot only when something was corrected) ticks too.
    for change in &reconciled.findings {
        out.finding(snap.taken_ns, change, true);
    }
    drop(snap);
    (out.release_memory)();
    Ok(())
}

fn drain(probe: &mut Probe, clocks: &Clocks, model: &mut Model, out: &mut Output) -> usize {
    let mut last_event_ns = 0;
    let n = probe.drain(BATCH, |bytes| match decode_record(bytes, clocks) {
        Ok(Record::Event(ev)) => {
            last_event_ns = ev.time_ns;
            out.describe(&ev, model);
            let applied = model.apply(&ev);
            out.applied(&ev, &applied);
        }
        // Totals the kernel aggregated (`watch`).
        Ok(Record::Aggregate(agg)) => {
            let applied = model.apply_aggregate(&agg);
            out.aggregated(&agg, &applied);
        }
        Ok(Record::Stack(raw)) => out.stack(*raw, model),
        Err(e) => {
            out.summary.undecodable += 1;
            log::warn!("undecodable record: {e}");
        }
    });
    if let Some(resolved) = out.stacks.as_mut().map(crate::stack::Worker::poll) {
        out.call_sites(model, resolved);
    }
    if last_event_ns != 0 {
        #[expect(clippy::cast_precision_loss, reason = "a lag in seconds")]
        let lag = clock::now_wall_ns().saturating_sub(last_event_ns) as f64 / 1e9;
        out.gauges.lag_seconds = lag;
    }
    out.summary.received += n as u64;
    n
}

/// Answers one metrics scrape: reads the request head (bounded, 1 s), writes the metrics.
async fn serve_metrics(mut stream: tokio::net::TcpStream, body: &str) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut head = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut head)).await;
    let response = crate::metrics::http_response(body);
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        stream.write_all(response.as_bytes()),
    )
    .await;
    let _ = stream.shutdown().await;
}

/// Turns growth of the kernel's lost counter into an `events-lost` record.
fn report_lost(probe: &Probe, seen: &mut u64, model: &mut Model, out: &mut Output) {
    let Ok(stats) = probe.kernel_stats() else {
        return;
    };
    if stats.stacks_dropped > out.stacks_dropped {
        log::info!(
            "{} call stacks not recorded (over the per-CPU budget of {} per 100 ms, or no ring space)",
            stats.stacks_dropped - out.stacks_dropped,
            ipcaudit_ebpf::STACK_BUDGET
        );
        out.stacks_dropped = stats.stacks_dropped;
    }
    if stats.lost > *seen {
        let count = stats.lost - *seen;
        *seen = stats.lost;
        out.summary.lost += count;
        let ev = Event {
            time_ns: clock::now_wall_ns(),
            ipc_ns: 0,
            task: Task::kernel(),
            kind: EventKind::Lost { count },
        };
        let applied = model.apply(&ev);
        out.applied(&ev, &applied);
    }
}
