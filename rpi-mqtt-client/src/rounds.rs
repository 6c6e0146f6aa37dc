//! The Pi's rounds: every `state_interval` a state report per entity, with the heartbeat in
//! the round it is due in, published by the `mqtt-link` thread itself
//! ([`mqtt_link::Periodic`], woken by its timer): one wake-up of one thread per round. The
//! entities are sampled from the [`Board`] the `vehicles` thread leaves at each of its
//! wake-ups (per entity its flags and a [`crate::vehicle::Sampler`]), so that thread sleeps
//! until there is work. After a (re)connect the `vehicles` thread sends a heartbeat and the
//! states at once itself and restarts the schedule from there ([`Rounds::restart`]).
//!
//! Reports that cannot be sent are dropped, never queued: after an outage the server gets the
//! current state, not a backlog. Heartbeats not handed over are not counted ([`Heartbeats`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::Message;
use common::ratelimit::RateLimiter;
use mqtt_link::{Outgoing, Periodic};

use crate::clock;
use crate::entities::Sampled;
use crate::heartbeat::Heartbeats;
use crate::publisher::encode;
use crate::state::{log_dropped, qos0};

/// When the next state reports and heartbeat are due: fixed schedules from one origin (a
/// start or a reconnect), so with the heartbeat interval a multiple of the state interval
/// (500 ms and 100 ms by default) every heartbeat goes out with a round of reports, in one
/// burst. Missed times are skipped, never caught up. (`crossbeam_channel::tick` schedules
/// each tick from the previous delivery: two tickers drift apart by the wake-up latency.)
#[derive(Debug, Clone, Copy)]
struct Schedule {
    report: Instant,
    beat: Instant,
    report_every: Duration,
    beat_every: Duration,
}

/// A time this close ahead counts as due (timer slack), so two schedules that meet are
/// served by one wake-up.
const SLACK: Duration = Duration::from_millis(2);

impl Schedule {
    fn new(now: Instant, report_every: Duration, beat_every: Duration) -> Schedule {
        let report_every = report_every.max(Duration::from_millis(1));
        let beat_every = beat_every.max(Duration::from_millis(1));
        Schedule {
            report: now + report_every,
            beat: now + beat_every,
            report_every,
            beat_every,
        }
    }

    /// The sooner of the two.
    fn next(&self) -> Instant {
        self.report.min(self.beat)
    }

    /// Whether the reports and the heartbeat are due at `now`; those due move on to their
    /// next time after `now`.
    fn due(&mut self, now: Instant) -> (bool, bool) {
        fn take(at: &mut Instant, every: Duration, now: Instant) -> bool {
            if now + SLACK < *at {
                return false;
            }
            while *at <= now + SLACK {
                *at += every;
            }
            true
        }
        (
            take(&mut self.report, self.report_every, now),
            take(&mut self.beat, self.beat_every, now),
        )
    }
}

/// What the reports show between two wake-ups of the `vehicles` thread: the entities as they
/// were when it last stepped them (`since`), each able to say where it is later.
pub struct Board {
    since: Instant,
    entries: Vec<Sampled>,
}

/// The rounds' state, shared by the `mqtt-link` thread (which runs them) and the `vehicles`
/// thread (which keeps the board and restarts them after a connect).
pub struct Rounds {
    schedule: Schedule,
    state_every: Duration,
    pub heartbeat: Heartbeats,
    state_topic: String,
    board: Board,
    /// A board older than this is sampled this far ahead at most (a stopped process is not
    /// simulated as driving; see `vehicles::MAX_DT`).
    max_elapsed: Duration,
    dropped: RateLimiter,
    /// Between the `vehicles` thread's fresh round after a connect ([`Rounds::restart`]) and
    /// the next disconnect ([`Rounds::pause`]): so no round goes out before the Pi's Online
    /// status, which the main loop publishes first.
    live: bool,
}

impl Rounds {
    /// Takes the entities as they are now, stepped up to `since`.
    pub fn set_board(&mut self, since: Instant, entries: Vec<Sampled>) {
        self.board = Board { since, entries };
    }

    /// Starts both schedules again from `now` (a heartbeat and the states were just sent).
    pub fn restart(&mut self, now: Instant) {
        self.schedule = Schedule::new(now, self.state_every, self.heartbeat.interval);
        self.live = true;
    }

    /// The link is down: no rounds until the next [`Rounds::restart`].
    pub fn pause(&mut self) {
        self.live = false;
    }

    fn run(
        &mut self,
        now: Instant,
        connected: bool,
        publish: &mut dyn FnMut(Outgoing<'_>) -> bool,
    ) {
        let (report, beat) = self.schedule.due(now);
        if !connected || !self.live || !(report || beat) {
            return;
        }
        if beat {
            let hb = self.heartbeat.next();
            if publish(qos0(&self.heartbeat.topic, hb.as_slice())) {
                self.heartbeat.sent();
            } else {
                self.heartbeat.skipped();
            }
        }
        if report {
            let elapsed = now
                .saturating_duration_since(self.board.since)
                .min(self.max_elapsed);
            let stamp = clock::now_ms();
            let mut dropped = 0;
            for e in &self.board.entries {
                let payload = encode(Message::State(e.report(elapsed, stamp)));
                dropped += usize::from(!publish(qos0(&self.state_topic, payload.as_slice())));
            }
            if dropped > 0 {
                log_dropped(&mut self.dropped, dropped);
            }
        }
    }
}

/// [`Rounds`] behind a lock, for both threads.
#[derive(Clone)]
pub struct SharedRounds(Arc<Mutex<Rounds>>);

impl SharedRounds {
    pub fn new(
        heartbeat: Heartbeats,
        state_every: Duration,
        state_topic: String,
        max_elapsed: Duration,
    ) -> SharedRounds {
        let now = Instant::now();
        SharedRounds(Arc::new(Mutex::new(Rounds {
            schedule: Schedule::new(now, state_every, heartbeat.interval),
            state_every,
            heartbeat,
            state_topic,
            board: Board {
                since: now,
                entries: Vec::new(),
            },
            max_elapsed,
            dropped: RateLimiter::new(Duration::from_secs(30)),
            live: false,
        })))
    }

    pub fn lock(&self) -> MutexGuard<'_, Rounds> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The job for [`mqtt_link::LinkConfig::periodic`].
    pub fn job(&self) -> Box<dyn Periodic> {
        Box::new(self.clone())
    }
}

impl Periodic for SharedRounds {
    fn next(&self) -> Instant {
        self.lock().schedule.next()
    }

    fn run(
        &mut self,
        now: Instant,
        connected: bool,
        publish: &mut dyn FnMut(Outgoing<'_>) -> bool,
    ) {
        self.lock().run(now, connected, publish);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_goes_with_every_fifth_round_of_reports() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, ms(100), ms(500));
        let mut beats = Vec::new();
        for k in 1..=10u64 {
            // Woken a little late (timer slack), or a little early.
            let now = t0 + ms(100 * k) + if k % 2 == 0 { ms(1) } else { Duration::ZERO };
            assert_eq!(s.next(), t0 + ms(100 * k));
            let (report, beat) = s.due(now);
            assert!(report, "round {k}");
            if beat {
                beats.push(k);
            }
        }
        assert_eq!(beats, [5, 10]);
        // Nothing is due between rounds; a long stall skips the missed rounds.
        assert_eq!(s.due(t0 + ms(1050)), (false, false));
        assert_eq!(s.due(t0 + ms(2310)), (true, true));
        assert_eq!(s.next(), t0 + ms(2400));
        assert_eq!(s.due(t0 + ms(2399)), (true, false));
        assert_eq!(s.due(t0 + ms(2499)), (true, true));
    }
}
