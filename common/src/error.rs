//! Typed errors of the shared crate: decoding, client ids, topics, durations and configuration.

use std::fmt;

/// Why a payload could not be decoded. Every byte string decodes to a message or one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload has no bytes at all.
    Empty,
    /// The high nibble of byte 0 is a protocol version this build does not speak.
    UnknownVersion(u8),
    /// The low nibble of byte 0 names no message kind.
    UnknownKind(u8),
    /// The payload's length is not the fixed length of its kind.
    WrongLength {
        kind: &'static str,
        expected: usize,
        actual: usize,
    },
    /// A field holds a value outside its documented range.
    OutOfRange { field: &'static str, value: i64 },
    /// A well-formed message of another kind than the caller asked for.
    UnexpectedKind {
        expected: &'static str,
        actual: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty payload"),
            DecodeError::UnknownVersion(v) => write!(f, "unknown protocol version {v}"),
            DecodeError::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            DecodeError::WrongLength {
                kind,
                expected,
                actual,
            } => write!(
                f,
                "wrong length for {kind}: expected {expected} bytes, got {actual}"
            ),
            DecodeError::OutOfRange { field, value } => {
                write!(f, "field {field} out of range: {value}")
            }
            DecodeError::UnexpectedKind { expected, actual } => {
                write!(f, "expected a {expected} message, got {actual}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

impl DecodeError {
    /// A short stable label, used as a counter name ("malformed payloads per kind").
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::UnknownVersion(_) => "unknown_version",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::WrongLength { .. } => "wrong_length",
            DecodeError::OutOfRange { .. } => "out_of_range",
            DecodeError::UnexpectedKind { .. } => "unexpected_kind",
        }
    }
}

/// Why a message cannot be encoded in the protocol version asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// A version this build does not speak.
    UnknownVersion(u8),
    /// The message uses something that version cannot carry.
    NotInVersion { version: u8, what: &'static str },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::UnknownVersion(v) => write!(f, "unknown protocol version {v}"),
            EncodeError::NotInVersion { version, what } => {
                write!(f, "protocol version {version} cannot carry {what}")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// Why a string is not a valid client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdError {
    Empty,
    TooLong { len: usize, max: usize },
    InvalidChar { ch: char, position: usize },
}

impl fmt::Display for ClientIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientIdError::Empty => write!(f, "client id is empty"),
            ClientIdError::TooLong { len, max } => {
                write!(
                    f,
                    "client id is {len} bytes long, at most {max} are allowed"
                )
            }
            ClientIdError::InvalidChar { ch, position } => write!(
                f,
                "client id has {ch:?} at position {position}; only A-Z a-z 0-9 _ - . are allowed"
            ),
        }
    }
}

impl std::error::Error for ClientIdError {}

/// Why a topic is not one of the fleet's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// Not `rpi/{id}/{leaf}` or `server/{id}/segment`.
    Unknown,
    /// The id part of the topic is not a valid client id.
    BadClientId(ClientIdError),
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Unknown => write!(f, "not a fleet topic"),
            TopicError::BadClientId(e) => write!(f, "bad client id in topic: {e}"),
        }
    }
}

impl std::error::Error for TopicError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TopicError::BadClientId(e) => Some(e),
            TopicError::Unknown => None,
        }
    }
}

/// Why a duration such as `500ms` or `1.5s` could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad duration {:?}: {} (write e.g. 500ms, 1.5s, 2m)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for DurationError {}

/// A configuration problem, naming the key and where its value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key (file key form, e.g. `heartbeat_interval`), or empty for a syntax error.
    pub key: String,
    /// Where the bad value came from, e.g. `/etc/rpi-client/config.conf:3` or `--broker`.
    pub origin: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(
        key: impl Into<String>,
        origin: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            key: key.into(),
            origin: origin.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.origin.is_empty(), self.key.is_empty()) {
            (false, false) => write!(f, "{}: {}: {}", self.origin, self.key, self.message),
            (false, true) => write!(f, "{}: {}", self.origin, self.message),
            (true, false) => write!(f, "{}: {}", self.key, self.message),
            (true, true) => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}
