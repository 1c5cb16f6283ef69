//! `--format ecs`: strict Elastic Common Schema. ECS fields stay at the top (with
//! `event.category`/`event.type` set for each action); everything ECS does not define (`ipc.*`
//! and the native `ipcaudit.*`) goes under `ipcaudit.*`. Built from the native record, so both
//! formats say the same thing.

use serde_json::{Map, Value, json};

/// ECS `event.category` and `event.type` of an action or record kind.
pub fn categorize(kind: &str, action: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match (kind, action) {
        ("alert", _) => (&["intrusion_detection"], &["indicator"]),
        ("metric" | "state", _) => (&["host"], &["info"]),
        (_, "process-fork") => (&["process"], &["start"]),
        (_, "process-exec") => (&["process"], &["start", "change"]),
        (_, "process-exit") => (&["process"], &["end"]),
        (_, "events-lost") => (&["host"], &["error"]),
        (_, "model-resync") => (&["host"], &["change"]),
        (_, a) if a.ends_with("-create") => (&["process"], &["creation"]),
        (_, a) if a.ends_with("-remove") || a.ends_with("-destroy") => {
            (&["process"], &["deletion"])
        }
        (_, a) if a.ends_with("-control") => (&["process", "configuration"], &["change"]),
        _ => (&["process"], &["access"]),
    }
}

/// Top-level fields ECS defines (the rest moves under `ipcaudit`).
const ECS_TOP: &[&str] = &[
    "@timestamp",
    "event",
    "error",
    "process",
    "user",
    "host",
    "rule",
    "log",
];

/// Strict ECS from a native record.
pub fn from_native(native: Value) -> Value {
    let Value::Object(mut top) = native else {
        return native;
    };
    let kind = top
        .get("event")
        .and_then(|e| e["kind"].as_str())
        .unwrap_or("event")
        .to_owned();
    let action = top
        .get("event")
        .and_then(|e| e["action"].as_str())
        .unwrap_or("")
        .to_owned();
    let mut extra = match top.remove("ipcaudit") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let keys: Vec<String> = top
        .keys()
        .filter(|k| !ECS_TOP.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in keys {
        if let Some(v) = top.remove(&k) {
            extra.insert(k, v);
        }
    }
    let (category, types) = categorize(&kind, &action);
    if let Some(Value::Object(event)) = top.get_mut("event") {
        event.insert("category".into(), json!(category));
        event.insert("type".into(), json!(types));
        event.insert("module".into(), json!("ipcaudit"));
        event.insert("dataset".into(), json!("ipcaudit.ipc"));
        // ECS `event.duration` is ns, like ours; `event.severity` is a number, like ours.
    }
    top.insert("ecs".into(), json!({"version": "8.11.0"}));
    top.insert("ipcaudit".into(), Value::Object(extra));
    Value::Object(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_non_ecs_fields_under_ipcaudit() {
        let native = json!({
            "@timestamp": "2026-11-23T14:00:00.000000000Z",
            "event": {"kind": "event", "action": "shm-create", "outcome": "success"},
            "process": {"pid": 1},
            "ipc": {"type": "shm", "id": 3},
            "ipcaudit": {"schema_version": 1}
        });
        let ecs = from_native(native);
        assert_eq!(ecs["event"]["category"], json!(["process"]));
        assert_eq!(ecs["event"]["type"], json!(["creation"]));
        assert_eq!(ecs["ipcaudit"]["ipc"]["id"], 3);
        assert_eq!(ecs["ipcaudit"]["schema_version"], 1);
        assert!(ecs.get("ipc").is_none());
        assert_eq!(ecs["process"]["pid"], 1);
    }

    #[test]
    fn every_action_has_a_category() {
        for action in crate::event::Action::ALL {
            let (c, t) = categorize("event", action.as_str());
            assert!(!c.is_empty() && !t.is_empty(), "{action}");
        }
        assert_eq!(
            categorize("alert", "finding-raised").0,
            ["intrusion_detection"]
        );
        assert_eq!(categorize("event", "shm-destroy").1, ["deletion"]);
    }
}
