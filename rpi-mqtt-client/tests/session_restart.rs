//! The session counter grows across restarts even when the Pi's clock is behind: it is kept
//! in `state_dir`, with the wall clock as a floor. An hour-behind clock is played by storing a
//! last session an hour ahead of the wall clock (the same situation as seen by the Pi: the
//! session it used last is an hour ahead of its clock), so no clock hook is needed.

mod support;

use std::time::Duration;

use common::Presence;
use support::*;
use testkit::{Broker, TempDir};

const T: Duration = Duration::from_secs(5);

fn online_session(broker: &Broker, probe_id: &str, extra: &[&str]) -> (u32, String) {
    let probe = watch(broker, probe_id, "sess-pi");
    let mut pi = spawn(broker, "sess-pi", extra);
    let (st, _) = probe
        .wait_for(T, |s| {
            as_status(s).is_some_and(|st| st.presence == Presence::Online) && !s.retain
        })
        .map(|s| (as_status(&s).unwrap(), s))
        .expect("a live Online status");
    pi.terminate(T);
    (st.session, pi.stderr())
}

#[test]
fn session_grows_across_a_restart_with_the_clock_an_hour_behind() {
    let broker = Broker::start();
    let dir = TempDir::new("pi-state");
    let state_dir = dir.path().to_str().unwrap().to_owned();
    let args = ["--state-dir", state_dir.as_str()];

    let (first, _) = online_session(&broker, "p1", &args);
    let stored = std::fs::read_to_string(dir.path().join("session")).unwrap();
    assert_eq!(
        stored.trim(),
        first.to_string(),
        "the session used is stored"
    );

    // The clock is now an hour behind the last session.
    let ahead = (now_ms() / 1000) as u32 + 3600;
    std::fs::write(dir.path().join("session"), format!("{ahead}\n")).unwrap();
    let (second, _) = online_session(&broker, "p2", &args);
    assert!(second > ahead, "session {second} after {ahead}");
    assert!(second > first);

    // No usable state directory: logged once, the wall clock alone.
    let (third, log) = online_session(&broker, "p3", &["--state-dir", "/nonexistent/rpi-state"]);
    let wall = (now_ms() / 1000) as u32;
    assert!(
        third <= wall && third + 30 > wall,
        "{third} vs the clock {wall}"
    );
    assert_eq!(count_lines(&log, "the wall clock alone"), 1, "{log}");
}
