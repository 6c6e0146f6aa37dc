//! A fleet watcher: an MQTT client subscribed to `rpi/+/+` that re-subscribes after every
//! reconnect (the broker may be restarted under it) and records, with arrival times, every
//! heartbeat, status, state report and ack the Pis publish. The record answers the questions
//! the scenarios ask: when did Pi X heartbeat again, did any segment run twice, did entities
//! keep moving.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{AckOutcome, Message, SegmentAck, Status};
use mqtt_link::daemon::wall_ms;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// One state report as seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateSeen {
    pub at: Instant,
    /// Age on arrival: the watcher's wall clock minus the report's `timestamp_ms` (same
    /// machine, so no clock offset), in ms; negative means a clock step.
    pub age_ms: i64,
    pub segment_id: u32,
    pub progress: u16,
    pub x: i32,
    pub y: i32,
}

/// Everything seen so far.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// Pi id -> (arrival, seq) per heartbeat.
    pub heartbeats: BTreeMap<String, Vec<(Instant, u32)>>,
    /// Pi id -> (arrival, status, retained).
    pub statuses: BTreeMap<String, Vec<(Instant, Status, bool)>>,
    /// (Pi id, entity) -> state reports in arrival order.
    pub states: BTreeMap<(String, u32), Vec<StateSeen>>,
    /// (arrival, Pi id, ack).
    pub acks: Vec<(Instant, String, SegmentAck)>,
    /// Payloads that did not decode (should stay 0: only real Pis publish on watched topics).
    pub undecodable: u64,
    /// ConnAcks of the watcher itself.
    pub connects: u64,
}

/// A segment that ran twice, or ran again after another one, as the state reports show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub pi: String,
    pub entity: u32,
    pub segment_id: u32,
    pub what: String,
}

impl Record {
    /// The first heartbeat of `pi` that arrived at or after `t`.
    pub fn heartbeat_after(&self, pi: &str, t: Instant) -> Option<Instant> {
        self.heartbeats
            .get(pi)?
            .iter()
            .map(|(at, _)| *at)
            .find(|at| *at >= t)
    }

    /// The last heartbeat of `pi` that arrived before `t`.
    pub fn heartbeat_before(&self, pi: &str, t: Instant) -> Option<Instant> {
        self.heartbeats
            .get(pi)?
            .iter()
            .map(|(at, _)| *at)
            .rfind(|at| *at < t)
    }

    /// Segment ids each entity executed (reported with a segment id != 0).
    pub fn executed(&self) -> BTreeMap<(String, u32), Vec<u32>> {
        let mut out = BTreeMap::new();
        for (key, seen) in &self.states {
            let mut ids: Vec<u32> = Vec::new();
            for s in seen {
                if s.segment_id != 0 && ids.last() != Some(&s.segment_id) {
                    ids.push(s.segment_id);
                }
            }
            out.insert(key.clone(), ids);
        }
        out
    }

    /// Executions that break "at most once per segment id": a segment whose progress goes
    /// back (it restarted), or that shows up again after the entity moved on to another
    /// segment or went idle having finished it.
    pub fn double_executions(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        for ((pi, entity), seen) in &self.states {
            // Per segment id: last progress seen, and whether the entity has left it.
            let mut last: BTreeMap<u32, (u16, bool)> = BTreeMap::new();
            let mut current = 0u32;
            let v = |id: u32, what: String| Violation {
                pi: pi.clone(),
                entity: *entity,
                segment_id: id,
                what,
            };
            for s in seen {
                if s.segment_id != current {
                    if let Some(e) = last.get_mut(&current) {
                        e.1 = true;
                    }
                    current = s.segment_id;
                }
                if s.segment_id == 0 {
                    continue;
                }
                match last.get_mut(&s.segment_id) {
                    Some((_, true)) => {
                        out.push(v(
                            s.segment_id,
                            "reported again after the entity left it".into(),
                        ));
                        last.insert(s.segment_id, (s.progress, false));
                    }
                    Some((p, false)) => {
                        if s.progress < *p {
                            out.push(v(
                                s.segment_id,
                                format!("progress went back from {} to {}", *p, s.progress),
                            ));
                        }
                        *p = s.progress;
                    }
                    None => {
                        last.insert(s.segment_id, (s.progress, false));
                    }
                }
            }
        }
        out
    }

    /// `Completed` acks per (Pi, entity, segment); more than one is a re-sent ack (the Pi
    /// re-sends recent acks after a reconnect), not a second execution.
    pub fn completed_acks(&self) -> BTreeMap<(String, u32, u32), usize> {
        let mut out = BTreeMap::new();
        for (_, pi, a) in &self.acks {
            if a.outcome == AckOutcome::Completed {
                *out.entry((pi.clone(), a.entity_id, a.segment_id))
                    .or_insert(0) += 1;
            }
        }
        out
    }

    /// Acks of `pi` for `segment_id`, in arrival order.
    pub fn acks_of(&self, pi: &str, segment_id: u32) -> Vec<(Instant, AckOutcome)> {
        self.acks
            .iter()
            .filter(|(_, p, a)| p == pi && a.segment_id == segment_id)
            .map(|(at, _, a)| (*at, a.outcome))
            .collect()
    }

    /// The oldest state report (largest age on arrival, ms) that arrived at or after `t`.
    pub fn max_state_age_after(&self, t: Instant) -> Option<i64> {
        self.states
            .values()
            .flatten()
            .filter(|s| s.at >= t)
            .map(|s| s.age_ms)
            .max()
    }

    /// State reports of (pi, entity) that arrived in `[from, to)`.
    pub fn states_between(
        &self,
        pi: &str,
        entity: u32,
        from: Instant,
        to: Instant,
    ) -> Vec<StateSeen> {
        self.states
            .get(&(pi.to_owned(), entity))
            .map(|v| {
                v.iter()
                    .filter(|s| s.at >= from && s.at < to)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The watcher; stops on drop.
pub struct Watch {
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    client: Client,
    handle: Option<JoinHandle<()>>,
}

impl Watch {
    /// Watches `rpi/+/+` on `127.0.0.1:port`; returns once subscribed (at most 5 s).
    pub fn start(port: u16, id: &str) -> Watch {
        Watch::start_on(port, id, &["rpi/+/+"])
    }

    /// Watches the given topic filters.
    pub fn start_on(port: u16, id: &str, filters: &[&str]) -> Watch {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = Client::new(opts, 1000);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(2);
        conn.eventloop.set_network_options(net);
        let record = Arc::new(Mutex::new(Record::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
        let handle = {
            let (record, stop, client) = (record.clone(), stop.clone(), client.clone());
            thread::Builder::new()
                .name("chaos-watch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        let ev = match conn.recv_timeout(Duration::from_millis(50)) {
                            Ok(ev) => ev,
                            Err(rumqttc::RecvTimeoutError::Timeout) => continue,
                            Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                        };
                        match ev {
                            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                                lock(&record).connects += 1;
                                for f in &filters {
                                    let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                                }
                            }
                            Ok(Event::Incoming(Packet::SubAck(_))) => {
                                let _ = ready_tx.try_send(());
                            }
                            Ok(Event::Incoming(Packet::Publish(p))) => {
                                on_publish(&record, &p.topic, &p.payload, p.retain);
                            }
                            Ok(_) => {}
                            // The broker is gone (a scenario killed it): retry soon.
                            Err(_) => thread::sleep(Duration::from_millis(20)),
                        }
                    }
                })
                .expect("spawn watcher")
        };
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the watcher did not subscribe within 5 s");
        Watch {
            record,
            stop,
            client,
            handle: Some(handle),
        }
    }

    /// A copy of everything seen so far.
    pub fn record(&self) -> Record {
        lock(&self.record).clone()
    }

    /// Runs `f` on the record without copying it.
    pub fn with<T>(&self, f: impl FnOnce(&Record) -> T) -> T {
        f(&lock(&self.record))
    }

    /// Waits until `f` returns Some, polling every 5 ms, for at most `timeout`.
    pub fn wait<T>(&self, timeout: Duration, mut f: impl FnMut(&Record) -> Option<T>) -> Option<T> {
        testkit::wait_for(timeout, || self.with(&mut f))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.client.try_disconnect();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn lock(r: &Mutex<Record>) -> std::sync::MutexGuard<'_, Record> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

fn on_publish(record: &Mutex<Record>, topic: &str, payload: &[u8], retain: bool) {
    let at = Instant::now();
    let mut parts = topic.split('/');
    let (Some(_), Some(pi)) = (parts.next(), parts.next()) else {
        return;
    };
    let mut r = lock(record);
    match Message::decode(payload) {
        Ok(Message::Heartbeat(h)) => r
            .heartbeats
            .entry(pi.to_owned())
            .or_default()
            .push((at, h.seq)),
        Ok(Message::Status(s)) => r
            .statuses
            .entry(pi.to_owned())
            .or_default()
            .push((at, s, retain)),
        Ok(Message::State(s)) => r
            .states
            .entry((pi.to_owned(), s.entity_id))
            .or_default()
            .push(StateSeen {
                at,
                age_ms: wall_ms() as i64 - s.timestamp_ms as i64,
                segment_id: s.segment_id,
                progress: s.progress,
                x: s.x,
                y: s.y,
            }),
        Ok(Message::Ack(a)) => r.acks.push((at, pi.to_owned(), a)),
        // Not a Pi's message (version 3 server messages included).
        Ok(
            Message::Segment(_)
            | Message::Action(_)
            | Message::ActionAck(_)
            | Message::ServerStatus(_)
            | Message::Lease(_),
        )
        | Err(_) => r.undecodable += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(reports: &[(u32, u16)]) -> Record {
        let t = Instant::now();
        let mut r = Record::default();
        r.states.insert(
            ("pi".into(), 1),
            reports
                .iter()
                .map(|&(segment_id, progress)| StateSeen {
                    at: t,
                    age_ms: 0,
                    segment_id,
                    progress,
                    x: 0,
                    y: 0,
                })
                .collect(),
        );
        r
    }

    #[test]
    fn a_clean_history_has_no_violation() {
        let r = rec(&[
            (0, 0),
            (5, 0),
            (5, 4000),
            (5, 10000),
            (6, 100),
            (0, 0),
            (7, 50),
        ]);
        assert!(r.double_executions().is_empty());
        assert_eq!(r.executed()[&("pi".to_string(), 1)], vec![5, 6, 7]);
    }

    #[test]
    fn restarts_and_reappearances_are_caught() {
        let back = rec(&[(5, 4000), (5, 100)]);
        assert_eq!(back.double_executions().len(), 1);
        let again = rec(&[(5, 9000), (6, 10), (5, 20)]);
        let v = again.double_executions();
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].segment_id, 5);
        let after_idle = rec(&[(5, 10000), (0, 0), (5, 10)]);
        assert_eq!(after_idle.double_executions().len(), 1);
    }
}
