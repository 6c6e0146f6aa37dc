//! The two daemons' binaries, built on demand. A dev-dependency does not build another
//! package's binary, so the first call runs `cargo build -p <package> --bin <name>` with the
//! profile (or `CHAOS_DAEMON_PROFILE`) and target dir of the running test, a no-op when up to
//! date, and returns `target/<profile>/<name>`, never a stale or missing binary.

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

/// Set to `release` to run release builds of the daemons under any test profile (the figures
/// of `make chaos CHAOS_DAEMON_PROFILE=release` are those of what ships).
pub const PROFILE_ENV: &str = "CHAOS_DAEMON_PROFILE";

fn build(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile dir>/deps/<test binary>
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("profile dir");
    let target_dir = profile_dir.parent().expect("target dir");
    let own = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();
    let profile = std::env::var(PROFILE_ENV).unwrap_or(own);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(target_dir);
    // cargo's profile names and their directories: dev -> debug, release -> release.
    let dir = match profile.as_str() {
        "debug" | "dev" => "debug",
        other => {
            cmd.args(["--profile", other]);
            other
        }
    };
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo build -p {package}: {e}"));
    assert!(
        status.success(),
        "cargo build -p {package} --profile {profile} failed: {status}"
    );
    let path = target_dir.join(dir).join(bin);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}
