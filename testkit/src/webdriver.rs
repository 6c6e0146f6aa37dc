//! A real headless Chromium for browser tests, driven through `chromedriver` and the W3C
//! WebDriver protocol (HTTP + JSON) with a tiny blocking client over `std::net::TcpStream`.
//!
//! Both come from Debian's `chromium` and `chromium-driver` packages, which
//! `scripts/install-deps.sh` installs; when either is missing, [`Browser::start`] panics with a
//! message naming that script (a browser test never skips). Every call is bounded: the socket
//! has read and write timeouts, and waits are the caller's, with deadlines.
//!
//! Chromium runs with a fresh profile and the flags a machine without network needs (no
//! background networking, component updates, sync or QUIC; otherwise it stalls at start).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::TempDir;

/// The key of an element reference in WebDriver JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Longest time one WebDriver call may take (page loads, script runs).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long chromedriver and then Chromium get to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an executable is on PATH (or the usual Debian places), if anywhere.
pub fn find_executable(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/bin", "/usr/lib/chromium"].iter().map(PathBuf::from));
    for name in names {
        for dir in &dirs {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A WebDriver element reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(pub String);

/// A headless Chromium session, ended (and chromedriver stopped) on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    dir: TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session with a
    /// `width` x `height` window. Panics, naming `scripts/install-deps.sh`, when Chromium or
    /// chromedriver is not installed.
    pub fn start(width: u32, height: u32) -> Browser {
        let missing = "is not installed: run scripts/install-deps.sh (Debian packages `chromium` and `chromium-driver`)";
        let chromium = find_executable(&["chromium", "chromium-browser"])
            .unwrap_or_else(|| panic!("chromium {missing}"));
        let chromedriver =
            find_executable(&["chromedriver"]).unwrap_or_else(|| panic!("chromedriver {missing}"));
        let dir = TempDir::new("chromium");
        let port = crate::broker::free_port();
        let log = std::fs::File::create(dir.path().join("chromedriver.log"))
            .expect("create chromedriver log");
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver-verbose.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", chromedriver.display()));
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = browser
                .call("GET", "/status", None)
                .ok()
                .and_then(|v| v["ready"].as_bool());
            if ready == Some(true) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer within {START_TIMEOUT:?}; log:\n{}",
                browser.driver_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = browser.dir.path().join("profile");
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": chromium.to_string_lossy(), "args": args},
        }}});
        let v = browser
            .call("POST", "/session", Some(&caps))
            .unwrap_or_else(|e| {
                panic!(
                    "chromium did not start a session: {e}; log:\n{}",
                    browser.driver_log()
                )
            });
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .to_owned();
        browser.set_viewport(width, height);
        browser
    }

    /// Resizes the window so that the page's viewport is `width` x `height` CSS px (the
    /// window size includes the browser's own frame).
    pub fn set_viewport(&self, width: u32, height: u32) {
        let inner = self.execute("return [window.innerWidth, window.innerHeight]", &[]);
        let (iw, ih) = (
            inner[0].as_i64().unwrap_or(0),
            inner[1].as_i64().unwrap_or(0),
        );
        let rect = self.cmd("GET", "/window/rect", None);
        let (ow, oh) = (
            rect["width"].as_i64().unwrap_or(0),
            rect["height"].as_i64().unwrap_or(0),
        );
        let want = json!({
            "width": ow + i64::from(width) - iw,
            "height": oh + i64::from(height) - ih,
        });
        self.cmd("POST", "/window/rect", Some(&want));
    }

    /// chromedriver's own output, for failure messages.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// One WebDriver command: `path` below the session (`/url`), the value of the answer.
    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        self.call(method, &full, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// One HTTP request to chromedriver; Ok(value) or Err(the WebDriver error).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let (status, text) = http_request(self.port, method, path, body)?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("HTTP {status}, not JSON ({e}): {text}"))?;
        if status != 200 {
            return Err(format!(
                "HTTP {status}: {} {}",
                v["value"]["error"], v["value"]["message"]
            ));
        }
        Ok(v["value"].clone())
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// Every element matching the CSS selector, in document order.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self.cmd(
            "POST",
            "/elements",
            Some(&json!({"using": "css selector", "value": css})),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT_KEY].as_str().map(|s| Element(s.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The rendered text of an element (what a user or a screen reader gets).
    pub fn text(&self, el: &Element) -> String {
        let v = self.cmd("GET", &format!("/element/{}/text", el.0), None);
        v.as_str().unwrap_or_default().to_owned()
    }

    /// An attribute of an element, None when absent.
    pub fn attribute(&self, el: &Element, name: &str) -> Option<String> {
        let v = self.cmd("GET", &format!("/element/{}/attribute/{name}", el.0), None);
        v.as_str().map(str::to_owned)
    }

    /// A real click on an element (scrolled into view first by the driver).
    pub fn click(&self, el: &Element) {
        self.cmd(
            "POST",
            &format!("/element/{}/click", el.0),
            Some(&json!({})),
        );
    }

    /// A real left click (pointer move, down, up) at viewport coordinates `(x, y)`, CSS px.
    pub fn click_at(&self, x: f64, y: f64) {
        let actions = json!({"actions": [{
            "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
            "actions": [
                {"type": "pointerMove", "duration": 0, "origin": "viewport",
                 "x": x.round() as i64, "y": y.round() as i64},
                {"type": "pointerDown", "button": 0},
                {"type": "pointerUp", "button": 0},
            ],
        }]});
        self.cmd("POST", "/actions", Some(&actions));
        self.cmd("DELETE", "/actions", None);
    }

    /// A mouse wheel turn of `delta_y` px at viewport coordinates `(x, y)` (negative: away
    /// from the user, which zooms in on a map).
    pub fn wheel_at(&self, x: f64, y: f64, delta_y: i64) {
        let actions = json!({"actions": [{
            "type": "wheel", "id": "wheel",
            "actions": [{"type": "scroll", "origin": "viewport", "x": x.round() as i64,
                         "y": y.round() as i64, "deltaX": 0, "deltaY": delta_y, "duration": 0}],
        }]});
        self.cmd("POST", "/actions", Some(&actions));
        self.cmd("DELETE", "/actions", None);
    }

    /// Types `text` into an element.
    pub fn send_keys(&self, el: &Element, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{}/value", el.0),
            Some(&json!({ "text": text })),
        );
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let v = self.cmd("GET", "/screenshot", None);
        base64_decode(v.as_str().expect("screenshot is a base64 string"))
            .expect("screenshot is valid base64")
    }

    /// Writes a PNG of the viewport to `path`.
    pub fn save_screenshot(&self, path: &Path) {
        std::fs::write(path, self.screenshot())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Polls `f` every 100 ms until it returns `Some` or `timeout` passes; panics with `what`
    /// and the page's visible text on timeout.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if Instant::now() >= deadline {
                let body = self.execute("return document.body.innerText", &[]);
                panic!(
                    "timed out after {timeout:?} waiting for {what}; the page shows:\n{}",
                    body.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- chromedriver log ----\n{}---- end ----",
                self.driver_log()
            );
        }
    }
}

/// One HTTP/1.1 request to `127.0.0.1:port`, `Connection: close`; (status, body). Reads
/// exactly the body's announced length (or chunks), so a server that keeps the connection
/// open is fine (unlike [`crate::http::Client`], which reads to the end). Bounded by the
/// socket's timeouts.
fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(CALL_TIMEOUT)).ok();
    s.set_write_timeout(Some(CALL_TIMEOUT)).ok();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if body.is_some() {
        req.push_str("Content-Type: application/json; charset=utf-8\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
    req.push_str(&payload);
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    // chromedriver keeps the connection open despite `Connection: close`: read the head,
    // then exactly the body its length (or its chunking) says.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before the end of the headers".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let complete = match length {
            Some(n) => body.len() >= n,
            None if chunked => body.windows(5).any(|w| w == b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    if let Some(n) = length {
        body.truncate(n);
    } else if chunked {
        body = dechunk(&body)?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The payload of a chunked body.
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk size line")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Standard base64 (with or without padding); None on a bad character.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_vectors() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("iVBORw0KGgo=").unwrap(), b"\x89PNG\r\n\x1a\n");
        assert!(base64_decode("Zm9v!").is_none());
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n").unwrap(),
            b"Wikipedia"
        );
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
