//! The daemon driven in-process through `run_with`, with an entity handler of the test's own:
//! a vehicle plugs in behind the `Vehicle` trait without any MQTT code, and a shutdown
//! request ends `run` cleanly (Offline published) within 1 s.

mod support;

use std::time::{Duration, Instant};

use common::{AckOutcome, Presence, RejectReason, Segment};
use rpi_client::config::{Command, parse};
use rpi_client::{Vehicle, VehicleState};
use support::*;
use testkit::Broker;

/// A vehicle that reaches the end of each segment in one step.
struct Teleporter {
    at: (i32, i32),
    pending: Option<u32>,
}

impl Vehicle for Teleporter {
    fn accept(&mut self, seg: &Segment) -> Result<(), RejectReason> {
        if self.pending.is_some() {
            return Err(RejectReason::QueueFull);
        }
        self.at = (seg.end.x, seg.end.y);
        self.pending = Some(seg.segment_id);
        Ok(())
    }
    fn step(&mut self, _dt: Duration) -> Option<u32> {
        self.pending.take()
    }
    fn state(&self) -> VehicleState {
        VehicleState {
            x: self.at.0,
            y: self.at.1,
            ..Default::default()
        }
    }
    fn abandon(&mut self) -> Vec<u32> {
        self.pending.take().into_iter().collect()
    }
}

#[test]
fn custom_vehicle_and_clean_shutdown_in_process() {
    let broker = Broker::start();
    let probe = watch(&broker, "probe-inproc", "inproc-pi");
    let args: Vec<String> = [
        "--broker",
        &broker.addr(),
        "--client-id",
        "inproc-pi",
        "--config",
        "/dev/null",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let Command::Run(config) = parse(
        &args,
        &[],
        |p| std::fs::read_to_string(p),
        || Ok("unused".into()),
    )
    .expect("config") else {
        panic!("expected a run command");
    };
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let vehicles: Vec<(u32, Box<dyn Vehicle>)> = vec![(
        42,
        Box::new(Teleporter {
            at: (5, 5),
            pending: None,
        }),
    )];
    let daemon = std::thread::Builder::new()
        .name("daemon-under-test".into())
        .spawn(move || rpi_client::run_with(config, stop_rx, vehicles))
        .unwrap();

    let (online, _) = wait_status(&probe, Duration::from_secs(5), Presence::Online);
    send_segment(
        &probe,
        "inproc-pi",
        &segment(42, 1, (0, 0), (700, -300), 10, 10),
    );
    wait_ack(&probe, Duration::from_secs(3), 42, 1, AckOutcome::Accepted);
    wait_ack(&probe, Duration::from_secs(3), 42, 1, AckOutcome::Completed);
    let state = probe
        .wait_for(Duration::from_secs(2), |s| {
            as_state(s).is_some_and(|r| r.entity_id == 42 && (r.x, r.y) == (700, -300))
        })
        .expect("state of the custom vehicle");
    assert!(as_state(&state).is_some());

    stop_tx.send(()).unwrap();
    let t0 = Instant::now();
    while !daemon.is_finished() && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = t0.elapsed();
    assert!(daemon.is_finished(), "run did not return within 3 s");
    daemon.join().expect("no panic").expect("run returned Ok");
    eprintln!("in-process shutdown took {took:?}");
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    let (offline, _) = wait_status(&probe, Duration::from_secs(2), Presence::Offline);
    assert_eq!(offline.session, online.session);
}
