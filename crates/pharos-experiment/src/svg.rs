//! Small, dependency-free SVG charts: line charts (stacked in panels) and grouped bars.

use std::fmt::Write;

const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// The colour of series `i`.
pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// About `n` round tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if (v * 10.0).fract().abs() < 1e-9 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart panel.
#[derive(Debug, Clone, Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// A dashed horizontal reference line (e.g. the SLO) and its label.
    pub reference: Option<(f64, String)>,
    /// Clip the y axis at this value (points above are drawn at the top).
    pub y_max: Option<f64>,
    /// A dot at every point of every series (for a few points, e.g. a frontier).
    pub markers: bool,
    /// Points to ring in black (e.g. the Pareto-optimal ones).
    pub rings: Vec<(f64, f64)>,
}

impl LineChart {
    fn draw(&self, out: &mut String, x0: f64, y0: f64, w: f64, h: f64) {
        let (ml, mr, mt, mb) = (60.0, 150.0, 28.0, 40.0);
        let (pw, ph) = (w - ml - mr, h - mt - mb);
        let pts = self.series.iter().flat_map(|s| s.points.iter());
        let (mut xmin, mut xmax, mut ymax) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
        for (x, y) in pts {
            xmin = xmin.min(*x);
            xmax = xmax.max(*x);
            if y.is_finite() {
                ymax = ymax.max(*y);
            }
        }
        if let Some((r, _)) = &self.reference {
            ymax = ymax.max(*r);
        }
        if let Some(c) = self.y_max {
            ymax = ymax.min(c);
        }
        if !xmin.is_finite() {
            (xmin, xmax) = (0.0, 1.0);
        }
        if xmax <= xmin {
            xmax = xmin + 1.0;
        }
        let ymax = if ymax <= 0.0 { 1.0 } else { ymax * 1.05 };
        let sx = |x: f64| x0 + ml + (x - xmin) / (xmax - xmin) * pw;
        let sy = |y: f64| y0 + mt + ph - (y.min(ymax).max(0.0) / ymax) * ph;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"#,
            x0 + ml,
            y0 + 18.0,
            esc(&self.title)
        );
        let _ = write!(
            out,
            r##"<rect x="{:.1}" y="{:.1}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#999"/>"##,
            x0 + ml,
            y0 + mt
        );
        for t in ticks(0.0, ymax, 5) {
            let y = sy(t);
            let _ = write!(
                out,
                r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
                x0 + ml,
                x0 + ml + pw,
                x0 + ml - 5.0,
                y + 4.0,
                fmt_tick(t)
            );
        }
        for t in ticks(xmin, xmax, 8) {
            let x = sx(t);
            let _ = write!(
                out,
                r#"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
                y0 + mt + ph + 15.0,
                fmt_tick(t)
            );
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            x0 + ml + pw / 2.0,
            y0 + h - 6.0,
            esc(&self.x_label)
        );
        let _ = write!(
            out,
            r#"<text transform="translate({:.1},{:.1}) rotate(-90)" font-size="12" text-anchor="middle">{}</text>"#,
            x0 + 14.0,
            y0 + mt + ph / 2.0,
            esc(&self.y_label)
        );
        for (x, y) in &self.rings {
            let y = if y.is_finite() { *y } else { ymax };
            let _ = write!(
                out,
                r##"<circle cx="{:.1}" cy="{:.1}" r="6" fill="none" stroke="#000" stroke-width="1.5"/>"##,
                sx(*x),
                sy(y)
            );
        }
        if let Some((r, label)) = &self.reference {
            let y = sy(*r);
            let _ = write!(
                out,
                r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#000" stroke-dasharray="6,4"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"##,
                x0 + ml,
                x0 + ml + pw,
                x0 + ml + 4.0,
                y - 4.0,
                esc(label)
            );
        }
        for (i, s) in self.series.iter().enumerate() {
            let mut d = String::new();
            for (k, (x, y)) in s.points.iter().enumerate() {
                let y = if y.is_finite() { *y } else { ymax };
                let _ = write!(
                    d,
                    "{}{:.1},{:.1}",
                    if k == 0 { "M" } else { "L" },
                    sx(*x),
                    sy(y)
                );
            }
            let _ = write!(
                out,
                r#"<path d="{d}" fill="none" stroke="{}" stroke-width="1.2"/>"#,
                color(i)
            );
            if self.markers {
                for (x, y) in &s.points {
                    let y = if y.is_finite() { *y } else { ymax };
                    let _ = write!(
                        out,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                        sx(*x),
                        sy(y),
                        color(i)
                    );
                }
            }
            let ly = y0 + mt + 12.0 + i as f64 * 15.0;
            let lx = x0 + ml + pw + 10.0;
            if ly < y0 + h - 10.0 {
                let _ = write!(
                    out,
                    r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
                    ly - 4.0,
                    lx + 16.0,
                    ly - 4.0,
                    color(i),
                    lx + 20.0,
                    ly,
                    esc(&s.name)
                );
            }
        }
    }
}

/// Line-chart panels stacked vertically in one SVG document.
pub fn panels(title: &str, charts: &[LineChart]) -> String {
    let (w, h, top) = (960.0, 260.0, 34.0);
    let total = top + h * charts.len() as f64;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{total}" viewBox="0 0 {w} {total}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="{:.1}" y="22" font-size="16" font-weight="bold" text-anchor="middle">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    for (i, c) in charts.iter().enumerate() {
        c.draw(&mut out, 0.0, top + i as f64 * h, w, h);
    }
    out.push_str("</svg>\n");
    out
}

/// A grouped bar chart: one group per category, one bar per series in each group.
#[derive(Debug, Clone)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// (series name, one value per category)
    pub series: Vec<(String, Vec<f64>)>,
    /// Format of the value printed above each bar.
    pub percent: bool,
}

impl BarChart {
    pub fn render(&self) -> String {
        let (w, h) = (960.0, 420.0);
        let (ml, mr, mt, mb) = (60.0, 150.0, 40.0, 45.0);
        let (pw, ph) = (w - ml - mr, h - mt - mb);
        let ymax = self
            .series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let ymax = if ymax <= 0.0 { 1.0 } else { ymax * 1.12 };
        let sy = |y: f64| mt + ph - (y / ymax) * ph;
        let mut out = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="{:.1}" y="24" font-size="16" font-weight="bold" text-anchor="middle">{}</text>"#,
            w / 2.0,
            esc(&self.title)
        );
        for t in ticks(0.0, ymax, 5) {
            let y = sy(t);
            let label = if self.percent {
                format!("{}%", fmt_tick(t * 100.0))
            } else {
                fmt_tick(t)
            };
            let _ = write!(
                out,
                r##"<line x1="{ml}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{label}</text>"##,
                ml + pw,
                ml - 5.0,
                y + 4.0
            );
        }
        let _ = write!(
            out,
            r#"<text transform="translate(16,{:.1}) rotate(-90)" font-size="12" text-anchor="middle">{}</text>"#,
            mt + ph / 2.0,
            esc(&self.y_label)
        );
        let groups = self.categories.len().max(1) as f64;
        let gw = pw / groups;
        let bw = gw * 0.8 / self.series.len().max(1) as f64;
        for (g, cat) in self.categories.iter().enumerate() {
            let gx = ml + g as f64 * gw;
            for (s, (_, vals)) in self.series.iter().enumerate() {
                let v = vals.get(g).copied().unwrap_or(0.0);
                let x = gx + gw * 0.1 + s as f64 * bw;
                let y = sy(v);
                let _ = write!(
                    out,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                    bw * 0.92,
                    mt + ph - y,
                    color(s)
                );
                let label = if self.percent {
                    format!("{:.0}", v * 100.0)
                } else {
                    format!("{v:.1}")
                };
                let _ = write!(
                    out,
                    r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{label}</text>"#,
                    x + bw * 0.46,
                    y - 3.0
                );
            }
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
                gx + gw / 2.0,
                mt + ph + 18.0,
                esc(cat)
            );
        }
        let _ = write!(
            out,
            r##"<line x1="{ml}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999"/>"##,
            mt + ph,
            ml + pw,
            mt + ph
        );
        for (s, (name, _)) in self.series.iter().enumerate() {
            let ly = mt + 12.0 + s as f64 * 16.0;
            let lx = ml + pw + 10.0;
            let _ = write!(
                out,
                r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="10" fill="{}"/><text x="{:.1}" y="{ly:.1}" font-size="11">{}</text>"#,
                ly - 9.0,
                color(s),
                lx + 16.0,
                esc(name)
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.0, 0.9, 4), vec![0.0, 0.25, 0.5, 0.75]);
    }

    #[test]
    fn charts_are_well_formed_svg() {
        let c = LineChart {
            title: "a <b>".into(),
            x_label: "minute".into(),
            y_label: "x".into(),
            series: vec![Series {
                name: "s".into(),
                points: vec![(0.0, 1.0), (1.0, f64::INFINITY)],
            }],
            reference: Some((0.5, "SLO".into())),
            y_max: None,
            ..Default::default()
        };
        let s = panels("t", &[c]);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a &lt;b&gt;"));
        assert!(!s.contains("NaN") && !s.contains("inf"));
        let b = BarChart {
            title: "t".into(),
            y_label: "y".into(),
            categories: vec!["16".into(), "32".into()],
            series: vec![("p".into(), vec![0.5, 0.25])],
            percent: true,
        }
        .render();
        assert_eq!(b.matches("<rect").count(), 1 + 2 + 1);
    }
}
