//! Cost against quality over a policy's knob: every run of an experiment (a sweep's
//! points and single policies alike) as a point of cost (replica-hours, CPU-seconds)
//! and quality (violations, lost utility, failed requests, response times; lower is
//! better), the Pareto-optimal ones marked, and which policies' frontiers cover which.
//!
//! A point dominates another when it costs no more and is no worse on the frontier's
//! primary quality (the first), and is better on one of the two. A family (a policy
//! and its sweep) covers another when every point of the other is dominated by, or
//! equal to, a point of it: nothing the other offers is better on both axes.

use std::fmt::Write as _;

use serde::Serialize;

use crate::svg::{LineChart, Series, panels};

/// One point: a policy setting in one setting of the experiment (e.g. a cluster size).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Where it was measured, e.g. `36 vCPUs`; points are compared within a group.
    pub group: String,
    pub family: String,
    pub label: String,
    /// The swept knob and its value, for a sweep's point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knob: Option<(String, serde_json::Value)>,
    pub cost: f64,
    /// Lower is better, in the order of [`Frontier::quality`].
    pub quality: Vec<f64>,
    /// On the group's Pareto front of cost and the first quality.
    pub pareto: bool,
}

/// The points of an experiment with the names of their axes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frontier {
    pub cost: String,
    pub quality: Vec<String>,
    pub points: Vec<Point>,
}

fn dominates(a: &Point, b: &Point) -> bool {
    let (qa, qb) = (a.quality[0], b.quality[0]);
    a.cost <= b.cost && qa <= qb && (a.cost < b.cost || qa < qb)
}

fn covers_point(a: &Point, b: &Point) -> bool {
    dominates(a, b) || (a.cost == b.cost && a.quality[0] == b.quality[0])
}

impl Frontier {
    /// The frontier of `points`, Pareto points marked within each group.
    pub fn new(cost: &str, quality: &[&str], mut points: Vec<Point>) -> Frontier {
        for i in 0..points.len() {
            let p = &points[i];
            let beaten = points.iter().any(|q| q.group == p.group && dominates(q, p));
            points[i].pareto = !beaten;
        }
        Frontier {
            cost: cost.to_string(),
            quality: quality.iter().map(|q| q.to_string()).collect(),
            points,
        }
    }

    /// The groups, in the order of their first point.
    pub fn groups(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in &self.points {
            if !out.contains(&p.group.as_str()) {
                out.push(&p.group);
            }
        }
        out
    }

    /// The families of a group, in the order of their first point.
    pub fn families(&self, group: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in self.points.iter().filter(|p| p.group == group) {
            if !out.contains(&p.family.as_str()) {
                out.push(&p.family);
            }
        }
        out
    }

    fn of<'a>(&'a self, group: &'a str, family: &'a str) -> impl Iterator<Item = &'a Point> {
        self.points
            .iter()
            .filter(move |p| p.group == group && p.family == family)
    }

    /// Whether, in `group`, every point of family `b` is dominated by (or equal to) a
    /// point of family `a`.
    pub fn covers(&self, group: &str, a: &str, b: &str) -> bool {
        let theirs: Vec<&Point> = self.of(group, b).collect();
        !theirs.is_empty()
            && theirs
                .iter()
                .all(|pb| self.of(group, a).any(|pa| covers_point(pa, pb)))
    }

    /// The points of `b` in `group` that no point of `a` dominates or equals.
    pub fn uncovered<'a>(&'a self, group: &'a str, a: &'a str, b: &'a str) -> Vec<&'a Point> {
        self.of(group, b)
            .filter(|pb| !self.of(group, a).any(|pa| covers_point(pa, pb)))
            .collect()
    }

    /// Per group: a table of every point (Pareto ones starred) and which families'
    /// frontiers cover which.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Cost is {}; the frontier's quality axis is {} (lower is better on every \
             column). \u{2605} marks a point no other point of its group beats on both; \
             \"covers\" means every point of the other policy has one of this policy's at \
             no more cost and no worse {}.\n\n",
            self.cost, self.quality[0], self.quality[0]
        );
        for g in self.groups() {
            let _ = write!(s, "## {g}\n\n| policy | knob | {} |", self.cost);
            for q in &self.quality {
                let _ = write!(s, " {q} |");
            }
            s += " Pareto |\n|---|---|---|";
            s += &"---|".repeat(self.quality.len() + 1);
            s += "\n";
            let mut pts: Vec<&Point> = self.points.iter().filter(|p| p.group == g).collect();
            pts.sort_by(|a, b| a.family.cmp(&b.family).then(a.cost.total_cmp(&b.cost)));
            for p in pts {
                let knob = p
                    .knob
                    .as_ref()
                    .map_or(String::new(), |(k, v)| format!("{k}={}", shown(v)));
                let _ = write!(s, "| {} | {knob} | {:.2} |", p.family, p.cost);
                for q in &p.quality {
                    let _ = write!(s, " {} |", num(*q));
                }
                s += if p.pareto { " \u{2605} |\n" } else { " |\n" };
            }
            s += "\n";
            let fams = self.families(g);
            for b in &fams {
                let by: Vec<&str> = fams
                    .iter()
                    .filter(|a| *a != b && self.covers(g, a, b))
                    .copied()
                    .collect();
                if by.is_empty() {
                    let _ = writeln!(s, "- {b}: covered by none");
                } else {
                    let _ = writeln!(s, "- {b}: covered by {}", by.join(", "));
                }
            }
            s += "\n";
        }
        s
    }

    /// One panel per group: each family's points by cost, the Pareto points ringed.
    pub fn svg(&self, title: &str) -> String {
        let charts: Vec<LineChart> = self
            .groups()
            .into_iter()
            .map(|g| {
                let series = self
                    .families(g)
                    .into_iter()
                    .map(|f| {
                        let mut points: Vec<(f64, f64)> =
                            self.of(g, f).map(|p| (p.cost, p.quality[0])).collect();
                        points.sort_by(|a, b| a.0.total_cmp(&b.0));
                        Series {
                            name: f.to_string(),
                            points,
                        }
                    })
                    .collect();
                LineChart {
                    title: g.to_string(),
                    x_label: self.cost.clone(),
                    y_label: self.quality[0].clone(),
                    series,
                    markers: true,
                    rings: self
                        .points
                        .iter()
                        .filter(|p| p.group == g && p.pareto)
                        .map(|p| (p.cost, p.quality[0]))
                        .collect(),
                    ..Default::default()
                }
            })
            .collect();
        panels(title, &charts)
    }
}

fn shown(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn num(v: f64) -> String {
    if !v.is_finite() {
        "inf".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(group: &str, family: &str, cost: f64, q: f64) -> Point {
        Point {
            group: group.into(),
            family: family.into(),
            label: format!("{family}@{cost}"),
            knob: None,
            cost,
            quality: vec![q, 0.0],
            pareto: false,
        }
    }

    #[test]
    fn pareto_points_and_cover_are_judged_within_a_group() {
        let f = Frontier::new(
            "replica-hours",
            &["violations %", "lost utility"],
            vec![
                p("a", "x", 10.0, 5.0),
                p("a", "x", 20.0, 1.0),
                p("a", "y", 12.0, 6.0), // beaten by x@10
                p("a", "y", 25.0, 0.5), // the cheapest with 0.5
                p("a", "z", 20.0, 1.0), // ties x@20: neither beats the other
                p("b", "y", 1.0, 9.0),  // another group: alone, so Pareto
            ],
        );
        let pareto: Vec<(&str, f64)> = f
            .points
            .iter()
            .filter(|p| p.pareto)
            .map(|p| (p.family.as_str(), p.cost))
            .collect();
        assert_eq!(
            pareto,
            [
                ("x", 10.0),
                ("x", 20.0),
                ("y", 25.0),
                ("z", 20.0),
                ("y", 1.0)
            ]
        );
        assert!(f.covers("a", "x", "z"), "a tie counts as covered");
        assert!(!f.covers("a", "x", "y"), "y@25 beats every x on violations");
        assert_eq!(f.uncovered("a", "x", "y").len(), 1);
        assert!(!f.covers("a", "z", "x"), "z has nothing at cost 10");
        assert!(!f.covers("b", "x", "y"), "x has no point in group b");
        let md = f.markdown();
        assert!(md.contains("- y: covered by none"), "{md}");
        assert!(md.contains("- z: covered by x"), "{md}");
        let svg = f.svg("t");
        assert_eq!(
            svg.matches("r=\"6\"").count(),
            5,
            "one ring per Pareto point"
        );
    }
}
