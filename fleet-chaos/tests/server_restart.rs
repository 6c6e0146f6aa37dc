//! The server dies (kill -9, or a clean SIGTERM) while two Pis drive segments it sent, and
//! comes back. The Pis must keep running their current segments through the gap (they need
//! no server to finish what they accepted), and the new server must rebuild the fleet view
//! from the retained statuses and the next heartbeats within 2 s of its start.

use std::time::{Duration, Instant};

use common::AckOutcome;
use fleet_chaos::{Record, Watch, ms, report, spawn_pi, spawn_server, wait_table};
use testkit::{Broker, Daemon};

const PIS: [&str; 2] = ["pi-1", "pi-2"];
const ENTITIES: [u32; 3] = [1, 2, 3];
const GAP: Duration = Duration::from_secs(2);

fn server(broker: &Broker) -> Daemon {
    spawn_server(
        &broker.addr(),
        &["--status-interval", "50ms", "--segment-interval", "500ms"],
    )
}

/// (Pi, entity, segment, progress) of every entity in the middle of a segment at `t`.
fn driving_at(r: &Record, t: Instant) -> Vec<(String, u32, u32, u16)> {
    let mut out = Vec::new();
    for pi in PIS {
        for e in ENTITIES {
            let last = r
                .states
                .get(&(pi.to_owned(), e))
                .and_then(|v| v.iter().rfind(|s| s.at <= t));
            if let Some(s) = last.filter(|s| s.segment_id != 0 && s.progress < 9_000) {
                out.push((pi.to_owned(), e, s.segment_id, s.progress));
            }
        }
    }
    out
}

fn restart(scenario: &str, stop: impl FnOnce(&mut Daemon)) {
    let broker = Broker::start();
    let watch = Watch::start(broker.port(), &format!("watch-{scenario}"));
    let mut old = server(&broker);
    let _pis: Vec<Daemon> = PIS
        .iter()
        .map(|id| spawn_pi(&broker.addr(), id, "1,2,3", &[]))
        .collect();
    wait_table(&old, Duration::from_secs(10), |t| t.all_active(&PIS, 3)).expect("both Pis active");
    // Every entity in the middle of a segment (not about to finish it).
    let busy = watch
        .wait(Duration::from_secs(15), |r| {
            let d = driving_at(r, Instant::now());
            (d.len() == PIS.len() * ENTITIES.len()).then_some(d)
        })
        .expect("every entity driving a segment");

    let stopped = Instant::now();
    stop(&mut old);
    old.wait_exit(Duration::from_secs(5))
        .expect("old server gone");
    std::thread::sleep(GAP.saturating_sub(stopped.elapsed()));

    // During the gap, every entity went on with its segment: further along, or completed.
    let gap_end = Instant::now();
    let rec = watch.record();
    for (pi, e, seg, p0) in &busy {
        let further = rec
            .states_between(pi, *e, stopped, gap_end)
            .iter()
            .filter(|s| s.segment_id == *seg)
            .map(|s| s.progress)
            .max();
        let completed = rec
            .acks_of(pi, *seg)
            .iter()
            .any(|(at, o)| *o == AckOutcome::Completed && *at >= stopped);
        assert!(
            completed || further.is_some_and(|p| p > *p0),
            "{pi}/{e}: segment {seg} at {p0} when the server stopped, then {further:?}, \
             completed: {completed}"
        );
    }

    let started = Instant::now();
    let new = server(&broker);
    let rebuilt = wait_table(&new, Duration::from_secs(10), |t| t.all_active(&PIS, 3))
        .expect("the new server shows both Pis with their entities");
    let rebuild = rebuilt.at.duration_since(started);
    // It drives them again (new segments, fresh ids), and nothing runs twice.
    let new_segment = watch.wait(Duration::from_secs(10), |r| {
        let known: Vec<u32> = busy.iter().map(|b| b.2).collect();
        r.states
            .values()
            .flatten()
            .find(|s| s.at > started && s.segment_id != 0 && !known.contains(&s.segment_id))
            .map(|s| s.at.duration_since(started))
    });
    let rec = watch.record();
    report(
        scenario,
        &[
            ("rebuild_ms", ms(rebuild)),
            ("gap_ms", ms(started.duration_since(stopped))),
            ("first_new_segment_ms", new_segment.map_or(0, ms)),
        ],
    );
    assert!(
        rec.double_executions().is_empty(),
        "{:?}",
        rec.double_executions()
    );
    assert!(new_segment.is_some(), "the new server sends segments again");
    assert!(
        rebuild <= Duration::from_secs(2),
        "fleet view rebuilt {rebuild:?} after the server's start:\n{}",
        rebuilt.text
    );
}

#[test]
fn server_killed_and_restarted() {
    restart("server_restart_kill9", |s| s.kill9());
}

#[test]
fn server_stopped_cleanly_and_restarted() {
    restart("server_restart_term", |s| s.signal("TERM"));
}
