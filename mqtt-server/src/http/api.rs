//! The JSON API's handlers: the fleet, one Pi, sending a segment, one segment's state. Each
//! asks the registry through the [`FleetHandle`] (a bounded request and a reply) and never
//! touches its state.

use common::Point;
use serde_json::Value;

use super::response::Response;
use crate::dispatch::{DispatchError, SegmentSpec};
use crate::server::FleetHandle;

fn gone() -> Response {
    Response::error(503, "server shutting down", None)
}

/// `GET /api/fleet`
pub fn fleet(handle: &FleetHandle) -> Response {
    match handle.snapshot() {
        Some(s) => Response::json(200, &s),
        None => gone(),
    }
}

/// `GET /api/leader`: this server's role, its epoch while leading, who leads.
pub fn leader(handle: &FleetHandle) -> Response {
    match handle.leader() {
        Some(l) => Response::json(200, &l),
        None => gone(),
    }
}

/// `GET /api/pis/{id}`
pub fn pi(handle: &FleetHandle, id: &str) -> Response {
    match handle.pi(id) {
        Some(p) => Response::json(200, &p),
        None if handle.snapshot().is_none() => gone(),
        None => Response::error(404, &format!("unknown Pi {id}"), Some("pi")),
    }
}

/// `GET /api/segments/{id}`
pub fn segment(handle: &FleetHandle, id: &str) -> Response {
    let Ok(id) = id.parse::<u32>() else {
        return Response::error(400, "the segment id is not a number", Some("segment_id"));
    };
    match handle.segment(id) {
        Some(r) => Response::json(200, &r),
        None => Response::error(
            404,
            &format!("segment {id} is not among the last segments sent"),
            Some("segment_id"),
        ),
    }
}

/// The fields of a segment request, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentBody {
    pub start: Option<Point>,
    pub end: Point,
    pub velocity_start: i32,
    pub velocity_end: i32,
    pub segment_type: u8,
}

/// A bad request body: the message and the field to blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub message: String,
    pub field: Option<&'static str>,
}

fn field_error(field: &'static str, what: &str) -> BodyError {
    BodyError {
        message: format!("{field}: {what}"),
        field: Some(field),
    }
}

fn point(v: &Value, field: &'static str) -> Result<Point, BodyError> {
    let bad = || field_error(field, "expected an array [x, y] of two integers (mm)");
    let a = v.as_array().ok_or_else(bad)?;
    if a.len() != 2 {
        return Err(bad());
    }
    let c = |v: &Value| {
        v.as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(bad)
    };
    Ok(Point::new(c(&a[0])?, c(&a[1])?))
}

fn integer<T: TryFrom<i64>>(
    obj: &serde_json::Map<String, Value>,
    field: &'static str,
    what: &str,
) -> Result<T, BodyError> {
    let v = obj
        .get(field)
        .ok_or_else(|| field_error(field, "missing"))?;
    v.as_i64()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| field_error(field, &format!("expected {what}")))
}

/// Parses a segment request body.
pub fn parse_segment_body(body: &[u8]) -> Result<SegmentBody, BodyError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| BodyError {
        message: format!("the body is not valid JSON: {e}"),
        field: None,
    })?;
    let Some(obj) = v.as_object() else {
        return Err(BodyError {
            message: "the body must be a JSON object".into(),
            field: None,
        });
    };
    let start = match obj.get("start") {
        None | Some(Value::Null) => None,
        Some(v) => Some(point(v, "start")?),
    };
    let end = point(
        obj.get("end")
            .ok_or_else(|| field_error("end", "missing"))?,
        "end",
    )?;
    Ok(SegmentBody {
        start,
        end,
        velocity_start: integer(obj, "velocity_start", "an integer (mm/s)")?,
        velocity_end: integer(obj, "velocity_end", "an integer (mm/s)")?,
        segment_type: integer(obj, "segment_type", "an integer 0..=255")?,
    })
}

/// `POST /api/pis/{id}/entities/{entity}/segments`
pub fn post_segment(handle: &FleetHandle, pi: &str, entity: &str, body: &[u8]) -> Response {
    let Ok(entity_id) = entity.parse::<u32>() else {
        return Response::error(400, "the entity id is not a number", Some("entity"));
    };
    let b = match parse_segment_body(body) {
        Ok(b) => b,
        Err(e) => return Response::error(400, &e.message, e.field),
    };
    let start = match b.start {
        Some(p) => p,
        None => {
            let Some(view) = handle.pi(pi) else {
                return Response::error(404, &format!("unknown Pi {pi}"), Some("pi"));
            };
            match view.entities.iter().find(|e| e.id == entity_id) {
                Some(e) => Point::new(e.motion.x, e.motion.y),
                None => {
                    return Response::error(
                        404,
                        &format!("Pi {pi} has not reported entity {entity_id}"),
                        Some("entity"),
                    );
                }
            }
        }
    };
    let spec = SegmentSpec {
        entity_id,
        start,
        end: b.end,
        velocity_start: b.velocity_start,
        velocity_end: b.velocity_end,
        segment_type: b.segment_type,
    };
    match handle.dispatch(pi, spec) {
        Ok(ticket) => Response::json(202, &serde_json::json!({"segment_id": ticket.id})),
        Err(DispatchError::NotLeader { leader }) => Response::json(
            503,
            &serde_json::json!({"error": "not the leader", "leader": leader}),
        ),
        Err(e) => {
            let (status, field) = match e {
                DispatchError::UnknownPi => (404, Some("pi")),
                DispatchError::UnknownEntity => (404, Some("entity")),
                DispatchError::PiOffline => (409, Some("pi")),
                DispatchError::NotConnected
                | DispatchError::TooManyInFlight
                | DispatchError::ShuttingDown
                | DispatchError::NotLeader { .. } => (503, None),
            };
            Response::error(status, &e.to_string(), field)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_bodies_name_the_bad_field() {
        let ok = parse_segment_body(
            br#"{"end": [1, -2], "velocity_start": 500, "velocity_end": 0, "segment_type": 0}"#,
        )
        .unwrap();
        assert_eq!(ok.start, None);
        assert_eq!(ok.end, Point::new(1, -2));
        let with_start = parse_segment_body(
            br#"{"start": [5, 6], "end": [1, 2], "velocity_start": 1, "velocity_end": 2, "segment_type": 3}"#,
        )
        .unwrap();
        assert_eq!(with_start.start, Some(Point::new(5, 6)));
        for (body, field) in [
            (&br#"{"end": [1, 2], "#[..], None),
            (br#"[1]"#, None),
            (br#"{"velocity_start": 1, "velocity_end": 2, "segment_type": 0}"#, Some("end")),
            (br#"{"end": [1], "velocity_start": 1, "velocity_end": 2, "segment_type": 0}"#, Some("end")),
            (br#"{"end": [1, 2], "velocity_end": 2, "segment_type": 0}"#, Some("velocity_start")),
            (br#"{"end": [1, 2], "velocity_start": "fast", "velocity_end": 2, "segment_type": 0}"#, Some("velocity_start")),
            (br#"{"end": [1, 2], "velocity_start": 1, "velocity_end": 2.5, "segment_type": 0}"#, Some("velocity_end")),
            (br#"{"end": [1, 2], "velocity_start": 1, "velocity_end": 2, "segment_type": 256}"#, Some("segment_type")),
            (br#"{"start": "here", "end": [1, 2], "velocity_start": 1, "velocity_end": 2, "segment_type": 0}"#, Some("start")),
            (br#"{"end": [1, 3000000000], "velocity_start": 1, "velocity_end": 2, "segment_type": 0}"#, Some("end")),
        ] {
            let e = parse_segment_body(body).unwrap_err();
            assert_eq!(e.field, field, "{}: {e:?}", String::from_utf8_lossy(body));
            if let Some(f) = field {
                assert!(e.message.contains(f), "{e:?}");
            }
        }
    }
}
