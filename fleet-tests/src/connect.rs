//! One-shot connection attempts for security tests: [`try_connect`] tells an accepted login, a
//! refused one (CONNACK with an error code) and a failed one (TLS or network error) apart
//! within a time limit; [`Session`] keeps a raw connection open to watch whether the broker
//! drops it, or cuts it without DISCONNECT so that the broker publishes its Last Will.

use std::time::{Duration, Instant};

use mqtt_link::daemon::error_chain;
use rumqttc::{Client, ConnectReturnCode, Connection, Event, MqttOptions, Packet};

/// How a connection attempt ended.
#[derive(Debug)]
pub enum ConnectOutcome {
    /// CONNACK with success.
    Accepted,
    /// CONNACK with an error code (bad user name or password, not authorised...).
    Refused(ConnectReturnCode),
    /// No CONNACK: TLS handshake failure, connection closed or reset... (the error's text).
    Failed(String),
    /// Nothing happened within the time limit.
    TimedOut,
}

impl ConnectOutcome {
    /// A login the broker refused: `BadUserNamePassword` or `NotAuthorized` (mosquitto 2 answers
    /// the latter for both a wrong password and a missing one under MQTT 3.1.1).
    pub fn is_login_refused(&self) -> bool {
        matches!(
            self,
            ConnectOutcome::Refused(
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
            )
        )
    }

    /// The connection never got as far as MQTT: a TLS or network error.
    pub fn is_failed(&self) -> bool {
        matches!(self, ConnectOutcome::Failed(_))
    }

    /// A failure whose text holds one of `words` (case-insensitive), e.g. `["certificate",
    /// "alert"]` for a TLS rejection, so that a dead broker ("connection refused") cannot pass
    /// for one.
    pub fn failed_with(&self, words: &[&str]) -> bool {
        match self {
            ConnectOutcome::Failed(e) => {
                let e = e.to_lowercase();
                words.iter().any(|w| e.contains(&w.to_lowercase()))
            }
            _ => false,
        }
    }
}

/// Connects with `opts` and reports how it went, within `within` (a few seconds).
pub fn try_connect(opts: MqttOptions, within: Duration) -> ConnectOutcome {
    match Session::open(opts, within) {
        Ok(s) => {
            s.close();
            ConnectOutcome::Accepted
        }
        Err(o) => o,
    }
}

/// A raw MQTT connection driven by the test itself (no background thread).
pub struct Session {
    client: Client,
    conn: Connection,
}

impl Session {
    /// Connects and waits for the CONNACK; anything but success is the error.
    pub fn open(opts: MqttOptions, within: Duration) -> Result<Session, ConnectOutcome> {
        let (client, mut conn) = Client::new(opts, 16);
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ConnectOutcome::TimedOut);
            }
            match conn.recv_timeout(left) {
                Err(_) => return Err(ConnectOutcome::TimedOut),
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                    return if ack.code == ConnectReturnCode::Success {
                        Ok(Session { client, conn })
                    } else {
                        Err(ConnectOutcome::Refused(ack.code))
                    };
                }
                Ok(Ok(_)) => {}
                Ok(Err(rumqttc::ConnectionError::ConnectionRefused(code))) => {
                    return Err(ConnectOutcome::Refused(code));
                }
                Ok(Err(e)) => return Err(ConnectOutcome::Failed(error_chain(&e))),
            }
        }
    }

    /// Polls the connection for `d`: an error if the broker closes it (e.g. because another
    /// client took over its client id) or sends a DISCONNECT.
    pub fn stays_connected(&mut self, d: Duration) -> Result<(), String> {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match self.conn.recv_timeout(left) {
                Err(_) => return Ok(()),
                Ok(Ok(Event::Incoming(Packet::Disconnect))) => {
                    return Err("the broker sent DISCONNECT".into());
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(error_chain(&e)),
            }
        }
    }

    /// Ends the connection with a clean DISCONNECT (the broker discards the will).
    pub fn close(mut self) {
        let _ = self.client.try_disconnect();
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            match self.conn.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) => break,
                _ => {}
            }
        }
    }

    /// Drops the TCP connection without DISCONNECT, like a crash or a cut cable: the broker
    /// publishes the connection's Last Will.
    pub fn abort(self) {
        drop(self.conn);
    }
}
