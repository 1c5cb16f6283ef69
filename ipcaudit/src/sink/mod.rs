//! Sinks: encoders (one per format) and the writer they write through. Encoders are pure
//! (`Record` in, bytes out); writers only move bytes.

pub mod ecs;
pub mod json;
pub mod ndjson;
pub mod ocsf;
pub mod text;
pub mod writer;

pub use writer::{Destination, Level, LineWriter};

use serde::Serialize;

use crate::{
    event::{Action, Event},
    model::ObjectRef,
};

/// The host every record of a session comes from (ECS `host.*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Host {
    pub name: String,
    /// /etc/machine-id.
    pub id: String,
    /// /proc/sys/kernel/random/boot_id.
    pub boot_id: String,
}

/// Context every record of a session shares.
#[derive(Clone, Debug, Default)]
pub struct Session {
    /// First 8 hex digits of the boot id: makes entity ids unique across boots.
    pub boot: String,
    /// `None` when replaying (the recording carries its own).
    pub host: Option<Host>,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

impl Session {
    /// Reads the host's name, machine id and boot id.
    pub fn from_system() -> Self {
        let boot_id = read_trimmed("/proc/sys/kernel/random/boot_id");
        let boot = boot_id
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(8)
            .collect();
        let host = Host {
            name: read_trimmed("/proc/sys/kernel/hostname"),
            id: read_trimmed("/etc/machine-id"),
            boot_id,
        };
        Self {
            boot,
            host: Some(host),
        }
    }

    /// `process.entity_id`: stable across PID reuse (`<boot>-<pid>-<start ticks>`).
    pub fn entity_id(&self, key: crate::event::ProcessKey) -> String {
        format!("{}-{}-{}", self.boot, key.pid, key.start_ticks)
    }
}

/// Parses an entity id back into a process key (for replay).
pub fn parse_entity_id(s: &str) -> Option<crate::event::ProcessKey> {
    let mut parts = s.rsplitn(3, '-');
    let start_ticks = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    Some(crate::event::ProcessKey { pid, start_ticks })
}

/// Per-action counts and losses: the final `metric` record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub counts: std::collections::BTreeMap<Action, u64>,
    /// Records read from the ring buffer (before the userspace filter): what the in-kernel
    /// filters let through.
    pub received: u64,
    /// Records the kernel could not deliver (ring buffer full).
    pub lost: u64,
    /// Records that could not be decoded.
    pub undecodable: u64,
    /// What the output could not write.
    pub output: writer::WriterStats,
    /// What the model's caps made it forget (`watch`).
    pub evicted: crate::model::Evicted,
    pub duration_ns: u64,
}

/// The figures of a `--stats-every` record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Event records written so far.
    pub records: u64,
    /// Event records per second since the previous stats record.
    pub rate: f64,
    /// Records the kernel could not deliver, so far.
    pub lost: u64,
    /// Delay between the last event and its handling.
    pub lag_seconds: f64,
    pub resync_corrections: u64,
    pub output: writer::WriterStats,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (NDJSON), Elastic Common Schema field names (native).
    Json,
    /// Strict ECS: `event.category`/`event.type` set, non-ECS fields under `ipcaudit.*`.
    Ecs,
    /// OCSF 1.1: Kernel Activity (1003), Process Activity (1007), Detection Finding (2004).
    Ocsf,
    /// One aligned line per record, for people.
    Text,
}

/// Encodes records in one format into a line buffer.
pub struct Encoder {
    pub format: Format,
    pub session: Session,
}

impl Encoder {
    /// An event record. `object` is the System V object the model says it concerned, `posix`
    /// the POSIX one.
    pub fn event(
        &self,
        ev: &Event,
        action: Action,
        object: Option<&ObjectRef>,
        posix: Option<&crate::model::PosixRef>,
        context: &crate::enrich::ProcessContext,
        out: &mut String,
    ) {
        match self.format {
            Format::Json => {
                json::encode_event(&self.session, ev, action, object, posix, context, out);
            }
            Format::Ecs | Format::Ocsf => {
                let record = json::event_record(&self.session, ev, action, object, posix, context);
                self.emit(serde_json::to_value(record).unwrap_or_default(), out);
            }
            Format::Text => text::encode_event(&self.session, ev, action, object, posix, out),
        }
    }

    pub fn finding(&self, time_ns: u64, change: &crate::model::FindingChange, out: &mut String) {
        self.finding_from(time_ns, change, false, out);
    }

    /// A finding raised or cleared; `tick`: by a grace tick (recorded for `replay`).
    pub fn finding_from(
        &self,
        time_ns: u64,
        change: &crate::model::FindingChange,
        tick: bool,
        out: &mut String,
    ) {
        match self.format {
            Format::Json | Format::Ecs | Format::Ocsf => {
                self.emit(
                    json::finding_value(&self.session, time_ns, change, tick),
                    out,
                );
            }
            Format::Text => text::encode_finding(time_ns, change, out),
        }
    }

    pub fn resync(&self, time_ns: u64, differences: &[crate::model::Difference], out: &mut String) {
        match self.format {
            Format::Json | Format::Ecs | Format::Ocsf => {
                self.emit(json::resync_value(&self.session, time_ns, differences), out);
            }
            Format::Text => text::encode_resync(time_ns, differences, out),
        }
    }

    pub fn stats(&self, time_ns: u64, stats: &Stats, out: &mut String) {
        match self.format {
            Format::Text => {
                use std::fmt::Write as _;
                let _ = write!(
                    out,
                    "-- stats: {} records ({:.0}/s), {} lost, lag {:.3} s, {} resync corrections, {} output lines dropped",
                    stats.records,
                    stats.rate,
                    stats.lost,
                    stats.lag_seconds,
                    stats.resync_corrections,
                    stats.output.dropped
                );
            }
            Format::Json | Format::Ecs | Format::Ocsf => {
                let mut timestamp = String::new();
                crate::clock::rfc3339_nanos(time_ns, &mut timestamp);
                let value = serde_json::json!({
                    "@timestamp": timestamp,
                    "event": {"kind": "metric", "action": "stats"},
                    "ipcaudit": {"stats": stats},
                });
                self.native(value, out);
            }
        }
    }

    pub fn summary(&self, time_ns: u64, summary: &Summary, out: &mut String) {
        match self.format {
            Format::Json | Format::Ecs | Format::Ocsf => {
                self.emit(json::summary_value(&self.session, time_ns, summary), out);
            }
            Format::Text => text::encode_summary(summary, out),
        }
    }

    /// The kernel snapshot the model was bootstrapped or reconciled with (JSON only: it is what
    /// `replay` needs; a person reading text has no use for it).
    pub fn snapshot(
        &self,
        snapshot: &crate::snapshot::Snapshot,
        ticks_recorded: bool,
        out: &mut String,
    ) {
        if self.format != Format::Text {
            self.emit(
                json::snapshot_value(&self.session, snapshot, ticks_recorded),
                out,
            );
        }
    }

    /// Totals the kernel aggregated (JSON only: what `replay` needs to rebuild the model;
    /// `status` and findings show their effect to people).
    pub fn aggregate(&self, agg: &crate::model::Aggregate, out: &mut String) {
        if self.format != Format::Text {
            self.emit(json::aggregate_value(&self.session, agg), out);
        }
    }

    /// What /proc said about a process the first time it did IPC (JSON only: `replay` gives
    /// it to the model; the text format names processes on every line).
    pub fn process_context(
        &self,
        time_ns: u64,
        task: &crate::event::Task,
        context: &crate::enrich::ProcessContext,
        out: &mut String,
    ) {
        if self.format != Format::Text {
            self.emit(
                json::process_context_value(&self.session, time_ns, task, context),
                out,
            );
        }
    }

    /// Where in the code an object was created or attached.
    pub fn call_site(
        &self,
        r: &crate::stack::Resolved,
        object: &crate::model::ObjectRef,
        out: &mut String,
    ) {
        match self.format {
            Format::Json | Format::Ecs | Format::Ocsf => {
                self.emit(json::call_site_value(&self.session, r, object), out);
            }
            Format::Text => text::encode_call_site(r, object, out),
        }
    }

    /// One object as the model holds it (JSON only).
    pub fn state(&self, time_ns: u64, object: &crate::model::ObjectView<'_>, out: &mut String) {
        if self.format != Format::Text {
            self.emit(json::state_value(&self.session, time_ns, object), out);
        }
    }

    /// A record built elsewhere in the native JSON shape (e.g. `reap-*`): stamped with the host
    /// and schema version, then written in this encoder's JSON format.
    pub fn native(&self, mut record: serde_json::Value, out: &mut String) {
        json::stamp(&self.session, &mut record);
        self.emit(record, out);
    }

    /// Writes a native JSON record in this encoder's JSON format.
    fn emit(&self, native: serde_json::Value, out: &mut String) {
        let value = match self.format {
            Format::Ecs => ecs::from_native(native),
            Format::Ocsf => ocsf::from_native(&native),
            Format::Json | Format::Text => native,
        };
        out.push_str(&value.to_string());
    }

    /// A header line for formats that have one.
    pub fn header(&self, out: &mut String) {
        if self.format == Format::Text {
            text::header(out);
        }
    }
}

/// An encoder and a writer with a reusable line buffer: what the commands print through.
pub struct Printer {
    pub encoder: Encoder,
    pub writer: LineWriter,
    line: String,
}

impl Printer {
    pub fn new(encoder: Encoder, writer: LineWriter) -> Self {
        Self {
            encoder,
            writer,
            line: String::with_capacity(1024),
        }
    }

    /// Encodes with `f` into the line buffer and writes the line (nothing when `f` wrote nothing).
    pub fn with(&mut self, f: impl FnOnce(&Encoder, &mut String)) {
        self.line.clear();
        f(&self.encoder, &mut self.line);
        if !self.line.is_empty() {
            self.writer.line(&self.line);
        }
    }

    pub fn event(
        &mut self,
        ev: &Event,
        action: Action,
        object: Option<&ObjectRef>,
        posix: Option<&crate::model::PosixRef>,
        context: &crate::enrich::ProcessContext,
    ) {
        self.with(|e, out| e.event(ev, action, object, posix, context, out));
    }

    pub fn finding(&mut self, time_ns: u64, change: &crate::model::FindingChange) {
        self.finding_from(time_ns, change, false);
    }

    /// A finding raised or cleared by a grace tick of the live model.
    pub fn tick_finding(&mut self, time_ns: u64, change: &crate::model::FindingChange) {
        self.finding_from(time_ns, change, true);
    }

    fn finding_from(&mut self, time_ns: u64, change: &crate::model::FindingChange, tick: bool) {
        let level = match change.finding().severity {
            crate::model::Severity::Critical => Level::Critical,
            crate::model::Severity::Warning => Level::Warning,
            crate::model::Severity::Info => Level::Info,
        };
        self.line.clear();
        self.encoder
            .finding_from(time_ns, change, tick, &mut self.line);
        self.writer.record(&self.line, level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_ids_round_trip() {
        let s = Session {
            boot: "3f2a9c1d".into(),
            host: None,
        };
        let key = crate::event::ProcessKey {
            pid: 4711,
            start_ticks: 123_456,
        };
        assert_eq!(s.entity_id(key), "3f2a9c1d-4711-123456");
        assert_eq!(parse_entity_id(&s.entity_id(key)), Some(key));
        assert_eq!(
            parse_entity_id("4711-9"),
            Some(crate::event::ProcessKey {
                pid: 4711,
                start_ticks: 9
            })
        );
        assert_eq!(parse_entity_id("x"), None);
    }
}
