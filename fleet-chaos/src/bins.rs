//! The two daemons' binaries, built on demand. A dev-dependency does not build another
//! package's binary, so the first call runs `cargo build -p <package> --bin <name>` with the
//! profile and target dir of the running test (a no-op when up to date) and then finds it with
//! `testkit::process::workspace_bin`. `scripts/chaos.sh` builds them beforehand anyway.

use std::path::PathBuf;
use std::sync::OnceLock;

/// `rpi-client`, the Pi daemon.
pub fn rpi_client() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("rpi-client", "rpi-client"))
        .clone()
}

/// `mqtt-server`, the fleet server.
pub fn mqtt_server() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("mqtt-server", "mqtt-server"))
        .clone()
}

fn build(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test binary>
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("profile dir");
    let target_dir = profile_dir.parent().expect("target dir");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo build -p {package}: {e}"));
    assert!(
        status.success(),
        "cargo build -p {package} failed: {status}"
    );
    testkit::process::workspace_bin(bin)
}
