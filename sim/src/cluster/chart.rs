//! The chart of one seed: each region's displayed green share over simulated time, with the
//! faults shaded, as a self-contained SVG.

use std::fmt::Write as _;

use super::scenario::Fault;

/// One sample: per region, `(green, other)` net votes, or `None` while it was down.
pub type Sample = Vec<Option<(i64, i64)>>;

/// What the driver sampled: per region, `(green, other)` net votes, or `None` while the
/// region was down or not yet serving.
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
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 8] = [
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
];

/// The SVG document.
pub fn svg(samples: &Samples, title: &str) -> String {
    let end_ms = samples.points.last().map_or(1, |(t, _)| *t).max(1) as f64;
    let x = |t: f64| LEFT + t / end_ms * (WIDTH - LEFT - RIGHT);
    let y = |share: f64| TOP + (1.0 - share) * (HEIGHT - TOP - BOTTOM);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="22" font-size="15">{}</text>"#,
        escape(title)
    );
    for fault in &samples.faults {
        let (x0, x1) = (
            x(fault.at_ms as f64),
            x(fault.end_ms().max(fault.at_ms + 100) as f64),
        );
        let _ = writeln!(
            out,
            r##"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="#f4cccc" opacity="0.45"><title>{}</title></rect>"##,
            (x1 - x0).max(1.0),
            HEIGHT - TOP - BOTTOM,
            escape(&format!("{} {:?}/{:?}", fault.kind, fault.a, fault.b))
        );
    }
    for tick in 0..=4 {
        let share = f64::from(tick) / 4.0;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}%</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(share) + 4.0,
            tick * 25,
            y = y(share)
        );
    }
    let seconds = (end_ms / 1000.0).ceil() as u64;
    let step = (seconds / 10).max(1);
    for s in (0..=seconds).step_by(step as usize) {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{s} s</text>"#,
            x(s as f64 * 1000.0),
            HEIGHT - BOTTOM + 18.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">simulated time (shaded: faults)</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 10.0
    );
    for (region, name) in samples.regions.iter().enumerate() {
        let colour = COLOURS[region % COLOURS.len()];
        let mut path = String::new();
        let mut pen_down = false;
        for (t, values) in &samples.points {
            match values.get(region).copied().flatten() {
                Some((green, other)) if green + other > 0 => {
                    let share = green as f64 / (green + other) as f64;
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        x(*t as f64),
                        y(share)
                    );
                    pen_down = true;
                }
                _ => pen_down = false,
            }
        }
        let _ = writeln!(
            out,
            r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#
        );
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
    let _ = writeln!(
        out,
        r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">green share shown</text>"#,
        (TOP + HEIGHT - BOTTOM) / 2.0,
        (TOP + HEIGHT - BOTTOM) / 2.0
    );
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
