//! Output destinations and production-session options on the real kernel: a file reopened on
//! SIGHUP, a unix-socket peer that goes away and comes back, syslog to a socket the test owns,
//! a Prometheus scrape, `--user`, `--max-events`, `--stats-every`.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{
        fs::PermissionsExt as _,
        net::{UnixDatagram, UnixListener},
    },
    path::PathBuf,
    time::Duration,
};

use ipcaudit_tests::{assert_schema, eventually, require_root, start, workload};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_ipc-workload");

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ipcaudit-out-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn records(text: &str) -> Vec<Value> {
    let v: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    v.iter().for_each(assert_schema);
    v
}

fn creates_of(records: &[Value], pid: &Value) -> usize {
    records
        .iter()
        .filter(|r| r["event"]["action"] == "shm-create" && &r["process"]["pid"] == pid)
        .count()
}

#[test]
fn file_output_is_0600_and_reopened_on_sighup() {
    if !require_root() {
        return;
    }
    let d = dir("file");
    let path = d.join("ipc.ndjson");
    let tracer = start(&["trace", "--type", "shm", "-o", path.to_str().unwrap()]);
    let first = workload(WORKLOAD, "shm-basic");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::rename(&path, d.join("ipc.ndjson.1")).unwrap();
    tracer.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    let second = workload(WORKLOAD, "shm-basic");
    tracer.stop();
    let rotated = records(&std::fs::read_to_string(d.join("ipc.ndjson.1")).unwrap());
    let fresh = records(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(creates_of(&rotated, &first["pid"]), 1);
    assert_eq!(creates_of(&fresh, &second["pid"]), 1);
    assert_eq!(creates_of(&rotated, &second["pid"]), 0);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fresh.last().unwrap()["event"]["kind"], "metric");
}

#[test]
fn unix_socket_peer_can_go_away_and_come_back() {
    if !require_root() {
        return;
    }
    let d = dir("unix");
    let sock = d.join("siem.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let dest = format!("unix:{}", sock.display());
    let tracer = start(&["trace", "--type", "shm", "-o", &dest]);
    let (conn, _) = listener.accept().unwrap();
    let first = workload(WORKLOAD, "shm-basic");
    let mut reader = BufReader::new(conn);
    let mut got = Vec::new();
    assert!(eventually(Duration::from_secs(5), || {
        let mut line = String::new();
        reader
            .get_mut()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            got.push(serde_json::from_str::<Value>(&line).unwrap());
        }
        creates_of(&got, &first["pid"]) == 1
    }));
    // The SIEM goes away; what happens meanwhile is buffered.
    drop(reader);
    drop(listener);
    std::fs::remove_file(&sock).unwrap();
    let away = workload(WORKLOAD, "shm-basic");
    std::thread::sleep(Duration::from_millis(500));
    // It comes back: the client reconnects and delivers the backlog.
    let listener = UnixListener::bind(&sock).unwrap();
    let (conn, _) = listener.accept().unwrap();
    let back = workload(WORKLOAD, "shm-basic");
    let mut reader = BufReader::new(conn);
    reader
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut got = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    got.push(v);
                }
                line.clear();
            }
            creates_of(&got, &away["pid"]) == 1 && creates_of(&got, &back["pid"]) == 1
        }),
        "after the peer came back: {got:#?}"
    );
    got.iter().for_each(assert_schema);
    tracer.stop();
}

#[test]
fn syslog_messages_are_rfc5424_with_the_record() {
    if !require_root() {
        return;
    }
    let d = dir("syslog");
    let path = d.join("log");
    let server = UnixDatagram::bind(&path).unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let dest = format!("syslog:{}", path.display());
    let tracer = start(&["trace", "--type", "shm", "-o", &dest]);
    let w = workload(WORKLOAD, "shm-basic");
    let mut found = None;
    let mut buf = vec![0u8; 65536];
    assert!(eventually(Duration::from_secs(5), || {
        while let Ok(n) = server.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.contains("\"shm-create\"") && msg.contains(&format!("\"pid\":{}", w["pid"])) {
                found = Some(msg);
            }
        }
        found.is_some()
    }));
    let msg = found.unwrap();
    // <daemon.info>1 TIMESTAMP HOST ipcaudit PROCID - - JSON
    assert!(msg.starts_with("<30>1 "), "{msg}");
    let fields: Vec<&str> = msg.splitn(8, ' ').collect();
    assert!(fields[1].ends_with('Z'), "{msg}");
    assert_eq!(fields[3], "ipcaudit");
    assert_eq!(fields[4], tracer.pid().to_string());
    let record: Value = serde_json::from_str(fields[7]).unwrap();
    assert_schema(&record);
    tracer.stop();
}

#[test]
fn metrics_are_served_in_prometheus_format() {
    if !require_root() {
        return;
    }
    let port = 20_000 + (std::process::id() % 20_000);
    let addr = format!("127.0.0.1:{port}");
    let tracer = start(&[
        "watch",
        "--grace",
        "60",
        "--socket",
        "/tmp/ipcaudit-metrics-test.sock",
        "--metrics",
        &addr,
    ]);
    workload(WORKLOAD, "shm-basic");
    std::thread::sleep(Duration::from_millis(300));
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    tracer.stop();
    assert!(response.starts_with("HTTP/1.0 200 OK"), "{response}");
    let create = response
        .lines()
        .find_map(|l| l.strip_prefix("ipcaudit_records_total{action=\"shm-create\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(create.is_some_and(|n| n >= 1), "{response}");
    assert!(
        response.contains("ipcaudit_records_lost_total 0"),
        "{response}"
    );
    assert!(
        response.contains("ipcaudit_findings{rule=\"orphaned-segment\"}"),
        "{response}"
    );
    assert!(response.contains("ipcaudit_objects{"), "{response}");
}

#[test]
fn user_drops_privileges_and_keeps_tracing() {
    if !require_root() {
        return;
    }
    let tracer = start(&["trace", "--type", "shm", "--user", "nobody"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", tracer.pid())).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_owned();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim()
        .to_owned();
    let w = workload(WORKLOAD, "shm-basic");
    let all = tracer.stop();
    assert_eq!(
        uid_line.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65534"; 4],
        "{uid_line}"
    );
    assert_eq!(
        u64::from_str_radix(&cap_eff, 16).unwrap(),
        1 << 39,
        "only CAP_BPF: {cap_eff}"
    );
    assert_eq!(creates_of(&all, &w["pid"]), 1);
}

#[test]
fn max_events_and_stats_every() {
    if !require_root() {
        return;
    }
    let tracer = start(&[
        "trace",
        "--type",
        "shm",
        "--max-events",
        "3",
        "--stats-every",
        "0.2",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    workload(WORKLOAD, "shm-basic");
    let all = tracer.wait_exit(Duration::from_secs(10));
    let events = all.iter().filter(|r| r["event"]["kind"] == "event").count();
    assert_eq!(events, 3, "{all:#?}");
    let stats: Vec<&Value> = all
        .iter()
        .filter(|r| r["event"]["action"] == "stats")
        .collect();
    assert!(!stats.is_empty(), "{all:#?}");
    assert!(stats[0]["ipcaudit"]["stats"]["lag_seconds"].is_number());
    all.iter().for_each(assert_schema);
}
