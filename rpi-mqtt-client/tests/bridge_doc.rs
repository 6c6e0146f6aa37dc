//! Keeps docs/vehicle-bridge.md in step with the bridge's codec (`rpi_client::bridge::frame`),
//! as common/tests/protocol_doc.rs does for docs/protocol.md: every json example must encode
//! to the whole frame (length prefix and payload) in the hex block under it and the hex must
//! decode back to it; every message, hello result, action and ack outcome needs an example; and
//! every fixed-size byte table must add up to the codec's length for its header byte.

use common::{AckOutcome, ActionKind, Message};
use rpi_client::bridge::frame::{
    Caps, Frame, Hello, HelloAck, HelloResult, MAX_PAYLOAD, Next, PREFIX, Reader,
};
use serde_json::Value;

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vehicle-bridge.md");

fn doc() -> String {
    std::fs::read_to_string(DOC_PATH).unwrap_or_else(|e| panic!("reading {DOC_PATH}: {e}"))
}

/// Fenced blocks: (info string, body, 1-based line of the opening fence).
fn blocks(doc: &str) -> Vec<(String, String, usize)> {
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
        out.push((lang.trim().to_owned(), body, i + 1));
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

fn hello_result(name: &str) -> HelloResult {
    match name {
        "ok" => HelloResult::Ok,
        "claimed" => HelloResult::Claimed,
        "unknown_entity" => HelloResult::UnknownEntity,
        "bad_hello" => HelloResult::BadHello,
        "too_many_connections" => HelloResult::TooManyConnections,
        other => panic!("no hello result {other:?}"),
    }
}

/// The frame a json example describes: `hello` and `hello_ack` are the bridge's own, every
/// other kind is a fleet message (`common::Message`'s JSON form).
fn frame_of(v: &Value, line: usize) -> Frame {
    let num = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("line {line}: no number {k:?}"))
    };
    match v["kind"].as_str() {
        Some("hello") => Frame::Hello(Hello {
            version: num("version") as u8,
            caps: Caps(num("caps") as u8),
            entities: v["entities"]
                .as_array()
                .unwrap_or_else(|| panic!("line {line}: no entities"))
                .iter()
                .map(|e| e.as_u64().unwrap() as u32)
                .collect(),
        }),
        Some("hello_ack") => Frame::HelloAck(HelloAck {
            version: num("version") as u8,
            result: hello_result(v["result"].as_str().unwrap_or("")),
            entity_id: num("entity_id") as u32,
        }),
        _ => match serde_json::from_value::<Message>(v.clone())
            .unwrap_or_else(|e| panic!("json block at line {line}: {e}"))
        {
            Message::Segment(m) => Frame::Segment(m),
            Message::Action(m) => Frame::Action(m),
            Message::State(m) => Frame::State(m),
            Message::Ack(m) => Frame::Ack(m),
            other => panic!("line {line}: the bridge does not carry {other:?}"),
        },
    }
}

/// Every (json, hex) pair; a json block must be followed by a hex block and a hex block must
/// follow a json block.
fn examples(doc: &str) -> Vec<(Frame, Vec<u8>, usize)> {
    let blocks = blocks(doc);
    let mut out = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        let (lang, body, line) = &blocks[i];
        assert_ne!(
            lang, "hex",
            "hex block at line {line} does not follow a json block"
        );
        if lang != "json" {
            i += 1;
            continue;
        }
        let (hlang, hbody, hline) = blocks
            .get(i + 1)
            .unwrap_or_else(|| panic!("json block at line {line} has no hex block"));
        assert_eq!(
            hlang, "hex",
            "json block at line {line}: the next block is not hex"
        );
        let json = body.trim();
        assert!(!json.contains('\n'), "json block at line {line}: one line");
        let v: Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("json at line {line}: {e}"));
        out.push((frame_of(&v, *line), parse_hex(hbody, *hline), *line));
        i += 2;
    }
    out
}

#[test]
fn every_example_encodes_to_its_frame_and_back() {
    let examples = examples(&doc());
    assert!(examples.len() >= 10, "examples found: {}", examples.len());
    for (frame, bytes, line) in &examples {
        assert_eq!(
            common::wire::to_hex(&frame.encode()),
            common::wire::to_hex(bytes),
            "example at line {line}: the encoding differs from the documented hex"
        );
        let mut r = Reader::default();
        r.push(bytes);
        match r.next_frame() {
            Next::Frame(p) => {
                assert_eq!(
                    p.len() + PREFIX,
                    bytes.len(),
                    "line {line}: one whole frame"
                );
                assert_eq!(
                    Frame::decode(&p).as_ref(),
                    Ok(frame),
                    "example at line {line}: the hex does not decode to the json"
                );
            }
            other => panic!("example at line {line}: {other:?}"),
        }
    }
}

#[test]
fn every_message_result_action_and_outcome_has_an_example() {
    let frames: Vec<Frame> = examples(&doc()).into_iter().map(|(f, _, _)| f).collect();
    let any = |p: &dyn Fn(&Frame) -> bool| frames.iter().any(p);
    assert!(any(&|f| matches!(f, Frame::Hello(_))), "no Hello");
    assert!(any(&|f| matches!(f, Frame::Segment(_))), "no Segment");
    assert!(any(&|f| matches!(f, Frame::State(_))), "no StateReport");
    for r in HelloResult::ALL {
        assert!(
            any(&|f| matches!(f, Frame::HelloAck(a) if a.result == r)),
            "no HelloAck with {r:?}"
        );
    }
    for k in ActionKind::ALL {
        assert!(
            any(&|f| matches!(f, Frame::Action(a) if a.action == k)),
            "no {k:?} action"
        );
    }
    for o in [AckOutcome::Accepted, AckOutcome::Completed] {
        assert!(
            any(&|f| matches!(f, Frame::Ack(a) if a.outcome == o)),
            "no {o:?} ack"
        );
    }
    assert!(
        any(&|f| matches!(f, Frame::Ack(a) if matches!(a.outcome, AckOutcome::Rejected(_)))),
        "no rejected ack"
    );
}

/// The byte tables (`| Offset | Size | Type | Field | Meaning |`) of the fixed-size messages add
/// up to the codec's payload length for the header byte in their first row.
#[test]
fn byte_tables_match_the_codec() {
    let doc = doc();
    let examples = examples(&doc);
    let len_of = |header: u8| -> Option<usize> {
        examples
            .iter()
            .find(|(_, bytes, _)| bytes.get(PREFIX) == Some(&header))
            .map(|(_, bytes, _)| bytes.len() - PREFIX)
    };
    let mut checked = 0;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut in_table = false;
    for line in doc.lines().chain(std::iter::once("")) {
        let t = line.trim();
        if t.starts_with('|') {
            let cells: Vec<String> = t
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            if cells.first().map(String::as_str) == Some("Offset") {
                in_table = true;
                rows.clear();
            } else if in_table && !cells[0].starts_with('-') {
                rows.push(cells);
            }
            continue;
        }
        if !in_table {
            continue;
        }
        in_table = false;
        let Some(first) = rows.first() else { continue };
        // The frame table: prefix and payload; checked by the examples.
        if first[3] != "header" {
            continue;
        }
        let header = u8::from_str_radix(first[4].trim_matches('`').trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| panic!("header cell {:?}", first[4]));
        let mut next = 0;
        let mut fixed = true;
        for r in &rows {
            let (Ok(offset), Ok(size)) = (r[0].parse::<usize>(), r[1].parse::<usize>()) else {
                fixed = false;
                break;
            };
            assert_eq!(offset, next, "table of {header:#04x}: row {r:?}");
            next = offset + size;
        }
        if !fixed {
            // The Hello: 4 fixed bytes and the ids.
            assert_eq!(header, 0xb1, "only the Hello has a variable length");
            continue;
        }
        assert_eq!(
            Some(next),
            len_of(header),
            "table of {header:#04x}: its fields add up to {next} bytes"
        );
        checked += 1;
    }
    assert_eq!(
        checked, 5,
        "tables of HelloAck, Segment, SegmentAck, StateReport, Action"
    );
    assert_eq!(
        MAX_PAYLOAD, 260,
        "the doc says frames carry at most 260 bytes"
    );
}
