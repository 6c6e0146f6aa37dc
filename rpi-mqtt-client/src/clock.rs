//! The Pi's wall clock in the units of the wire protocol (ms and s since the Unix epoch).

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub use mqtt_link::daemon::wall_ms as now_ms;

/// Seconds since the Unix epoch, truncated to `u32` (the session counter's seed).
pub fn now_secs_u32() -> u32 {
    (now_ms() / 1000) as u32
}
