//! One simulated Pi: its own MQTT connection (rumqttc `AsyncClient`, TCP_NODELAY, Last Will
//! `ConnectionLost` and `Online` after every ConnAck with a growing session, as
//! docs/protocol.md says), a connection task that answers segments, and a ticker task that
//! publishes heartbeats and one state report per entity on schedule and measures how late
//! each tick fires. Both tasks of every Pi of a shard run on one current-thread runtime, so
//! they share state through `Rc<RefCell<..>>` without locks.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backoff::{Backoff, fnv1a};
use common::topic::TopicKind;
use common::{AckOutcome, Heartbeat, Point, Presence, Segment, SegmentAck, Status};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions,
    Outgoing, Packet, QoS,
};

use crate::config::SimConfig;
use crate::motion::Entity;
use crate::stats::{Progress, ShardStats};

/// rumqttc's request queue per Pi. Small, like the real client's: a Pi that cannot keep up
/// shows it as failed publishes instead of hiding it in a queue.
const REQUEST_CAP: usize = 64;

pub use mqtt_link::daemon::wall_ms as now_ms;

/// When this Pi does what, all derived from the run's schedule.
#[derive(Debug, Clone, Copy)]
pub struct PiTimes {
    /// When the connection task starts connecting (spread over the ramp).
    pub connect_at: Instant,
    /// First state tick (at the window's start, phase spread over one period) and first
    /// heartbeat (right after connecting, as a real Pi; also phase spread).
    pub first_state: Instant,
    pub first_heartbeat: Instant,
    /// When the measured window opens; heartbeats before it are counted apart.
    pub window_start: Instant,
    /// No tick at or after this instant; then the Pi says Offline and disconnects.
    pub end: Instant,
}

struct Topics {
    heartbeat: String,
    state: String,
    status: String,
    ack: String,
    segment: String,
}

/// What both tasks of one Pi share.
struct PiState {
    connected: bool,
    stopping: bool,
    /// The session of the current (or next) connection.
    session: u32,
    entities: Vec<Entity>,
}

/// Everything a shard's Pis share: counters, and the config.
pub struct ShardCtx {
    pub cfg: Arc<SimConfig>,
    pub stats: RefCell<ShardStats>,
    pub progress: Arc<Progress>,
    pub first_session: u32,
    /// Set to end the run early (Ctrl-C); tickers look at it on every tick.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

impl ShardCtx {
    fn publish(
        &self,
        client: &AsyncClient,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &[u8],
    ) -> bool {
        match client.try_publish(topic, qos, retain, payload.to_vec()) {
            Ok(()) => {
                Progress::add(&self.progress.sent, 1);
                true
            }
            Err(_) => {
                self.stats.borrow_mut().publish_failed += 1;
                Progress::add(&self.progress.publish_failed, 1);
                false
            }
        }
    }

    fn publish_ack(&self, client: &AsyncClient, topic: &str, ack: SegmentAck) {
        if self.publish(
            client,
            topic,
            QoS::AtLeastOnce,
            false,
            ack.encode().as_slice(),
        ) {
            let mut s = self.stats.borrow_mut();
            match ack.outcome {
                AckOutcome::Accepted => s.sent.ack_accepted += 1,
                AckOutcome::Completed => s.sent.ack_completed += 1,
                AckOutcome::Rejected(_) => s.sent.ack_rejected += 1,
            }
        }
    }

    fn publish_status(&self, client: &AsyncClient, topic: &str, presence: Presence, session: u32) {
        let st = Status {
            presence,
            session,
            timestamp_ms: now_ms(),
        };
        if self.publish(
            client,
            topic,
            QoS::AtLeastOnce,
            true,
            st.encode().as_slice(),
        ) {
            self.stats.borrow_mut().sent.status += 1;
        }
    }
}

/// Runs Pi number `n` until its schedule ends and its connection is closed.
pub async fn run_pi(ctx: Rc<ShardCtx>, n: usize, times: PiTimes) {
    let cfg = ctx.cfg.clone();
    let id = cfg.client_id(n);
    let topics = Rc::new(Topics {
        heartbeat: TopicKind::Heartbeat.topic(&id),
        state: TopicKind::State.topic(&id),
        status: TopicKind::Status.topic(&id),
        ack: TopicKind::Ack.topic(&id),
        segment: TopicKind::Segment.topic(&id),
    });
    let mut opts = MqttOptions::new(
        id.clone(),
        cfg.broker.host.clone(),
        cfg.broker.port_or_default(false),
    );
    opts.set_keep_alive(cfg.keep_alive);
    opts.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(opts, REQUEST_CAP);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(5);
    eventloop.set_network_options(net);

    // Entities start spread out on a grid so the fleet view is not one dot.
    let entities = (1..=cfg.entities)
        .map(|e| Entity::new(e, Point::new(n as i32 * 2000, e as i32 * 2000)))
        .collect();
    let state = Rc::new(RefCell::new(PiState {
        connected: false,
        stopping: false,
        session: ctx.first_session,
        entities,
    }));

    tokio::time::sleep_until(times.connect_at.into()).await;
    let conn = tokio::task::spawn_local(connection(
        ctx.clone(),
        eventloop,
        client.clone(),
        state.clone(),
        topics.clone(),
        fnv1a(id.as_bytes()),
    ));
    ticker(&ctx, &client, &state, &topics, times).await;

    // Clean shutdown as the real client does: Offline (retained), then DISCONNECT, which
    // rumqttc writes after everything queued before it.
    let (connected, session) = {
        let mut s = state.borrow_mut();
        s.stopping = true;
        (s.connected, s.session)
    };
    if connected {
        let st = Status {
            presence: Presence::Offline,
            session,
            timestamp_ms: now_ms(),
        };
        let sent = tokio::time::timeout(
            Duration::from_secs(2),
            client.publish(
                topics.status.as_str(),
                QoS::AtLeastOnce,
                true,
                st.encode().to_vec(),
            ),
        )
        .await;
        if matches!(sent, Ok(Ok(()))) {
            ctx.stats.borrow_mut().sent.status += 1;
            Progress::add(&ctx.progress.sent, 1);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.disconnect()).await;
    if tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .is_err()
    {
        ctx.stats.borrow_mut().unfinished += 1;
    }
}

fn will(topic: &str, session: u32) -> LastWill {
    let st = Status {
        presence: Presence::ConnectionLost,
        session,
        timestamp_ms: now_ms(),
    };
    LastWill::new(topic, st.encode().to_vec(), QoS::AtLeastOnce, true)
}

/// Drives the event loop: reconnects with backoff, says Online and subscribes after every
/// ConnAck, answers segments at once.
async fn connection(
    ctx: Rc<ShardCtx>,
    mut eventloop: EventLoop,
    client: AsyncClient,
    state: Rc<RefCell<PiState>>,
    topics: Rc<Topics>,
    seed: u64,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), seed);
    let session = state.borrow().session;
    eventloop
        .mqtt_options
        .set_last_will(will(&topics.status, session));
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                let session = {
                    let mut s = state.borrow_mut();
                    s.connected = true;
                    s.session
                };
                ctx.stats.borrow_mut().connects += 1;
                Progress::add(&ctx.progress.connected, 1);
                // Subscribe first: the broker handles both in order, so whoever sees
                // Online may send a segment at once.
                if client
                    .try_subscribe(topics.segment.as_str(), QoS::AtLeastOnce)
                    .is_err()
                {
                    ctx.stats.borrow_mut().publish_failed += 1;
                }
                ctx.publish_status(&client, &topics.status, Presence::Online, session);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if p.topic != topics.segment {
                    continue;
                }
                ctx.stats.borrow_mut().segments_received += 1;
                let Ok(seg) = Segment::decode(&p.payload) else {
                    ctx.stats.borrow_mut().malformed += 1;
                    continue;
                };
                let outcome = answer(&state, seg);
                ctx.publish_ack(
                    &client,
                    &topics.ack,
                    SegmentAck {
                        entity_id: seg.entity_id,
                        segment_id: seg.segment_id,
                        outcome,
                    },
                );
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => ctx.stats.borrow_mut().written += 1,
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Let the broker close the socket first: closing ours with unread input
                // (a PUBACK) would send a RST, and the broker could lose what it had not read
                // yet, the Offline status and the DISCONNECT among it.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, eventloop.poll()).await {}
                break;
            }
            Ok(_) => {}
            Err(e) => {
                let (was_connected, stopping) = {
                    let mut s = state.borrow_mut();
                    let was = s.connected;
                    if was {
                        // The next connection gets a new session; its will says so.
                        s.session = s.session.wrapping_add(1);
                    }
                    s.connected = false;
                    (was, s.stopping)
                };
                if stopping || matches!(e, ConnectionError::RequestsDone) {
                    break;
                }
                {
                    let mut st = ctx.stats.borrow_mut();
                    if was_connected {
                        st.disconnects += 1;
                        Progress::sub(&ctx.progress.connected, 1);
                    } else {
                        st.connect_failures += 1;
                    }
                }
                if was_connected {
                    log::warn!("{}: connection lost: {e}", topics.status);
                }
                let session = state.borrow().session;
                eventloop
                    .mqtt_options
                    .set_last_will(will(&topics.status, session));
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
    let mut s = state.borrow_mut();
    if s.connected {
        s.connected = false;
        Progress::sub(&ctx.progress.connected, 1);
    }
}

fn answer(state: &Rc<RefCell<PiState>>, seg: Segment) -> AckOutcome {
    let mut s = state.borrow_mut();
    let now = Instant::now();
    match s.entities.iter_mut().find(|e| e.id == seg.entity_id) {
        Some(e) => e.offer(seg, now, now_ms()),
        None => AckOutcome::Rejected(common::RejectReason::UnknownEntity),
    }
}

/// A periodic schedule that drops missed ticks (like `crossbeam_channel::tick`) and says how
/// late each tick fired.
struct Schedule {
    next: Instant,
    period: Duration,
}

impl Schedule {
    /// Called when `now >= self.next`: returns (lateness, ticks skipped) and moves on to the
    /// first deadline after `now`.
    fn fire(&mut self, now: Instant) -> (Duration, u64) {
        let late = now.saturating_duration_since(self.next);
        let skipped = (late.as_nanos() / self.period.as_nanos()) as u64;
        self.next += self.period * (skipped as u32 + 1);
        (late, skipped)
    }
}

async fn ticker(
    ctx: &ShardCtx,
    client: &AsyncClient,
    state: &Rc<RefCell<PiState>>,
    topics: &Topics,
    times: PiTimes,
) {
    let cfg = &ctx.cfg;
    let mut states = Schedule {
        next: times.first_state,
        period: cfg.state_interval,
    };
    let mut beats = Schedule {
        next: times.first_heartbeat,
        period: cfg.heartbeat_interval,
    };
    let mut seq: u32 = 0;
    loop {
        let next = states.next.min(beats.next);
        if next >= times.end || ctx.stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep_until(next.into()).await;
        let now = Instant::now();
        for (sched, is_state) in [(&mut states, true), (&mut beats, false)] {
            if sched.next > now || sched.next >= times.end {
                continue;
            }
            let (late, skipped) = sched.fire(now);
            {
                let mut st = ctx.stats.borrow_mut();
                st.lag.record(late);
                st.skipped_ticks += skipped;
                if late > sched.period / 2 {
                    st.late_ticks += 1;
                    Progress::add(&ctx.progress.late_ticks, 1);
                }
            }
            Progress::add(&ctx.progress.ticks, 1);
            Progress::add(&ctx.progress.skipped_ticks, skipped);
            ctx.progress.lag_max_us.fetch_max(
                late.as_micros() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            if !state.borrow().connected {
                continue;
            }
            let ts = now_ms();
            if is_state {
                publish_states(ctx, client, state, topics, now, ts);
            } else {
                let hb = Heartbeat {
                    seq,
                    timestamp_ms: ts,
                };
                seq = seq.wrapping_add(1);
                if ctx.publish(
                    client,
                    &topics.heartbeat,
                    QoS::AtMostOnce,
                    false,
                    hb.encode().as_slice(),
                ) {
                    let mut st = ctx.stats.borrow_mut();
                    st.sent.heartbeat += 1;
                    if now < times.window_start {
                        st.early_heartbeats += 1;
                    }
                }
            }
        }
    }
}

fn publish_states(
    ctx: &ShardCtx,
    client: &AsyncClient,
    state: &Rc<RefCell<PiState>>,
    topics: &Topics,
    now: Instant,
    ts: u64,
) {
    let segment_time = ctx.cfg.segment_time;
    let n = state.borrow().entities.len();
    for i in 0..n {
        let (report, completed) = state.borrow_mut().entities[i].sample(now, ts, segment_time);
        if ctx.publish(
            client,
            &topics.state,
            QoS::AtMostOnce,
            false,
            report.encode().as_slice(),
        ) {
            ctx.stats.borrow_mut().sent.state += 1;
        }
        if let Some(segment_id) = completed {
            ctx.publish_ack(
                client,
                &topics.ack,
                SegmentAck {
                    entity_id: report.entity_id,
                    segment_id,
                    outcome: AckOutcome::Completed,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_drops_missed_ticks() {
        let t0 = Instant::now();
        let p = Duration::from_millis(100);
        let mut s = Schedule {
            next: t0,
            period: p,
        };
        assert_eq!(
            s.fire(t0 + Duration::from_millis(1)),
            (Duration::from_millis(1), 0)
        );
        assert_eq!(s.next, t0 + p);
        // 250 ms late: the ticks at +200 and +300 are skipped, the next is at +400.
        let (late, skipped) = s.fire(t0 + p + Duration::from_millis(250));
        assert_eq!((late, skipped), (Duration::from_millis(250), 2));
        assert_eq!(s.next, t0 + p * 4);
    }
}
