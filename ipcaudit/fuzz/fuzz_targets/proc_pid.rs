//! /proc/PID/{maps,stat,status,syscall,fdinfo} parsers, a POSIX queue's file, and the start-up
//! scan's iterator records that stand in for /proc: never a panic on any input.
#![no_main]

use ipcaudit::event::PosixType;
use ipcaudit::snapshot::kscan;
use ipcaudit::snapshot::parse::{
    PosixDir, parse_fdinfo_flags, parse_maps_files, parse_maps_sysv, parse_mqueue_file,
    parse_stat, parse_status_uid, parse_syscall, posix_file_name, posix_object_name,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tasks) = kscan::processes(data, 1, |ns| ns / 10_000_000) {
        let _ = kscan::mappings(data, &tasks.processes, 1, 12);
    }
    let text = String::from_utf8_lossy(data);
    let _ = parse_maps_sysv(&text, 1, "/proc/1/maps");
    let _ = parse_stat(&text, "/proc/1/stat");
    let _ = parse_status_uid(&text);
    let _ = parse_syscall(&text, 1, 1);
    let _ = parse_maps_files(&text, "/proc/1/maps");
    let _ = parse_fdinfo_flags(&text);
    let _ = parse_mqueue_file(&text, "mqueue:/q");
    let _ = posix_object_name(PosixDir::DevShm, &text);
    let _ = posix_object_name(PosixDir::Mqueue, &text);
    for ty in PosixType::ALL {
        let _ = posix_file_name(ty, &text);
    }
});
