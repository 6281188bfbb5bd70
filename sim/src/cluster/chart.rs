//! The chart of one seed: each region's displayed split (green share, its axis fitted to the
//! data so regional differences show) and displayed total over simulated time, with the
//! faults shaded, as a self-contained SVG.

use std::fmt::Write as _;

use super::scenario::Fault;

/// One sample: per region, `(green, other)` net votes, or `None` while it was down.
pub type Sample = Vec<Option<(i64, i64)>>;

/// What the driver sampled.
#[derive(Debug, Clone)]
pub struct Samples {
    /// Region names.
    pub regions: Vec<String>,
    /// `(simulated ms, per region)`.
    pub points: Vec<(u64, Sample)>,
    /// The run's faults, shaded behind the lines.
    pub faults: Vec<Fault>,
}

const WIDTH: f64 = 900.0;
const PANEL: f64 = 260.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 40.0;
const GAP: f64 = 50.0;
const COLOURS: [&str; 8] = [
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
];

/// One panel: a value per region per sample, drawn against a y range.
struct Panel<'a> {
    top: f64,
    label: &'a str,
    range: (f64, f64),
    tick: fn(f64) -> String,
    value: fn(i64, i64) -> Option<f64>,
}

/// The SVG document.
pub fn svg(samples: &Samples, title: &str) -> String {
    let end_ms = samples.points.last().map_or(1, |(t, _)| *t).max(1) as f64;
    let x = |t: f64| LEFT + t / end_ms * (WIDTH - LEFT - RIGHT);
    let share = |g: i64, o: i64| (g + o > 0).then(|| g as f64 / (g + o) as f64);
    let total = |g: i64, o: i64| Some((g + o) as f64);
    let (lo, hi) = range(samples, share);
    let margin = ((hi - lo) * 0.1).max(0.002);
    let (_, most) = range(samples, total);
    let panels = [
        Panel {
            top: TOP,
            label: "green share shown",
            range: ((lo - margin).max(0.0), (hi + margin).min(1.0)),
            tick: |v| format!("{:.1}%", v * 100.0),
            value: share,
        },
        Panel {
            top: TOP + PANEL + GAP,
            label: "votes shown",
            range: (0.0, most.max(1.0)),
            tick: |v| {
                if v >= 1e6 {
                    format!("{:.1}M", v / 1e6)
                } else {
                    format!("{v:.0}")
                }
            },
            value: total,
        },
    ];
    let height = TOP + 2.0 * PANEL + GAP + 50.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="22" font-size="15">{}</text>"#,
        escape(title)
    );
    for panel in &panels {
        draw_panel(&mut out, samples, panel, &x);
    }
    let seconds = (end_ms / 1000.0).ceil() as u64;
    let step = (seconds / 10).max(1);
    for s in (0..=seconds).step_by(step as usize) {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{s} s</text>"#,
            x(s as f64 * 1000.0),
            height - 32.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">simulated time (shaded: faults; gaps: region down)</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        height - 10.0
    );
    for (region, name) in samples.regions.iter().enumerate() {
        let colour = COLOURS[region % COLOURS.len()];
        let ly = TOP + 18.0 * region as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            WIDTH - RIGHT + 12.0,
            WIDTH - RIGHT + 32.0,
            WIDTH - RIGHT + 38.0,
            ly + 4.0,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn range(samples: &Samples, value: fn(i64, i64) -> Option<f64>) -> (f64, f64) {
    let values = samples
        .points
        .iter()
        .flat_map(|(_, s)| s.iter().flatten())
        .filter_map(|&(g, o)| value(g, o));
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi { (0.0, 1.0) } else { (lo, hi) }
}

fn draw_panel(out: &mut String, samples: &Samples, panel: &Panel<'_>, x: &dyn Fn(f64) -> f64) {
    let (lo, hi) = panel.range;
    let span = (hi - lo).max(f64::EPSILON);
    let y = |v: f64| panel.top + (1.0 - (v - lo) / span) * PANEL;
    for fault in &samples.faults {
        let (x0, x1) = (
            x(fault.at_ms as f64),
            x(fault.end_ms().max(fault.at_ms + 100) as f64),
        );
        let _ = writeln!(
            out,
            r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{PANEL}" fill="#f4cccc" opacity="0.45"><title>{}</title></rect>"##,
            panel.top,
            (x1 - x0).max(1.0),
            escape(&format!("{} {:?}/{:?}", fault.kind, fault.a, fault.b))
        );
    }
    for tick in 0..=4 {
        let v = lo + span * f64::from(tick) / 4.0;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{yv:.1}" y2="{yv:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            (panel.tick)(v),
            yv = y(v)
        );
    }
    let middle = panel.top + PANEL / 2.0;
    let _ = writeln!(
        out,
        r#"<text x="14" y="{middle:.1}" transform="rotate(-90 14 {middle:.1})" text-anchor="middle">{}</text>"#,
        escape(panel.label)
    );
    for region in 0..samples.regions.len() {
        let colour = COLOURS[region % COLOURS.len()];
        let mut path = String::new();
        let mut pen_down = false;
        for (t, values) in &samples.points {
            match values
                .get(region)
                .copied()
                .flatten()
                .and_then(|(g, o)| (panel.value)(g, o))
            {
                Some(v) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        x(*t as f64),
                        y(v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let _ = writeln!(
            out,
            r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#
        );
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
