//! /proc/sysvipc/{shm,sem,msg} parsers: rows or an error naming line and field, never a panic.
#![no_main]

use ipcaudit::snapshot::parse::{parse_sysvipc_msg, parse_sysvipc_sem, parse_sysvipc_shm};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_sysvipc_shm(&text, "/proc/sysvipc/shm");
    let _ = parse_sysvipc_sem(&text, "/proc/sysvipc/sem");
    let _ = parse_sysvipc_msg(&text, "/proc/sysvipc/msg");
});
