//! `--format ocsf`: Open Cybersecurity Schema Framework 1.1. IPC object events are Kernel
//! Activity (class 1003), process lifecycle is Process Activity (1007), findings are Detection
//! Findings (2004); `time` is in ms; what OCSF does not define is kept under `unmapped`.

use serde_json::{Value, json};

use crate::clock::parse_rfc3339;

pub const KERNEL_ACTIVITY: u32 = 1003;
pub const PROCESS_ACTIVITY: u32 = 1007;
pub const DETECTION_FINDING: u32 = 2004;
/// Device Inventory Info: metrics and model state.
pub const DEVICE_INVENTORY: u32 = 5001;

/// (class_uid, activity_id, activity name) of a native record.
pub fn classify(kind: &str, action: &str) -> (u32, u32, &'static str) {
    match (kind, action) {
        ("alert", "finding-cleared") => (DETECTION_FINDING, 3, "Close"),
        ("alert", _) => (DETECTION_FINDING, 1, "Create"),
        ("metric" | "state", _) => (DEVICE_INVENTORY, 2, "Collect"),
        (_, "process-fork" | "process-exec") => (PROCESS_ACTIVITY, 1, "Launch"),
        (_, "process-exit") => (PROCESS_ACTIVITY, 2, "Terminate"),
        (_, a) if a.ends_with("-create") => (KERNEL_ACTIVITY, 1, "Create"),
        (_, a) if a.ends_with("-remove") || a.ends_with("-destroy") => {
            (KERNEL_ACTIVITY, 3, "Delete")
        }
        (_, a) if a.ends_with("-open") || a.ends_with("-control") => (KERNEL_ACTIVITY, 2, "Read"),
        _ => (KERNEL_ACTIVITY, 4, "Invoke"),
    }
}

fn category(class_uid: u32) -> u32 {
    class_uid / 1000
}

fn process(p: &Value, user: &Value) -> Value {
    let mut out = json!({
        "pid": p["pid"],
        "tid": p["thread"]["id"],
        "name": p["name"],
        "uid": p["entity_id"],
        "user": {"uid": user["id"]},
    });
    if let Some(exe) = p["executable"].as_str() {
        out["file"] = json!({"path": exe, "name": exe.rsplit('/').next().unwrap_or(exe)});
    }
    if !p["parent"].is_null() {
        out["parent_process"] = json!({"pid": p["parent"]["pid"], "uid": p["parent"]["entity_id"]});
    }
    out
}

/// OCSF from a native record.
pub fn from_native(native: &Value) -> Value {
    let kind = native["event"]["kind"].as_str().unwrap_or("event");
    let action = native["event"]["action"].as_str().unwrap_or("");
    let (class_uid, activity_id, activity) = classify(kind, action);
    let time_ms = native["@timestamp"]
        .as_str()
        .and_then(parse_rfc3339)
        .map_or(0, |ns| ns / 1_000_000);
    let failed = native["event"]["outcome"] == "failure";
    let severity_id = match native["event"]["severity"].as_u64() {
        Some(3) => 5, // Critical
        Some(2) => 3, // Medium
        _ => 1,       // Informational
    };
    let mut out = json!({
        "class_uid": class_uid,
        "category_uid": category(class_uid),
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": class_uid * 100 + activity_id,
        "time": time_ms,
        "severity_id": severity_id,
        "status_id": if failed { 2 } else { 1 },
        "status": if failed { "Failure" } else { "Success" },
        "metadata": {
            "version": "1.1.0",
            "product": {"name": "ipcaudit", "vendor_name": "ipcaudit", "version": env!("CARGO_PKG_VERSION")},
            "log_name": action,
        },
        "unmapped": {"ipcaudit": native["ipcaudit"], "ipc": native["ipc"], "event": native["event"]},
    });
    if let Some(code) = native["error"]["code"].as_str() {
        out["status_detail"] = json!(code);
    }
    if !native["host"].is_null() {
        out["device"] =
            json!({"hostname": native["host"]["name"], "uid": native["host"]["id"], "type_id": 0});
    }
    if !native["process"].is_null() {
        let p = process(&native["process"], &native["user"]);
        if class_uid == PROCESS_ACTIVITY {
            out["process"] = p;
            out["actor"] = json!({"process": out["process"]["parent_process"].clone()});
        } else {
            out["actor"] = json!({"process": p});
        }
    }
    // An object: `type:id` (System V) or `type:/name` (POSIX).
    let object = |ipc: &serde_json::Value| match ipc["name"].as_str() {
        Some(name) => format!("{}:{name}", ipc["type"].as_str().unwrap_or("-")),
        None => format!("{}:{}", ipc["type"].as_str().unwrap_or("-"), ipc["id"]),
    };
    if class_uid == KERNEL_ACTIVITY {
        let ipc = &native["ipc"];
        // OCSF kernel resource types: 1 Shared Mutex (semaphores), 99 Other.
        let (type_id, ty) = match ipc["type"].as_str() {
            Some("sem" | "psem") => (1, "Shared Mutex"),
            Some("shm") => (99, "SysV shared memory"),
            Some("msg") => (99, "SysV message queue"),
            Some("pshm") => (99, "POSIX shared memory"),
            Some("pmsg") => (99, "POSIX message queue"),
            _ => (0, "Unknown"),
        };
        out["kernel"] = json!({"name": object(ipc), "type_id": type_id, "type": ty});
    }
    if class_uid == DETECTION_FINDING {
        out["finding_info"] = json!({
            "title": native["rule"]["name"],
            "desc": native["rule"]["description"],
            "uid": format!("{}:{}", native["rule"]["name"].as_str().unwrap_or(""), object(&native["ipc"])),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_and_process_activity() {
        let native = json!({
            "@timestamp": "2026-11-23T14:00:00.123456789Z",
            "event": {"kind": "event", "action": "sem-op", "outcome": "failure"},
            "error": {"code": "EIDRM"},
            "process": {"pid": 7, "thread": {"id": 8}, "name": "w", "entity_id": "b-7-1"},
            "user": {"id": "0"},
            "ipc": {"type": "sem", "id": 3},
        });
        let o = from_native(&native);
        assert_eq!(o["class_uid"], 1003);
        assert_eq!(o["type_uid"], 100_304);
        assert_eq!(o["time"], 1_795_442_400_123_u64);
        assert_eq!(o["status_id"], 2);
        assert_eq!(o["status_detail"], "EIDRM");
        assert_eq!(o["kernel"]["type_id"], 1);
        assert_eq!(o["actor"]["process"]["pid"], 7);
        let exit = from_native(
            &json!({"event": {"kind": "event", "action": "process-exit"}, "process": {"pid": 7}}),
        );
        assert_eq!(
            (exit["class_uid"].as_u64(), exit["activity_id"].as_u64()),
            (Some(1007), Some(2))
        );
        assert_eq!(exit["type_uid"], 100_702);
    }

    #[test]
    fn every_action_maps() {
        for action in crate::event::Action::ALL {
            let (class, activity, _) = classify("event", action.as_str());
            assert!(
                [KERNEL_ACTIVITY, PROCESS_ACTIVITY].contains(&class),
                "{action}"
            );
            assert!((1..=4).contains(&activity));
        }
    }
}
