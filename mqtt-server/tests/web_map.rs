//! The web map in a real browser: a real mosquitto, the `mqtt-server` binary with its operator
//! interface on a free loopback port and the demo planner on, two real `rpi-client`s, and
//! headless Chromium driven over WebDriver (testkit::webdriver). The test reads the Pi list
//! and the vehicle labels from the DOM, sees the poses move, filters the list, zooms, selects a
//! vehicle, clicks a point of the map and sees the segment completed (on the page and in the
//! API), stops a driving vehicle with its Stop button and sees it halted (velocity 0, the
//! STOPPED flag), stops the whole fleet with STOP ALL, then sees a killed Pi greyed as offline
//! with its reason.
//!
//! Chromium and chromedriver come from `scripts/install-deps.sh` (`make test` runs it); when
//! they are missing the test fails saying so. Set `FLEET_MAP_SCREENSHOT=path.png` to keep a
//! screenshot of the map (docs/map.png is made that way).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use testkit::http::Client;
use testkit::webdriver::{Browser, Element};
use testkit::{Broker, wait_for};

/// Pi ids and their entities, distinct so that every vehicle has its own label (the
/// simulator places a Pi's vehicles by their place in the list: both Pis start on the same
/// spots).
const PIS: [(&str, &str); 2] = [("web-pi-1", "1,2"), ("web-pi-2", "3,4")];

/// GET `path` from the operator interface as JSON (None until it answers 200).
fn get(api: &Client, path: &str) -> Option<Value> {
    let reply = api.get(path).ok()?;
    (reply.status == 200).then(|| reply.json())
}

/// Every vehicle button of the side list: label -> (x, y) from its data attributes.
fn vehicle_poses(b: &Browser) -> BTreeMap<String, (i64, i64)> {
    let v = b.execute(
        "return [...document.querySelectorAll('#pis button.vehicle')].map(e =>
           [e.dataset.label, Number(e.dataset.x), Number(e.dataset.y)])",
        &[],
    );
    v.as_array()
        .expect("an array")
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap_or_default().to_owned(),
                (r[1].as_i64().unwrap_or(0), r[2].as_i64().unwrap_or(0)),
            )
        })
        .collect()
}

/// The text of the first element matching `css` inside `el`'s subtree, via the DOM.
fn text_in(b: &Browser, el: &Element, css: &str) -> String {
    let r = b.execute(
        "const e = arguments[0].querySelector(arguments[1]); return e ? e.textContent : null",
        &[
            json!({"element-6066-11e4-a52e-4f735466cecf": el.0}),
            json!(css),
        ],
    );
    r.as_str().unwrap_or_default().to_owned()
}

#[test]
fn the_map_shows_the_fleet_live_and_sends_a_segment_by_click() {
    // The browser first: a missing Chromium fails here, before anything else starts.
    let t0 = std::time::Instant::now();
    let step = |what: &str| eprintln!("web_map: {what} at {:.1?}", t0.elapsed());
    let b = Browser::start(1000, 650);
    step("browser started");
    let broker = Broker::start();
    let port = testkit::broker::free_port();
    let listen = format!("127.0.0.1:{port}");
    let api = Client::new(listen.clone());
    let _server = spawn_server(
        &broker,
        &[
            "--http-listen",
            &listen,
            "--segment-interval",
            "500ms",
            "--status-interval",
            "0s",
        ],
    );
    let mut pis: Vec<_> = PIS
        .iter()
        .map(|(id, entities)| start_pi(&broker, id, entities))
        .collect();
    wait_for(Duration::from_secs(20), || {
        let f = get(&api, "/api/fleet")?;
        let ready = f["pis"].as_array()?.iter().filter(|p| {
            p["online"] == json!(true) && p["entities"].as_array().map(Vec::len) == Some(2)
        });
        (ready.count() == PIS.len()).then_some(())
    })
    .expect("both Pis online with 2 entities in /api/fleet within 20 s");

    step("fleet ready");
    b.goto(&format!("http://{listen}/"));

    // The Pi list: real DOM text, sorted, both online.
    let rows = b.wait_for("both Pis listed online", Duration::from_secs(15), |b| {
        let rows = b.find_all("#pis > li");
        let online = rows
            .iter()
            .filter(|r| b.attribute(r, "data-online").as_deref() == Some("true"))
            .count();
        (rows.len() == 2 && online == 2).then_some(rows)
    });
    let ids: Vec<String> = rows.iter().map(|r| text_in(&b, r, ".pi-id")).collect();
    assert_eq!(ids, PIS.map(|p| p.0));
    for r in &rows {
        let text = b.text(r);
        assert!(text.contains("online"), "row text {text:?}");
        // rpi-client speaks the newest protocol version.
        let protocol = format!("protocol {}", common::wire::LATEST);
        assert!(text.contains(&protocol), "row text {text:?}");
    }
    assert_eq!(
        b.text(&b.find_all("#conn")[0]),
        "live",
        "the event stream is connected"
    );

    step("pi list read");
    // Vehicle labels, and their poses moving (the demo planner drives every vehicle).
    let before = b.wait_for("4 vehicles with poses", Duration::from_secs(10), |b| {
        let p = vehicle_poses(b);
        (p.len() == 4).then_some(p)
    });
    let labels: Vec<&str> = before.keys().map(String::as_str).collect();
    assert_eq!(
        labels,
        ["web-pi-1/1", "web-pi-1/2", "web-pi-2/3", "web-pi-2/4"]
    );
    b.wait_for(
        "every vehicle's pose to change",
        Duration::from_secs(15),
        |b| {
            let now = vehicle_poses(b);
            now.iter()
                .all(|(k, pose)| before.get(k).is_some_and(|p| p != pose))
                .then_some(())
        },
    );
    step("poses moved");
    // The canvas draws them all.
    let drawn = b.execute(
        "return Number(document.getElementById('map').dataset.drawn)",
        &[],
    );
    assert_eq!(drawn, json!(4), "vehicles drawn on the canvas");

    step("canvas checked");
    // The filter hides the rows that do not match.
    let filter = b.find_all("#filter").remove(0);
    b.send_keys(&filter, "web-pi-2");
    let shown = b.execute(
        "return [...document.querySelectorAll('#pis > li')].filter(li => !li.hidden).map(li => li.dataset.pi)",
        &[],
    );
    assert_eq!(shown, json!(["web-pi-2"]));
    b.execute(
        "const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input'))",
        &[],
    );

    step("filtered");
    // Zoom with the wheel: the scale bar changes; "Fit to fleet" brings the fleet back.
    let scale = || b.text(&b.find_all("#scalelabel")[0]);
    let fitted = scale();
    let centre = b.execute(
        "const r = document.getElementById('map').getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]",
        &[],
    );
    let (cx, cy) = (centre[0].as_f64().unwrap(), centre[1].as_f64().unwrap());
    b.wheel_at(cx, cy, 2000);
    b.wait_for(
        "the scale bar to change on zoom",
        Duration::from_secs(5),
        |_| (scale() != fitted).then_some(()),
    );
    b.click(&b.find_all("#fit")[0]);
    b.wait_for(
        "fit to bring the scale back",
        Duration::from_secs(5),
        |_| (scale() == fitted).then_some(()),
    );

    step("zoomed and fitted");
    // Select web-pi-2/3 in the list, then click a free point of the map.
    let chip = b
        .find_all("#pis button.vehicle[data-label='web-pi-2/3']")
        .remove(0);
    b.click(&chip);
    assert_eq!(b.attribute(&chip, "aria-pressed").as_deref(), Some("true"));
    assert_eq!(b.text(&b.find_all("#sel-label")[0]), "web-pi-2/3");
    // A point of the canvas at least 40 px from every vehicle and 60 px from the edges,
    // near the selected one: in viewport px, and in mm.
    let target = b.execute(
        "const m = window.fleetMap, c = document.getElementById('map'), r = c.getBoundingClientRect();
         const vs = m.vehicles().map(v => m.toScreen(v.x, v.y));
         const me = m.vehicles().find(v => v.pi === 'web-pi-2' && v.entity === 3);
         const [mx, my] = m.toScreen(me.x, me.y);
         let best = null;
         for (let x = 60; x < r.width - 60; x += 10) for (let y = 60; y < r.height - 60; y += 10) {
           if (vs.some(([vx, vy]) => Math.hypot(vx - x, vy - y) < 40)) continue;
           const d = Math.hypot(mx - x, my - y);
           if (d >= 60 && (!best || d < best[2])) best = [x, y, d];
         }
         const [wx, wy] = m.toWorld(best[0], best[1]);
         return [r.left + best[0], r.top + best[1], Math.round(wx), Math.round(wy)]",
        &[],
    );
    let (px, py) = (target[0].as_f64().unwrap(), target[1].as_f64().unwrap());
    let end = [target[2].as_i64().unwrap(), target[3].as_i64().unwrap()];
    b.click_at(px, py);

    step("clicked");
    let done = b.wait_for(
        "the segment's outcome `completed` on the page",
        Duration::from_secs(30),
        |b| {
            let li = b.find_all("#segments li").into_iter().next()?;
            let state = b.attribute(&li, "data-state")?;
            assert!(
                !matches!(state.as_str(), "rejected" | "failed" | "error"),
                "the segment ended {state}: {}",
                b.text(&li)
            );
            (state == "completed").then_some(li)
        },
    );
    step("completed");
    let text = b.text(&done);
    assert!(text.contains("completed"), "shown: {text:?}");
    assert!(text.contains("web-pi-2/3"), "shown: {text:?}");
    let id: u64 = b
        .attribute(&done, "data-segment-id")
        .and_then(|s| s.parse().ok())
        .expect("the outcome names its segment id");
    // The server agrees: that segment went to web-pi-2/3, ends where the click was (the click
    // lands on a whole CSS pixel: within a pixel's worth of mm), and completed.
    let seg = get(&api, &format!("/api/segments/{id}")).expect("GET /api/segments/{id}");
    assert_eq!(seg["pi"], json!("web-pi-2"), "{seg}");
    assert_eq!(seg["entity"], json!(3), "{seg}");
    assert_eq!(seg["state"], json!("completed"), "{seg}");
    let px_mm = b
        .execute(
            "const m = window.fleetMap; return m.toWorld(1, 0)[0] - m.toWorld(0, 0)[0]",
            &[],
        )
        .as_f64()
        .unwrap();
    for axis in 0..2 {
        let got = seg["end"][axis].as_i64().unwrap();
        assert!(
            (got - end[axis]).abs() as f64 <= px_mm.abs() + 1.0,
            "segment end {} vs clicked {end:?} (1 px = {px_mm} mm)",
            seg["end"]
        );
    }

    if let Some(path) = std::env::var_os("FLEET_MAP_SCREENSHOT") {
        b.save_screenshot(std::path::Path::new(&path));
    }

    step("api checked");
    // Stop a driving vehicle with its Stop button: the page shows the action done, and the
    // vehicle halted (velocity 0, the STOPPED flag of its state reports). The demo planner
    // leaves a halted vehicle alone, so it stays stopped.
    let chip = b
        .find_all("#pis button.vehicle[data-label='web-pi-1/1']")
        .remove(0);
    b.click(&chip);
    let vehicle = |b: &Browser, label: &str| {
        b.execute(
            "return window.fleetMap.vehicles().find(v => v.pi + '/' + v.entity === arguments[0])",
            &[json!(label)],
        )
    };
    b.wait_for("web-pi-1/1 driving", Duration::from_secs(20), |b| {
        let v = vehicle(b, "web-pi-1/1");
        (v["vx"] != 0 || v["vy"] != 0).then_some(())
    });
    b.click(&b.find_all("#act-stop")[0]);
    let li = b.wait_for(
        "the stop answered on the page",
        Duration::from_secs(15),
        |b| {
            let li = b.find_all("#actions li").into_iter().next()?;
            let state = b.attribute(&li, "data-state")?;
            assert!(
                matches!(state.as_str(), "sent" | "done"),
                "the stop ended {state}: {}",
                b.text(&li)
            );
            (state == "done").then_some(li)
        },
    );
    let text = b.text(&li);
    assert!(text.contains("stop web-pi-1/1"), "shown: {text:?}");
    b.wait_for("web-pi-1/1 stopped", Duration::from_secs(10), |b| {
        let v = vehicle(b, "web-pi-1/1");
        (v["stopped"] == true && v["vx"] == 0 && v["vy"] == 0).then_some(())
    });
    b.wait_for("the STOPPED flag shown", Duration::from_secs(5), |b| {
        b.text(&b.find_all("#sel-flags")[0])
            .contains("STOPPED")
            .then_some(())
    });
    let e = get(&api, "/api/pis/web-pi-1").expect("GET /api/pis/web-pi-1")["entities"][0].clone();
    assert_eq!(
        (&e["id"], &e["stopped"], &e["vx"], &e["vy"]),
        (&json!(1), &json!(true), &json!(0), &json!(0)),
        "{e}"
    );
    step("vehicle stopped");

    // The fleet stop: every vehicle of both Pis halts.
    b.click(&b.find_all("#stopall")[0]);
    b.wait_for(
        "the fleet stop sent to both Pis",
        Duration::from_secs(10),
        |b| {
            let r = b.find_all("#fleet-result").remove(0);
            (b.attribute(&r, "data-sent").as_deref() == Some("2")).then_some(())
        },
    );
    b.wait_for("every vehicle stopped", Duration::from_secs(15), |b| {
        let all = b.execute(
            "return window.fleetMap.vehicles().every(v => v.stopped && v.vx === 0 && v.vy === 0)",
            &[],
        );
        (all == json!(true)).then_some(())
    });
    step("fleet stopped");

    // A Pi killed: its row says offline with the reason, its vehicles stay (greyed).
    pis[0].kill9();
    let row = b.wait_for("web-pi-1 offline", Duration::from_secs(15), |b| {
        b.find_all("#pis > li[data-pi='web-pi-1'][data-online='false']")
            .into_iter()
            .next()
    });
    let state = text_in(&b, &row, ".pi-state");
    assert_eq!(state, "offline (will)");
    let offline = b.execute(
        "return window.fleetMap.vehicles().filter(v => !v.online).map(v => v.pi + '/' + v.entity)",
        &[],
    );
    assert_eq!(offline, json!(["web-pi-1/1", "web-pi-1/2"]));
    step("offline shown");
}
