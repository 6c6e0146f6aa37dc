//! The web map's cost in a real browser (`fleet-bench map`): the release `mqtt-server` with its
//! operator interface, `--pis` simulated Pis x 4 vehicles from `fleet-sim`, and the page open in
//! headless Chromium (testkit::webdriver; software rendering, `--disable-gpu`).
//!
//! Measured by the page itself (`window.fleetMap`, see mqtt-server/web/index.html):
//! - baseline: a full redraw of the empty map (no Pi yet), the same code path;
//! - live: the redraws the page does on its own while the fleet drives (at most 4 a second);
//! - forced: back-to-back full redraws of the whole fleet;
//! - the main-thread time spent reading and applying `/api/events`, per second.
//!
//! Writes `map.json` in the output directory and returns the markdown table.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use testkit::webdriver::Browser;

use super::{Bench, quantile};

/// Frame times of one series, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Frames {
    pub count: usize,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
}

impl Frames {
    fn of(ms: &Value) -> Frames {
        let mut us: Vec<u64> = ms
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_f64)
                    .map(|m| (m * 1000.0) as u64)
                    .collect()
            })
            .unwrap_or_default();
        us.sort_unstable();
        Frames {
            count: us.len(),
            p50_us: quantile(&us, 0.5),
            p99_us: quantile(&us, 0.99),
            max_us: us.last().copied(),
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MapResult {
    pub pis: usize,
    /// Vehicles the page knew when the measurement started.
    pub vehicles: usize,
    pub seconds: f64,
    pub baseline_empty: Frames,
    pub live: Frames,
    pub forced: Frames,
    /// `state`/`presence`/`segment` events the page read per second.
    pub events_per_s: f64,
    /// Main-thread milliseconds per second spent decoding and applying them.
    pub feed_ms_per_s: f64,
}

fn ms(us: Option<u64>) -> String {
    us.map_or("-".into(), |u| format!("{:.1} ms", u as f64 / 1e3))
}

impl MapResult {
    pub fn table(&self) -> String {
        let row = |name: &str, f: &Frames| {
            format!(
                "| {name} | {} | {} | {} | {} |\n",
                f.count,
                ms(f.p50_us),
                ms(f.p99_us),
                ms(f.max_us)
            )
        };
        let mut s = format!(
            "### Web map in headless Chromium ({} Pis, {} vehicles, {:.0} s)\n\n\
             | frames | count | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n",
            self.pis, self.vehicles, self.seconds
        );
        s.push_str(&row("baseline: empty map", &self.baseline_empty));
        s.push_str(&row("live (page's own redraws, at most 4/s)", &self.live));
        s.push_str(&row("forced back-to-back full redraws", &self.forced));
        s.push_str(&format!(
            "\nEvents read: {:.0}/s; main thread spent {:.0} ms/s ({:.1}%) decoding and applying them.\n",
            self.events_per_s,
            self.feed_ms_per_s,
            self.feed_ms_per_s / 10.0
        ));
        s
    }
}

/// `n` synchronous full redraws; their frame times in ms.
fn forced(browser: &Browser, n: usize) -> Value {
    browser.execute(
        "const out = []; for (let i = 0; i < arguments[0]; i++) out.push(window.fleetMap.drawNow()); return out",
        &[Value::from(n)],
    )
}

pub fn run(b: &Bench, pis: usize, secs: u64) -> MapResult {
    eprintln!("== web map frame time: {pis} Pis x 4 vehicles, {secs} s, headless Chromium");
    let broker = b.broker();
    let listen = format!("127.0.0.1:{}", testkit::broker::free_port());
    let mut server = b.server(&broker, "map-server", &["--http-listen", &listen]);
    let browser = Browser::start(1000, 650);
    browser.goto(&format!("http://{listen}/"));
    browser.wait_for("the page to go live", Duration::from_secs(20), |br| {
        let s = br.execute("return document.getElementById('conn').dataset.state", &[]);
        (s == "live").then_some(())
    });
    let baseline_empty = Frames::of(&forced(&browser, 100));

    let ramp = Duration::from_secs(if b.quick { 3 } else { 10 });
    let args = b.sim_args(&broker, pis, Duration::from_secs(secs + 90), ramp, "map");
    let mut sim = b.run("map-sim", &super::procs::bin_dir().join("fleet-sim"), &args);
    let want = pis * 4;
    let vehicles = browser.wait_for(
        "the page to know 99% of the vehicles",
        ramp + Duration::from_secs(60),
        |br| {
            let n = br
                .execute("return window.fleetMap.vehicles().length", &[])
                .as_u64()
                .unwrap_or(0) as usize;
            (n * 100 >= want * 99).then_some(n)
        },
    );
    // Let the page settle (the first full /api/fleet read, a fit), then measure.
    std::thread::sleep(Duration::from_secs(2));
    let mark = browser.execute(
        "return [window.fleetMap.frameTimes().length, window.fleetMap.feedStats(), performance.now()]",
        &[],
    );
    std::thread::sleep(Duration::from_secs(secs));
    let end = browser.execute(
        "return [window.fleetMap.frameTimes(), window.fleetMap.feedStats(), performance.now()]",
        &[],
    );
    let elapsed_s = (end[2].as_f64().unwrap_or(0.0) - mark[2].as_f64().unwrap_or(0.0)) / 1000.0;
    // The page keeps its last 600 frame times: more than `secs` x 4 for any sane run.
    let all = end[0].as_array().cloned().unwrap_or_default();
    let before = mark[0].as_u64().unwrap_or(0) as usize;
    let live_ms: Vec<Value> = all.into_iter().skip(before).collect();
    let live = Frames::of(&Value::Array(live_ms));
    let forced = Frames::of(&forced(&browser, 50));
    let d = |k: &str| end[1][k].as_f64().unwrap_or(0.0) - mark[1][k].as_f64().unwrap_or(0.0);
    let per_s = |x: f64| if elapsed_s > 0.0 { x / elapsed_s } else { 0.0 };
    let res = MapResult {
        pis,
        vehicles,
        seconds: elapsed_s,
        baseline_empty,
        live,
        forced,
        events_per_s: per_s(d("events")),
        feed_ms_per_s: per_s(d("ms")),
    };
    if let Ok(dir) = std::env::var("FLEET_MAP_SCREENSHOT") {
        browser.save_screenshot(Path::new(&dir));
    }
    drop(browser);
    sim.stop(Duration::from_secs(5));
    server.stop(Duration::from_secs(5));
    let json = b.out.join("map.json");
    if let Err(e) = std::fs::write(
        &json,
        serde_json::to_string_pretty(&res).unwrap_or_default(),
    ) {
        eprintln!("fleet-bench: cannot write {}: {e}", json.display());
    }
    res
}
