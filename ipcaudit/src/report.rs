//! `ipcaudit report --html FILE [--replay FILE]`: a self-contained HTML page (inline CSS, SVG
//! and a few lines of script; nothing is fetched) for an investigation or a postmortem: every
//! object's lifetime as a horizontal bar coloured by state (live, leaked, suspect, removed), the
//! processes holding each one over time, findings marked on the timeline, per-executable
//! created-vs-removed counts, and each object's full story (`explain`).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io,
    path::{Path, PathBuf},
    process::ExitCode,
};

use thiserror::Error;

use crate::{
    cli::ReportArgs,
    control::{ControlError, Request},
    event::{IpcType, ProcessKey},
    model::{Explanation, Report, What},
    replay::{ReplayError, rebuild, replay_config},
};

#[derive(Debug, Error)]
pub enum ReportError {
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the watch daemon's answer has no report: {0}")]
    BadAnswer(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Objects drawn on the timeline at most (leaked and suspect ones first, then the newest).
pub const MAX_ROWS: usize = 1000;
/// Holder lanes drawn per object at most.
const MAX_LANES: usize = 8;

/// Gets the report's data from the recording or the running `watch`.
pub fn fetch(args: &ReportArgs) -> Result<(Report, &'static str), ReportError> {
    if let Some(file) = &args.replay {
        let (model, _) = rebuild(file, replay_config(args.grace), |_| {})?;
        return Ok((model.report(), "replay"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ReportError::Write {
            path: args.html.clone(),
            source,
        })?;
    let answer = runtime.block_on(crate::control::ask(&args.socket, Request::Report))?;
    let report = serde_json::from_value(answer["report"].clone())
        .map_err(|e| ReportError::BadAnswer(e.to_string()))?;
    Ok((report, "watch"))
}

/// Runs `ipcaudit report`.
pub fn run(args: &ReportArgs) -> Result<ExitCode, ReportError> {
    let (report, source) = fetch(args)?;
    let title = args.title.clone().unwrap_or_else(|| match &args.replay {
        Some(f) => format!("ipcaudit report: {}", f.display()),
        None => "ipcaudit report: live watch".to_owned(),
    });
    let html = render(&report, &title, source);
    write(&args.html, &html)?;
    let leaked = report
        .objects
        .iter()
        .filter(|o| o.verdict.state == "leaked")
        .count();
    eprintln!(
        "ipcaudit: wrote {} ({} objects, {leaked} leaked)",
        args.html.display(),
        report.objects.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, html: &str) -> Result<(), ReportError> {
    std::fs::write(path, html).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// HTML-escapes text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// `14:20:01` (UTC), with the date when the report spans more than a day.
fn clock(ns: u64, with_date: bool) -> String {
    let mut s = String::new();
    crate::clock::rfc3339_nanos(ns, &mut s);
    match (with_date, s.get(..10), s.get(11..19)) {
        (true, Some(d), Some(t)) => format!("{d} {t}"),
        (false, _, Some(t)) => t.to_owned(),
        _ => s,
    }
}

/// A stable element id for an object.
fn dom_id(e: &Explanation) -> String {
    format!(
        "obj-{}-{}-{}-{}",
        e.object.ty, e.object.ns, e.object.id, e.object.generation
    )
}

fn label(e: &Explanation) -> String {
    let mut s = format!("{} {}", e.object.ty, e.object.id);
    if let Some(k) = e.object.key.filter(|k| *k != 0) {
        let _ = write!(s, " {k:#010x}");
    }
    s
}

/// When the object's bar starts and ends (`None`: still there at the end of the report).
fn span(e: &Explanation) -> (u64, Option<u64>) {
    let first = e.timeline.first().map_or(e.now_ns, |t| t.time_ns);
    let start = e.created_ns.unwrap_or(first).min(first);
    (start, e.destroyed_ns)
}

/// A process's attached intervals on a segment, from the story's attach and detach entries.
/// When a process held (or used) an object: start, end (`None`: still at the end).
type Lane = (ProcessKey, Vec<(u64, Option<u64>)>);

fn lanes(e: &Explanation) -> Vec<Lane> {
    let mut open: BTreeMap<ProcessKey, (u64, u64)> = BTreeMap::new();
    let mut done: BTreeMap<ProcessKey, Vec<(u64, Option<u64>)>> = BTreeMap::new();
    for t in &e.timeline {
        let Some(k) = t.process else { continue };
        match &t.what {
            What::Attach { ranges, .. } => {
                let slot = open.entry(k).or_insert((t.time_ns, 0));
                slot.1 += ranges;
            }
            What::Detach { left, .. } => {
                if *left == 0
                    && let Some((start, _)) = open.remove(&k)
                {
                    done.entry(k).or_default().push((start, Some(t.time_ns)));
                }
            }
            _ => {}
        }
    }
    for (k, (start, _)) in open {
        done.entry(k).or_default().push((start, None));
    }
    // Semaphore sets and queues: when each process used it.
    if e.object.ty != IpcType::Shm {
        for op in &e.operations {
            done.entry(op.process)
                .or_default()
                .push((op.ops.first_ns, Some(op.ops.last_ns.max(op.ops.first_ns))));
        }
    }
    done.into_iter().collect()
}

fn state_class(state: &str) -> &'static str {
    match state {
        "leaked" => "leaked",
        "suspect" => "suspect",
        "live" => "live",
        _ => "removed",
    }
}

const STYLE: &str = r#"
:root { --live:#2e9d4f; --leaked:#d2322d; --suspect:#e8912d; --removed:#8c959f; --ink:#1f2328; --muted:#656d76; --grid:#d8dee4; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink); margin: 24px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid var(--grid); padding-bottom: 4px; }
.sub { color: var(--muted); margin-bottom: 12px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 12px 0; }
.card { border: 1px solid var(--grid); border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.card b { display: block; font-size: 20px; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -1px; margin-right: 4px; }
svg text { font: 11px system-ui, "DejaVu Sans", sans-serif; fill: var(--ink); }
svg .axis { stroke: var(--grid); }
svg .tick { fill: var(--muted); }
svg .row-label { cursor: pointer; }
rect.bar { rx: 2; cursor: pointer; }
rect.bar.live { fill: var(--live); } rect.bar.leaked { fill: var(--leaked); }
rect.bar.suspect { fill: var(--suspect); } rect.bar.removed { fill: var(--removed); }
rect.holder { fill: #54aeff; opacity: .85; } rect.holder.dead { fill: #b6bdc5; }
path.finding { fill: #fff; stroke: var(--leaked); stroke-width: 2; }
path.finding.cleared { stroke: var(--muted); }
table { border-collapse: collapse; margin: 6px 0; }
th, td { text-align: left; padding: 4px 10px; border-bottom: 1px solid var(--grid); vertical-align: top; }
th { font-weight: 600; background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.meter { display: inline-block; height: 10px; background: var(--leaked); vertical-align: middle; }
.meter.ok { background: var(--live); }
.state { font-weight: 600; } .state.leaked { color: var(--leaked); } .state.suspect { color: var(--suspect); } .state.live { color: var(--live); } .state.removed { color: var(--removed); }
details { border: 1px solid var(--grid); border-radius: 6px; margin: 6px 0; padding: 4px 10px; }
details[open] { background: #fbfcfd; }
details.focus { outline: 2px solid #0969da; }
summary { cursor: pointer; }
pre { white-space: pre-wrap; font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; margin: 6px 0; }
#tip { position: fixed; pointer-events: none; background: #1f2328; color: #fff; padding: 4px 8px; border-radius: 4px; font-size: 12px; display: none; max-width: 420px; white-space: pre-wrap; }
"#;

const SCRIPT: &str = r"
(function () {
  var tip = document.getElementById('tip');
  function show(ev) {
    var t = ev.target.getAttribute('data-tip');
    if (!t) { return; }
    tip.textContent = t;
    tip.style.display = 'block';
    tip.style.left = (ev.clientX + 12) + 'px';
    tip.style.top = (ev.clientY + 12) + 'px';
  }
  function hide() { tip.style.display = 'none'; }
  function open(id) {
    var d = document.getElementById(id);
    if (!d) { return; }
    document.querySelectorAll('details.focus').forEach(function (x) { x.classList.remove('focus'); });
    d.open = true;
    d.classList.add('focus');
    d.scrollIntoView({ block: 'center' });
  }
  document.querySelectorAll('[data-tip]').forEach(function (el) {
    el.addEventListener('mousemove', show);
    el.addEventListener('mouseleave', hide);
  });
  document.querySelectorAll('[data-object]').forEach(function (el) {
    el.addEventListener('click', function () { open(el.getAttribute('data-object')); });
  });
  document.body.setAttribute('data-ready', String(document.querySelectorAll('rect.bar').length));
})();
";

/// The page.
#[expect(
    clippy::cast_precision_loss,
    reason = "pixel positions from nanosecond offsets"
)]
pub fn render(report: &Report, title: &str, source: &str) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let objects = &report.objects;
    let count = |state: &str| {
        objects
            .iter()
            .filter(|o| state_class(&o.verdict.state) == state)
            .count()
    };
    // Which objects get a row.
    let mut rows: Vec<&Explanation> = objects.iter().collect();
    if rows.len() > MAX_ROWS {
        rows.sort_by_key(|e| {
            let rank = match e.verdict.state.as_str() {
                "leaked" => 0,
                "suspect" => 1,
                _ => 2,
            };
            (rank, std::cmp::Reverse(span(e).0))
        });
        rows.truncate(MAX_ROWS);
        rows.sort_by_key(|e| span(e).0);
    }
    let t0 = rows
        .iter()
        .map(|e| span(e).0)
        .min()
        .unwrap_or(report.now_ns);
    let t1 = rows
        .iter()
        .flat_map(|e| {
            let (s, end) = span(e);
            [Some(s), end, Some(e.now_ns)]
        })
        .flatten()
        .chain(std::iter::once(report.now_ns))
        .max()
        .unwrap_or(t0)
        .max(t0 + 1_000_000_000);
    let with_date = t1 - t0 > 86_400 * 1_000_000_000;
    let (label_w, chart_w) = (230.0_f64, 960.0_f64);
    let x = |t: u64| label_w + (t.saturating_sub(t0)) as f64 / (t1 - t0) as f64 * chart_w;

    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body>\n",
        esc(title)
    );
    let _ = write!(
        out,
        "<h1>{}</h1>\n<div class=\"sub\">from the {} · {} to {} (UTC){}</div>\n",
        esc(title),
        if source == "replay" {
            "recording"
        } else {
            "running watch"
        },
        clock(t0, true),
        clock(t1, true),
        if report.lost_records > 0 {
            format!(
                " · <b>{} records were lost</b>: the model was resynced",
                report.lost_records
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "<div class=\"cards\" id=\"summary\">\
         <div class=\"card\"><b id=\"count-objects\">{}</b>objects</div>\
         <div class=\"card\"><b id=\"count-leaked\" style=\"color:var(--leaked)\">{}</b>leaked</div>\
         <div class=\"card\"><b id=\"count-suspect\" style=\"color:var(--suspect)\">{}</b>suspect</div>\
         <div class=\"card\"><b id=\"count-live\" style=\"color:var(--live)\">{}</b>live</div>\
         <div class=\"card\"><b id=\"count-removed\">{}</b>removed</div></div>",
        objects.len(),
        count("leaked"),
        count("suspect"),
        count("live"),
        count("removed")
    );

    // ----- timeline -----
    out.push_str("<h2>Timeline</h2>\n<div class=\"legend\">\
        <span><i style=\"background:var(--live)\"></i>live</span>\
        <span><i style=\"background:var(--leaked)\"></i>leaked</span>\
        <span><i style=\"background:var(--suspect)\"></i>suspect (within grace)</span>\
        <span><i style=\"background:var(--removed)\"></i>removed</span>\
        <span><i style=\"background:#54aeff\"></i>process holding / using it</span>\
        <span><svg width=\"12\" height=\"12\"><path class=\"finding\" d=\"M6 1 L11 6 L6 11 L1 6 Z\"/></svg> finding</span></div>\n");
    if objects.len() > rows.len() {
        let _ = writeln!(
            out,
            "<p>{} objects; the timeline shows {} (leaked and suspect ones first).</p>",
            objects.len(),
            rows.len()
        );
    }
    let mut body = String::new();
    let mut y = 28.0_f64;
    for e in &rows {
        let id = dom_id(e);
        let class = state_class(&e.verdict.state);
        let (start, end) = span(e);
        let x0 = x(start);
        let x1 = x(end.unwrap_or(t1)).max(x0 + 2.0);
        let mut tip = format!(
            "{} · {}\ncreated {}",
            label(e),
            e.verdict.state,
            e.created_ns
                .map_or_else(|| "before the recording".to_owned(), |t| clock(t, true))
        );
        if let Some(p) = &e.program {
            let _ = write!(tip, " by {p}");
        }
        if let Some(s) = &e.call_site {
            let _ = write!(tip, "\nat {}", s.summary(2));
        }
        if let Some(t) = e.removed_ns {
            let _ = write!(tip, "\nremoved {}", clock(t, with_date));
        }
        let _ = write!(
            body,
            "<g class=\"row\" id=\"row-{id}\"><text class=\"row-label\" x=\"4\" y=\"{:.1}\" data-object=\"{id}\">{}</text>\
             <rect class=\"bar {class}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" data-object=\"{id}\" data-state=\"{}\" data-tip=\"{}\"/>",
            y + 11.0,
            esc(&label(e)),
            y,
            x1 - x0,
            esc(&e.verdict.state),
            esc(&tip)
        );
        // Findings on the timeline.
        for t in &e.timeline {
            let (cleared, text) = match &t.what {
                What::FindingRaised { rule, severity } => (
                    false,
                    format!(
                        "{rule} ({}) from {}",
                        severity.as_str(),
                        clock(t.time_ns, with_date)
                    ),
                ),
                What::FindingCleared { rule } => (
                    true,
                    format!("{rule} cleared {}", clock(t.time_ns, with_date)),
                ),
                _ => continue,
            };
            let fx = x(t.time_ns);
            let _ = write!(
                body,
                "<path class=\"finding{}\" d=\"M{fx:.1} {:.1} L{:.1} {:.1} L{fx:.1} {:.1} L{:.1} {:.1} Z\" data-object=\"{id}\" data-tip=\"{}\"/>",
                if cleared { " cleared" } else { "" },
                y - 2.0,
                fx + 6.0,
                y + 7.0,
                y + 16.0,
                fx - 6.0,
                y + 7.0,
                esc(&text)
            );
        }
        y += 18.0;
        // Processes holding or using it.
        let all = lanes(e);
        for (k, spans) in all.iter().take(MAX_LANES) {
            let person = e.person(*k);
            let name = person.map_or_else(String::new, |p| p.name.clone());
            let dead = person.is_some_and(|p| !p.alive);
            let _ = write!(
                body,
                "<text class=\"tick\" x=\"16\" y=\"{:.1}\">{} {}</text>",
                y + 7.5,
                k.pid,
                esc(&name)
            );
            for (s, end) in spans {
                let hx0 = x(*s);
                let hx1 = x(end.unwrap_or(t1)).max(hx0 + 2.0);
                let tip = format!(
                    "{} {} {}\n{} → {}",
                    k.pid,
                    name,
                    person
                        .and_then(|p| p.details.executable.clone())
                        .unwrap_or_default(),
                    clock(*s, with_date),
                    end.map_or_else(|| "now".to_owned(), |t| clock(t, with_date))
                );
                let _ = write!(
                    body,
                    "<rect class=\"holder{}\" x=\"{hx0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"8\" data-object=\"{id}\" data-pid=\"{}\" data-tip=\"{}\"/>",
                    if dead { " dead" } else { "" },
                    y + 1.0,
                    hx1 - hx0,
                    k.pid,
                    esc(&tip)
                );
            }
            y += 11.0;
        }
        if all.len() > MAX_LANES {
            let _ = write!(
                body,
                "<text class=\"tick\" x=\"16\" y=\"{:.1}\">+{} more</text>",
                y + 7.5,
                all.len() - MAX_LANES
            );
            y += 11.0;
        }
        body.push_str("</g>\n");
        y += 6.0;
    }
    let height = y + 8.0;
    let width = label_w + chart_w + 60.0;
    let _ = writeln!(
        out,
        "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"object lifetimes\">"
    );
    for i in 0..=6u32 {
        let t = t0 + (t1 - t0) / 6 * u64::from(i);
        let tx = x(t);
        let _ = write!(
            out,
            "<line class=\"axis\" x1=\"{tx:.1}\" y1=\"18\" x2=\"{tx:.1}\" y2=\"{:.0}\"/><text class=\"tick\" x=\"{tx:.1}\" y=\"12\" text-anchor=\"middle\">{}</text>",
            height - 4.0,
            clock(t, with_date)
        );
    }
    out.push_str(&body);
    out.push_str("</svg>\n");

    // ----- findings -----
    out.push_str("<h2>Findings</h2>\n");
    let mut any = false;
    let mut table = String::from(
        "<table id=\"findings\"><tr><th>rule</th><th>severity</th><th>object</th><th>since</th><th>service</th><th>what</th><th>fix</th></tr>\n",
    );
    for e in objects {
        for f in &e.verdict.findings {
            any = true;
            let _ = writeln!(
                table,
                "<tr class=\"finding-row\" data-rule=\"{}\"><td>{}{}</td><td>{}</td><td><a href=\"#{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                f.rule,
                f.rule,
                if f.pending { " (pending)" } else { "" },
                f.severity.as_str(),
                dom_id(e),
                esc(&label(e)),
                clock(f.since_ns, with_date),
                esc(e.service.as_deref().unwrap_or("")),
                esc(&f.description),
                esc(f.remedy.as_deref().unwrap_or(""))
            );
        }
    }
    for f in &report.other_findings {
        any = true;
        let _ = writeln!(
            table,
            "<tr class=\"finding-row\" data-rule=\"{}\"><td>{}</td><td>{}</td><td>–</td><td>{}</td><td>{}</td><td>{}</td><td></td></tr>",
            f.rule,
            f.rule,
            f.severity.as_str(),
            clock(f.since_ns, with_date),
            esc(f.service.as_deref().unwrap_or("")),
            esc(&f.description)
        );
    }
    table.push_str("</table>\n");
    if any {
        out.push_str(&table);
    } else {
        out.push_str("<p id=\"findings\">No findings.</p>\n");
    }

    // ----- programs -----
    out.push_str("<h2>Created and removed, per executable</h2>\n");
    let max = report
        .programs
        .values()
        .map(|t| t.created)
        .max()
        .unwrap_or(1)
        .max(1);
    out.push_str("<table id=\"programs\"><tr><th>executable</th><th>created</th><th>removed</th><th>not removed</th><th></th></tr>\n");
    let mut programs: Vec<(&String, &crate::model::ProgramTotals)> =
        report.programs.iter().collect();
    programs.sort_by_key(|(name, t)| {
        (
            std::cmp::Reverse(t.created.saturating_sub(t.removed)),
            *name,
        )
    });
    for (name, t) in programs {
        let left = t.created.saturating_sub(t.removed);
        let w = |n: u64| n as f64 / max as f64 * 200.0;
        let _ = writeln!(
            out,
            "<tr class=\"program\"><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{left}</td>\
             <td><span class=\"meter ok\" style=\"width:{:.0}px\"></span><span class=\"meter\" style=\"width:{:.0}px\"></span></td></tr>",
            esc(name),
            t.created,
            t.removed,
            w(t.removed),
            w(left)
        );
    }
    out.push_str("</table>\n");

    // ----- objects -----
    out.push_str("<h2>Objects</h2>\n");
    for e in objects {
        let class = state_class(&e.verdict.state);
        let _ = writeln!(
            out,
            "<details id=\"{}\" class=\"object\"><summary>{} · <span class=\"state {class}\">{}</span>{}</summary><pre>{}</pre></details>",
            dom_id(e),
            esc(&label(e)),
            esc(&e.verdict.state),
            e.service
                .as_deref()
                .map_or_else(String::new, |s| format!(" · {}", esc(s))),
            esc(&crate::explain::render(e))
        );
    }
    let _ = write!(
        out,
        "<div id=\"tip\"></div>\n<script>{SCRIPT}</script>\n</body></html>\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Task};
    use crate::model::{Model, ModelConfig};

    fn report() -> Report {
        let mut m = Model::new(ModelConfig {
            grace_ns: 1_000_000_000,
            ..ModelConfig::default()
        });
        let t = 1_800_000_000_000_000_000u64;
        let task = |pid: u32| Task {
            process: ProcessKey {
                pid,
                start_ticks: 5,
            },
            tid: pid,
            comm: format!("p<{pid}>"),
            uid: 0,
        };
        let ev = |time: u64, pid: u32, kind: EventKind| crate::event::Event {
            time_ns: time,
            ipc_ns: 1,
            task: task(pid),
            kind,
        };
        m.apply(&ev(
            t,
            10,
            EventKind::ShmGet {
                key: 0x1234,
                size: 4096,
                flags: 0o1600,
                result: Ok(7),
            },
        ));
        m.apply(&ev(
            t + 1_000_000,
            10,
            EventKind::ShmAt {
                shmid: 7,
                addr: 0,
                flags: 0,
                result: Ok(0x7000_0000),
            },
        ));
        m.apply(&ev(t + 2_000_000, 10, EventKind::Exit { code: 9 }));
        m.apply(&ev(
            t + 3_000_000,
            11,
            EventKind::ShmGet {
                key: 0,
                size: 4096,
                flags: 0o1600,
                result: Ok(8),
            },
        ));
        m.apply(&ev(
            t + 4_000_000,
            11,
            EventKind::ShmCtl {
                shmid: 8,
                cmd: 0,
                result: Ok(0),
            },
        ));
        m.tick(t + 5_000_000_000);
        m.report()
    }

    #[test]
    fn the_page_has_the_timeline_findings_and_counts() {
        let r = report();
        assert_eq!(r.objects.len(), 2);
        let html = render(&r, "t <&>", "replay");
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<title>t &lt;&amp;&gt;</title>"));
        assert!(html.contains("<svg id=\"timeline\""));
        assert_eq!(html.matches("<rect class=\"bar ").count(), 2);
        assert!(html.contains("rect class=\"bar leaked\""), "{html}");
        assert!(html.contains("rect class=\"bar removed\""));
        assert!(html.contains("class=\"holder dead\""));
        assert!(html.contains("<path class=\"finding\""));
        assert!(html.contains("data-rule=\"orphaned-segment\""));
        assert!(html.contains("<table id=\"programs\">"));
        assert!(html.contains("<b id=\"count-leaked\" style=\"color:var(--leaked)\">1</b>"));
        // Names from other processes are escaped.
        assert!(html.contains("p&lt;10&gt;") && !html.contains("p<10>"));
        // Self-contained: the only URL is the SVG namespace.
        let urls: Vec<&str> = html
            .match_indices("http")
            .map(|(i, _)| &html[i..(i + 30).min(html.len())])
            .collect();
        assert_eq!(urls, ["http://www.w3.org/2000/svg\" wi"]);
        assert!(!html.contains(" src=") && !html.contains("@import") && !html.contains("url("));
    }

    #[test]
    fn escaping() {
        assert_eq!(esc("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&#39;\\u{1}");
    }
}
