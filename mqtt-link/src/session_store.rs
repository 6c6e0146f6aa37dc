//! The session counter kept across restarts in a daemon's state directory (`state_dir`: the
//! Pi's default `/var/lib/rpi-client`, the server's `/var/lib/mqtt-server`, systemd's
//! `StateDirectory=`), so that it grows even when the clock is behind the session used last
//! (a Pi Zero 2 W has no real-time clock: after a reboot before NTP its clock can be hours
//! behind). The first session of a run is the larger of the wall clock in seconds and the last
//! stored session + 1; every session the link connects with is stored (`session`, a decimal
//! line, replaced atomically). Shared by both daemons (docs/protocol.md, "Status and
//! sessions" and "Server presence").
//!
//! A missing, unreadable or unwritable directory is logged once; the daemon then runs on the
//! wall clock alone.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use log::warn;

/// The file in the state directory.
pub const FILE: &str = "session";

#[derive(Debug)]
pub struct SessionStore {
    /// The session file; None when there is no usable state directory.
    path: Option<PathBuf>,
    /// The first session of this run (see [`first_session`]).
    pub first: u32,
}

/// The first session of this run: the wall clock (seconds) as a floor, above the last stored.
pub fn first_session(stored: Option<u32>, wall_secs: u32) -> u32 {
    match stored {
        Some(last) => wall_secs.max(last.saturating_add(1)),
        None => wall_secs,
    }
}

/// The most of the session file read: a u32 in decimal and a newline need 11 bytes; a
/// larger file (a device node or a big file put there by mistake) is read only this far and
/// then fails to parse, so it costs no memory.
const MAX_READ: u64 = 64;

/// The session file's text, at most [`MAX_READ`] bytes of it (lossy UTF-8: a binary file is
/// simply not a number).
fn read_capped(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    fs::File::open(path)?.take(MAX_READ).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

impl SessionStore {
    /// Opens the store in `dir` (None: disabled); the first session follows from the last
    /// stored one and the wall clock (`wall_secs`).
    pub fn open(dir: Option<&str>, wall_secs: u32) -> SessionStore {
        let (path, stored) = SessionStore::read(dir);
        SessionStore {
            path,
            first: first_session(stored, wall_secs),
        }
    }

    /// The session file (None when unusable) and the last session stored in it.
    fn read(dir: Option<&str>) -> (Option<PathBuf>, Option<u32>) {
        let Some(dir) = dir else {
            return (None, None);
        };
        let path = PathBuf::from(dir).join(FILE);
        match read_capped(&path) {
            Ok(text) => match text.trim().parse::<u32>() {
                Ok(last) => (Some(path), Some(last)),
                Err(_) => {
                    warn!(
                        "{}: not a session counter ({:?}); starting from the wall clock",
                        path.display(),
                        text.chars().take(20).collect::<String>()
                    );
                    (Some(path), None)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && PathBuf::from(dir).is_dir() => {
                (Some(path), None)
            }
            Err(e) => {
                warn!(
                    "state_dir {dir}: cannot read {FILE} ({e}); the session counter follows \
                     the wall clock alone (it may go back if the clock is behind)"
                );
                (None, None)
            }
        }
    }

    /// Stores `session` (after a connect). On failure it logs once and stops trying.
    pub fn save(&mut self, session: u32) {
        let Some(path) = &self.path else { return };
        // Per process: several daemons sharing one directory (a simulator) do not collide.
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            writeln!(f, "{session}")?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            warn!(
                "cannot store the session counter in {} ({e}); from now on it follows the \
                 wall clock alone",
                path.display()
            );
            self.path = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_is_a_floor_and_the_store_wins_when_the_clock_is_behind() {
        let wall = 1_800_000_000;
        assert_eq!(first_session(None, wall), wall);
        assert_eq!(first_session(Some(wall - 10), wall), wall);
        // The clock is an hour behind the last session used: still larger.
        assert_eq!(first_session(Some(wall + 3600), wall), wall + 3601);
        assert_eq!(first_session(Some(u32::MAX), wall), u32::MAX);
    }

    #[test]
    fn stores_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("link-session-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let d = dir.to_str().unwrap();
        let mut s = SessionStore::open(Some(d), 40);
        assert_eq!(s.first, 40);
        s.save(42);
        s.save(43);
        assert_eq!(SessionStore::open(Some(d), 40).first, 44);
        fs::remove_dir_all(&dir).unwrap();
        let mut gone = SessionStore::open(Some(d), 40);
        assert_eq!(gone.first, 40);
        gone.save(44);
        assert!(!dir.exists(), "the directory is not created");
    }

    #[test]
    fn a_large_or_binary_file_is_read_only_in_part_and_then_replaced() {
        let dir = std::env::temp_dir().join(format!("link-session-big-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let d = dir.to_str().unwrap();
        // 8 MiB of digits: a full read would parse it (and hold it); the capped one does not.
        fs::write(dir.join(FILE), "7".repeat(8 << 20)).unwrap();
        assert_eq!(read_capped(&dir.join(FILE)).unwrap().len() as u64, MAX_READ);
        let mut s = SessionStore::open(Some(d), 40);
        assert_eq!(s.first, 40, "not a counter: the wall clock");
        s.save(41);
        assert_eq!(
            SessionStore::open(Some(d), 40).first,
            42,
            "replaced by a good one"
        );
        fs::write(dir.join(FILE), [0xff, 0xfe, 0x00, b'9']).unwrap();
        assert_eq!(SessionStore::open(Some(d), 40).first, 40);
        fs::remove_dir_all(&dir).unwrap();
    }
}
