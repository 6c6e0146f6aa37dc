//! An entity's motion state in wire units: what a vehicle handler samples on the Pi
//! (`rpi_client::VehicleState` is this type), what a [`StateReport`] carries with the entity
//! id and a timestamp, and what the server shows for each entity.

use serde::{Deserialize, Serialize};

use crate::wire::StateReport;

/// Pose, velocity and segment progress of one entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Motion {
    /// Position, mm.
    pub x: i32,
    pub y: i32,
    /// Heading, millidegrees in `[0, 360000)`, counter-clockwise from +x.
    pub angle: i32,
    /// Velocity, mm/s.
    pub vx: i32,
    pub vy: i32,
    /// The segment being executed, 0 when idle.
    pub segment_id: u32,
    /// Progress along it in 1/10000 (0 when idle, at most 10000).
    pub progress: u16,
}

impl StateReport {
    /// The report of entity `entity_id` in motion `m`, sampled at `timestamp_ms`.
    pub fn new(entity_id: u32, timestamp_ms: u64, m: Motion) -> StateReport {
        StateReport {
            entity_id,
            timestamp_ms,
            x: m.x,
            y: m.y,
            angle: m.angle,
            vx: m.vx,
            vy: m.vy,
            segment_id: m.segment_id,
            progress: m.progress,
            flags: crate::wire::EntityFlags::NONE,
        }
    }

    /// The motion this report carries.
    pub fn motion(&self) -> Motion {
        Motion {
            x: self.x,
            y: self.y,
            angle: self.angle,
            vx: self.vx,
            vy: self.vy,
            segment_id: self.segment_id,
            progress: self.progress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_carries_the_motion_unchanged() {
        let m = Motion {
            x: -1,
            y: 2,
            angle: 359_999,
            vx: i32::MIN,
            vy: i32::MAX,
            segment_id: u32::MAX,
            progress: 10_000,
        };
        let r = StateReport::new(7, 1_764_000_000_000, m);
        assert_eq!((r.entity_id, r.timestamp_ms), (7, 1_764_000_000_000));
        assert_eq!(r.motion(), m);
        let decoded = crate::Message::decode(r.encode().as_slice()).unwrap();
        assert_eq!(decoded, crate::Message::State(r));
    }
}
