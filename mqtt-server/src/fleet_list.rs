//! The optional fleet list (`fleet_file`): the client ids the operator expects, one per line.
//! A listed Pi has the highest [`crate::standing::Standing`]: it is never evicted to make room
//! for an unlisted id, and always finds room itself (the list may hold at most `max_pis` ids).
//!
//! Format: one client id per line; blank lines and `#` comments are ignored; surrounding
//! spaces are trimmed; a repeated id counts once. The file is read with the daemons' capped
//! reader ([`mqtt_link::daemon::read_file`], 64 KiB: about 3,000 ids of 20 characters), so
//! a bigger fleet leaves the list out (the handshake rule still protects it).

use std::collections::BTreeSet;

use common::topic::validate_client_id;

/// The ids in `text`; an error names the line (1-based) and what is wrong with it.
pub fn parse(text: &str, max_pis: usize) -> Result<BTreeSet<String>, String> {
    let mut ids = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let id = line.split('#').next().unwrap_or("").trim();
        if id.is_empty() {
            continue;
        }
        validate_client_id(id).map_err(|e| format!("line {}: {id:?}: {e}", n + 1))?;
        ids.insert(id.to_owned());
    }
    if ids.len() > max_pis {
        return Err(format!(
            "{} ids, more than max_pis ({max_pis}): raise max_pis",
            ids.len()
        ));
    }
    Ok(ids)
}

/// Reads and parses the file at `path` (see [`parse`]).
pub fn load(path: &std::path::Path, max_pis: usize) -> Result<BTreeSet<String>, String> {
    let shown = path.display();
    let text = mqtt_link::daemon::read_file(&path.to_string_lossy())
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    parse(&text, max_pis).map_err(|e| format!("{shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_comments_and_blank_lines() {
        let ids = parse("# the yard\npi-1\n\n  pi-2  # spare\npi-1\n", 10).unwrap();
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), vec!["pi-1", "pi-2"]);
        assert!(parse("", 10).unwrap().is_empty());
    }

    #[test]
    fn bad_ids_and_too_many_are_refused() {
        let e = parse("pi-1\npi 2\n", 10).unwrap_err();
        assert!(e.starts_with("line 2: \"pi 2\""), "{e}");
        let e = parse("a\nb\nc\n", 2).unwrap_err();
        assert!(e.contains("3 ids, more than max_pis (2)"), "{e}");
    }

    #[test]
    fn a_missing_or_endless_file_is_an_error() {
        let e = load(std::path::Path::new("/nonexistent/fleet"), 10).unwrap_err();
        assert!(e.contains("cannot read /nonexistent/fleet"), "{e}");
        let e = load(std::path::Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.contains("larger than 64 KiB"), "{e}");
    }
}
