//! Keeps docs/protocol.md in step with the codec: every JSON example must encode to the hex
//! shown under it (and the hex must decode back to it), every kind, outcome, reject reason and
//! presence needs an example, and every payload section's stated length and byte table must
//! match the codec's fixed lengths.
//!
//! Versions: a hex block with the info string `hex` is the current [`VERSION`]'s encoding
//! (`Message::encode_as(VERSION)`); `hex vN` is version N's (`Message::encode_as(N)`), for an
//! older version or a newer one up to [`LATEST`] (designed and decoded, not sent by the daemons
//! yet), and must sit under a heading that mentions "version N". Likewise a payload section (a
//! heading with `(kind K)`) describes the current version unless its heading says "version N".
//! A kind introduced after the current version is documented in the version that added it.

use common::wire::{LATEST, OLDEST_VERSION, VERSION, peek, to_hex};
use common::{
    AckOutcome, ActionKind, ActionOutcome, EntityFlags, Kind, Message, Presence, RejectReason,
    Target,
};

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");

fn doc() -> String {
    std::fs::read_to_string(DOC_PATH).unwrap_or_else(|e| panic!("reading {DOC_PATH}: {e}"))
}

/// The versions older than the current one that the codec still speaks.
fn older_versions() -> impl Iterator<Item = u8> {
    OLDEST_VERSION..VERSION
}

/// The versions newer than the current one that the codec already speaks.
fn newer_versions() -> impl Iterator<Item = u8> {
    VERSION + 1..=LATEST
}

/// True when `kind` exists in `version`.
fn has_kind(version: u8, kind: Kind) -> bool {
    kind.since_version() <= version
}

/// The version a kind is documented in: the current one, or the one that introduced it.
fn documented_version(kind: Kind) -> u8 {
    kind.since_version().max(VERSION)
}

/// True when `kind`'s layout in `version` needs its own section and example: `version` is where
/// the kind is documented, or its layout there differs from the documented one.
fn layout_differs(version: u8, kind: Kind) -> bool {
    has_kind(version, kind)
        && (version == documented_version(kind)
            || kind.encoded_len_in(version) != kind.encoded_len())
}

/// The version a heading names ("version N", any case), if any.
fn heading_version(heading: &str) -> Option<u8> {
    let lower = heading.to_lowercase();
    let (_, rest) = lower.split_once("version ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A markdown heading line: its level (number of `#`) and text.
fn heading(line: &str) -> Option<(usize, &str)> {
    let t = line.trim();
    let level = t.chars().take_while(|c| *c == '#').count();
    (level > 0).then(|| (level, t[level..].trim()))
}

/// A fenced code block: its info string (language), body, the 1-based line of its opening fence
/// and the headings it sits under (outermost first).
struct Block {
    lang: String,
    body: String,
    line: usize,
    headings: Vec<String>,
}

/// Every fenced block of the document, in order.
fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    // (level, text) of the enclosing headings.
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut lines = doc.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if let Some((level, text)) = heading(line) {
            stack.retain(|(l, _)| *l < level);
            stack.push((level, text.to_owned()));
            continue;
        }
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
            headings: stack.iter().map(|(_, h)| h.clone()).collect(),
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

/// The protocol version a hex block's info string names: `hex` is the current version,
/// `hex vN` version N. None for blocks that are not hex blocks.
fn hex_version(b: &Block) -> Option<u8> {
    let rest = b.lang.strip_prefix("hex")?;
    if rest.is_empty() {
        return Some(VERSION);
    }
    let v: u8 = rest
        .trim()
        .strip_prefix('v')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "line {}: info string {:?} is neither `hex` nor `hex vN`",
                b.line, b.lang
            )
        });
    assert!(
        (OLDEST_VERSION..=LATEST).contains(&v) && v != VERSION,
        "line {}: `hex v{v}`: the codec speaks versions {OLDEST_VERSION}..={LATEST}, and the \
         current one ({VERSION}) is written `hex`",
        b.line
    );
    assert!(
        b.headings.iter().any(|h| heading_version(h) == Some(v)),
        "line {}: a `hex v{v}` example must be under a heading naming version {v}, not {:?}",
        b.line,
        b.headings
    );
    Some(v)
}

/// One documented example: a json block and the hex block under it.
struct Example {
    msg: Message,
    bytes: Vec<u8>,
    /// The protocol version the hex is in.
    version: u8,
    /// Line of the json block.
    line: usize,
}

/// Every (json, hex) example pair. A json block must be followed by a hex block and a hex block
/// must follow a json block, so no example goes unchecked.
fn examples(doc: &str) -> Vec<Example> {
    let blocks = blocks(doc);
    let mut out = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        let b = &blocks[i];
        if hex_version(b).is_some() {
            panic!("hex block at line {} does not follow a json block", b.line);
        }
        if b.lang != "json" {
            i += 1;
            continue;
        }
        let (hex, version) = blocks
            .get(i + 1)
            .and_then(|h| Some((h, hex_version(h)?)))
            .unwrap_or_else(|| panic!("json block at line {} has no hex block", b.line));
        let json = b.body.trim();
        assert!(
            !json.contains('\n'),
            "json block at line {}: the message must be on one line",
            b.line
        );
        let msg: Message = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("json block at line {}: {e}", b.line));
        out.push(Example {
            msg,
            bytes: parse_hex(&hex.body, hex.line),
            version,
            line: b.line,
        });
        i += 2;
    }
    out
}

/// The messages of the examples in the current version.
fn current_messages(doc: &str) -> Vec<Message> {
    examples(doc)
        .into_iter()
        .filter(|e| e.version == VERSION)
        .map(|e| e.msg)
        .collect()
}

#[test]
fn every_example_encodes_to_its_hex_and_back() {
    let doc = doc();
    let examples = examples(&doc);
    assert!(!examples.is_empty(), "no examples found in {DOC_PATH}");
    for Example {
        msg,
        bytes,
        version,
        line,
    } in &examples
    {
        let encoded = msg.encode_as(*version).unwrap_or_else(|e| {
            panic!("example at line {line}: cannot be encoded in version {version}: {e}")
        });
        assert_eq!(
            to_hex(encoded.as_slice()),
            to_hex(bytes),
            "example at line {line}: the version {version} encoding differs from the documented hex"
        );
        assert_eq!(
            peek(bytes),
            Ok((*version, msg.kind())),
            "example at line {line}: header byte"
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
    let examples = examples(&doc);
    for kind in Kind::ALL {
        let v = documented_version(kind);
        assert!(
            examples
                .iter()
                .any(|e| e.version == v && e.msg.kind() == kind),
            "no version {v} example of kind {}",
            kind.name()
        );
    }
    // Codes may be shown in any version that has them.
    let msgs: Vec<Message> = examples.iter().map(|e| e.msg).collect();
    let any = |f: &dyn Fn(&Message) -> bool| msgs.iter().any(f);
    let has_outcome =
        |outcome: AckOutcome| any(&|m| matches!(m, Message::Ack(a) if a.outcome == outcome));
    assert!(has_outcome(AckOutcome::Accepted), "no accepted ack");
    assert!(has_outcome(AckOutcome::Completed), "no completed ack");
    for reason in RejectReason::ALL {
        assert!(
            has_outcome(AckOutcome::Rejected(reason)),
            "no ack rejected with {reason:?}"
        );
    }
    for p in [
        Presence::Online,
        Presence::Offline,
        Presence::ConnectionLost,
    ] {
        let status = any(&|m| matches!(m, Message::Status(s) if s.presence == p));
        assert!(status, "no status example with presence {p:?}");
        let server = any(&|m| matches!(m, Message::ServerStatus(s) if s.presence == p));
        assert!(server, "no server status example with presence {p:?}");
    }
    for action in ActionKind::ALL {
        let found = any(&|m| matches!(m, Message::Action(a) if a.action == action));
        assert!(found, "no action example of {action:?}");
    }
    let all = any(&|m| matches!(m, Message::Action(a) if a.target == Target::All));
    let one = any(&|m| matches!(m, Message::Action(a) if matches!(a.target, Target::Entity(_))));
    assert!(all && one, "no action example for every entity, or for one");
    for outcome in ActionOutcome::ALL {
        let found = any(&|m| matches!(m, Message::ActionAck(a) if a.outcome == outcome));
        assert!(found, "no action ack example with {outcome:?}");
    }
    let repeat = any(&|m| matches!(m, Message::ActionAck(a) if a.repeat));
    assert!(repeat, "no action ack answered from memory");
    for flag in [
        EntityFlags::PAUSED,
        EntityFlags::STOPPED,
        EntityFlags::NO_DRIVER,
    ] {
        let found = any(&|m| matches!(m, Message::State(s) if s.flags.contains(flag)));
        assert!(found, "no state example with flag {flag:?}");
    }
}

/// Every older and newer version the codec speaks has an example, and so has every kind whose
/// layout differs in it (or that it introduced).
#[test]
fn older_versions_have_examples() {
    let doc = doc();
    let examples = examples(&doc);
    for v in older_versions().chain(newer_versions()) {
        assert!(
            examples.iter().any(|e| e.version == v),
            "no `hex v{v}` example"
        );
        for kind in Kind::ALL {
            if layout_differs(v, kind) {
                assert!(
                    examples
                        .iter()
                        .any(|e| e.version == v && e.msg.kind() == kind),
                    "the {} layout differs in version {v} but has no `hex v{v}` example",
                    kind.name()
                );
            }
        }
    }
}

/// The samples the codec's unit tests use (`common::wire::samples`): the doc promises to show
/// exactly these.
#[test]
fn wire_samples_are_documented() {
    let doc = doc();
    let msgs = current_messages(&doc);
    for (name, s) in common::wire::samples() {
        assert!(msgs.contains(&s), "sample {name} {s:?} is not documented");
    }
    let v3: Vec<Message> = examples(&doc)
        .into_iter()
        .filter(|e| e.version == 3)
        .map(|e| e.msg)
        .collect();
    for (name, s) in common::wire::samples_v3() {
        assert!(
            v3.contains(&s),
            "version 3 sample {name} {s:?} is not documented"
        );
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

/// The cells of a markdown table row, or None for a line that is not one.
fn table_cells(line: &str) -> Option<Vec<&str>> {
    let t = line.trim();
    t.starts_with('|')
        .then(|| t.trim_matches('|').split('|').map(str::trim).collect())
}

fn is_separator(cells: &[&str]) -> bool {
    cells
        .iter()
        .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':'))
}

/// What one payload section (a heading containing `(kind N)`) states.
#[derive(Default)]
struct Section {
    kind: Option<u8>,
    /// The version its heading names, else the current one.
    version: u8,
    heading: String,
    length: Option<usize>,
    /// The cells of every row of the section's `Offset` table.
    rows: Vec<Vec<String>>,
}

fn payload_sections(doc: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    let mut in_table = false;
    for line in doc.lines() {
        let t = line.trim();
        if let Some((_, text)) = heading(t) {
            in_table = false;
            let kind = text
                .split_once("(kind ")
                .and_then(|(_, rest)| rest.split_once(')'))
                .map(|(n, _)| n.trim().parse::<u8>().expect("kind number"));
            sections.push(Section {
                kind,
                version: heading_version(text).unwrap_or(VERSION),
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
        let Some(cells) = table_cells(t) else {
            in_table = false;
            continue;
        };
        if cells.first() == Some(&"Offset") {
            assert!(sec.rows.is_empty(), "{}: two byte tables", sec.heading);
            assert_eq!(
                cells,
                ["Offset", "Size", "Type", "Unit", "Field", "Meaning"],
                "{}: byte table columns",
                sec.heading
            );
            in_table = true;
            continue;
        }
        if !in_table || is_separator(&cells) {
            continue;
        }
        assert_eq!(cells.len(), 6, "{}: row {t:?}", sec.heading);
        sec.rows
            .push(cells.into_iter().map(str::to_owned).collect());
    }
    sections.into_iter().filter(|s| s.kind.is_some()).collect()
}

/// Checks one payload section against the codec's layout of `kind` in `version`.
fn check_section(sec: &Section, kind: Kind, version: u8) {
    let len = kind.encoded_len_in(version);
    assert_eq!(
        sec.length,
        Some(len),
        "{}: stated length (a line `Length: N bytes`)",
        sec.heading
    );
    assert!(!sec.rows.is_empty(), "{}: no byte table", sec.heading);
    let header = &sec.rows[0];
    let byte0 = format!("`0x{version:x}{:x}`", kind as u8);
    assert!(
        header[4] == "header" && header[5].starts_with(&byte0),
        "{}: the first row must be the header, {byte0}: {header:?}",
        sec.heading
    );
    let mut next = 0;
    for row in &sec.rows {
        let num = |i: usize| -> usize {
            row[i]
                .parse()
                .unwrap_or_else(|_| panic!("{}: bad row {row:?}", sec.heading))
        };
        let (offset, size, ty) = (num(0), num(1), row[2].as_str());
        assert_eq!(offset, next, "{}: row at offset {offset}", sec.heading);
        assert_eq!(
            type_size(ty),
            Some(size),
            "{}: offset {offset} has type {ty} but size {size}",
            sec.heading
        );
        next = offset + size;
    }
    assert_eq!(
        next, len,
        "{}: the table's fields add up to {next} bytes",
        sec.heading
    );
}

#[test]
fn byte_tables_match_encoded_lengths() {
    let doc = doc();
    let sections = payload_sections(&doc);
    for sec in &sections {
        let kind = Kind::from_u8(sec.kind.unwrap())
            .unwrap_or_else(|| panic!("{}: no such kind", sec.heading));
        assert!(
            (OLDEST_VERSION..=LATEST).contains(&sec.version),
            "{}: the codec does not speak version {}",
            sec.heading,
            sec.version
        );
        assert!(
            has_kind(sec.version, kind),
            "{}: version {} has no kind {}",
            sec.heading,
            sec.version,
            kind.name()
        );
        check_section(sec, kind, sec.version);
    }
    for kind in Kind::ALL {
        for version in OLDEST_VERSION..=LATEST {
            let n = sections
                .iter()
                .filter(|s| s.kind == Some(kind as u8) && s.version == version)
                .count();
            // The current version needs a table of every kind it has, and a newer kind needs
            // one in the version that introduced it; another version needs a table of each
            // kind whose layout differs from the documented one (the doc says the others only
            // differ in the header byte), and no kind may have two.
            let required = layout_differs(version, kind);
            assert!(
                n <= 1 && (n == 1 || !required),
                "expected {} section(s) headed `(kind {})`{} but found {n}",
                if required { "one" } else { "at most one" },
                kind as u8,
                if version == VERSION {
                    String::new()
                } else {
                    format!(" and naming version {version}")
                }
            );
        }
    }
}

/// The table of kind codes (`| Code | Kind | Topic | Length | Length in version N |...`) gives
/// every kind's name and its length in the current and every other version (`—` where the
/// version has no such kind).
#[test]
fn kind_table_matches_codec() {
    let doc = doc();
    let mut lines = doc.lines().skip_while(|l| {
        table_cells(l).is_none_or(|c| c.get(..3) != Some(&["Code", "Kind", "Topic"][..]))
    });
    let header: Vec<String> =
        table_cells(lines.next().expect("no `| Code | Kind | Topic |` table"))
            .unwrap()
            .into_iter()
            .map(str::to_owned)
            .collect();
    // (column, version) of every length column.
    let mut length_columns = Vec::new();
    for (i, h) in header.iter().enumerate() {
        if h == "Length" {
            length_columns.push((i, VERSION));
        } else if let Some(v) = h.strip_prefix("Length in version ") {
            length_columns.push((i, v.parse::<u8>().expect("version number")));
        }
    }
    for v in OLDEST_VERSION..=LATEST {
        assert_eq!(
            length_columns.iter().filter(|(_, cv)| *cv == v).count(),
            1,
            "the kind table needs one length column for version {v}: {header:?}"
        );
    }
    let mut seen = Vec::new();
    for line in lines {
        let Some(cells) = table_cells(line) else {
            break;
        };
        if is_separator(&cells) {
            continue;
        }
        assert_eq!(cells.len(), header.len(), "kind table row {line:?}");
        let kind = cells[0]
            .parse()
            .ok()
            .and_then(Kind::from_u8)
            .unwrap_or_else(|| panic!("kind table: {:?} is no kind code", cells[0]));
        assert_eq!(cells[1], kind.name(), "kind table row {line:?}");
        for (col, v) in &length_columns {
            let want = if has_kind(*v, kind) {
                kind.encoded_len_in(*v).to_string()
            } else {
                "—".to_owned()
            };
            assert_eq!(
                cells[*col],
                want,
                "kind table: length of {} in version {v}",
                kind.name()
            );
        }
        assert!(!seen.contains(&kind), "kind table: {} twice", kind.name());
        seen.push(kind);
    }
    assert_eq!(seen, Kind::ALL, "kind table rows");
}
