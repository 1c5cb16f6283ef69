//! Time conversions. The kernel stamps records with CLOCK_MONOTONIC and process start times in
//! boot-time ns; output is wall-clock UTC. The offsets are sampled once by the caller (`now()`
//! lives at the edge) and injected, so the conversions stay pure.

use std::cell::Cell;

/// Converts kernel clocks to wall-clock ns since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clocks {
    /// realtime − monotonic, ns.
    pub mono_to_wall: i128,
    /// Wall-clock time of boot, ns since the epoch (realtime − boottime).
    pub boot_wall_ns: u64,
    /// `sysconf(_SC_CLK_TCK)`: process start times in /proc are in these ticks.
    pub ticks_per_sec: u64,
}

impl Clocks {
    /// Samples the system clocks.
    pub fn sample() -> Self {
        let real = clock_ns(libc::CLOCK_REALTIME);
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self {
            mono_to_wall: i128::from(real) - i128::from(mono),
            boot_wall_ns: u64::try_from(i128::from(real) - i128::from(boot)).unwrap_or(0),
            ticks_per_sec: u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
        }
    }

    /// A monotonic timestamp as wall-clock ns since the epoch.
    pub fn wall_ns(&self, mono_ns: u64) -> u64 {
        u64::try_from(i128::from(mono_ns) + self.mono_to_wall).unwrap_or(0)
    }

    /// A task's `start_boottime` (ns since boot) as /proc's start-time ticks.
    pub fn start_ticks(&self, boot_ns: u64) -> u64 {
        boot_ns / (1_000_000_000 / self.ticks_per_sec.max(1)).max(1)
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The current wall-clock time, ns since the epoch.
pub fn now_wall_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Formats ns since the epoch as RFC 3339 UTC with nanoseconds: `2026-11-23T14:03:04.123456789Z`.
pub fn rfc3339_nanos(ns: u64, out: &mut String) {
    thread_local! {
        /// The second last formatted on this thread and its text up to the fraction
        /// (`2026-11-23T14:03:04.`): this runs once per record on the collector's hot path and
        /// records come in time order, many per second, so the calendar arithmetic runs once
        /// per second of records instead of once per record.
        static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
    }
    let secs = ns / 1_000_000_000;
    let prefix = SECOND.with(|last| {
        let (cached, text) = last.get();
        if cached == secs {
            return text;
        }
        let text = second_text(secs);
        last.set((secs, text));
        text
    });
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    b[..20].copy_from_slice(&prefix);
    digits(&mut b[20..29], ns % 1_000_000_000);
    crate::sink::ndjson::ascii(out, &b);
}

/// `YYYY-MM-DDTHH:MM:SS.` of a second since the epoch. A u64 of nanoseconds ends in the year
/// 2554, so four year digits always suffice.
fn second_text(secs: u64) -> [u8; 20] {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut b = *b"0000-00-00T00:00:00.";
    digits(&mut b[0..4], y);
    digits(&mut b[5..7], m);
    digits(&mut b[8..10], d);
    digits(&mut b[11..13], rem / 3600);
    digits(&mut b[14..16], (rem % 3600) / 60);
    digits(&mut b[17..19], rem % 60);
    b
}

/// Writes the last `dst.len()` decimal digits of `v`, zero-padded (digit by digit: `fmt`
/// machinery was a measurable share of the hot path).
fn digits(dst: &mut [u8], mut v: u64) {
    for c in dst.iter_mut().rev() {
        *c = b"0123456789"[usize::try_from(v % 10).unwrap_or(0)];
        v /= 10;
    }
}

/// Parses what `rfc3339_nanos` writes (and any RFC 3339 UTC `Z` time with 0–9 fraction digits).
#[expect(
    clippy::many_single_char_names,
    reason = "calendar fields, named as in the format"
)]
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let frac = s.get(19..s.len() - 1)?;
    let nanos = match frac.strip_prefix('.') {
        None if frac.is_empty() => 0,
        Some(digits)
            if (1..=9).contains(&digits.len()) && digits.bytes().all(|c| c.is_ascii_digit()) =>
        {
            digits.parse::<u64>().ok()? * 10u64.pow(9 - u32::try_from(digits.len()).ok()?)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d)?;
    // Checked: a year past 2554 does not fit in u64 nanoseconds.
    days.checked_mul(86_400)?
        .checked_add(h * 3600 + mi * 60 + se)?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos)
}

/// Days since 1970-01-01 → (year, month, day). H. Hinnant's algorithm, for non-negative days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_known_instants() {
        let mut s = String::new();
        rfc3339_nanos(0, &mut s);
        assert_eq!(s, "1970-01-01T00:00:00.000000000Z");
        s.clear();
        rfc3339_nanos(1_795_353_784_123_456_789, &mut s);
        assert_eq!(s, "2026-11-22T13:23:04.123456789Z");
        s.clear();
        rfc3339_nanos(951_782_400_000_000_001, &mut s); // leap day 2000
        assert_eq!(s, "2000-02-29T00:00:00.000000001Z");
    }

    #[test]
    fn rejects_malformed_times() {
        for bad in [
            "",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-11-22T13:23:04.1234567891Z",
            "2026-11-22T13:23:04+01:00",
            "1969-12-31T23:59:59Z",
            "2026-11-22T13:23:04.12x4Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(
            parse_rfc3339("2026-11-22T13:23:04.5Z"),
            Some(1_795_353_784_500_000_000)
        );
        // Found by the replay_line fuzz target: past 2554 the nanoseconds overflow u64.
        assert_eq!(parse_rfc3339("4052-11-23T15:10:58.075865358Z"), None);
        assert_eq!(parse_rfc3339("9999-12-31T23:59:60.999999999Z"), None);
    }

    #[test]
    fn start_ticks_match_proc() {
        let c = Clocks {
            mono_to_wall: 0,
            boot_wall_ns: 0,
            ticks_per_sec: 100,
        };
        assert_eq!(c.start_ticks(1_234_567_890), 123);
    }

    proptest! {
        #[test]
        fn rfc3339_round_trips(ns in 0u64..4_102_444_800_000_000_000) {
            let mut s = String::new();
            rfc3339_nanos(ns, &mut s);
            prop_assert_eq!(parse_rfc3339(&s), Some(ns));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
        }
    }
}
