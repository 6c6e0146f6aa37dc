//! The JSON API's handlers: the fleet, one Pi, sending a segment, one segment's state, instant
//! actions (one Pi, one entity, the whole fleet's stop) and one action's state. Each
//! asks the registry through the [`FleetHandle`] (a bounded request and a reply) and never
//! touches its state.

use common::Point;
use serde_json::Value;

use super::response::Response;
use crate::actions::{ActionError, kind_label, parse_kind};
use crate::dispatch::{DispatchError, SegmentSpec};
use crate::server::FleetHandle;
use common::{ActionKind, Target};

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

/// The fields of an action request, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionBody {
    pub action: ActionKind,
    /// `cancel` only; 0 (or absent) = every queued segment.
    pub segment_id: u32,
}

/// Parses an action request body: `{"action": "stop"|"pause"|"resume"|"cancel",
/// "segment_id": N}` (`segment_id` for cancel only).
pub fn parse_action_body(body: &[u8]) -> Result<ActionBody, BodyError> {
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
    let action = obj
        .get("action")
        .ok_or_else(|| field_error("action", "missing"))?
        .as_str()
        .and_then(parse_kind)
        .ok_or_else(|| {
            field_error(
                "action",
                "expected \"stop\", \"pause\", \"resume\" or \"cancel\"",
            )
        })?;
    let segment_id = match obj.get("segment_id") {
        None | Some(Value::Null) => 0,
        Some(_) if action != ActionKind::Cancel => {
            return Err(field_error("segment_id", "for cancel only"));
        }
        Some(_) => integer(
            obj,
            "segment_id",
            "a segment id (u32; 0 = every queued one)",
        )?,
    };
    Ok(ActionBody { action, segment_id })
}

/// The status and the field to blame for an action that was not sent.
fn action_error(handle: &FleetHandle, e: ActionError) -> Response {
    let (status, field) = match e {
        // As for segments: 503 naming the server that leads.
        ActionError::NotLeader => {
            let leader = handle.leader().and_then(|l| l.leader);
            return Response::json(
                503,
                &serde_json::json!({"error": "not the leader", "leader": leader}),
            );
        }
        ActionError::UnknownPi => (404, Some("pi")),
        ActionError::UnknownEntity => (404, Some("entity")),
        ActionError::PiOffline => (409, Some("pi")),
        // The request is fine; this Pi cannot take it (it speaks protocol 1 or 2).
        ActionError::Unsupported { .. } => (422, Some("pi")),
        ActionError::SegmentIdNotCancel => (400, Some("segment_id")),
        ActionError::NotConnected | ActionError::TooManyInFlight | ActionError::ShuttingDown => {
            (503, None)
        }
    };
    Response::error(status, &e.to_string(), field)
}

/// `POST /api/pis/{id}/actions` (entity None: every entity of the Pi) and
/// `POST /api/pis/{id}/entities/{entity}/actions`
pub fn post_action(handle: &FleetHandle, pi: &str, entity: Option<&str>, body: &[u8]) -> Response {
    let target = match entity.map(str::parse::<u32>) {
        None => Target::All,
        Some(Ok(e)) => Target::Entity(e),
        Some(Err(_)) => {
            return Response::error(400, "the entity id is not a number", Some("entity"));
        }
    };
    let b = match parse_action_body(body) {
        Ok(b) => b,
        Err(e) => return Response::error(400, &e.message, e.field),
    };
    match handle.action(pi, target, b.action, b.segment_id) {
        Ok(ticket) => Response::json(202, &serde_json::json!({"action_id": ticket.id})),
        Err(e) => action_error(handle, e),
    }
}

/// `POST /api/actions` with `{"action": "stop"}`: stop every entity of every Pi.
pub fn post_fleet_action(handle: &FleetHandle, body: &[u8]) -> Response {
    let b = match parse_action_body(body) {
        Ok(b) => b,
        Err(e) => return Response::error(400, &e.message, e.field),
    };
    if b.action != ActionKind::Stop {
        return Response::error(
            400,
            &format!(
                "action: only \"stop\" is fleet-wide (\"{}\" goes to one Pi)",
                kind_label(b.action)
            ),
            Some("action"),
        );
    }
    let results = match handle.stop_all() {
        Ok(r) => r,
        Err(e) => return action_error(handle, e),
    };
    let mut sent = Vec::new();
    let mut unsupported = Vec::new();
    let mut not_sent = Vec::new();
    for (pi, r) in results {
        match r {
            Ok(t) => sent.push(serde_json::json!({"pi": pi, "action_id": t.id})),
            Err(e @ ActionError::Unsupported { protocol }) => unsupported
                .push(serde_json::json!({"pi": pi, "protocol": protocol, "error": e.to_string()})),
            Err(e) => not_sent.push(serde_json::json!({"pi": pi, "error": e.to_string()})),
        }
    }
    Response::json(
        202,
        &serde_json::json!({"actions": sent, "unsupported": unsupported, "not_sent": not_sent}),
    )
}

/// `GET /api/actions/{id}`
pub fn action(handle: &FleetHandle, id: &str) -> Response {
    let Ok(id) = id.parse::<u32>() else {
        return Response::error(400, "the action id is not a number", Some("action_id"));
    };
    match handle.action_record(id) {
        Some(r) => Response::json(200, &r),
        None => Response::error(
            404,
            &format!("action {id} is not among the last actions sent"),
            Some("action_id"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_bodies_name_the_bad_field() {
        assert_eq!(
            parse_action_body(br#"{"action": "stop"}"#).unwrap(),
            ActionBody {
                action: ActionKind::Stop,
                segment_id: 0
            }
        );
        assert_eq!(
            parse_action_body(br#"{"action": "cancel", "segment_id": 12}"#).unwrap(),
            ActionBody {
                action: ActionKind::Cancel,
                segment_id: 12
            }
        );
        for (body, field) in [
            (&br#"{"action": "#[..], None),
            (br#"["stop"]"#, None),
            (br#"{}"#, Some("action")),
            (br#"{"action": "halt"}"#, Some("action")),
            (br#"{"action": 1}"#, Some("action")),
            (
                br#"{"action": "stop", "segment_id": 3}"#,
                Some("segment_id"),
            ),
            (
                br#"{"action": "cancel", "segment_id": -1}"#,
                Some("segment_id"),
            ),
            (
                br#"{"action": "cancel", "segment_id": "x"}"#,
                Some("segment_id"),
            ),
        ] {
            let e = parse_action_body(body).unwrap_err();
            assert_eq!(e.field, field, "{}: {e:?}", String::from_utf8_lossy(body));
        }
    }

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
