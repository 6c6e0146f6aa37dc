//! A Pi behind a cuttable link: a network namespace joined to the host by a veth pair
//! (`10.<a>.<b>.1` on the host side, `.2` inside). [`NetNs::cut`] takes the namespace's end
//! down, as a Wi-Fi that vanished: packets are dropped, no FIN, no RST, no error on either
//! side's established socket; [`NetNs::restore`] brings it back. (Link down rather than a
//! netem loss qdisc, which minimal kernels lack.) Needs root: the scenarios using it are
//! `#[ignore]`d and `scripts/chaos.sh` runs them only as root. Removed on drop.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace with its veth pair.
pub struct NetNs {
    name: String,
    host_if: String,
    ns_if: String,
    net: (u8, u8),
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// True when this process may create namespaces (root, with `ip`).
pub fn available() -> bool {
    let probe = format!("fcprobe{}", std::process::id() % 100_000);
    let ok = run(&["netns", "add", &probe]).is_ok();
    if ok {
        let _ = run(&["netns", "del", &probe]);
    }
    ok
}

impl NetNs {
    /// Creates the namespace and the link, up and addressed. Panics with the failing command.
    pub fn create() -> NetNs {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names have at most 15 bytes.
        let tag = format!("{}{}", pid % 100_000, n);
        let net = (
            200 + (pid % 50) as u8,
            ((pid / 50 % 200) as u8).wrapping_add(n as u8),
        );
        let ns = NetNs {
            name: format!("fchaos{tag}"),
            host_if: format!("fch{tag}"),
            ns_if: format!("fcn{tag}"),
            net,
        };
        let host_ip = format!("{}/30", ns.host_ip());
        let ns_ip = format!("{}/30", ns.ns_ip());
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &ns.name],
            vec![
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns.ns_if,
            ],
            vec!["link", "set", &ns.ns_if, "netns", &ns.name],
            vec!["addr", "add", &host_ip, "dev", &ns.host_if],
            vec!["link", "set", &ns.host_if, "up"],
            vec![
                "netns", "exec", &ns.name, "ip", "addr", "add", &ns_ip, "dev", &ns.ns_if,
            ],
            vec![
                "netns", "exec", &ns.name, "ip", "link", "set", &ns.ns_if, "up",
            ],
            vec!["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"],
        ];
        for s in steps {
            if let Err(e) = run(&s) {
                panic!("cannot set up the network namespace (root needed): {e}");
            }
        }
        ns
    }

    /// The host's address on the link (where the broker listens for the Pi).
    pub fn host_ip(&self) -> String {
        format!("10.{}.{}.1", self.net.0, self.net.1)
    }

    /// The Pi's address inside the namespace.
    pub fn ns_ip(&self) -> String {
        format!("10.{}.{}.2", self.net.0, self.net.1)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Cuts the link: the namespace's end goes down. Its packets go nowhere (no route) and
    /// the host's end, without a carrier, drops what the broker sends; neither side's TCP
    /// connection sees a FIN, an RST or an error.
    pub fn cut(&self) {
        self.set(false);
    }

    /// The link is back (same addresses; established connections carry on if still alive).
    pub fn restore(&self) {
        self.set(true);
    }

    fn set(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        run(&[
            "netns",
            "exec",
            &self.name,
            "ip",
            "link",
            "set",
            &self.ns_if,
            state,
        ])
        .unwrap_or_else(|e| panic!("cannot set the link {state}: {e}"));
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the host's.
        let _ = run(&["netns", "del", &self.name]);
        let _ = run(&["link", "del", &self.host_if]);
    }
}
