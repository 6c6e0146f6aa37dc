//! `pi-floor`: the leanest Pi client we know how to write on rumqttc, the second baseline of
//! the footprint benchmark (`fleet-bench footprint`, beside the C client on libmosquitto).
//! It publishes the Pi's traffic and nothing else: a heartbeat every 500 ms and a state
//! report per entity every 100 ms, the same bytes as `bench/baseline/pi_baseline.c`; no
//! vehicles, segments, acks or config.
//!
//! Usage: `pi-floor HOST PORT CLIENT_ID ENTITIES SECONDS [--tokio-timer]`
//!
//! One thread does everything. It polls the event loop of rumqttc's blocking `Client` on its
//! own current-thread tokio runtime and is woken at each report time by a timerfd (a kernel
//! timer, read through tokio's reactor), queues the round, and the next polls write it: one
//! wake-up per round, six system calls (the wait, the timer's read, a `writev` per message).
//! With `--tokio-timer` it waits with `Connection::recv_timeout` instead, as a plain
//! blocking-client program does: tokio's timer wheel then wakes it twice per 100 ms wait
//! (first at the boundary of the wheel's 64 ms slot that holds the deadline).
//!
//! What it measures: the share of rpi-client's CPU that any daemon built on rumqttc pays
//! (tokio's loop, one write and TCP segment per message), against what the daemon adds.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{Client, Event, MqttOptions, NetworkOptions, Packet, QoS};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

const REPORT_EVERY: Duration = Duration::from_millis(100);
/// A heartbeat with every fifth round: every 500 ms.
const BEAT_EVERY_ROUNDS: u64 = 5;

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The C baseline's status payload (docs/protocol.md, "Status and sessions").
fn status(presence: u8, session: u32) -> Vec<u8> {
    let mut p = vec![0x35, presence];
    p.extend_from_slice(&session.to_le_bytes());
    p.extend_from_slice(&wall_ms().to_le_bytes());
    p
}

/// What one round publishes: (topic index, payload); 0 heartbeat, 1 state.
fn round(n: u64, seq: &mut u32, entities: u32) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::with_capacity(entities as usize + 1);
    if n % BEAT_EVERY_ROUNDS == 0 {
        let mut hb = vec![0x31];
        hb.extend_from_slice(&seq.to_le_bytes());
        hb.extend_from_slice(&wall_ms().to_le_bytes());
        *seq = seq.wrapping_add(1);
        out.push((0, hb));
    }
    for e in 1..=entities {
        let mut st = vec![0u8; 40];
        st[0] = 0x32;
        st[1..5].copy_from_slice(&e.to_le_bytes());
        st[5..13].copy_from_slice(&wall_ms().to_le_bytes());
        st[13..17].copy_from_slice(&(e * 1000).to_le_bytes());
        out.push((1, st));
    }
    out
}

/// A periodic timerfd: readable every `every`, from `every` from now.
fn timerfd(every: Duration) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscalls; the fd is checked and then owned.
    unsafe {
        let fd = libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let ts = libc::timespec {
            tv_sec: every.as_secs() as libc::time_t,
            tv_nsec: every.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        if libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tokio_timer = args.iter().any(|a| a == "--tokio-timer");
    let nagle = args.iter().any(|a| a == "--nagle");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let parsed = match pos.as_slice() {
        [host, port, id, entities, secs] => (|| {
            Some((
                host.to_string(),
                port.parse::<u16>().ok()?,
                id.to_string(),
                entities
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=64).contains(n))?,
                secs.parse::<u64>().ok().filter(|s| *s > 0)?,
            ))
        })(),
        _ => None,
    };
    let Some((host, port, id, entities, secs)) = parsed else {
        eprintln!(
            "usage: pi-floor HOST PORT CLIENT_ID ENTITIES(1-64) SECONDS [--tokio-timer] [--nagle]"
        );
        return ExitCode::from(2);
    };
    match run(
        &host,
        port,
        &id,
        entities,
        Duration::from_secs(secs),
        tokio_timer,
        nagle,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pi-floor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    host: &str,
    port: u16,
    id: &str,
    entities: u32,
    window: Duration,
    tokio_timer: bool,
    nagle: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let topics = [format!("rpi/{id}/heartbeat"), format!("rpi/{id}/state")];
    let status_topic = format!("rpi/{id}/status");
    let session = (wall_ms() / 1000) as u32;
    let mut opts = MqttOptions::new(id, host, port);
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_last_will(rumqttc::LastWill::new(
        &status_topic,
        status(3, session),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut conn) = Client::new(opts, 64);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(!nagle);
    conn.eventloop.set_network_options(net);

    let start = Instant::now();
    let mut rounds = 0u64;
    let mut seq = 0u32;
    let mut connected = false;
    let publish_round = |connected: bool, rounds: &mut u64, seq: &mut u32| {
        if connected {
            for (t, p) in round(*rounds, seq, entities) {
                let _ = client.try_publish(&topics[t], QoS::AtMostOnce, false, p);
            }
        }
        *rounds += 1;
    };
    let on_event = |ev: &Result<Event, rumqttc::ConnectionError>, connected: &mut bool| match ev {
        Ok(Event::Incoming(Packet::ConnAck(_))) => {
            *connected = true;
            true
        }
        Ok(_) => false,
        Err(e) => {
            *connected = false;
            eprintln!("pi-floor: connection: {e}");
            std::thread::sleep(Duration::from_millis(500));
            false
        }
    };
    let status_client = client.clone();
    let online = |c: &Client| {
        let _ = c.try_publish(&status_topic, QoS::AtLeastOnce, true, status(1, session));
    };

    if tokio_timer {
        let mut next = Instant::now() + REPORT_EVERY;
        while start.elapsed() < window {
            if Instant::now() >= next {
                while next <= Instant::now() {
                    next += REPORT_EVERY;
                }
                publish_round(connected, &mut rounds, &mut seq);
            }
            match conn.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(ev) => {
                    if on_event(&ev, &mut connected) {
                        online(&status_client);
                    }
                }
                Err(rumqttc::RecvTimeoutError::Timeout) => {}
                Err(rumqttc::RecvTimeoutError::Disconnected) => break,
            }
        }
    } else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let timer = {
            let _in_rt = rt.enter();
            // SAFETY: the timerfd is owned by the AsyncFd for its whole life.
            unsafe { AsyncFd::register_with_interest(timerfd(REPORT_EVERY)?, Interest::READABLE) }
                .map_err(|e| e.to_string())?
        };
        while start.elapsed() < window {
            let ev = rt.block_on(async {
                tokio::select! {
                    ev = conn.eventloop.poll() => Some(ev),
                    guard = timer.readable() => {
                        if let Ok(mut g) = guard {
                            let mut expirations = [0u8; 8];
                            // SAFETY: reads 8 bytes into an 8-byte buffer from the open timerfd.
                            unsafe {
                                libc::read(
                                    timer.get_ref().as_raw_fd(),
                                    expirations.as_mut_ptr().cast(),
                                    8,
                                )
                            };
                            g.clear_ready();
                        }
                        None
                    }
                }
            });
            match ev {
                None => publish_round(connected, &mut rounds, &mut seq),
                Some(ev) => {
                    if on_event(&ev, &mut connected) {
                        online(&status_client);
                    }
                }
            }
        }
    }
    eprintln!(
        "pi-floor: {rounds} rounds, {seq} heartbeats in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
