//! `fleet-bench`: the benchmark runner behind `make bench` (see scripts/bench.sh).
//!
//! Usage: fleet-bench [all|codec|footprint|latency|failure|ingest|load|sizes|map|api|viewers|action]...
//!                    [cluster (not in all: NATS cluster vs mosquitto, docs/scaling.md)]
//!                    [--quick] [--out DIR] [--sim-threads N] [--opt-z-dir DIR]
//!                    [--pis 100,500,1000] [--seconds 30]
//!        fleet-bench codec-json PATH
//!
//! The daemons are taken from `--bins DIR`, by default the directory of fleet-bench itself
//! (target/release); the simulator always from fleet-bench's own directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use fleet_sim::bench::report::{IdleLatency, Results};
use fleet_sim::bench::{
    Bench, action, api, cluster, codec, failure, footprint, ingest, latency, machine, map, procs,
    stop_server,
};

const SCENARIOS: &[&str] = &[
    "all",
    "codec",
    "footprint",
    "latency",
    "failure",
    "ingest",
    "solo",
    "load",
    "sizes",
    "map",
    "api",
    "viewers",
    "action",
    "cluster",
];

fn usage() -> String {
    format!(
        "Usage: fleet-bench [SCENARIO]... [--quick] [--out DIR] [--sim-threads N] [--opt-z-dir DIR]\n\
         \x20                  [--bins DIR] [--pis 100,500,1000] [--seconds 30]\n\
         \x20      fleet-bench codec-json PATH\n\
         Scenarios: {} (default all; `cluster` only when named).\n",
        SCENARIOS.join(", ")
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("codec-json") {
        let Some(path) = args.get(1) else {
            eprint!("{}", usage());
            return ExitCode::from(2);
        };
        let r = codec::run(7, 2_000_000);
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&r).unwrap_or_default()) {
            eprintln!("fleet-bench: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    let mut b = Bench {
        quick: false,
        out: PathBuf::from("bench-out"),
        bins: procs::bin_dir(),
        sim_threads: 1,
    };
    let mut opt_z: Option<PathBuf> = None;
    let mut pis_override: Option<Vec<usize>> = None;
    let mut secs_override: Option<u64> = None;
    let mut wanted: Vec<String> = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next().unwrap_or_else(|| {
                eprintln!("fleet-bench: {name} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--quick" => b.quick = true,
            "--out" => b.out = PathBuf::from(value("--out")),
            "--bins" => b.bins = PathBuf::from(value("--bins")),
            "--opt-z-dir" => opt_z = Some(PathBuf::from(value("--opt-z-dir"))),
            "--pis" => {
                let v = value("--pis");
                let list: Result<Vec<usize>, _> = v.split(',').map(str::parse).collect();
                match list {
                    Ok(l) if !l.is_empty() && l.iter().all(|n| *n > 0) => pis_override = Some(l),
                    _ => {
                        eprintln!("fleet-bench: --pis takes a list like 100,500,1000");
                        return ExitCode::from(2);
                    }
                }
            }
            "--seconds" => match value("--seconds").parse::<u64>() {
                Ok(n) if n >= 3 => secs_override = Some(n),
                _ => {
                    eprintln!("fleet-bench: --seconds takes a number of seconds, at least 3");
                    return ExitCode::from(2);
                }
            },
            "--sim-threads" => {
                b.sim_threads = value("--sim-threads").parse().unwrap_or_else(|_| {
                    eprintln!("fleet-bench: --sim-threads needs a number");
                    std::process::exit(2)
                })
            }
            "-h" | "--help" => {
                print!("{}", usage());
                return ExitCode::SUCCESS;
            }
            s if SCENARIOS.contains(&s) => wanted.push(s.to_string()),
            other => {
                eprintln!("fleet-bench: unknown argument {other:?}\n{}", usage());
                return ExitCode::from(2);
            }
        }
    }
    if wanted.is_empty() {
        wanted.push("all".into());
    }
    let want = |s: &str| wanted.iter().any(|w| w == s || w == "all");
    let _ = std::fs::remove_dir_all(b.logs());
    let _ = std::fs::create_dir_all(b.logs());

    let mut res = Results {
        machine: Some(machine()),
        quick: b.quick,
        sim_threads: b.sim_threads,
        ..Default::default()
    };

    if want("codec") {
        eprintln!("== codec");
        res.codec = codec::run(7, if b.quick { 200_000 } else { 2_000_000 });
        // Written by the opt-level "z" build of fleet-bench (scripts/bench.sh).
        if opt_z.is_some() {
            if let Ok(text) = std::fs::read_to_string(b.out.join("codec-opt-z.json")) {
                res.codec_opt_z = serde_json::from_str(&text).unwrap_or_default();
            }
        }
    }
    if want("sizes") {
        let target = b
            .bins
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| PathBuf::from("target"));
        res.sizes
            .insert("x86_64 (host)".into(), footprint::sizes(&b.bins));
        for triple in ["armv7-unknown-linux-gnueabihf", "aarch64-unknown-linux-gnu"] {
            res.sizes.insert(
                triple.into(),
                footprint::sizes(&target.join(triple).join("release")),
            );
        }
        for n in ["rpi-client", "mqtt-server"] {
            if let Some(s) = footprint::is_stripped(&b.bins.join(n)) {
                res.stripped.insert(n.into(), s);
            }
        }
        if let Some(dir) = &opt_z {
            res.sizes_opt_z = footprint::sizes(dir);
        }
    }
    if want("footprint") {
        let window = Duration::from_secs(if b.quick { 10 } else { 60 });
        res.footprint = Some(footprint::run(&b, window, footprint::Mode::Driving));
        res.footprint_bridge = Some(footprint::run(&b, window, footprint::Mode::Bridge));
        res.footprint_idle = Some(footprint::run(&b, window, footprint::Mode::Idle));
    }
    if want("latency") {
        res.idle_latency = Some(idle_latency(&b));
    }
    if want("failure") {
        res.failure = Some(if b.quick {
            failure::run(&b, 2, 1)
        } else {
            failure::run(&b, 5, 3)
        });
    }
    if want("ingest") {
        let (loads, secs): (Vec<usize>, u64) = if b.quick {
            (vec![100], 5)
        } else {
            (vec![100, 500, 1000], 30)
        };
        let loads = pis_override.clone().unwrap_or(loads);
        let secs = secs_override.unwrap_or(secs);
        for pis in loads {
            res.ingest
                .push(ingest::run(&b, pis, Duration::from_secs(secs), None, true));
        }
    }
    if want("solo") && !b.quick {
        let pis = pis_override
            .as_ref()
            .and_then(|l| l.iter().max().copied())
            .unwrap_or(1000);
        let secs = secs_override.unwrap_or(30);
        res.solo = Some(ingest::run(&b, pis, Duration::from_secs(secs), None, false));
    }
    if want("load") {
        let (pis, secs) = if b.quick { (100, 6) } else { (1000, 20) };
        let pis = pis_override
            .as_ref()
            .and_then(|l| l.iter().max().copied())
            .unwrap_or(pis);
        let secs = secs_override.unwrap_or(secs);
        let spacing = Duration::from_millis(50);
        let n = (secs * 1000 - 2000) / spacing.as_millis() as u64;
        res.load = Some(ingest::run(
            &b,
            pis,
            Duration::from_secs(secs),
            Some((n, spacing)),
            true,
        ));
    }
    // The web map in headless Chromium: its own file (map.json) and table.
    let map_table = want("map").then(|| {
        let pis = if b.quick { 100 } else { 1000 };
        let secs = secs_override.unwrap_or(if b.quick { 5 } else { 20 });
        map::run(&b, pis, secs).table()
    });
    // The operator interface under load: its own file (api.json) and tables.
    let mut api_res = api::ApiResults::default();
    if want("api") {
        let pis = pis_override
            .as_ref()
            .and_then(|l| l.iter().max().copied())
            .unwrap_or(if b.quick { 100 } else { 1000 });
        let (n, budget) = if b.quick { (200, 10) } else { (1000, 60) };
        api_res.fleet = Some(api::fleet_latency(&b, pis, n, Duration::from_secs(budget)));
    }
    if want("viewers") {
        let pis = pis_override
            .as_ref()
            .and_then(|l| l.iter().max().copied())
            .unwrap_or(if b.quick { 100 } else { 1000 });
        let secs = secs_override.unwrap_or(if b.quick { 5 } else { 20 });
        api_res.viewers = Some(api::viewer_cost(&b, pis, secs, 10));
    }
    let api_table = (api_res.fleet.is_some() || api_res.viewers.is_some()).then(|| {
        api_res.write(&b);
        api_res.table()
    });
    // Instant actions: their own file (action.json) and table.
    let action_table = want("action").then(|| {
        let pis = pis_override
            .as_ref()
            .and_then(|l| l.iter().max().copied())
            .unwrap_or(if b.quick { 100 } else { 1000 });
        let (n, budget) = if b.quick { (50, 20) } else { (200, 90) };
        let r = action::run(&b, pis, n, Duration::from_secs(budget));
        r.write(&b);
        r.table()
    });
    // A 3-node NATS cluster against one mosquitto: its own file (cluster.json) and table;
    // only when named (it needs nats-server).
    let cluster_table = wanted.iter().any(|w| w == "cluster").then(|| {
        let pis = pis_override
            .as_ref()
            .and_then(|l| l.iter().max().copied())
            .unwrap_or(if b.quick { 50 } else { 200 });
        let secs = secs_override.unwrap_or(if b.quick { 5 } else { 20 });
        let rounds = if b.quick { 1 } else { 3 };
        let r = cluster::run(&b, pis, Duration::from_secs(secs), rounds);
        r.write(&b);
        r.table()
    });
    res.check_targets();
    if let Err(e) = res.write(&b.out) {
        eprintln!(
            "fleet-bench: cannot write results to {}: {e}",
            b.out.display()
        );
        return ExitCode::FAILURE;
    }
    println!("{}", res.table());
    if let Some(t) = map_table {
        println!("{t}");
    }
    if let Some(t) = api_table {
        println!("{t}");
    }
    if let Some(t) = action_table {
        println!("{t}");
    }
    if let Some(t) = cluster_table {
        println!("{t}");
    }
    println!(
        "results: {}, plots: {}",
        b.out.join("results.json").display(),
        b.out.display()
    );
    ExitCode::SUCCESS
}

/// Probe round trips to an idle rpi-client, then to one simulated Pi (the baseline: it
/// answers on the thread that receives, so it shows what the broker and the machine add);
/// then the server's own round trips with its demo planner driving the real Pi.
fn idle_latency(b: &Bench) -> IdleLatency {
    eprintln!("== command latency at idle");
    let broker = b.broker();
    let mut server = b.server(&broker, "latency-server", &[]);
    let mut pi = b.pi(&broker, "bench-pi");
    std::thread::sleep(Duration::from_millis(500));
    let n = if b.quick { 50 } else { 300 };
    let spacing = Duration::from_millis(50);
    let pi_res = latency::measure(
        broker.port(),
        "bench-latency",
        "bench-pi",
        &[1, 2, 3],
        n,
        spacing,
    );
    eprintln!(
        "   rpi-client: p50 {:?} us, p99 {:?} us, max {:?} us",
        pi_res.p50_us, pi_res.p99_us, pi_res.max_us
    );
    let secs = n * spacing.as_millis() as u64 / 1000 + 5;
    let args: Vec<String> = [
        "--broker",
        &broker.addr(),
        "--pis",
        "1",
        "--entities",
        "3",
        "--duration",
        &format!("{secs}s"),
        "--ramp",
        "0s",
        "--segment-time",
        "10ms",
        "--id-prefix",
        "bench-simpi",
        "--progress-interval",
        "0s",
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut sim = b.run("latency-simpi", &procs::bin_dir().join("fleet-sim"), &args);
    let sim_res = fleet_sim::bench::wait_subscribed(
        &broker,
        "bench-simpi-0",
        "server/bench-simpi-0/segment",
        Duration::from_secs(10),
    )
    .map(|()| {
        latency::measure(
            broker.port(),
            "bench-latency-sim",
            "bench-simpi-0",
            &[1, 2, 3],
            n,
            spacing,
        )
    });
    sim.stop(Duration::from_secs(10));
    if let Some(r) = &sim_res {
        eprintln!(
            "   simulated Pi: p50 {:?} us, p99 {:?} us, max {:?} us",
            r.p50_us, r.p99_us, r.max_us
        );
    }
    let _ = stop_server(&mut server);
    let mut planner = b.server(
        &broker,
        "latency-planner-server",
        &["--segment-interval", "300ms"],
    );
    std::thread::sleep(Duration::from_secs(if b.quick { 4 } else { 10 }));
    let stats = stop_server(&mut planner);
    pi.stop(Duration::from_secs(5));
    IdleLatency {
        pi: pi_res,
        sim_pi: sim_res,
        server_rtt_n: stats.as_ref().and_then(|s| s.rtt_n),
        server_rtt_p50_ms: stats.as_ref().and_then(|s| s.rtt_p50_ms),
        server_rtt_p99_ms: stats.as_ref().and_then(|s| s.rtt_p99_ms),
    }
}
