//! Replays every input that ever crashed a fuzz target (fuzz/regressions/<target>/), so a
//! fixed crash stays fixed in the ordinary test suite.

use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n != ".gitkeep") {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

#[test]
fn decode_regressions() {
    for (name, data) in inputs("decode") {
        if let Ok(m) = common::Message::decode(&data) {
            let again = m
                .encode_as(data[0] >> 4)
                .expect("encodes in its own version");
            assert_eq!(again.as_slice(), &data[..], "{name}");
        }
        if let Ok(s) = std::str::from_utf8(&data) {
            let _ = common::topic::parse_topic(s);
            let _ = common::duration::parse_duration(s);
        }
    }
}

#[test]
fn config_regressions() {
    for (_name, data) in inputs("config") {
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = common::conf::parse_file("regression.conf", text);
        }
    }
}
