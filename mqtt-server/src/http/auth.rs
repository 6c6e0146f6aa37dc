//! The bearer token: read from `http_token_file` (capped, first line), and checked on every
//! request in constant time (the time does not depend on where a guess first differs).

use std::path::Path;

/// The first line of `path`, trimmed; None when it is empty. Read like every other file the
/// daemons take ([`mqtt_link::daemon::read_file`]: capped, a larger file is an error).
pub fn read_token_file(path: &Path) -> std::io::Result<Option<String>> {
    let text = mqtt_link::daemon::read_file(&path.to_string_lossy())?;
    let token = text.lines().next().unwrap_or("").trim();
    Ok((!token.is_empty()).then(|| token.to_owned()))
}

/// True when `a == b`, comparing every byte whatever the first difference (the length is not
/// hidden; the token's length is no secret worth a guess).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

/// True when `header` (the `Authorization` value, if any) carries `token`.
pub fn authorized(token: Option<&str>, header: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(given) = header.and_then(|h| h.trim().strip_prefix("Bearer ")) else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert!(authorized(None, None));
        assert!(authorized(Some("abc"), Some("Bearer abc")));
        assert!(!authorized(Some("abc"), Some("Bearer abd")));
        assert!(!authorized(Some("abc"), Some("Bearer ab")));
        assert!(!authorized(Some("abc"), Some("Bearer abcd")));
        assert!(!authorized(Some("abc"), Some("Basic abc")));
        assert!(!authorized(Some("abc"), None));
        assert!(constant_time_eq(b"", b""));
    }
}
