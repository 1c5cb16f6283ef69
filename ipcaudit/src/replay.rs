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
    model::{Model, ModelConfig},
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

/// Replays `args.file`; findings (and with `--all`, every event) go to stdout.
pub fn run(args: &ReplayArgs, format: Format) -> Result<ExitCode, ReplayError> {
    let path = args.file.clone();
    let input: Box<dyn Read> = if path == Path::new("-") {
        Box::new(io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&path).map_err(|source| ReplayError::Open {
                path: path.clone(),
                source,
            })?,
        )
    };
    let mut out = Printer::new(
        Encoder {
            format,
            session: Session::default(),
        },
        LineWriter::stdout(),
    );
    let mut model = Model::new(ModelConfig {
        grace_ns: u64::try_from(args.grace.as_nanos()).unwrap_or(u64::MAX),
        ..ModelConfig::default()
    });
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
    loop {
        let bad = |why: String| ReplayError::Line {
            path: path.clone(),
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
            path: path.clone(),
            line: lineno,
            why: format!("not UTF-8 ({e})"),
        })?;
        let parsed = parse_event(text).map_err(|e| ReplayError::Line {
            path: path.clone(),
            line: lineno,
            why: e.to_string(),
        })?;
        let time = match &parsed {
            Parsed::Event(ev, _) => Some(ev.time_ns),
            Parsed::Snapshot(s, _) => Some(s.taken_ns),
            Parsed::Aggregate(a) => Some(a.time_ns()),
            Parsed::Tick { time_ns } => Some(*time_ns),
            Parsed::Other { time_ns, .. } => *time_ns,
        };
        // Grace periods expire on the same one-second ticks as in the live collector.
        if let Some(t) = time {
            if !ticks_recorded && last_time != 0 && t / 1_000_000_000 > last_time / 1_000_000_000 {
                for change in model.tick(t) {
                    out.finding(t, &change);
                }
            }
            last_time = last_time.max(t);
        }
        match parsed {
            Parsed::Event(ev, recorded_action) => {
                events += 1;
                let applied = model.apply(&ev);
                if args.all {
                    out.event(
                        &ev,
                        applied.action.unwrap_or(recorded_action),
                        applied.object.as_ref(),
                        applied.posix.as_ref(),
                        &crate::enrich::ProcessContext::default(),
                    );
                }
                for change in &applied.findings {
                    out.finding(ev.time_ns, change);
                }
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
                for change in &changes {
                    out.finding(snap.taken_ns, change);
                }
            }
            Parsed::Aggregate(agg) => {
                if args.all {
                    out.with(|e, line| e.aggregate(&agg, line));
                }
                for change in &model.apply_aggregate(&agg).findings {
                    out.finding(agg.time_ns(), change);
                }
            }
            Parsed::Tick { time_ns } => {
                // One tick per instant, however many findings it raised or cleared.
                if ticks_recorded && time_ns != last_tick {
                    last_tick = time_ns;
                    for change in model.tick(time_ns) {
                        out.finding(time_ns, &change);
                    }
                }
            }
            Parsed::Other { .. } => {}
        }
    }
    if !ticks_recorded {
        for change in model.tick(last_time) {
            out.finding(last_time, &change);
        }
    }
    log::info!(
        "replayed {events} events from {lineno} lines of {}",
        path.display()
    );
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
