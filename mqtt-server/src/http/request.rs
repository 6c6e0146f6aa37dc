//! Reading one HTTP/1.1 request from a connection, within bounds: the head (request line and
//! headers) at most [`MAX_HEAD`] bytes, the body at most [`MAX_BODY`], both within the
//! socket's read timeout. What does not fit is an error with its status (431, 413, 400).

use std::io::Read;

/// Request line and headers.
pub const MAX_HEAD: usize = 8 * 1024;
/// Request body.
pub const MAX_BODY: usize = 4 * 1024;
/// Headers kept per request.
const MAX_HEADERS: usize = 64;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// (lower-case name, value)
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why no request could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed or timed out before a whole head: nothing to answer.
    Gone,
    /// 431: the head is larger than [`MAX_HEAD`].
    HeadTooLarge,
    /// 413: the body is larger than [`MAX_BODY`].
    BodyTooLarge,
    /// 400, with what is wrong.
    Bad(&'static str),
}

/// Reads one request from `r`.
pub fn read_request(r: &mut impl Read) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::HeadTooLarge);
        }
        match r.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(ReadError::Gone),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    if head_end + 4 > MAX_HEAD {
        return Err(ReadError::HeadTooLarge);
    }
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| ReadError::Bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (first.next(), first.next(), first.next())
    else {
        return Err(ReadError::Bad("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(ReadError::Bad("malformed request line"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad("malformed header"));
        };
        if headers.len() == MAX_HEADERS {
            return Err(ReadError::HeadTooLarge);
        }
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut req = Request {
        method: method.to_owned(),
        path: target.split('?').next().unwrap_or("/").to_owned(),
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding").is_some() {
        return Err(ReadError::Bad(
            "chunked bodies are not supported: send Content-Length",
        ));
    }
    let len = match req.header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| ReadError::Bad("bad Content-Length"))?,
    };
    if len > MAX_BODY as u64 {
        return Err(ReadError::BodyTooLarge);
    }
    let len = len as usize;
    let mut body = buf.split_off(head_end + 4);
    while body.len() < len {
        match r.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(ReadError::Gone),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(len);
    req.body = body;
    Ok(req)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &[u8]) -> Result<Request, ReadError> {
        read_request(&mut &s[..])
    }

    #[test]
    fn parses_and_bounds_requests() {
        let r =
            read(b"POST /a/b?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcdef").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/a/b"));
        assert_eq!(r.header("host"), Some("h"));
        assert_eq!(r.body, b"abc");
        assert_eq!(read(b"GET / HTTP/1.1\r\n"), Err(ReadError::Gone));
        assert_eq!(
            read(b"nonsense\r\n\r\n"),
            Err(ReadError::Bad("malformed request line"))
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(read(big.as_bytes()), Err(ReadError::HeadTooLarge));
        assert_eq!(
            read(b"POST / HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n"),
            Err(ReadError::BodyTooLarge)
        );
        assert_eq!(
            read(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
            Err(ReadError::Gone)
        );
    }
}
