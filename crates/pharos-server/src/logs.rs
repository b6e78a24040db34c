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

/// The longest line kept whole; a longer one is cut there (a learner's output is not
/// believed to be reasonable: one line may be gigabytes).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Metric points returned at most (the latest).
pub const MAX_POINTS: usize = 20_000;

/// Calls `f(line, cut)` for each line of `r` (without its newline), at most
/// [`MAX_LINE_BYTES`] of it (`cut`: the rest was skipped), until `f` says stop. Memory
/// stays bounded whatever the file holds.
pub fn for_each_line(
    r: impl BufRead,
    mut f: impl FnMut(&[u8], bool) -> bool,
) -> std::io::Result<()> {
    for_each_line_at(r, |_, line, cut| f(line, cut))
}

/// As [`for_each_line`], with each line's byte offset in `r`.
pub fn for_each_line_at(
    mut r: impl BufRead,
    mut f: impl FnMut(u64, &[u8], bool) -> bool,
) -> std::io::Result<()> {
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    // Bytes consumed, and where the current line began.
    let (mut pos, mut start) = (0u64, 0u64);
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            if !line.is_empty() || cut {
                f(start, &line, cut);
            }
            return Ok(());
        }
        let (chunk, end) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = MAX_LINE_BYTES - line.len();
        if chunk.len() > room {
            cut = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = end.unwrap_or(buf.len());
        r.consume(used);
        pos += used as u64;
        if end.is_some() {
            if !f(start, &line, cut) {
                return Ok(());
            }
            line.clear();
            cut = false;
            start = pos;
        }
    }
}

/// Lines `offset..offset + limit` of a log file (an absent file has no lines yet); a
/// line longer than [`MAX_LINE_BYTES`] is cut and marked.
pub fn page(path: &Path, learner: u32, offset: usize, limit: usize) -> std::io::Result<LogPage> {
    let mut lines = Vec::new();
    match std::fs::File::open(path) {
        Ok(f) => {
            let mut n = 0usize;
            for_each_line(BufReader::new(f), |line, cut| {
                if n >= offset {
                    let mut text = String::from_utf8_lossy(line).into_owned();
                    if cut {
                        text.push_str(" [line cut]");
                    }
                    lines.push(text);
                }
                n += 1;
                lines.len() < limit
            })?;
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
    /// The attempt whose output it is (None where attempts were not recorded).
    pub attempt: Option<u32>,
    pub learner: u32,
    /// 1-based line number in the learner's log.
    pub line: usize,
    pub values: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// The latest [`MAX_POINTS`] points.
    pub points: Vec<MetricPoint>,
    /// Points found in all; `truncated` when more than returned.
    pub total_points: usize,
    pub truncated: bool,
    /// The last value of each metric (over all learners, in learner order).
    pub last: BTreeMap<String, f64>,
}

/// A learner's log and where each attempt began in it (see
/// `JobPaths::attempt_starts`).
pub struct LearnerLog {
    pub learner: u32,
    pub path: std::path::PathBuf,
    pub attempts: Vec<(u32, u64)>,
}

/// Every line of the learners' logs that matches `regex`, with its named groups that
/// parse as numbers, and the attempt it came from.
pub fn extract(logs: &[LearnerLog], regex: &regex::Regex) -> std::io::Result<Metrics> {
    let names: Vec<&str> = regex.capture_names().flatten().collect();
    let mut points = std::collections::VecDeque::new();
    let mut count = 0usize;
    let total = &mut count;
    for LearnerLog {
        learner,
        path,
        attempts,
    } in logs
    {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut i = 0usize;
        for_each_line_at(BufReader::new(f), |at, line, _cut| {
            i += 1;
            let attempt = attempts
                .iter()
                .take_while(|(_, start)| *start <= at)
                .last()
                .map(|(a, _)| *a);
            let text = String::from_utf8_lossy(line);
            let Some(caps) = regex.captures(&text) else {
                return true;
            };
            let values: BTreeMap<String, f64> = names
                .iter()
                .filter_map(|n| {
                    let v: f64 = caps.name(n)?.as_str().parse().ok()?;
                    Some((n.to_string(), v))
                })
                .collect();
            if !values.is_empty() {
                *total += 1;
                if points.len() == MAX_POINTS {
                    points.pop_front();
                }
                points.push_back(MetricPoint {
                    attempt,
                    learner: *learner,
                    line: i,
                    values,
                });
            }
            true
        })?;
    }
    let mut last = BTreeMap::new();
    for p in &points {
        for (k, v) in &p.values {
            last.insert(k.clone(), *v);
        }
    }
    Ok(Metrics {
        truncated: count > points.len(),
        total_points: count,
        points: points.into(),
        last,
    })
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
        let log = |attempts| LearnerLog {
            learner: 1,
            path: p.clone(),
            attempts,
        };
        let m = extract(&[log(vec![])], &re).unwrap();
        assert_eq!(m.points[0].attempt, None);
        // The second attempt began at "noise" (byte 22): its point is attempt 2's.
        let m2 = extract(&[log(vec![(1, 0), (2, 22)])], &re).unwrap();
        assert_eq!(
            m2.points.iter().map(|p| p.attempt).collect::<Vec<_>>(),
            vec![Some(1), Some(2)]
        );
        assert_eq!(m.points.len(), 2);
        assert_eq!(m.points[1].line, 4);
        assert_eq!(m.points[1].values["loss"], 0.25);
        // "x" is not a number: that group is left out, the others kept.
        assert!(!m.points[1].values.contains_key("acc"));
        assert_eq!(m.last["step"], 2.0);
    }

    /// A line of many megabytes is cut, not held whole; the lines after it are intact.
    #[test]
    fn a_huge_line_is_cut() {
        let mut text = vec![b'x'; 5 * MAX_LINE_BYTES];
        text.extend_from_slice(b"\nnext\nlast");
        let mut seen = Vec::new();
        for_each_line(
            std::io::BufReader::with_capacity(1000, &text[..]),
            |l, cut| {
                seen.push((l.len(), cut));
                true
            },
        )
        .unwrap();
        assert_eq!(seen, vec![(MAX_LINE_BYTES, true), (4, false), (4, false)]);
    }
}
