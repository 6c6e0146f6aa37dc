//! Replays every input that ever crashed a fuzz target (fuzz/regressions/<target>/), so a
//! fixed crash stays fixed in the ordinary test suite. The same folders hold seeds
//! (scripts/fuzz.sh copies them into the corpus): `vN-*` files are valid version N payloads,
//! `bad-*` files invalid ones next to them.

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

/// The seeds are what their names say: `vN-*` decode (in version N), `bad-*` do not.
#[test]
fn decode_seeds_are_what_they_say() {
    let mut seen = 0;
    for (name, data) in inputs("decode") {
        let file = name.rsplit('/').next().unwrap_or(&name).to_owned();
        if let Some(rest) = file.strip_prefix('v') {
            let version: u8 = rest[..1].parse().expect("vN-name");
            let m = common::Message::decode(&data)
                .unwrap_or_else(|e| panic!("{name}: a valid seed does not decode: {e}"));
            assert_eq!(data[0] >> 4, version, "{name}");
            assert_eq!(
                m.encode_as(version).unwrap().as_slice(),
                &data[..],
                "{name}"
            );
            seen += 1;
        } else if file.starts_with("bad-") {
            assert!(common::Message::decode(&data).is_err(), "{name} decodes");
        }
    }
    assert!(seen >= 10, "only {seen} valid seeds");
}

#[test]
fn config_regressions() {
    for (_name, data) in inputs("config") {
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = common::conf::parse_file("regression.conf", text);
        }
    }
}
