//! Hand-written SVG plots (no plotting dependency): processed vs offered message rate for the
//! server, the baseline and the simulator, and command-latency percentiles on a log scale.

use std::fmt::Write;

/// One series of (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    /// Stroke width: wider lines underneath keep coinciding series visible.
    pub width: f64,
}

const W: f64 = 640.0;
const H: f64 = 420.0;
const L: f64 = 80.0; // left margin
const R: f64 = 20.0;
const T: f64 = 40.0;
const B: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" step for about `n` ticks over `0..max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn header(s: &mut String, title: &str) {
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>
"#,
        W / 2.0,
        esc(title)
    );
}

fn legend(s: &mut String, items: &[(&str, &str, bool)]) {
    for (i, (name, color, dashed)) in items.iter().enumerate() {
        let y = T + 14.0 + i as f64 * 18.0;
        let x = L + 14.0;
        let dash = if *dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="2.5"{dash}/><text x="{}" y="{}">{}</text>"#,
            x + 24.0,
            x + 30.0,
            y + 4.0,
            esc(name)
        );
    }
}

/// A line plot with linear axes from 0; the thousands are shown as `k`.
pub fn line_plot(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    // A series with no points (a scenario not run) gets no line and no legend entry.
    let series: Vec<&Series<'_>> = series.iter().filter(|s| !s.points.is_empty()).collect();
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|p| [p.0, p.1]))
        .fold(1.0f64, f64::max)
        * 1.08;
    let step = nice_step(max, 6.0);
    let max = (max / step).ceil() * step;
    let px = |x: f64| L + x / max * (W - L - R);
    let py = |y: f64| H - B - y / max * (H - T - B);
    let fmt = |v: f64| {
        if v >= 1000.0 {
            format!("{}k", v / 1000.0)
        } else {
            format!("{v}")
        }
    };
    let mut s = String::new();
    header(&mut s, title);
    // Grid and ticks.
    let mut v = 0.0;
    while v <= max + step / 2.0 {
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            W - R,
            L - 6.0,
            py(v) + 4.0,
            fmt(v),
            y = py(v)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{T}" x2="{x}" y2="{}" stroke="#eee"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
            H - B,
            H - B + 18.0,
            fmt(v),
            x = px(v)
        );
        v += step;
    }
    let _ = writeln!(
        s,
        r#"<line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{L}" y1="{T}" x2="{L}" y2="{}" stroke="black"/>"#,
        H - B,
        W - R,
        H - B,
        H - B
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(18 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (L + W - R) / 2.0,
        H - 16.0,
        esc(x_label),
        (T + H - B) / 2.0,
        esc(y_label)
    );
    for se in &series {
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let dash = if se.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{}" stroke-opacity="0.85"{dash}/>"#,
            pts.join(" "),
            se.color,
            se.width
        );
        if !se.dashed {
            for (x, y) in &se.points {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="{}" fill="{}"/>"#,
                    px(*x),
                    py(*y),
                    se.width.max(3.0) + 1.0,
                    se.color
                );
            }
        }
    }
    let items: Vec<(&str, &str, bool)> =
        series.iter().map(|s| (s.name, s.color, s.dashed)).collect();
    legend(&mut s, &items);
    s.push_str("</svg>\n");
    s
}

/// One group of bars: its label, a value per bar (ms), and a target line.
pub struct BarGroup<'a> {
    pub label: &'a str,
    pub values: Vec<Option<f64>>,
    pub target: Option<f64>,
}

/// Grouped bars on a log scale: one group per label, one bar per (name, color) with values
/// in milliseconds; a target line per group may be drawn.
pub fn bar_plot_log_ms(title: &str, groups: &[BarGroup<'_>], bars: &[(&str, &str)]) -> String {
    let all = groups
        .iter()
        .flat_map(|g| g.values.iter().flatten().copied().chain(g.target))
        .filter(|v| *v > 0.0);
    let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo = if lo == f64::MAX { 0.1 } else { lo };
    let lo_dec = 10f64.powf(lo.log10().floor()).min(0.1);
    let hi_dec = 10f64.powf(hi.max(1.0).log10().ceil());
    let py = |v: f64| {
        let v = v.max(lo_dec);
        H - B - (v.log10() - lo_dec.log10()) / (hi_dec.log10() - lo_dec.log10()) * (H - T - B)
    };
    let mut s = String::new();
    header(&mut s, title);
    let mut d = lo_dec;
    while d <= hi_dec * 1.001 {
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{} ms</text>"##,
            W - R,
            L - 6.0,
            py(d) + 4.0,
            if d < 1.0 {
                format!("{d:.1}")
            } else {
                format!("{d:.0}")
            },
            y = py(d)
        );
        d *= 10.0;
    }
    let gw = (W - L - R) / groups.len().max(1) as f64;
    let bw = (gw * 0.7) / bars.len().max(1) as f64;
    for (gi, g) in groups.iter().enumerate() {
        let (label, values, target) = (&g.label, &g.values, &g.target);
        let gx = L + gi as f64 * gw + gw * 0.15;
        for (bi, v) in values.iter().enumerate() {
            let Some(v) = v else { continue };
            let (name, color) = bars[bi % bars.len()];
            let x = gx + bi as f64 * bw;
            let y = py(*v);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{} {}: {v:.2} ms</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                bw - 3.0,
                (H - B - y).max(0.0),
                esc(label),
                esc(name),
                x + (bw - 3.0) / 2.0,
                y - 3.0,
                if *v < 10.0 {
                    format!("{v:.2}")
                } else {
                    format!("{v:.0}")
                }
            );
        }
        if let Some(t) = target {
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="red" stroke-width="2" stroke-dasharray="5 3"/><text x="{:.1}" y="{:.1}" fill="red" font-size="10" text-anchor="end">target {t} ms</text>"#,
                gx - 4.0,
                gx + gw * 0.7,
                gx + gw * 0.7,
                py(*t) - 4.0,
                y = py(*t)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            gx + gw * 0.35,
            H - B + 18.0,
            esc(label)
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        H - B,
        W - R,
        H - B
    );
    // Legend in one row under the axis, so it covers no bar.
    for (i, (name, color)) in bars.iter().enumerate() {
        let x = L + i as f64 * 90.0;
        let y = H - 14.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{}" width="14" height="10" fill="{color}"/><text x="{}" y="{y}">{}</text>"#,
            y - 9.0,
            x + 20.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_well_formed_svg() {
        let s = line_plot(
            "t <1>",
            "x",
            "y",
            &[Series {
                name: "a",
                color: "blue",
                points: vec![(0.0, 0.0), (4200.0, 4100.0), (42_000.0, 41_000.0)],
                dashed: false,
                width: 2.0,
            }],
        );
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("t &lt;1&gt;"));
        assert!(s.contains("40k"), "{s}");
        let b = bar_plot_log_ms(
            "lat",
            &[
                BarGroup {
                    label: "idle",
                    values: vec![Some(0.3), Some(0.9)],
                    target: Some(2.0),
                },
                BarGroup {
                    label: "load",
                    values: vec![Some(2.5), None],
                    target: Some(10.0),
                },
            ],
            &[("p50", "green"), ("p99", "orange")],
        );
        assert!(b.contains("target 10 ms"));
        // Three bars (one value is missing) and two legend swatches.
        assert_eq!(b.matches("<rect x=").count(), 5);
    }
}
