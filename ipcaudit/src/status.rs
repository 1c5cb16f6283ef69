//! `ipcaudit status` and `ipcaudit findings`: what a running `watch` knows, asked over its
//! control socket. The server side builds the answer from the model; the client renders it.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::{control::Request, model::Model};

/// The JSON answer to a control request (server side, pure).
pub fn answer(model: &Model, request: Request) -> String {
    let value = match request {
        Request::Status => json!({
            "source": "watch",
            "objects": model.objects().collect::<Vec<_>>(),
            "posix_objects": model.posix_objects().collect::<Vec<_>>(),
            "findings": model.findings().count(),
            "lost_records": model.lost_events(),
        }),
        Request::Findings => json!({
            "source": "watch",
            "findings": model.findings().map(finding_json).collect::<Vec<_>>(),
        }),
        Request::Explain(target) => match model.explain(&target) {
            Ok(e) => json!({"source": "watch", "explanation": e}),
            Err(e) => json!({"error": e.to_string()}),
        },
        Request::Report => json!({"source": "watch", "report": model.report()}),
    };
    value.to_string()
}

/// A finding as the daemon answers it: call sites carry their one-line summary and frame count,
/// as in the records.
fn finding_json(f: &crate::model::Finding) -> Value {
    let mut v = serde_json::to_value(f).unwrap_or_default();
    if let Some(evidence) = v["evidence"].as_array_mut() {
        for (e, pe) in evidence.iter_mut().zip(&f.evidence) {
            if let Some(site) = &pe.call_site {
                e["call_site"] = crate::sink::json::call_site_json(site);
            }
        }
    }
    v
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A process as `pid(name)`, `†` when dead.
fn proc_label(p: &Value) -> String {
    let dead = if p["alive"] == Value::Bool(false) {
        "†"
    } else {
        ""
    };
    let name: String = s(&p["name"])
        .chars()
        .filter(|c| !c.is_control())
        .take(16)
        .collect();
    format!("{}({name}){dead}", s(&p["pid"]))
}

/// Renders a `status` answer as a table.
pub fn render_status(v: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<4} {:>10} {:<10} {:<24} {:<22} HOLDERS / USERS",
        "TYPE", "ID", "KEY", "STATUS", "CREATOR"
    );
    for o in v["objects"].as_array().into_iter().flatten() {
        let key = o["key"]
            .as_i64()
            .and_then(|k| i32::try_from(k).ok())
            .map_or_else(|| "-".to_owned(), |k| format!("0x{k:08x}"));
        let creator = if o["creator"].is_null() {
            o["creator_pid"]
                .as_u64()
                .map_or_else(|| "unknown".to_owned(), |p| format!("{p}(?)"))
        } else {
            proc_label(&o["creator"])
        };
        let holders: Vec<String> = match s(&o["type"]).as_str() {
            "shm" => {
                let mut seen = Vec::new();
                for a in o["shm"]["attachments"].as_array().into_iter().flatten() {
                    let label = proc_label(&a["process"]);
                    if !seen.contains(&label) {
                        seen.push(label);
                    }
                }
                seen
            }
            "sem" => o["sem"]["users"]
                .as_array()
                .into_iter()
                .flatten()
                .map(proc_label)
                .collect(),
            _ => o["msg"]["users"]
                .as_array()
                .into_iter()
                .flatten()
                .map(proc_label)
                .collect(),
        };
        let _ = writeln!(
            out,
            "{:<4} {:>10} {:<10} {:<24} {:<22} {}",
            s(&o["type"]),
            s(&o["id"]),
            key,
            s(&o["status"]),
            creator,
            holders.join(" ")
        );
        if let Ok(site) = serde_json::from_value::<crate::event::CallSite>(o["call_site"].clone()) {
            let _ = writeln!(out, "     created at {}", site.summary(3));
        }
    }
    for o in v["posix_objects"].as_array().into_iter().flatten() {
        let holders: Vec<String> = o["holders"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| proc_label(&h["process"]))
            .collect();
        let name: String = s(&o["object"]["name"])
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        let creator = if o["creator"].is_null() {
            "-".to_owned()
        } else {
            proc_label(&o["creator"])
        };
        let _ = writeln!(
            out,
            "{:<4} {:<46} {:<22} {}",
            s(&o["object"]["type"]),
            name,
            creator,
            if holders.is_empty() {
                "-".to_owned()
            } else {
                holders.join(" ")
            }
        );
    }
    let _ = write!(
        out,
        "{} active findings; {} records lost",
        s(&v["findings"]),
        s(&v["lost_records"])
    );
    out
}

/// Renders a `findings` answer, one finding per paragraph.
pub fn render_findings(v: &Value) -> String {
    let mut out = String::new();
    let list = v["findings"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        out.push_str("no findings");
    }
    for f in &list {
        let object = &f["object"];
        let _ = write!(
            out,
            "{:<8} {}",
            s(&f["severity"]).to_uppercase(),
            s(&f["rule"])
        );
        if !object.is_null() {
            let _ = write!(out, " {} {}", s(&object["type"]), s(&object["id"]));
        }
        let posix = &f["posix"];
        if !posix.is_null() {
            let name: String = s(&posix["name"])
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            let _ = write!(out, " {} {name}", s(&posix["type"]));
        }
        let _ = writeln!(out, "\n  {}", s(&f["description"]));
        if let Some(service) = f["service"].as_str() {
            let _ = writeln!(out, "  service  {service}");
        }
        for e in f["evidence"].as_array().into_iter().flatten() {
            let exe = e["executable"]
                .as_str()
                .map_or_else(String::new, |x| format!(" {x}"));
            let _ = writeln!(out, "  {:<8} {}{exe}", s(&e["role"]), proc_label(e));
            if let Ok(site) =
                serde_json::from_value::<crate::event::CallSite>(e["call_site"].clone())
            {
                let _ = writeln!(out, "           at {}", site.summary(3));
                if let Some(reason) = &site.reason {
                    let _ = writeln!(out, "           ({} frame(s): {reason})", site.frames.len());
                }
            }
        }
        if let Some(remedy) = f["remedy"].as_str() {
            let _ = writeln!(out, "  fix: {remedy}");
        }
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_empty_and_full_answers() {
        assert_eq!(render_findings(&json!({"findings": []})), "no findings");
        let f = json!({"findings": [{
            "rule": "orphaned-segment", "severity": "warning", "description": "nobody holds it",
            "object": {"type": "shm", "id": 7},
            "evidence": [{"pid": 42, "name": "a\nb", "alive": false, "role": "creator"}],
            "remedy": "ipcrm -m 7"
        }]});
        let text = render_findings(&f);
        assert!(text.contains("WARNING  orphaned-segment shm 7"), "{text}");
        assert!(text.contains("creator  42(ab)†"), "{text}");
        assert!(text.contains("fix: ipcrm -m 7"), "{text}");
        let st = json!({"objects": [{"type": "shm", "id": 7, "key": -1, "status": "live", "creator": null,
            "creator_pid": 9, "shm": {"attachments": [{"process": {"pid": 1, "name": "x", "alive": true}},
            {"process": {"pid": 1, "name": "x", "alive": true}}]}}], "findings": 1, "lost_records": 0});
        let table = render_status(&st);
        assert!(table.contains("0xffffffff"), "{table}");
        assert!(table.contains("9(?)"), "{table}");
        assert!(
            table
                .trim_end()
                .ends_with("1 active findings; 0 records lost"),
            "{table}"
        );
        assert_eq!(table.matches("1(x)").count(), 1, "{table}");
    }
}
