//! Layered daemon configuration: defaults < config file < environment < command-line flags.
//!
//! Every setting has one name in three spellings: `heartbeat_interval` in the file,
//! `RPI_CLIENT_HEARTBEAT_INTERVAL` in the environment, `--heartbeat-interval` on the command
//! line. The file format is `key = value` lines with `#` comments and optional double quotes.
//! [`load`] does no I/O: the caller passes the arguments, the environment and a function
//! that reads the file, normally [`read_file`], which caps what it reads.

use std::io;

use crate::error::ConfigError;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File { path: String, line: usize },
    Env(String),
    Flag(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{path}:{line}"),
            Origin::Env(var) => write!(f, "environment {var}"),
            Origin::Flag(flag) => write!(f, "{flag}"),
        }
    }
}

/// One `key = value` with its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
    pub origin: Origin,
}

/// What a daemon accepts.
#[derive(Debug, Clone, Copy)]
pub struct Schema<'a> {
    /// Setting keys in file form (`heartbeat_interval`); `config` must not be among them.
    pub keys: &'a [&'a str],
    /// Flags without a value, e.g. `--check-config`, `--help`.
    pub switches: &'a [&'a str],
    /// Environment prefix, e.g. `RPI_CLIENT_`.
    pub env_prefix: &'a str,
    /// Used when neither `--config` nor `{PREFIX}CONFIG` names a file; may be absent.
    pub default_path: &'a str,
}

/// What [`load`] found besides the settings it applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Loaded {
    /// Switches given on the command line, in order.
    pub switches: Vec<String>,
    /// The config file that was read, if any.
    pub config_path: Option<String>,
}

/// Parses the `key = value` file format.
pub fn parse_file(path: &str, text: &str) -> Result<Vec<Setting>, ConfigError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let origin = || format!("{path}:{line}");
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(ConfigError::new(
                "",
                origin(),
                format!("expected `key = value`, got {trimmed:?}"),
            ));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
        {
            return Err(ConfigError::new(
                "",
                origin(),
                format!("bad key {key:?}: keys are lower_snake_case"),
            ));
        }
        let value = unquote(value.trim()).map_err(|m| ConfigError::new(key, origin(), m))?;
        out.push(Setting {
            key: key.to_owned(),
            value,
            origin: Origin::File {
                path: path.to_owned(),
                line,
            },
        });
    }
    Ok(out)
}

fn unquote(v: &str) -> Result<String, String> {
    if let Some(rest) = v.strip_prefix('"') {
        let inner = rest
            .strip_suffix('"')
            .ok_or_else(|| "unterminated quote".to_string())?;
        if inner.contains('"') {
            return Err("a quoted value cannot contain a quote".into());
        }
        return Ok(inner.to_owned());
    }
    // An unquoted value ends at a ` #` comment.
    Ok(match v.find(" #") {
        Some(i) => v[..i].trim_end().to_owned(),
        None => v.to_owned(),
    })
}

fn flag_of(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

fn env_of(prefix: &str, key: &str) -> String {
    format!("{prefix}{}", key.to_ascii_uppercase())
}

/// Loads the configuration in precedence order and hands each value to `apply(key, value)`,
/// which parses it (returning a message on a bad value). Unknown keys, flags and variables
/// are errors that name themselves.
pub fn load(
    schema: &Schema<'_>,
    args: &[String],
    env: &[(String, String)],
    read_file: impl FnOnce(&str) -> io::Result<String>,
    mut apply: impl FnMut(&str, &str) -> Result<(), String>,
) -> Result<Loaded, ConfigError> {
    let mut loaded = Loaded::default();
    let mut explicit_path: Option<(String, String)> = None;

    // Command line first (applied last), so `--config` is known before the file is read.
    let mut flags = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        if schema.switches.contains(&name) {
            if inline.is_some() {
                return Err(ConfigError::new("", name, "takes no value"));
            }
            loaded.switches.push(name.to_owned());
            continue;
        }
        let key = name
            .strip_prefix("--")
            .map(|k| k.replace('-', "_"))
            .filter(|k| k == "config" || schema.keys.contains(&k.as_str()))
            .ok_or_else(|| ConfigError::new("", name, "unknown option (see --help)".to_string()))?;
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| ConfigError::new(&key, name, "needs a value"))?,
        };
        if key == "config" {
            explicit_path = Some((value, name.to_owned()));
        } else {
            flags.push(Setting {
                key,
                value,
                origin: Origin::Flag(name.to_owned()),
            });
        }
    }

    // Environment: only variables with our prefix are ours, and each must be known.
    let mut env_settings = Vec::new();
    let mut env_sorted: Vec<&(String, String)> = env.iter().collect();
    env_sorted.sort();
    for (var, value) in env_sorted {
        let Some(rest) = var.strip_prefix(schema.env_prefix) else {
            continue;
        };
        let key = rest.to_ascii_lowercase();
        if key == "config" {
            if explicit_path.is_none() {
                explicit_path = Some((value.clone(), var.clone()));
            }
            continue;
        }
        if key == "log" || !schema.keys.contains(&key.as_str()) {
            // `{PREFIX}LOG` style variables are not ours to judge; anything else is a typo.
            if key == "log" {
                continue;
            }
            return Err(ConfigError::new(
                "",
                format!("environment {var}"),
                "unknown variable".to_string(),
            ));
        }
        env_settings.push(Setting {
            key,
            value: value.clone(),
            origin: Origin::Env(var.clone()),
        });
    }

    // The file: a named one must exist; the default one may be absent.
    let (path, named_by) = match explicit_path {
        Some((p, by)) => (p, Some(by)),
        None => (schema.default_path.to_owned(), None),
    };
    let mut file_settings = Vec::new();
    if !path.is_empty() {
        match read_file(&path) {
            Ok(text) => {
                file_settings = parse_file(&path, &text)?;
                loaded.config_path = Some(path);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && named_by.is_none() => {}
            Err(e) => {
                return Err(ConfigError::new(
                    "config",
                    named_by.unwrap_or_default(),
                    format!("cannot read {path}: {e}"),
                ));
            }
        }
    }
    for s in &file_settings {
        if !schema.keys.contains(&s.key.as_str()) {
            return Err(ConfigError::new(
                s.key.clone(),
                s.origin.to_string(),
                "unknown key".to_string(),
            ));
        }
    }

    for s in file_settings.iter().chain(&env_settings).chain(&flags) {
        apply(&s.key, &s.value)
            .map_err(|m| ConfigError::new(s.key.clone(), s.origin.to_string(), m))?;
    }
    Ok(loaded)
}

/// The `--help` lines for a schema: each key with its flag and variable spelling.
pub fn help_lines(schema: &Schema<'_>) -> String {
    let mut s = String::new();
    for key in schema.keys {
        s.push_str(&format!(
            "  {:<28} env {:<36} file {key}\n",
            flag_of(key) + " VALUE",
            env_of(schema.env_prefix, key)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: Schema<'static> = Schema {
        keys: &["broker", "client_id", "heartbeat_interval"],
        switches: &["--check-config", "--help"],
        env_prefix: "RPI_CLIENT_",
        default_path: "/nonexistent/default.conf",
    };

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn run(
        a: &[&str],
        env: &[(&str, &str)],
        file: Option<&str>,
    ) -> Result<(Loaded, Vec<(String, String)>), ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut applied = Vec::new();
        let loaded = load(
            &SCHEMA,
            &args(a),
            &env,
            |_| match file {
                Some(t) => Ok(t.to_string()),
                None => Err(io::Error::new(io::ErrorKind::NotFound, "No such file")),
            },
            |k, v| {
                if k == "heartbeat_interval" && v == "bad" {
                    return Err("bad duration".into());
                }
                applied.push((k.to_string(), v.to_string()));
                Ok(())
            },
        )?;
        Ok((loaded, applied))
    }

    #[test]
    fn precedence_file_env_flag() {
        let (loaded, applied) = run(
            &["--broker", "flag:1", "--check-config"],
            &[("RPI_CLIENT_BROKER", "env:1"), ("PATH", "/bin")],
            Some("# comment\nbroker = \"file:1\"\nclient_id = pi-7 # trailing\n"),
        )
        .unwrap();
        assert_eq!(loaded.switches, vec!["--check-config"]);
        assert_eq!(
            loaded.config_path.as_deref(),
            Some("/nonexistent/default.conf")
        );
        let last_broker = applied.iter().rev().find(|(k, _)| k == "broker").unwrap();
        assert_eq!(last_broker.1, "flag:1");
        assert!(applied.contains(&("client_id".into(), "pi-7".into())));
    }

    #[test]
    fn missing_default_file_is_fine_but_named_one_is_not() {
        assert!(run(&[], &[], None).unwrap().0.config_path.is_none());
        let e = run(&["--config", "/x.conf"], &[], None).unwrap_err();
        assert!(e.to_string().contains("cannot read /x.conf"), "{e}");
        assert!(e.to_string().contains("--config"), "{e}");
        let e = run(&[], &[("RPI_CLIENT_CONFIG", "/y.conf")], None).unwrap_err();
        assert!(e.to_string().contains("RPI_CLIENT_CONFIG"), "{e}");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = run(&[], &[], Some("brokr = x\n")).unwrap_err();
        assert_eq!(e.key, "brokr");
        assert!(
            e.to_string().contains("default.conf:1: brokr: unknown key"),
            "{e}"
        );

        let e = run(&[], &[], Some("\n\nheartbeat_interval = bad\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/nonexistent/default.conf:3: heartbeat_interval: bad duration"
        );

        let e = run(&["--heartbeat-interval=bad"], &[], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--heartbeat-interval: heartbeat_interval: bad duration"
        );

        let e = run(&["--nope"], &[], None).unwrap_err();
        assert!(e.to_string().contains("--nope: unknown option"), "{e}");

        let e = run(&["--broker"], &[], None).unwrap_err();
        assert!(e.to_string().contains("needs a value"), "{e}");

        let e = run(&[], &[("RPI_CLIENT_BROKR", "x")], None).unwrap_err();
        assert!(
            e.to_string().contains("RPI_CLIENT_BROKR: unknown variable"),
            "{e}"
        );

        let e = run(&[], &[], Some("just words\n")).unwrap_err();
        assert!(e.to_string().contains("expected `key = value`"), "{e}");

        let e = run(&[], &[], Some("broker = \"open\n")).unwrap_err();
        assert!(e.to_string().contains("unterminated quote"), "{e}");
    }

    #[test]
    fn help_lists_every_spelling() {
        let h = help_lines(&SCHEMA);
        assert!(h.contains("--heartbeat-interval VALUE"));
        assert!(h.contains("RPI_CLIENT_HEARTBEAT_INTERVAL"));
    }
}
