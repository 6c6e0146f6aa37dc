//! A test MQTT client: subscribes to topics, records what arrives (with arrival time), and
//! publishes raw payloads. Plain rumqttc on its own thread, independent of the daemons' code.

use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// One message seen by a probe.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub at: Instant,
}

pub struct Probe {
    client: Client,
    rx: Receiver<Seen>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Probe {
    /// Connects to `127.0.0.1:port` as `id`, subscribes to `topics` at QoS 1 and waits for
    /// the subscription to be acknowledged.
    pub fn connect(port: u16, id: &str, topics: &[&str]) -> Probe {
        Probe::connect_with(MqttOptions::new(id, "127.0.0.1", port), topics)
    }

    pub fn connect_with(mut opts: MqttOptions, topics: &[&str]) -> Probe {
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = Client::new(opts, 10_000);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        conn.eventloop.set_network_options(net);
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let want_subacks = usize::from(!topics.is_empty());
        for t in topics {
            client
                .subscribe(*t, QoS::AtLeastOnce)
                .expect("queue subscribe");
        }
        let handle = thread::Builder::new()
            .name("test-probe".into())
            .spawn(move || {
                let mut acks = 0;
                let mut connected = false;
                for ev in conn.iter() {
                    match ev {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            connected = true;
                            if want_subacks == 0 {
                                let _ = ready_tx.try_send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            acks += 1;
                            if acks >= want_subacks {
                                let _ = ready_tx.try_send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let _ = tx.send(Seen {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                retain: p.retain,
                                at: Instant::now(),
                            });
                        }
                        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                        Ok(_) => {}
                        Err(_) if !connected => {
                            thread::sleep(Duration::from_millis(50));
                        }
                        Err(_) => {
                            // The broker went away (tests restart it); keep retrying slowly.
                            thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })
            .expect("spawn probe thread");
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("probe did not connect and subscribe within 5 s");
        Probe {
            client,
            rx,
            handle: Some(handle),
        }
    }

    pub fn publish(&self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .expect("queue publish");
    }

    /// The next message on any subscribed topic, or None after `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Seen> {
        match self.rx.recv_timeout(timeout) {
            Ok(s) => Some(s),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The first message for which `pred` holds, skipping others, within `timeout`.
    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&Seen) -> bool) -> Option<Seen> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let s = self.next(left)?;
            if pred(&s) {
                return Some(s);
            }
        }
    }

    /// Everything that arrives during `d`.
    pub fn collect_for(&self, d: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(s) = self.next(deadline.saturating_duration_since(Instant::now())) {
            out.push(s);
        }
        out
    }

    /// Drops whatever arrived so far.
    pub fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        if let Some(h) = self.handle.take() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(2));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

/// What a probe on a Pi's topics (`rpi/<id>/#`) sees first when the Pi comes back (after a
/// broker restart): when its first heartbeat arrived, and its first `Online` status with the
/// probe's view of it (`retain` false: seen live, so the probe was subscribed before the Pi
/// reconnected and sees everything the Pi sent afterwards).
#[derive(Debug, Default)]
pub struct PiReturn {
    pub heartbeat: Option<Instant>,
    pub online: Option<(common::Status, Seen)>,
}

/// Reads `probe` until both the first heartbeat and the first `Online` status have arrived,
/// or `timeout` has passed. A payload that does not decode is a failure of the Pi: panics.
pub fn pi_return(probe: &Probe, timeout: Duration) -> PiReturn {
    use common::{Message, Presence};
    let mut back = PiReturn::default();
    let deadline = Instant::now() + timeout;
    while (back.heartbeat.is_none() || back.online.is_none()) && Instant::now() < deadline {
        let Some(s) = probe.next(Duration::from_millis(50)) else {
            continue;
        };
        let msg = Message::decode(&s.payload)
            .unwrap_or_else(|e| panic!("undecodable payload on {}: {e}: {:?}", s.topic, s.payload));
        match msg {
            Message::Heartbeat(_) if back.heartbeat.is_none() => back.heartbeat = Some(s.at),
            Message::Status(st) if st.presence == Presence::Online && back.online.is_none() => {
                back.online = Some((st, s));
            }
            _ => {}
        }
    }
    back
}
