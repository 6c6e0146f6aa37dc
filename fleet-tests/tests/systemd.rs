//! The hardened systemd units: `systemd-analyze verify` accepts both, and
//! `systemd-analyze security --offline=true` rates both, as committed, at 2.0 or lower (the
//! units say 1.x).
//!
//! `verify` insists that the `ExecStart=` binary exists and is executable, and the binaries
//! are not installed in /usr/local/bin on a build machine. Without root (no mount namespace),
//! each unit is copied into a temp dir under its own name with one change: the `ExecStart=`
//! path `/usr/local/bin/<daemon>` becomes an executable stub `<temp dir>/bin/<daemon>`; the
//! arguments and every other line stay as written. (docs/deployment.md shows the root-only
//! alternative: a tmpfs over /usr/local/bin in `unshare -m`.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleet_tests::repo_root;
use fleet_tests::tools::{Output, find_tool, run};
use testkit::TempDir;

const UNITS: [&str; 2] = ["rpi-client", "mqtt-server"];
const MAX_EXPOSURE: f64 = 2.0;

fn systemd_analyze() -> PathBuf {
    find_tool("systemd-analyze").unwrap_or_else(|| {
        panic!(
            "`systemd-analyze` is not installed, and these tests need it: install the Debian \
             package `systemd` (apt-get install systemd)"
        )
    })
}

fn analyze(args: &[&str]) -> Output {
    // Offline checks take well under a second; the limit is for a machine under load.
    run(
        Command::new(systemd_analyze()).args(args),
        b"",
        Duration::from_secs(60),
    )
}

/// The unit copied into `dir` with its ExecStart binary replaced by a stub in `dir/bin`.
fn unit_with_stub(dir: &Path, daemon: &str) -> PathBuf {
    let original = repo_root().join(format!("systemd/{daemon}.service"));
    let text = fs::read_to_string(&original).expect("read unit");
    let installed = format!("ExecStart=/usr/local/bin/{daemon} ");
    let starts: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(
        starts.len(),
        1,
        "{daemon}.service: expected one ExecStart= line"
    );
    assert!(
        starts[0].starts_with(&installed),
        "{daemon}.service: ExecStart should run /usr/local/bin/{daemon}: {}",
        starts[0]
    );
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let stub = bin.join(daemon);
    fs::write(&stub, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join(format!("{daemon}.service"));
    fs::write(
        &copy,
        text.replace(&installed, &format!("ExecStart={} ", stub.display())),
    )
    .unwrap();
    copy
}

#[test]
fn verify_accepts_both_units() {
    let dir = TempDir::new("units");
    for daemon in UNITS {
        let unit = unit_with_stub(dir.path(), daemon);
        let out = analyze(&["verify", unit.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "verify {daemon}.service:\n{}",
            out.text()
        );
        // verify only warns (exit 0) about unknown keys or bad values: none may name our unit.
        let name = format!("{daemon}.service");
        let complaints: Vec<&str> = out
            .stdout
            .lines()
            .chain(out.stderr.lines())
            .filter(|l| l.contains(&name))
            .collect();
        assert!(
            complaints.is_empty(),
            "verify warns about {name}:\n{}",
            out.text()
        );
    }
}

#[test]
fn verify_really_checks_the_exec_start_binary() {
    // The stub is what makes verify pass: without it (the stub deleted) the same copy fails,
    // so the test above checks the unit for real.
    let dir = TempDir::new("units-nostub");
    let unit = unit_with_stub(dir.path(), "mqtt-server");
    let stub = dir.path().join("bin/mqtt-server");
    fs::remove_file(&stub).unwrap();
    let out = analyze(&["verify", unit.to_str().unwrap()]);
    assert!(
        !out.status.success() && out.stderr.contains(stub.to_str().unwrap()),
        "verify should reject a missing ExecStart binary:\n{}",
        out.text()
    );
}

/// The number in "Overall exposure level for X.service: 1.1 OK".
fn exposure(out: &Output, unit: &str) -> f64 {
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("Overall exposure level for") && l.contains(unit))
        .unwrap_or_else(|| panic!("no exposure line for {unit}:\n{}", out.text()));
    line.rsplit(": ")
        .next()
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"))
}

#[test]
fn security_exposure_is_at_most_2_0() {
    for daemon in UNITS {
        // security does not need the binary: the unit file as committed.
        let unit = repo_root().join(format!("systemd/{daemon}.service"));
        let out = analyze(&["security", "--offline=true", unit.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "security {daemon}.service:\n{}",
            out.text()
        );
        let score = exposure(&out, &format!("{daemon}.service"));
        assert!(
            score <= MAX_EXPOSURE,
            "{daemon}.service exposure {score} > {MAX_EXPOSURE}:\n{}",
            out.stdout
        );
    }
}
