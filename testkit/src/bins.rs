//! The workspace's daemon binaries, the one way tests and tools find them: a dev-dependency
//! does not build another package's binary, so the first call per test binary runs
//! `cargo build -p <package> --bin <name>` with the profile (or [`PROFILE_ENV`]) and target
//! dir of the running test, a no-op when up to date, and returns `target/<profile>/<name>`,
//! never a stale or missing binary. A daemon's own integration tests use
//! `env!("CARGO_BIN_EXE_<name>")` instead: cargo has built it for them, with the features of
//! the test build, and building it again here without them would replace it by another build
//! (and the next `cargo test` would rebuild it once more).

use std::path::PathBuf;
use std::sync::OnceLock;

/// Set to `release` to run release builds of the daemons under any test profile (the figures
/// of `make chaos CHAOS_DAEMON_PROFILE=release` are those of what ships).
pub const PROFILE_ENV: &str = "CHAOS_DAEMON_PROFILE";

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

/// A daemon by its binary name (`rpi-client` or `mqtt-server`).
pub fn daemon(name: &str) -> PathBuf {
    match name {
        "rpi-client" => rpi_client(),
        "mqtt-server" => mqtt_server(),
        other => panic!("no daemon binary named {other}"),
    }
}

/// The Python 3 interpreter (the reference bridge vehicle's): the real executable behind
/// `python3` on the test's PATH (a pyenv shim needs an environment the daemons' clean one
/// lacks), else /usr/bin/python3. Panics with a clear message when there is none.
pub fn python3() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let resolved = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|p| p.is_file());
        resolved
            .or_else(|| Some(PathBuf::from("/usr/bin/python3")).filter(|p| p.is_file()))
            .expect("no python3: install it (scripts/install-deps.sh); the bridge tests run it")
    })
    .clone()
}

/// examples/python/vehicle.py, the reference bridge vehicle (docs/vehicle-bridge.md).
pub fn python_vehicle() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/python/vehicle.py"
    ))
}

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
