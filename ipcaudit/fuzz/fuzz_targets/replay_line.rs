//! Recorded NDJSON lines: parsed to an event, a snapshot, a skipped record or an error naming
//! the field; never a panic. Also the bounded line reader over arbitrary input.
#![no_main]

use ipcaudit::{replay::read_line_bounded, sink::json::parse_event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = std::io::BufReader::with_capacity(7, data);
    let mut buf = Vec::new();
    while let Ok(Some(_)) = read_line_bounded(&mut reader, &mut buf, 64) {
        assert!(buf.len() <= 64);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_event(text);
    }
});
