//! `--metrics ADDR`: Prometheus text exposition of the session. Rendering is pure; the
//! collector serves it over a minimal HTTP/1.0 exchange on its own loop.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{model::Model, sink::Summary};

/// What the collector measures beyond the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Gauges {
    /// Seconds between an event happening and the collector handling it (last seen).
    pub lag_seconds: f64,
    /// Corrections made by resyncs.
    pub resync_corrections: u64,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders every metric in the Prometheus text format (version 0.0.4).
pub fn render(summary: &Summary, model: Option<&Model>, gauges: Gauges) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "ipcaudit_records_total",
        "counter",
        "Event records written, by event.action.",
    );
    for (action, n) in &summary.counts {
        let _ = writeln!(out, "ipcaudit_records_total{{action=\"{action}\"}} {n}");
    }
    family(
        &mut out,
        "ipcaudit_records_lost_total",
        "counter",
        "Records the kernel could not deliver (ring buffer full).",
    );
    let _ = writeln!(out, "ipcaudit_records_lost_total {}", summary.lost);
    family(
        &mut out,
        "ipcaudit_output_dropped_total",
        "counter",
        "Lines the output could not write.",
    );
    let _ = writeln!(
        out,
        "ipcaudit_output_dropped_total {}",
        summary.output.dropped
    );
    family(
        &mut out,
        "ipcaudit_collector_lag_seconds",
        "gauge",
        "Delay between an event and its handling.",
    );
    let _ = writeln!(
        out,
        "ipcaudit_collector_lag_seconds {:.6}",
        gauges.lag_seconds
    );
    family(
        &mut out,
        "ipcaudit_resync_corrections_total",
        "counter",
        "Model corrections made by reconciling with the kernel.",
    );
    let _ = writeln!(
        out,
        "ipcaudit_resync_corrections_total {}",
        gauges.resync_corrections
    );
    family(
        &mut out,
        "ipcaudit_model_evicted_total",
        "counter",
        "Processes and objects the model forgot to stay within its caps (--max-processes, --max-objects).",
    );
    let _ = writeln!(
        out,
        "ipcaudit_model_evicted_total{{kind=\"process\"}} {}",
        summary.evicted.processes
    );
    let _ = writeln!(
        out,
        "ipcaudit_model_evicted_total{{kind=\"object\"}} {}",
        summary.evicted.objects
    );
    if let Some(model) = model {
        let (processes, objects_tracked) = model.tracked();
        family(
            &mut out,
            "ipcaudit_model_tracked",
            "gauge",
            "Processes and objects the model tracks now.",
        );
        let _ = writeln!(
            out,
            "ipcaudit_model_tracked{{kind=\"process\"}} {processes}"
        );
        let _ = writeln!(
            out,
            "ipcaudit_model_tracked{{kind=\"object\"}} {objects_tracked}"
        );
        let mut objects: BTreeMap<(String, String), u64> = BTreeMap::new();
        for o in model.objects() {
            let status = serde_json::to_value(o.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            *objects
                .entry((o.object.ty.to_string(), status))
                .or_default() += 1;
        }
        // POSIX objects the model holds exist (an unlinked one is forgotten).
        for o in model.posix_objects() {
            *objects
                .entry((o.object.ty.to_string(), "live".to_owned()))
                .or_default() += 1;
        }
        family(
            &mut out,
            "ipcaudit_objects",
            "gauge",
            "Objects in the model, by type and status.",
        );
        for ((ty, status), n) in objects {
            let _ = writeln!(
                out,
                "ipcaudit_objects{{type=\"{ty}\",status=\"{status}\"}} {n}"
            );
        }
        let mut findings: BTreeMap<&str, u64> = crate::model::Rule::ALL
            .iter()
            .map(|r| (r.as_str(), 0))
            .collect();
        for f in model.findings() {
            *findings.entry(f.rule.as_str()).or_default() += 1;
        }
        family(
            &mut out,
            "ipcaudit_findings",
            "gauge",
            "Active findings, by rule.",
        );
        for (rule, n) in findings {
            let _ = writeln!(out, "ipcaudit_findings{{rule=\"{rule}\"}} {n}");
        }
    }
    out
}

/// The HTTP response carrying `body`.
pub fn http_response(body: &str) -> String {
    format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::Action, model::ModelConfig};

    #[test]
    fn renders_counters_and_gauges() {
        let mut summary = Summary::default();
        summary.counts.insert(Action::ShmCreate, 3);
        summary.lost = 2;
        let model = Model::new(ModelConfig::default());
        let text = render(
            &summary,
            Some(&model),
            Gauges {
                lag_seconds: 0.25,
                resync_corrections: 4,
            },
        );
        assert!(
            text.contains("ipcaudit_records_total{action=\"shm-create\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("ipcaudit_records_lost_total 2\n"));
        assert!(text.contains("ipcaudit_collector_lag_seconds 0.250000\n"));
        assert!(text.contains("ipcaudit_resync_corrections_total 4\n"));
        assert!(text.contains("ipcaudit_findings{rule=\"orphaned-segment\"} 0\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("ipcaudit_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        let resp = http_response(&text);
        assert!(resp.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(resp.contains(&format!("Content-Length: {}\r\n", text.len())));
    }
}
