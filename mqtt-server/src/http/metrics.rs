//! `GET /metrics`: the Prometheus text exposition (format 0.0.4). Names follow the Prometheus
//! naming practices: the `fleet_` prefix, base units (seconds), `_total` for counters. No label
//! names a Pi or an entity (their number is unbounded); labels come from fixed sets.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::HttpShared;
use crate::snapshot::Stats;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Message kinds always listed (0 until seen), so that rates exist from the start.
const KINDS: &[&str] = &["heartbeat", "state", "status", "ack", "action_ack"];

/// Writes the exposition.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A histogram family: its cumulative buckets, `+Inf`, sum and count.
    fn histogram(&mut self, name: &str, help: &str, h: &crate::counters::RttHistogram) {
        self.family(name, "histogram", help);
        for (le, n) in &h.buckets {
            self.sample(&format!("{name}_bucket"), &[("le", &le.to_string())], n);
        }
        self.sample(&format!("{name}_bucket"), &[("le", "+Inf")], h.count);
        self.sample(&format!("{name}_sum"), &[], h.sum_seconds);
        self.sample(&format!("{name}_count"), &[], h.count);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition from the registry's figures and the HTTP layer's own.
pub fn render(s: &Stats, http: &HttpShared) -> String {
    let mut o = Out(String::with_capacity(8192));
    let c = &s.counters;
    o.one("fleet_pis_online", "gauge", "Pis online.", s.online);
    o.one(
        "fleet_pis_known",
        "gauge",
        "Pis tracked by the registry, online and offline.",
        s.known,
    );
    o.family(
        "fleet_messages_received_total",
        "counter",
        "Valid messages received from Pis, by kind.",
    );
    for k in KINDS {
        o.sample(
            "fleet_messages_received_total",
            &[("kind", k)],
            c.messages_of(k),
        );
    }
    for (k, v) in c.messages.iter().filter(|(k, _)| !KINDS.contains(k)) {
        o.sample("fleet_messages_received_total", &[("kind", k)], v);
    }
    o.family(
        "fleet_input_errors_total",
        "counter",
        "Messages dropped as bad input, by reason.",
    );
    for (k, v) in &c.input_errors {
        o.sample("fleet_input_errors_total", &[("reason", k)], v);
    }
    o.family(
        "fleet_registry_events_total",
        "counter",
        "Registry events (Pis added, evicted, went online or offline, ...), by event.",
    );
    for (k, v) in &c.registry {
        o.sample("fleet_registry_events_total", &[("event", k)], v);
    }
    o.one(
        "fleet_segments_sent_total",
        "counter",
        "Distinct segments published to Pis.",
        c.segments_sent,
    );
    o.one(
        "fleet_segments_retried_total",
        "counter",
        "Re-publications of segments without an ack in time.",
        c.segments_retried,
    );
    o.one(
        "fleet_segments_refused_total",
        "counter",
        "Dispatch requests refused at once (Pi unknown or offline, entity unknown, no broker).",
        c.dispatch_refused,
    );
    o.family(
        "fleet_segments_total",
        "counter",
        "Segment outcomes reported by Pis or decided by the server, by outcome.",
    );
    for (outcome, v) in [
        ("accepted", c.segments_acked),
        ("completed", c.segments_completed),
        ("rejected", c.segments_rejected),
        ("failed", c.segments_failed),
    ] {
        o.sample("fleet_segments_total", &[("outcome", outcome)], v);
    }
    o.one(
        "fleet_segments_in_flight",
        "gauge",
        "Segments sent and not finished.",
        s.segments_in_flight,
    );
    o.one(
        "fleet_segments_stranded",
        "gauge",
        "Accepted segments whose Pi went offline, waiting for its word.",
        s.segments_stranded,
    );
    o.histogram(
        "fleet_segment_accept_latency_seconds",
        "Time from a segment's first publication to its Accepted ack.",
        &c.rtt.histogram(),
    );
    o.one(
        "fleet_actions_sent_total",
        "counter",
        "Distinct instant actions published to Pis.",
        c.actions_sent,
    );
    o.one(
        "fleet_actions_retried_total",
        "counter",
        "Re-publications of actions without an ack in time.",
        c.actions_retried,
    );
    o.family(
        "fleet_actions_total",
        "counter",
        "Instant action outcomes: the Pi's answer, or no_ack / shutting_down, by outcome.",
    );
    for k in crate::actions::OUTCOME_LABELS {
        o.sample(
            "fleet_actions_total",
            &[("outcome", k)],
            c.actions.get(k).copied().unwrap_or(0),
        );
    }
    o.family(
        "fleet_actions_refused_total",
        "counter",
        "Action requests refused at once (Pi unknown, offline or below protocol 3, ...), by reason.",
    );
    for (k, v) in &c.actions_refused {
        o.sample("fleet_actions_refused_total", &[("reason", k)], v);
    }
    o.one(
        "fleet_action_acks_unknown_total",
        "counter",
        "Action acks for actions this server did not send (unknown id or another Pi's).",
        c.action_acks_unknown,
    );
    o.one(
        "fleet_action_acks_duplicate_total",
        "counter",
        "Action acks of actions answered already.",
        c.action_acks_duplicate,
    );
    o.one(
        "fleet_actions_in_flight",
        "gauge",
        "Instant actions waiting for their ack.",
        s.actions_in_flight,
    );
    o.histogram(
        "fleet_action_ack_latency_seconds",
        "Time from an action's first publication to its ack.",
        &c.action_rtt.histogram(),
    );
    o.one(
        "fleet_publish_failures_total",
        "counter",
        "Publishes the MQTT client could not queue.",
        c.publish_failures,
    );
    o.one(
        "fleet_leader",
        "gauge",
        "1 while this server is the leader (dispatches segments), 0 on a standby.",
        u8::from(s.leader.epoch.is_some()),
    );
    o.one(
        "fleet_leader_epoch",
        "gauge",
        "The highest leader epoch this server knows (its own while it leads).",
        s.leader.highest_epoch,
    );
    o.one(
        "fleet_leader_changes_total",
        "counter",
        "New leader epochs seen taking over since this server started (its own included).",
        s.leader.changes,
    );
    o.one(
        "fleet_broker_connected",
        "gauge",
        "1 while the server is connected to the broker.",
        u8::from(s.broker_connected),
    );
    o.one(
        "fleet_broker_connects_total",
        "counter",
        "Connections to the broker made (the first one and every reconnect).",
        c.broker_connects,
    );
    o.one(
        "fleet_broker_disconnects_total",
        "counter",
        "Established broker connections lost.",
        c.broker_disconnects,
    );
    let b = &s.broker_sys;
    for (name, kind, help, v) in [
        (
            "fleet_broker_clients_connected",
            "gauge",
            "Clients connected to the broker ($SYS/broker/clients/connected).",
            b.clients_connected,
        ),
        (
            "fleet_broker_messages_received_total",
            "counter",
            "Messages the broker received ($SYS/broker/messages/received).",
            b.messages_received,
        ),
        (
            "fleet_broker_messages_sent_total",
            "counter",
            "Messages the broker sent ($SYS/broker/messages/sent).",
            b.messages_sent,
        ),
        (
            "fleet_broker_messages_dropped_total",
            "counter",
            "Messages the broker dropped ($SYS/broker/publish/messages/dropped).",
            b.messages_dropped,
        ),
    ] {
        if let Some(v) = v {
            o.one(name, kind, help, v);
        }
    }
    o.family(
        "fleet_http_requests_total",
        "counter",
        "HTTP requests answered, by status code.",
    );
    for (code, n) in http.requests.by_code() {
        o.sample(
            "fleet_http_requests_total",
            &[("code", &code.to_string())],
            n,
        );
    }
    o.one(
        "fleet_http_event_streams",
        "gauge",
        "Event streams (GET /api/events) open.",
        http.events.open.load(Ordering::Relaxed),
    );
    o.one(
        "fleet_http_event_streams_dropped_total",
        "counter",
        "Event streams cut off because their reader fell behind.",
        http.events.dropped_streams.load(Ordering::Relaxed),
    );
    o.one(
        "fleet_http_events_dropped_total",
        "counter",
        "Events the registry could not hand to the event streams (queue full).",
        http.feed.dropped.load(Ordering::Relaxed),
    );
    o.0
}
