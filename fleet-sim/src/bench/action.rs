//! Instant action latency (`fleet-bench action`, issue #14 item 6): how long from an
//! operator's `stop` to the entity seen stopped by a third party. Writes `action.json` in the
//! output directory and returns a markdown table.
//!
//! One release `mqtt-server` with its operator interface, one real `rpi-client` (entities
//! 1,2,3 at 10 Hz), a probe subscribed to the Pi's state topic (the third party). Each sample:
//! `POST .../entities/1/segments` (a 100 m leg at 1 m/s), wait until a state report shows
//! entity 1 driving, then `POST .../entities/1/actions {"action": "stop"}` and time from just
//! before the request to the first state report of entity 1 with velocity 0 and the STOPPED
//! flag at the probe. The path: HTTP -> server (registry) -> mosquitto -> rpi-client (stop,
//! publish the state at once) -> mosquitto -> probe, on loopback.
//!
//! Baseline, same run, same broker: a probe's QoS 1 publish to a topic it subscribes to, timed
//! until it receives it (MQTT alone: client -> broker -> client). Series: at idle, then with
//! `--pis` simulated Pis x 4 entities x 10 Hz publishing into the same broker and server.
//! Bounded in count and in time.

use std::time::{Duration, Instant};

use common::{EntityFlags, Message};
use rumqttc::QoS;
use serde::{Deserialize, Serialize};
use testkit::Probe;
use testkit::http::Client;

use super::{Bench, quantile, stop_server};

/// Latencies of one series, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Series {
    /// Samples taken.
    pub count: usize,
    /// Stops not seen within 2 s (or a request that failed).
    pub failed: usize,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
}

impl Series {
    fn of(mut us: Vec<u64>, failed: usize) -> Series {
        us.sort_unstable();
        Series {
            count: us.len(),
            failed,
            p50_us: quantile(&us, 0.5),
            p99_us: quantile(&us, 0.99),
            max_us: us.last().copied(),
        }
    }
}

/// One load level: the stops and the MQTT baseline measured around them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Level {
    /// Simulated Pis publishing meanwhile (0: idle).
    pub pis: usize,
    /// HTTP stop -> halted state report at a third party.
    pub stop: Series,
    /// HTTP stop -> its `202` (the server queued the action).
    pub http: Series,
    /// QoS 1 publish -> the same client receives it, same broker.
    pub baseline: Series,
    pub sim_behind_schedule: bool,
}

/// What `action.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ActionResults {
    pub idle: Option<Level>,
    pub loaded: Option<Level>,
}

fn ms(us: Option<u64>) -> String {
    us.map_or("-".into(), |u| format!("{:.2} ms", u as f64 / 1e3))
}

fn ratio(a: Option<u64>, b: Option<u64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0 => format!("{:.1}x", a as f64 / b as f64),
        _ => "-".into(),
    }
}

/// The idle p99 target of issue #14.
pub const TARGET_P99_US: u64 = 5_000;

impl ActionResults {
    pub fn table(&self) -> String {
        let mut s = String::from(
            "### Instant action: HTTP stop -> stopped state at a third party\n\n\
             | load | series | samples | failed | p50 | p99 | max |\n\
             |---|---|---:|---:|---:|---:|---:|\n",
        );
        for l in [&self.idle, &self.loaded].into_iter().flatten() {
            let load = if l.pis == 0 {
                "idle".to_string()
            } else {
                format!(
                    "{} Pis x 4 x 10 Hz{}",
                    l.pis,
                    if l.sim_behind_schedule {
                        " (sim behind)"
                    } else {
                        ""
                    }
                )
            };
            for (name, x) in [
                ("stop -> stopped state", &l.stop),
                ("stop -> 202", &l.http),
                ("baseline: MQTT QoS 1 round trip", &l.baseline),
            ] {
                s.push_str(&format!(
                    "| {load} | {name} | {} | {} | {} | {} | {} |\n",
                    x.count,
                    x.failed,
                    ms(x.p50_us),
                    ms(x.p99_us),
                    ms(x.max_us)
                ));
            }
            s.push_str(&format!(
                "| {load} | stop / baseline | | | {} | {} | |\n",
                ratio(l.stop.p50_us, l.baseline.p50_us),
                ratio(l.stop.p99_us, l.baseline.p99_us)
            ));
        }
        if let Some(i) = &self.idle {
            let met = i.stop.p99_us.is_some_and(|p| p <= TARGET_P99_US);
            s.push_str(&format!(
                "\nTarget: p99 <= 5 ms at idle: {} ({}).\n",
                ms(i.stop.p99_us),
                if met { "met" } else { "**not met**" }
            ));
        }
        s
    }

    pub fn write(&self, b: &Bench) {
        let json = b.out.join("action.json");
        if let Err(e) = std::fs::write(
            &json,
            serde_json::to_string_pretty(self).unwrap_or_default(),
        ) {
            eprintln!("fleet-bench: cannot write {}: {e}", json.display());
        }
    }
}

/// Entity 1's state report in `payload`, if it is one.
fn entity_1(payload: &[u8]) -> Option<common::StateReport> {
    match Message::decode(payload) {
        Ok(Message::State(s)) if s.entity_id == 1 => Some(s),
        _ => None,
    }
}

/// Up to `n` stops of entity 1 of `pi` within `budget`.
fn stops(http: &Client, states: &Probe, pi: &str, n: usize, budget: Duration) -> (Series, Series) {
    let deadline = Instant::now() + budget;
    let (mut stop_us, mut http_us, mut failed) = (Vec::with_capacity(n), Vec::new(), 0);
    let seg_path = format!("/api/pis/{pi}/entities/1/segments");
    let act_path = format!("/api/pis/{pi}/entities/1/actions");
    let seg_body =
        r#"{"end": [100000, 0], "velocity_start": 1000, "velocity_end": 1000, "segment_type": 0}"#;
    while stop_us.len() < n && Instant::now() < deadline {
        let posted = http.post_json(&seg_path, seg_body);
        if !posted.as_ref().is_ok_and(|r| r.status == 202) {
            eprintln!(
                "   segment not taken: {:?}",
                posted.map(|r| (r.status, r.text()))
            );
            failed += 1;
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let driving = states.wait_for(Duration::from_secs(2), |m| {
            entity_1(&m.payload).is_some_and(|s| {
                (s.vx != 0 || s.vy != 0) && !s.flags.contains(EntityFlags::STOPPED)
            })
        });
        if driving.is_none() {
            eprintln!("   entity 1 not seen driving within 2 s");
            failed += 1;
            continue;
        }
        states.drain();
        let t0 = Instant::now();
        let r = http.post_json(&act_path, r#"{"action": "stop"}"#);
        let answered = t0.elapsed();
        if !r.as_ref().is_ok_and(|r| r.status == 202) {
            eprintln!("   stop not taken: {:?}", r.map(|r| (r.status, r.text())));
            failed += 1;
            continue;
        }
        let halted = states.wait_for(Duration::from_secs(2), |m| {
            entity_1(&m.payload)
                .is_some_and(|s| s.vx == 0 && s.vy == 0 && s.flags.contains(EntityFlags::STOPPED))
        });
        match halted {
            Some(m) => {
                stop_us.push(m.at.saturating_duration_since(t0).as_micros() as u64);
                http_us.push(answered.as_micros() as u64);
            }
            None => {
                eprintln!("   entity 1 not seen stopped within 2 s");
                failed += 1;
            }
        }
    }
    (Series::of(stop_us, failed), Series::of(http_us, 0))
}

/// `n` QoS 1 round trips through the broker: publish, receive on the same client.
fn baseline(port: u16, id: &str, n: usize) -> Series {
    let topic = format!("bench/{id}");
    let p = Probe::connect(port, id, &[&topic]);
    let mut us = Vec::with_capacity(n);
    let mut failed = 0;
    for i in 0..n {
        let payload = (i as u64).to_le_bytes();
        let t0 = Instant::now();
        p.publish(&topic, &payload, QoS::AtLeastOnce, false);
        match p.wait_for(Duration::from_secs(2), |m| m.payload == payload) {
            Some(m) => us.push(m.at.saturating_duration_since(t0).as_micros() as u64),
            None => failed += 1,
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Series::of(us, failed)
}

/// The scenario: `n` stops at idle, then `n` with `pis` simulated Pis (0: no loaded series).
pub fn run(b: &Bench, pis: usize, n: usize, budget: Duration) -> ActionResults {
    eprintln!("== instant action: {n} stops at idle, then with {pis} Pis x 4 entities");
    let broker = b.broker();
    let listen = format!("127.0.0.1:{}", testkit::broker::free_port());
    let mut server = b.server(&broker, "action-server", &["--http-listen", &listen]);
    let http = Client::new(listen);
    let pi_id = "action-pi";
    let mut pi = b.pi(&broker, pi_id);
    let states = Probe::connect(
        broker.port(),
        "action-watcher",
        &[&format!("rpi/{pi_id}/state")],
    );
    // The server knows the entity once it has a state report, and gives orders once it
    // leads (about 1.5 s after connecting, docs/protocol.md "Leadership").
    let known = testkit::wait_for(Duration::from_secs(10), || {
        let r = http.get(&format!("/api/pis/{pi_id}")).ok()?;
        let leads = http
            .get("/api/leader")
            .ok()
            .is_some_and(|l| l.status == 200 && l.json()["role"] == "leader");
        (leads
            && r.status == 200
            && r.json()["entities"]
                .as_array()
                .is_some_and(|e| !e.is_empty()))
        .then_some(())
    });
    let mut res = ActionResults::default();
    if known.is_none() {
        eprintln!("   the server never led or never saw {pi_id}'s entities; no figures");
        pi.stop(Duration::from_secs(5));
        let _ = stop_server(&mut server);
        return res;
    }
    let level = |pis: usize, behind: bool| {
        let (stop, http_series) = stops(&http, &states, pi_id, n, budget);
        let base = baseline(broker.port(), &format!("action-baseline-{pis}"), n);
        eprintln!(
            "   {pis} Pis: stop -> stopped p50 {} p99 {} ({} failed); MQTT round trip p50 {} p99 {}",
            ms(stop.p50_us),
            ms(stop.p99_us),
            stop.failed,
            ms(base.p50_us),
            ms(base.p99_us)
        );
        Level {
            pis,
            stop,
            http: http_series,
            baseline: base,
            sim_behind_schedule: behind,
        }
    };
    res.idle = Some(level(0, false));
    if pis > 0 {
        // Long enough for the series (bounded by `budget` twice: stops and baseline).
        let window = budget * 2 + Duration::from_secs(20);
        let (mut sim, json, _steady) = b.start_sim(&broker, "action", pis, window, "act");
        let mut l = level(pis, false);
        // SIGTERM: the simulator ends its window and writes its summary.
        sim.stop(Duration::from_secs(10));
        let summary: Option<crate::Summary> = std::fs::read_to_string(&json)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        l.sim_behind_schedule = summary.is_some_and(|s| s.behind_schedule);
        res.loaded = Some(l);
    }
    pi.stop(Duration::from_secs(5));
    let _ = stop_server(&mut server);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_ratios_and_the_target() {
        let series = |p50, p99| Series {
            count: 10,
            failed: 0,
            p50_us: Some(p50),
            p99_us: Some(p99),
            max_us: Some(p99),
        };
        let r = ActionResults {
            idle: Some(Level {
                pis: 0,
                stop: series(2000, 4000),
                http: series(500, 900),
                baseline: series(200, 400),
                sim_behind_schedule: false,
            }),
            loaded: Some(Level {
                pis: 1000,
                stop: series(4000, 9000),
                http: series(500, 900),
                baseline: series(400, 900),
                sim_behind_schedule: true,
            }),
        };
        let t = r.table();
        assert!(
            t.contains("| idle | stop / baseline | | | 10.0x | 10.0x | |"),
            "{t}"
        );
        assert!(t.contains("1000 Pis x 4 x 10 Hz (sim behind)"), "{t}");
        assert!(t.contains("p99 <= 5 ms at idle: 4.00 ms (met)"), "{t}");
    }
}
