//! Human durations in configuration: `500ms`, `1.5s`, `2m`, `1h`, `250us`.

use std::time::Duration;

use crate::error::DurationError;

/// Parses a number (integer or decimal) followed by a unit: `us`, `ms`, `s`, `m` or `h`.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if !s.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return Err(err("missing number (durations are not negative)"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| err("missing unit"))?;
    let (num, unit) = s.split_at(split);
    let nanos_per_unit: u128 = match unit.trim() {
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(err("unknown unit (use us, ms, s, m or h)")),
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(err("missing number"));
    }
    if frac.contains('.') {
        return Err(err("more than one decimal point"));
    }
    if frac.len() > 9 {
        return Err(err("more than 9 decimal places"));
    }
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| err("number too large"))?
    };
    let mut frac_value: u128 = 0;
    for d in frac.bytes() {
        frac_value = frac_value * 10 + u128::from(d - b'0');
    }
    let frac_nanos = frac_value * nanos_per_unit / 10u128.pow(frac.len() as u32);
    let total = int
        .checked_mul(nanos_per_unit)
        .and_then(|n| n.checked_add(frac_nanos))
        .ok_or_else(|| err("number too large"))?;
    // Cap at a year: nothing in this system wants longer, and it keeps arithmetic safe.
    if total > 365 * 24 * 3_600_000_000_000u128 {
        return Err(err("longer than a year"));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Formats a duration the way [`parse_duration`] reads it (`500ms`, `1.5s`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let units: [(u128, &str); 4] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
    ];
    for (per, unit) in units {
        if ns >= per && ns % per == 0 {
            return format!("{}{unit}", ns / per);
        }
    }
    if ns >= 1_000_000_000 && ns % 1_000_000 == 0 {
        return format!("{}s", d.as_secs_f64());
    }
    if ns % 1_000 == 0 {
        return format!("{}us", ns / 1_000);
    }
    format!("{}us", ns as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration(" 3s "), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn rejects_bad_forms_with_a_reason() {
        for (s, why) in [
            ("", "empty"),
            ("500", "missing unit"),
            ("5 parsecs", "unknown unit"),
            ("ms", "missing number"),
            (".s", "missing number"),
            ("1.2.3s", "more than one decimal point"),
            ("-1s", "missing number"),
            ("99999999999999999999999999999999999999999h", "too large"),
            ("400d", "unknown unit"),
            ("9000h", "longer than a year"),
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.reason.contains(why), "{s:?}: {e}");
            assert!(e.to_string().contains("500ms"), "{e}");
        }
    }

    #[test]
    fn format_round_trips() {
        for ms in [
            0u64, 1, 100, 500, 1000, 1500, 3000, 60_000, 90_000, 3_600_000,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms}");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
    }
}
