//! `ipcaudit replay FILE`: rebuild the model from a recorded NDJSON stream and print the
//! findings it implies. No root needed. Bad input stops the replay with an error naming the
//! file and line; memory stays bounded whatever the input (lines are capped).

use std::{
    io::{self, BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::ExitCode,
};

use thiserror::Error;

use crate::{
    cli::ReplayArgs,
    event::{Action, Event},
    model::{Aggregate, Applied, FindingChange, Model, ModelConfig},
    sink::{
        Encoder, Format, LineWriter, Printer, Session,
        json::{Parsed, parse_event},
    },
};

/// The longest line replay accepts (a `state` record of a busy host is a few MiB).
pub const MAX_LINE: usize = 64 << 20;

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: {why}")]
    Line {
        path: PathBuf,
        line: u64,
        why: String,
    },
}

/// Reads one line into `buf` (without the newline), keeping at most `max` bytes. Returns
/// `Ok(None)` at end of input and `Ok(Some(false))` for a line that was longer than `max`
/// (the rest of it is read and dropped).
pub fn read_line_bounded(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    buf.clear();
    let mut fits = true;
    let mut any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(any.then_some(fits));
        }
        any = true;
        let (part, done) = match memchr(chunk) {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if fits && buf.len() + part.len() <= max {
            buf.extend_from_slice(part);
        } else {
            fits = false;
            buf.clear();
        }
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            return Ok(Some(fits));
        }
    }
}

fn memchr(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// What a replay hands its caller as it goes.
pub enum Replayed<'a> {
    /// An event, what the model made of it, and the action the recording gave it.
    Event {
        event: &'a Event,
        applied: &'a Applied,
        recorded: Action,
    },
    /// Totals the kernel aggregated (`watch`).
    Aggregate(&'a Aggregate),
    /// A finding raised or cleared (at `time_ns`).
    Finding {
        time_ns: u64,
        change: &'a FindingChange,
    },
}

/// Opens a recording (`-` is stdin).
fn open(path: &Path) -> Result<Box<dyn Read>, ReplayError> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdin()));
    }
    let file = std::fs::File::open(path).map_err(|source| ReplayError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Box::new(file))
}

/// Rebuilds the model from a recorded NDJSON stream exactly as the live collector built it:
/// snapshots bootstrap and reconcile it, `process-context` records describe processes, events
/// and aggregated totals are applied in order, and grace periods expire on the live model's
/// ticks (or on whole seconds of a `trace` recording). Each event, aggregate and finding is
/// handed to `on` as it happens. Returns the model and the number of events.
pub fn rebuild(
    path: &Path,
    cfg: ModelConfig,
    mut on: impl FnMut(Replayed<'_>),
) -> Result<(Model, u64), ReplayError> {
    let input = open(path)?;
    let mut model = Model::new(cfg);
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let mut buf = Vec::new();
    let mut lineno = 0u64;
    let mut last_time = 0u64;
    let mut bootstrapped = false;
    // A `watch` recording says when the live model ticked (findings marked `ipcaudit.tick`):
    // replay ticks at those instants, so grace periods expire exactly as they did live.
    // Otherwise (a `trace` recording) it ticks on whole seconds of the recorded time.
    let mut ticks_recorded = false;
    let mut last_tick = 0u64;
    let mut events = 0u64;
    let findings = |on: &mut dyn FnMut(Replayed<'_>), time_ns: u64, changes: &[FindingChange]| {
        for change in changes {
            on(Replayed::Finding { time_ns, change });
        }
    };
    loop {
        let bad = |why: String| ReplayError::Line {
            path: path.to_path_buf(),
            line: lineno + 1,
            why,
        };
        let Some(fits) =
            read_line_bounded(&mut reader, &mut buf, MAX_LINE).map_err(|e| bad(e.to_string()))?
        else {
            break;
        };
        if !fits {
            return Err(bad(format!("line longer than {} MiB", MAX_LINE >> 20)));
        }
        lineno += 1;
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = std::str::from_utf8(&buf).map_err(|e| ReplayError::Line {
            path: path.to_path_buf(),
            line: lineno,
            why: format!("not UTF-8 ({e})"),
        })?;
        let parsed = parse_event(text).map_err(|e| ReplayError::Line {
            path: path.to_path_buf(),
            line: lineno,
            why: e.to_string(),
        })?;
        let time = match &parsed {
            Parsed::Event(ev, _) => Some(ev.time_ns),
            Parsed::Snapshot(s, _) => Some(s.taken_ns),
            Parsed::Aggregate(a) => Some(a.time_ns()),
            Parsed::Tick { time_ns }
            | Parsed::Context { time_ns, .. }
            | Parsed::CallSite { time_ns, .. } => Some(*time_ns),
            Parsed::Other { time_ns, .. } => *time_ns,
        };
        // Grace periods expire on the same one-second ticks as in the live collector.
        if let Some(t) = time {
            if !ticks_recorded && last_time != 0 && t / 1_000_000_000 > last_time / 1_000_000_000 {
                findings(&mut on, t, &model.tick(t));
            }
            last_time = last_time.max(t);
        }
        match parsed {
            Parsed::Event(ev, recorded) => {
                events += 1;
                let applied = model.apply(&ev);
                on(Replayed::Event {
                    event: &ev,
                    applied: &applied,
                    recorded,
                });
                findings(&mut on, ev.time_ns, &applied.findings);
            }
            Parsed::Snapshot(snap, ticks) => {
                let changes = if bootstrapped {
                    // A reconcile ticks at the snapshot's time (the live one did too).
                    last_tick = snap.taken_ns;
                    model.reconcile(&snap).findings
                } else {
                    bootstrapped = true;
                    ticks_recorded = ticks;
                    model.bootstrap(&snap);
                    Vec::new()
                };
                findings(&mut on, snap.taken_ns, &changes);
            }
            Parsed::Aggregate(agg) => {
                on(Replayed::Aggregate(&agg));
                let applied = model.apply_aggregate(&agg);
                findings(&mut on, agg.time_ns(), &applied.findings);
            }
            Parsed::Tick { time_ns } => {
                // One tick per instant, however many findings it raised or cleared.
                if ticks_recorded && time_ns != last_tick {
                    last_tick = time_ns;
                    findings(&mut on, time_ns, &model.tick(time_ns));
                }
            }
            Parsed::Context {
                process, details, ..
            } => model.describe_process(process, std::sync::Arc::new(*details)),
            Parsed::CallSite {
                process, of, site, ..
            } => {
                model.set_call_site(of.ns, of.ty, of.id, process, of.attach, *site);
            }
            Parsed::Other { .. } => {}
        }
    }
    if !ticks_recorded {
        findings(&mut on, last_time, &model.tick(last_time));
    }
    log::info!(
        "replayed {events} events from {lineno} lines of {}",
        path.display()
    );
    Ok((model, events))
}

/// The model configuration an investigation (`explain`, `report`) replays with: `grace`, and a
/// large archive (every destroyed object's story is kept).
pub fn replay_config(grace: std::time::Duration) -> ModelConfig {
    ModelConfig {
        grace_ns: u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX),
        archive: 1 << 16,
        ..ModelConfig::default()
    }
}

/// Replays `args.file`; findings (and with `--all`, every event) go to stdout.
pub fn run(args: &ReplayArgs, format: Format) -> Result<ExitCode, ReplayError> {
    let mut out = Printer::new(
        Encoder {
            format,
            session: Session::default(),
        },
        LineWriter::stdout(),
    );
    let cfg = ModelConfig {
        grace_ns: u64::try_from(args.grace.as_nanos()).unwrap_or(u64::MAX),
        ..ModelConfig::default()
    };
    rebuild(&args.file, cfg, |r| match r {
        Replayed::Event {
            event,
            applied,
            recorded,
        } => {
            if args.all {
                out.event(
                    event,
                    applied.action.unwrap_or(recorded),
                    applied.object.as_ref(),
                    applied.posix.as_ref(),
                    &crate::enrich::ProcessContext::default(),
                );
            }
        }
        Replayed::Aggregate(agg) => {
            if args.all {
                out.with(|e, line| e.aggregate(agg, line));
            }
        }
        Replayed::Finding { time_ns, change } => out.finding(time_ns, change),
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_lines() {
        let mut r = io::Cursor::new(b"short\nthis one is too long\n\nlast".to_vec());
        let mut buf = Vec::new();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(true));
        assert_eq!(buf, b"short");
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(false));
        assert!(buf.is_empty());
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(true));
        assert!(buf.is_empty());
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(true));
        assert_eq!(buf, b"last");
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), None);
    }
}
