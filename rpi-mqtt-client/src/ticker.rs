//! The loop both tickers (heartbeat, state) share: fire every interval, and once at once after
//! every (re)connect with the schedule restarted from there; missed ticks are dropped, never
//! queued (`crossbeam_channel::tick`).

use std::time::Duration;

use crossbeam_channel::{Receiver, select, tick};

use crate::link_change::LinkChange;

enum Event {
    Tick,
    Link(LinkChange),
    Stop,
}

/// Calls `fire` on every tick and right after every `LinkChange::Up`, until `stop` disconnects
/// (or the link channel closes).
pub fn run_ticker(
    interval: Duration,
    stop: &Receiver<()>,
    link: &Receiver<LinkChange>,
    mut fire: impl FnMut(),
) {
    let mut ticker = tick(interval);
    loop {
        let event = select! {
            recv(stop) -> _ => Event::Stop,
            recv(link) -> c => c.map(Event::Link).unwrap_or(Event::Stop),
            recv(ticker) -> _ => Event::Tick,
        };
        match event {
            Event::Stop => break,
            Event::Link(LinkChange::Down) => {}
            Event::Link(LinkChange::Up) => {
                fire();
                // Restart the schedule from this one.
                ticker = tick(interval);
            }
            Event::Tick => fire(),
        }
    }
}
