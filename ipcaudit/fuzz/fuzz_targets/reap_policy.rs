//! The reap-policy TOML: a policy or an error naming file, line and field; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ipcaudit::policy::parse(text, std::path::Path::new("reap.toml"));
    }
});
