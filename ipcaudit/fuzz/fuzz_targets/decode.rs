//! Ring-buffer records: any bytes decode to an event or an error, never a panic.
#![no_main]

use ipcaudit::{clock::Clocks, decode::decode};
use libfuzzer_sys::fuzz_target;

const CLOCKS: Clocks = Clocks { mono_to_wall: 1_700_000_000_000_000_000, boot_wall_ns: 0, ticks_per_sec: 100 };

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = decode(data, &CLOCKS) {
        // Whatever decodes must encode.
        let mut line = String::new();
        ipcaudit::sink::json::encode_event(
            &ipcaudit::sink::Session::default(),
            &ev,
            ipcaudit::event::Action::ShmAttach,
            None,
            None,
            &ipcaudit::enrich::ProcessContext::default(),
            &mut line,
        );
        assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok());
    }
});
