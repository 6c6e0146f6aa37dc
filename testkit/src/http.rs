//! A tiny HTTP/1.1 client over a std `TcpStream`, for tests of the server's operator
//! interface: one request per connection (`Connection: close`), the whole answer read to the
//! end, and an event-stream reader. No dependency beyond std (and serde_json to decode).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// (lower-case name, value)
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A client for one server address (`127.0.0.1:PORT`), with an optional bearer token.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: String,
    pub token: Option<String>,
    pub timeout: Duration,
}

impl Client {
    pub fn new(addr: impl Into<String>) -> Client {
        Client {
            addr: addr.into(),
            token: None,
            timeout: Duration::from_secs(10),
        }
    }

    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(token.to_owned());
        self
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        Ok(s)
    }

    fn head(&self, method: &str, path: &str, body_len: Option<usize>) -> String {
        let mut h = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(t) = &self.token {
            h.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(n) = body_len {
            h.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {n}\r\n"
            ));
        }
        h.push_str("\r\n");
        h
    }

    /// Sends a request and reads the whole answer. The body is written even if the server
    /// answers early (a 413): write errors are ignored, the answer is what counts.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> std::io::Result<Reply> {
        let mut s = self.connect()?;
        s.write_all(self.head(method, path, body.map(<[u8]>::len)).as_bytes())?;
        if let Some(b) = body {
            let _ = s.write_all(b);
        }
        let mut raw = Vec::new();
        let read = s.read_to_end(&mut raw);
        if raw.is_empty() {
            read?;
        }
        parse_reply(&raw)
    }

    pub fn get(&self, path: &str) -> std::io::Result<Reply> {
        self.request("GET", path, None)
    }

    pub fn post_json(&self, path: &str, body: &str) -> std::io::Result<Reply> {
        self.request("POST", path, Some(body.as_bytes()))
    }

    /// Opens an event stream: the status line and headers are read, events come from
    /// [`Events::next`].
    pub fn events(&self, path: &str) -> std::io::Result<Events> {
        let mut s = self.connect()?;
        s.write_all(self.head("GET", path, None).as_bytes())?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
        }
        Ok(Events {
            status,
            reader: r,
            last_byte: 0,
        })
    }
}

/// An open event stream.
pub struct Events {
    pub status: u16,
    reader: BufReader<TcpStream>,
    /// The last byte [`Events::read_counting`] saw: an event's blank line may straddle reads.
    last_byte: u8,
}

/// What [`Events::read_counting`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawRead {
    pub bytes: usize,
    /// Events and comments that ended within the bytes read.
    pub events: u64,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub data: serde_json::Value,
}

impl Events {
    /// The next event (comments skipped) within `timeout`; None at the end of the stream or
    /// on a timeout.
    pub fn next(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        let (mut name, mut data) = (String::new(), String::new());
        let mut line = String::new();
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            line.clear();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if !name.is_empty() {
                    let data = serde_json::from_str(&data).ok()?;
                    return Some(Event { name, data });
                }
            } else if let Some(v) = l.strip_prefix("event: ") {
                name = v.to_owned();
            } else if let Some(v) = l.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    }

    /// The next event called `name` within `timeout`, others skipped.
    pub fn next_named(&mut self, name: &str, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let e = self.next(left)?;
            if e.name == name {
                return Some(e);
            }
        }
    }

    /// Reads whatever comes for `duration` without decoding it (a reader that keeps up at
    /// any rate); the bytes read, or None when the stream ended.
    pub fn read_raw(&mut self, duration: Duration) -> Option<usize> {
        self.read_counting(duration).map(|r| r.bytes)
    }

    /// As [`Events::read_raw`], also counting the events (and comments) that ended in what
    /// was read: one per blank line (`\n\n`), without decoding anything. None when the
    /// stream ended.
    pub fn read_counting(&mut self, duration: Duration) -> Option<RawRead> {
        let deadline = Instant::now() + duration;
        let mut got = RawRead::default();
        let mut buf = [0u8; 65536];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            match self.reader.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => {
                    got.bytes += n;
                    for &b in &buf[..n] {
                        if b == b'\n' && self.last_byte == b'\n' {
                            got.events += 1;
                        }
                        self.last_byte = b;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
        Some(got)
    }

    /// The socket, e.g. to stop reading it and see what the server does.
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }
}

/// Parses a whole answer (`Connection: close`: the body is everything after the head, up to
/// `Content-Length` when given, or decoded when `Transfer-Encoding: chunked`, as other
/// servers' answers are, e.g. nats-server's monitoring pages).
pub fn parse_reply(raw: &[u8]) -> std::io::Result<Reply> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if let Some(n) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(n);
    }
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// The payload of a chunked body (extensions and trailers ignored); None if malformed.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_decoded() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=1\r\n:1}\r\n0\r\n\r\n";
        let r = parse_reply(raw).unwrap();
        assert_eq!(r.json()["a"], 1);
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(parse_reply(bad).is_err());
    }
}
