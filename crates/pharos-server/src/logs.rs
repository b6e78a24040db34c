//! Learner logs: pages of lines, and evaluation metrics extracted from them by the
//! manifest's regex groups.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct LogPage {
    pub learner: u32,
    /// Line number of the first line returned (0-based).
    pub offset: usize,
    pub lines: Vec<String>,
    /// Where the next page starts.
    pub next_offset: usize,
}

/// Lines `offset..offset + limit` of a log file (an absent file has no lines yet).
pub fn page(path: &Path, learner: u32, offset: usize, limit: usize) -> std::io::Result<LogPage> {
    let mut lines = Vec::new();
    match std::fs::File::open(path) {
        Ok(f) => {
            for line in BufReader::new(f).split(b'\n').skip(offset).take(limit) {
                lines.push(String::from_utf8_lossy(&line?).into_owned());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(LogPage {
        learner,
        offset,
        next_offset: offset + lines.len(),
        lines,
    })
}

/// One log line's metric values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricPoint {
    pub learner: u32,
    /// 1-based line number in the learner's log.
    pub line: usize,
    pub values: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    pub points: Vec<MetricPoint>,
    /// The last value of each metric (over all learners, in learner order).
    pub last: BTreeMap<String, f64>,
}

/// Every line of the learners' logs that matches `regex`, with its named groups that
/// parse as numbers.
pub fn extract(
    logs: &[(u32, std::path::PathBuf)],
    regex: &regex::Regex,
) -> std::io::Result<Metrics> {
    let names: Vec<&str> = regex.capture_names().flatten().collect();
    let mut points = Vec::new();
    for (learner, path) in logs {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
            let line = line?;
            let text = String::from_utf8_lossy(&line);
            let Some(caps) = regex.captures(&text) else {
                continue;
            };
            let values: BTreeMap<String, f64> = names
                .iter()
                .filter_map(|n| {
                    let v: f64 = caps.name(n)?.as_str().parse().ok()?;
                    Some((n.to_string(), v))
                })
                .collect();
            if !values.is_empty() {
                points.push(MetricPoint {
                    learner: *learner,
                    line: i + 1,
                    values,
                });
            }
        }
    }
    let mut last = BTreeMap::new();
    for p in &points {
        for (k, v) in &p.values {
            last.insert(k.clone(), *v);
        }
    }
    Ok(Metrics { points, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("learner-1.log");
        std::fs::write(
            &p,
            "start\nstep=1 loss=0.5\nnoise\nstep=2 loss=0.25 acc=x\n",
        )
        .unwrap();
        let pg = page(&p, 1, 1, 2).unwrap();
        assert_eq!(pg.lines, vec!["step=1 loss=0.5", "noise"]);
        assert_eq!(pg.next_offset, 3);
        let empty = page(&dir.path().join("none.log"), 2, 0, 10).unwrap();
        assert!(empty.lines.is_empty());
        let re =
            regex::Regex::new(r"step=(?P<step>\d+) loss=(?P<loss>[0-9.]+)(?: acc=(?P<acc>\S+))?")
                .unwrap();
        let m = extract(&[(1, p)], &re).unwrap();
        assert_eq!(m.points.len(), 2);
        assert_eq!(m.points[1].line, 4);
        assert_eq!(m.points[1].values["loss"], 0.25);
        // "x" is not a number: that group is left out, the others kept.
        assert!(!m.points[1].values.contains_key("acc"));
        assert_eq!(m.last["step"], 2.0);
    }
}
