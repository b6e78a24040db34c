use serde::{Deserialize, Serialize};

use crate::{JobTrace, RawTrace, Trace, TraceError};

/// Which part of a raw trace to replay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Jobs to keep, in this order; each entry is a job name or a unique prefix of one.
    /// All jobs when absent.
    #[serde(default)]
    pub jobs: Option<Vec<String>>,
    /// Keep only this day. When absent and a job has several days, they are replayed one
    /// after another in day order.
    #[serde(default)]
    pub day: Option<u32>,
    /// Replay each minute of the trace as this many minutes at the same rate (a trace
    /// whose steps stand for several minutes, such as the Faro trace's days of 360
    /// four-minute steps, at its real pace); 1 to 1440. Applied before `minutes`.
    #[serde(default)]
    pub stretch: Option<u32>,
    /// Minutes `[start, end)` of the (concatenated) series.
    #[serde(default)]
    pub minutes: Option<[usize; 2]>,
    /// Rescale every job so that its busiest minute has this many requests.
    #[serde(default)]
    pub peak_rpm: Option<f64>,
    /// Multiply every count by this factor (after `peak_rpm`).
    #[serde(default)]
    pub scale: Option<f64>,
}

impl Selection {
    pub fn apply(&self, raw: &RawTrace) -> Result<Trace, TraceError> {
        let series: Vec<_> = match self.day {
            Some(d) => {
                let s: Vec<_> = raw.series.iter().filter(|s| s.day == Some(d)).collect();
                if s.is_empty() {
                    let mut days: Vec<u32> = raw.series.iter().filter_map(|s| s.day).collect();
                    days.sort_unstable();
                    days.dedup();
                    return Err(TraceError::invalid(format!(
                        "the trace has no day {d} (its days: {days:?})"
                    )));
                }
                s
            }
            None => raw.series.iter().collect(),
        };
        // Job names in order of first appearance.
        let mut names: Vec<&str> = Vec::new();
        for s in &series {
            if !names.contains(&s.job.as_str()) {
                names.push(&s.job);
            }
        }
        let chosen: Vec<&str> = match &self.jobs {
            None => names.clone(),
            Some(wanted) => {
                if wanted.is_empty() {
                    return Err(TraceError::invalid("the job selection is empty"));
                }
                let mut out = Vec::with_capacity(wanted.len());
                for w in wanted {
                    out.push(resolve(&names, w)?);
                }
                out
            }
        };
        let mut jobs: Vec<JobTrace> = chosen
            .iter()
            .map(|name| {
                let mut parts: Vec<_> = series.iter().filter(|s| s.job == *name).collect();
                parts.sort_by_key(|s| s.day);
                JobTrace {
                    name: name.to_string(),
                    requests_per_min: parts
                        .iter()
                        .flat_map(|s| s.requests_per_min.iter().copied())
                        .collect(),
                }
            })
            .collect();
        let len = jobs
            .iter()
            .map(|j| j.requests_per_min.len())
            .max()
            .unwrap_or(0);
        for j in &mut jobs {
            j.requests_per_min.resize(len, 0.0);
        }
        let mut len = len;
        if let Some(k) = self.stretch {
            if !(1..=1440).contains(&k) {
                return Err(TraceError::invalid(format!(
                    "stretch must be 1 to 1440, got {k}"
                )));
            }
            for j in &mut jobs {
                j.requests_per_min = j
                    .requests_per_min
                    .iter()
                    .flat_map(|v| std::iter::repeat_n(*v, k as usize))
                    .collect();
            }
            len *= k as usize;
        }
        if let Some([start, end]) = self.minutes {
            if start >= end || start >= len {
                return Err(TraceError::invalid(format!(
                    "minute range [{start}, {end}) is empty or outside the trace's {len} minutes"
                )));
            }
            let end = end.min(len);
            for j in &mut jobs {
                j.requests_per_min = j.requests_per_min[start..end].to_vec();
            }
        }
        if let Some(peak) = self.peak_rpm {
            if !(peak.is_finite() && peak > 0.0) {
                return Err(TraceError::invalid(format!(
                    "peak_rpm must be > 0, got {peak}"
                )));
            }
            for j in &mut jobs {
                let max = j.requests_per_min.iter().copied().fold(0.0, f64::max);
                if max > 0.0 {
                    j.requests_per_min.iter_mut().for_each(|v| *v *= peak / max);
                }
            }
        }
        if let Some(f) = self.scale {
            if !(f.is_finite() && f >= 0.0) {
                return Err(TraceError::invalid(format!("scale must be >= 0, got {f}")));
            }
            for j in &mut jobs {
                j.requests_per_min.iter_mut().for_each(|v| *v *= f);
            }
        }
        let trace = Trace { jobs };
        trace.validate()?;
        Ok(trace)
    }
}

fn resolve<'a>(names: &[&'a str], wanted: &str) -> Result<&'a str, TraceError> {
    if let Some(n) = names.iter().find(|n| **n == wanted) {
        return Ok(n);
    }
    let matches: Vec<&&str> = names.iter().filter(|n| n.starts_with(wanted)).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(TraceError::invalid(format!(
            "no job {wanted:?} in the trace (it has {})",
            preview(names)
        ))),
        _ => Err(TraceError::invalid(format!(
            "job {wanted:?} is ambiguous: it starts {} job names",
            matches.len()
        ))),
    }
}

fn preview(names: &[&str]) -> String {
    let shown: Vec<&str> = names.iter().take(10).copied().collect();
    let more = if names.len() > 10 {
        format!(" and {} more", names.len() - 10)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Series;

    fn raw() -> RawTrace {
        let s = |job: &str, day, v: &[f64]| Series {
            job: job.into(),
            day: Some(day),
            requests_per_min: v.to_vec(),
        };
        RawTrace {
            series: vec![
                s("alpha", 1, &[1.0, 2.0, 3.0]),
                s("alpha", 2, &[4.0, 5.0, 6.0]),
                s("beta", 1, &[10.0, 0.0, 5.0]),
                s("beta", 2, &[1.0, 1.0, 1.0]),
            ],
        }
    }

    #[test]
    fn day_jobs_range_and_peak() {
        let sel = Selection {
            jobs: Some(vec!["be".into(), "alpha".into()]),
            day: Some(1),
            minutes: Some([1, 3]),
            peak_rpm: Some(100.0),
            ..Default::default()
        };
        let t = sel.apply(&raw()).unwrap();
        assert_eq!(t.jobs[0].name, "beta");
        assert_eq!(t.jobs[0].requests_per_min, vec![0.0, 100.0]);
        assert_eq!(t.jobs[1].requests_per_min, vec![2.0 * 100.0 / 3.0, 100.0]);
    }

    #[test]
    fn days_concatenate_without_a_day() {
        let t = Selection::default().apply(&raw()).unwrap();
        assert_eq!(t.minutes(), 6);
        assert_eq!(
            t.jobs[0].requests_per_min,
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
    }

    #[test]
    fn stretch_replays_each_minute_several_times_before_the_range() {
        let sel = Selection {
            stretch: Some(3),
            minutes: Some([2, 7]),
            ..Default::default()
        };
        let t = sel.apply(&raw()).unwrap();
        assert_eq!(t.jobs[0].requests_per_min, vec![1.0, 2.0, 2.0, 2.0, 3.0]);
        let e = Selection {
            stretch: Some(0),
            ..Default::default()
        }
        .apply(&raw())
        .unwrap_err();
        assert!(e.to_string().contains("stretch"), "{e}");
    }

    #[test]
    fn clear_errors() {
        let e = Selection {
            day: Some(9),
            ..Default::default()
        }
        .apply(&raw())
        .unwrap_err();
        assert!(e.to_string().contains("no day 9"), "{e}");
        let e = Selection {
            jobs: Some(vec!["gamma".into()]),
            ..Default::default()
        }
        .apply(&raw())
        .unwrap_err();
        assert!(e.to_string().contains("no job \"gamma\""), "{e}");
        let e = Selection {
            minutes: Some([7, 9]),
            ..Default::default()
        }
        .apply(&raw())
        .unwrap_err();
        assert!(e.to_string().contains("minute range"), "{e}");
    }
}

/// Days written `A-B`, `A,B,C` or a mix (`1-3,7`), in the order given.
pub fn parse_days(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let day = |x: &str| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| format!("{x:?} is not a day number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                if a > b {
                    return Err(format!("empty day range {a}-{b}"));
                }
                out.extend(a..=b);
            }
            None => out.push(day(part)?),
        }
    }
    if out.is_empty() {
        return Err("no days given".into());
    }
    Ok(out)
}

#[cfg(test)]
mod day_tests {
    use super::parse_days;

    #[test]
    fn days_parse() {
        assert_eq!(parse_days("1-3,7").unwrap(), vec![1, 2, 3, 7]);
        assert_eq!(parse_days(" 11 ").unwrap(), vec![11]);
        assert!(parse_days("3-1").unwrap_err().contains("empty"));
        assert!(parse_days("x").unwrap_err().contains("not a day"));
        assert!(parse_days("").is_err());
    }
}
