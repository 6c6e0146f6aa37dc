//! An HTTP response and how it is written: status line, `Content-Type`, `Content-Length`,
//! `Connection: close` (one request per connection), extra headers, body. Errors are JSON
//! `{"error": "...", "field": ...}`.

use std::io::Write;

use serde::Serialize;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

pub const JSON: &str = "application/json";

/// The body of every error.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    field: Option<&'a str>,
}

impl Response {
    pub fn json(status: u16, value: &impl Serialize) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response {
                status,
                content_type: JSON,
                headers: Vec::new(),
                body,
            },
            Err(_) => Response::error(500, "cannot encode the answer", None),
        }
    }

    pub fn error(status: u16, message: &str, field: Option<&str>) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: message,
            field,
        })
        .unwrap_or_default();
        Response {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Status line, headers and body in one write.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(self.body.len() + 256);
        write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        )?;
        for (n, v) in &self.headers {
            write!(out, "{n}: {v}\r\n")?;
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        w.write_all(&out)?;
        w.flush()
    }
}

/// The reason phrase of the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_json_with_a_field() {
        let r = Response::error(400, "end: missing", Some("end"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "end: missing", "field": "end"})
        );
        let mut out = Vec::new();
        r.write_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("Content-Length: 38\r\n"), "{text}");
    }
}
