//! Machine-readable results: every scenario prints one line
//! `CHAOS scenario=<name> key=value ...` (all values integers: ms, KiB, counts) on stdout and,
//! when `CHAOS_OUT` names a file, appends the same result to it as a JSON line.
//! `scripts/chaos.sh` gathers those into `bench-out/chaos.json` and a table.

use std::io::Write;

/// Reports one scenario's measurements.
pub fn report(scenario: &str, fields: &[(&str, u64)]) {
    let mut line = format!("CHAOS scenario={scenario}");
    let mut json = format!("{{\"scenario\":\"{scenario}\"");
    for (k, v) in fields {
        line.push_str(&format!(" {k}={v}"));
        json.push_str(&format!(",\"{k}\":{v}"));
    }
    json.push('}');
    println!("{line}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("CHAOS_OUT") {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{json}"));
        if let Err(e) = written {
            eprintln!("cannot append to {}: {e}", path.to_string_lossy());
        }
    }
}

/// Milliseconds of a duration, for [`report`].
pub fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

/// The median of some durations (the upper one of the middle two).
pub fn median(mut v: Vec<std::time::Duration>) -> Option<std::time::Duration> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}
