//! The project's own deployment scripts, run for real by the tests (so the tests prove the
//! scripts work): `scripts/gen-certs.sh` for the CA and certificates, `scripts/add-user.sh`
//! for broker accounts, `scripts/revoke-pi.sh` to revoke a Pi.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::repo_root;
use crate::tools::{Output, require_tool, run};

/// Generous: four EC keys and certificates take well under a second, but the machine is shared.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

fn script(name: &str) -> PathBuf {
    let p = repo_root().join("scripts").join(name);
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

fn run_script(name: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script(name)).args(args).current_dir(repo_root());
    run(&mut cmd, stdin, SCRIPT_TIMEOUT)
}

/// `scripts/gen-certs.sh --out OUT HOST PI...`: a CA (if `out` has none yet), the server
/// certificate for `host` and a client certificate per Pi. Panics with the script's output
/// if it fails.
pub fn gen_certs(out: &Path, host: &str, pis: &[&str]) -> Output {
    require_tool("openssl", "openssl");
    let out_s = out.to_str().expect("UTF-8 path");
    let mut args = vec!["--out", out_s, host];
    args.extend_from_slice(pis);
    let o = run_script("gen-certs.sh", &args, b"");
    assert!(
        o.status.success(),
        "scripts/gen-certs.sh {args:?} failed:\n{}",
        o.text()
    );
    o
}

/// `scripts/add-user.sh --file PASSWD USER PASSWORD_FILE`: adds or updates a broker account
/// (the password comes from the first line of `password_file`). Panics with the script's
/// output if it fails.
pub fn add_user(passwd: &Path, user: &str, password_file: &Path) -> Output {
    require_tool("mosquitto_passwd", "mosquitto");
    let passwd_s = passwd.to_str().expect("UTF-8 path");
    let pw_s = password_file.to_str().expect("UTF-8 path");
    let o = run_script("add-user.sh", &["--file", passwd_s, user, pw_s], b"");
    assert!(
        o.status.success(),
        "scripts/add-user.sh --file {passwd_s} {user} {pw_s} failed:\n{}",
        o.text()
    );
    o
}

/// `scripts/revoke-pi.sh --certs CERTS --passwd PASSWD PI`: revokes the Pi's certificate (a new
/// CRL in `certs`) and removes its password account. Panics with the script's output if it
/// fails.
pub fn revoke_pi(certs: &Path, passwd: &Path, pi: &str) -> Output {
    require_tool("openssl", "openssl");
    require_tool("mosquitto_passwd", "mosquitto");
    let certs_s = certs.to_str().expect("UTF-8 path");
    let passwd_s = passwd.to_str().expect("UTF-8 path");
    let args = ["--certs", certs_s, "--passwd", passwd_s, pi];
    let o = run_script("revoke-pi.sh", &args, b"");
    assert!(
        o.status.success(),
        "scripts/revoke-pi.sh {args:?} failed:\n{}",
        o.text()
    );
    o
}
