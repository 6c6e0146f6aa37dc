//! Keeps docs/protocol.md in step with the codec: every JSON example must encode to the hex
//! shown under it (and the hex must decode back to it), every kind needs an example, and every
//! payload section's stated length and byte table must match `Kind::encoded_len`.

use common::wire::to_hex;
use common::{AckOutcome, Kind, Message, Presence};

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");

fn doc() -> String {
    std::fs::read_to_string(DOC_PATH).unwrap_or_else(|e| panic!("reading {DOC_PATH}: {e}"))
}

/// A fenced code block: its info string (language), body and the 1-based line of its opening fence.
struct Block {
    lang: String,
    body: String,
    line: usize,
}

/// Every fenced block of the document, in order.
fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = doc.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(lang) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let mut body = String::new();
        let mut closed = false;
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                closed = true;
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        assert!(closed, "line {}: unclosed code block", i + 1);
        out.push(Block {
            lang: lang.trim().to_owned(),
            body,
            line: i + 1,
        });
    }
    out
}

fn parse_hex(text: &str, line: usize) -> Vec<u8> {
    text.split_whitespace()
        .map(|pair| {
            assert!(
                pair.len() == 2 && pair.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
                "hex block at line {line}: {pair:?} is not a lower-case hex pair"
            );
            u8::from_str_radix(pair, 16).unwrap()
        })
        .collect()
}

/// Every (json, hex) example pair. A json block must be followed by a hex block and a hex block
/// must follow a json block, so no example goes unchecked.
fn examples(doc: &str) -> Vec<(Message, Vec<u8>, usize)> {
    let blocks = blocks(doc);
    let mut out = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        let b = &blocks[i];
        match b.lang.as_str() {
            "json" => {
                let hex = blocks
                    .get(i + 1)
                    .filter(|h| h.lang == "hex")
                    .unwrap_or_else(|| panic!("json block at line {} has no hex block", b.line));
                let json = b.body.trim();
                assert!(
                    !json.contains('\n'),
                    "json block at line {}: the message must be on one line",
                    b.line
                );
                let msg: Message = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("json block at line {}: {e}", b.line));
                out.push((msg, parse_hex(&hex.body, hex.line), b.line));
                i += 2;
            }
            "hex" => panic!("hex block at line {} does not follow a json block", b.line),
            _ => i += 1,
        }
    }
    out
}

#[test]
fn every_example_encodes_to_its_hex_and_back() {
    let doc = doc();
    let examples = examples(&doc);
    assert!(!examples.is_empty(), "no examples found in {DOC_PATH}");
    for (msg, bytes, line) in &examples {
        assert_eq!(
            to_hex(msg.encode().as_slice()),
            to_hex(bytes),
            "example at line {line}: encoding differs from the documented hex"
        );
        assert_eq!(
            Message::decode(bytes).as_ref(),
            Ok(msg),
            "example at line {line}: the documented hex does not decode to the json"
        );
    }
}

#[test]
fn every_kind_outcome_and_presence_has_an_example() {
    let doc = doc();
    let msgs: Vec<Message> = examples(&doc).into_iter().map(|(m, _, _)| m).collect();
    for kind in Kind::ALL {
        assert!(
            msgs.iter().any(|m| m.kind() == kind),
            "no example of kind {}",
            kind.name()
        );
    }
    let has_outcome = |f: fn(&AckOutcome) -> bool| {
        msgs.iter()
            .any(|m| matches!(m, Message::Ack(a) if f(&a.outcome)))
    };
    assert!(
        has_outcome(|o| *o == AckOutcome::Accepted),
        "no accepted ack"
    );
    assert!(
        has_outcome(|o| *o == AckOutcome::Completed),
        "no completed ack"
    );
    assert!(
        has_outcome(|o| matches!(o, AckOutcome::Rejected(_))),
        "no rejected ack"
    );
    for presence in [
        Presence::Online,
        Presence::Offline,
        Presence::ConnectionLost,
    ] {
        assert!(
            msgs.iter()
                .any(|m| matches!(m, Message::Status(s) if s.presence == presence)),
            "no status example with presence {presence:?}"
        );
    }
}

/// The samples the codec's unit tests use (`common::wire::samples`): the doc promises to show
/// exactly these.
#[test]
fn wire_samples_are_documented() {
    let doc = doc();
    let msgs: Vec<Message> = examples(&doc).into_iter().map(|(m, _, _)| m).collect();
    for (name, s) in common::wire::samples() {
        assert!(msgs.contains(&s), "sample {name} {s:?} is not documented");
    }
}

/// The byte size of a wire type named in a byte table.
fn type_size(ty: &str) -> Option<usize> {
    Some(match ty {
        "u8" => 1,
        "u16" => 2,
        "u32" | "i32" => 4,
        "u64" => 8,
        _ => return None,
    })
}

/// What one payload section (a heading containing `(kind N)`) states.
#[derive(Default)]
struct Section {
    kind: Option<u8>,
    heading: String,
    length: Option<usize>,
    /// (offset, size, type) of every row of the section's `Offset` table.
    rows: Vec<(usize, usize, String)>,
}

fn payload_sections(doc: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    let mut in_table = false;
    for line in doc.lines() {
        let t = line.trim();
        if t.starts_with('#') {
            in_table = false;
            let kind = t
                .split_once("(kind ")
                .and_then(|(_, rest)| rest.split_once(')'))
                .map(|(n, _)| n.trim().parse::<u8>().expect("kind number"));
            sections.push(Section {
                kind,
                heading: t.to_owned(),
                ..Section::default()
            });
            continue;
        }
        let Some(sec) = sections.last_mut().filter(|s| s.kind.is_some()) else {
            continue;
        };
        if let Some(rest) = t.strip_prefix("Length:") {
            let n = rest
                .trim()
                .strip_suffix("bytes")
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("{}: cannot parse {t:?}", sec.heading));
            assert!(sec.length.is_none(), "{}: two Length lines", sec.heading);
            sec.length = Some(n);
            continue;
        }
        if !t.starts_with('|') {
            in_table = false;
            continue;
        }
        let cells: Vec<&str> = t.trim_matches('|').split('|').map(str::trim).collect();
        if cells.first() == Some(&"Offset") {
            assert!(sec.rows.is_empty(), "{}: two byte tables", sec.heading);
            assert_eq!(cells.get(1), Some(&"Size"), "{}", sec.heading);
            assert_eq!(cells.get(2), Some(&"Type"), "{}", sec.heading);
            in_table = true;
            continue;
        }
        if !in_table || cells.iter().all(|c| c.chars().all(|ch| ch == '-')) {
            continue;
        }
        let num = |i: usize| -> usize {
            cells[i]
                .parse()
                .unwrap_or_else(|_| panic!("{}: bad row {t:?}", sec.heading))
        };
        sec.rows.push((num(0), num(1), cells[2].to_owned()));
    }
    sections.into_iter().filter(|s| s.kind.is_some()).collect()
}

#[test]
fn byte_tables_match_encoded_lengths() {
    let doc = doc();
    let sections = payload_sections(&doc);
    for kind in Kind::ALL {
        let matching: Vec<&Section> = sections
            .iter()
            .filter(|s| s.kind == Some(kind as u8))
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "expected one section headed `(kind {})`",
            kind as u8
        );
        let sec = matching[0];
        assert_eq!(
            sec.length,
            Some(kind.encoded_len()),
            "{}: stated length (a line `Length: N bytes`)",
            sec.heading
        );
        assert!(!sec.rows.is_empty(), "{}: no byte table", sec.heading);
        let mut next = 0;
        for (offset, size, ty) in &sec.rows {
            assert_eq!(*offset, next, "{}: row at offset {offset}", sec.heading);
            assert_eq!(
                type_size(ty),
                Some(*size),
                "{}: offset {offset} has type {ty} but size {size}",
                sec.heading
            );
            next = offset + size;
        }
        assert_eq!(
            next,
            kind.encoded_len(),
            "{}: the table's fields add up to {next} bytes",
            sec.heading
        );
    }
}
