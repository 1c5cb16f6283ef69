//! /proc/PID/{maps,stat,status,syscall} parsers: never a panic on any text.
#![no_main]

use ipcaudit::snapshot::parse::{parse_maps_sysv, parse_stat, parse_status_uid, parse_syscall};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_maps_sysv(&text, 1, "/proc/1/maps");
    let _ = parse_stat(&text, "/proc/1/stat");
    let _ = parse_status_uid(&text);
    let _ = parse_syscall(&text, 1, 1);
});
