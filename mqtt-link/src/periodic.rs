//! Work the `mqtt-link` thread does itself on a schedule ([`crate::LinkConfig::periodic`]):
//! the Pi's heartbeat and state reports. Done there, a round costs one wake-up of one
//! thread; handed over by another thread, it cost two (that thread's timer, then the link
//! thread woken by the hand-over). docs/performance.md, "The floor of a client on rumqttc".
//!
//! The link thread then waits on its own current-thread runtime instead of the blocking
//! `Connection`'s ([`Waiter`]), and the due time is a timerfd: tokio's timer wheel files a
//! deadline 64 ms or more away in a 64 ms slot and wakes first at the slot's start, so a
//! 100 ms wait on it is two wake-ups. Without a periodic job (the server) the link thread
//! waits as before, in `Connection::recv`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use log::warn;
use rumqttc::{Connection, ConnectionError, Event};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::publisher::Outgoing;

/// A job the link thread runs at the times it names.
pub trait Periodic: Send {
    /// When [`Periodic::run`] is due next.
    fn next(&self) -> Instant;
    /// Does what is due at `now` (called at or a little after [`Periodic::next`] while the
    /// link is connected; while it is down, only now and then, with `connected` false, or not
    /// at all: a job skips the times it missed): publishes through `publish`, which says
    /// whether the message was handed to rumqttc (false: the link is down or rumqttc's queue
    /// is full).
    fn run(&mut self, now: Instant, connected: bool, publish: &mut dyn FnMut(Outgoing<'_>) -> bool);
}

/// What ended a wait of the link thread.
pub(crate) enum Woke {
    Event(Result<Event, ConnectionError>),
    /// Every client handle is gone.
    Done,
    /// The `until` of [`Waiter::wait`] passed.
    Timeout,
    /// The periodic job is due.
    Due,
}

/// How the link thread waits for rumqttc's next event.
pub(crate) enum Waiter {
    /// In rumqttc's blocking `Connection` (its runtime, tokio's timers).
    Plain,
    /// On its own runtime, with a timerfd for the periodic job's due times.
    Timed {
        rt: tokio::runtime::Runtime,
        timer: AsyncFd<OwnedFd>,
        /// The due time the timer is set to.
        armed: Option<Instant>,
    },
}

impl Waiter {
    /// [`Waiter::Timed`] when there is a periodic job and the timer can be made; else (logged)
    /// [`Waiter::Plain`], which serves the job with tokio's timers.
    pub(crate) fn new(periodic: bool) -> Waiter {
        if !periodic {
            return Waiter::Plain;
        }
        match timed() {
            Ok(w) => w,
            Err(e) => {
                warn!("no timerfd for the link thread ({e}); its periodic work uses tokio's timer");
                Waiter::Plain
            }
        }
    }

    /// Waits for rumqttc's next event, `until` (if any) or `due` (if any), whichever comes
    /// first.
    pub(crate) fn wait(
        &mut self,
        conn: &mut Connection,
        until: Option<Instant>,
        due: Option<Instant>,
    ) -> Woke {
        let now = Instant::now();
        if due.is_some_and(|d| d <= now) {
            return Woke::Due;
        }
        match self {
            Waiter::Plain => {
                let wake = match (until, due) {
                    (Some(u), Some(d)) => Some(u.min(d)),
                    (u, d) => u.or(d),
                };
                match wake {
                    None => match conn.recv() {
                        Ok(ev) => Woke::Event(ev),
                        Err(_) => Woke::Done,
                    },
                    Some(at) => match conn.recv_timeout(at.saturating_duration_since(now)) {
                        Ok(ev) => Woke::Event(ev),
                        Err(rumqttc::RecvTimeoutError::Timeout) => {
                            if due.is_some_and(|d| d <= Instant::now()) {
                                Woke::Due
                            } else {
                                Woke::Timeout
                            }
                        }
                        Err(rumqttc::RecvTimeoutError::Disconnected) => Woke::Done,
                    },
                }
            }
            Waiter::Timed { rt, timer, armed } => {
                if *armed != due {
                    let left = due.map(|d| d.saturating_duration_since(now));
                    if let Err(e) = arm(timer.get_ref(), left) {
                        warn!("cannot set the link thread's timer: {e}");
                    }
                    *armed = due;
                }
                let woke = rt.block_on(async {
                    let until = async {
                        match until {
                            Some(at) => tokio::time::sleep_until(at.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        biased;
                        ev = conn.eventloop.poll() => match ev {
                            Err(ConnectionError::RequestsDone) => Woke::Done,
                            ev => Woke::Event(ev),
                        },
                        ready = timer.readable() => {
                            if let Ok(mut guard) = ready {
                                drain(timer.get_ref());
                                guard.clear_ready();
                            }
                            Woke::Due
                        },
                        _ = until => Woke::Timeout,
                    }
                });
                if matches!(woke, Woke::Due) {
                    *armed = None;
                }
                woke
            }
        }
    }
}

fn timed() -> std::io::Result<Waiter> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // SAFETY: plain syscall; the result is checked, then owned.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new, open descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timer = {
        let _in_rt = rt.enter();
        // SAFETY: the AsyncFd owns the timerfd for the whole of its life.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?
    };
    Ok(Waiter::Timed {
        rt,
        timer,
        armed: None,
    })
}

/// Sets the one-shot timer `left` from now (None: disarmed).
fn arm(fd: &OwnedFd, left: Option<Duration>) -> std::io::Result<()> {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let value = match left {
        // A zero value would disarm it: at least a nanosecond.
        Some(d) => {
            let d = d.max(Duration::from_nanos(1));
            libc::timespec {
                tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            }
        }
        None => zero,
    };
    let spec = libc::itimerspec {
        it_interval: zero,
        it_value: value,
    };
    // SAFETY: `fd` is an open timerfd; `spec` is a valid itimerspec.
    if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the timer's expiration count (clears its readiness; EAGAIN when none).
fn drain(fd: &OwnedFd) {
    let mut count = [0u8; 8];
    // SAFETY: reads at most 8 bytes into an 8-byte buffer from an open descriptor.
    let _ = unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
}
