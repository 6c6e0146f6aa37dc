//! The server's shutdown summary in its log (`messages: heartbeat=12 ...`,
//! `input errors: empty=3 ...`, `segments: sent=5 acked=5 ...`), parsed into maps.

use std::collections::BTreeMap;

/// The `key=value` pairs of the last log line containing `label` (e.g. `"input errors: "`);
/// empty when the line says `none`. None when there is no such line.
pub fn counters(log: &str, label: &str) -> Option<BTreeMap<String, u64>> {
    let line = log.lines().rev().find(|l| l.contains(label))?;
    let rest = &line[line.find(label)? + label.len()..];
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect(),
    )
}

/// One counter of a parsed line, 0 when absent.
pub fn get(map: &BTreeMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_summary_lines() {
        let log = "2025 [INFO] input errors: empty=3 wrong_length=40\n\
                   2025 [INFO] registry: none\n\
                   2025 [INFO] segments: sent=5 acked=4 retried=0 completed=3\n";
        let e = counters(log, "input errors: ").unwrap();
        assert_eq!(get(&e, "empty"), 3);
        assert_eq!(get(&e, "wrong_length"), 40);
        assert!(counters(log, "registry: ").unwrap().is_empty());
        assert_eq!(get(&counters(log, "segments: ").unwrap(), "completed"), 3);
        assert!(counters(log, "broker: ").is_none());
    }
}
