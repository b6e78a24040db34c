use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{RawTrace, Series, TraceError};

/// The trace file formats pharos reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Faro's replay format: JSON lines `{"ts": minute, "counts": {job: {model: n}}}`.
    FaroJsonl,
    /// CSV with a header naming at least `job`, `minute`, `requests` (and `day`).
    MinuteCsv,
    /// Azure Functions 2019: `HashOwner,HashApp,HashFunction,Trigger,1,...,1440`.
    AzureFunctions,
}

impl Format {
    pub const NAMES: [&'static str; 3] = ["faro-jsonl", "minute-csv", "azure-functions"];

    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "faro-jsonl" | "faro" | "faro-json" | "jsonl" => Some(Format::FaroJsonl),
            "minute-csv" | "csv" => Some(Format::MinuteCsv),
            "azure-functions" | "azure" | "azure2019" => Some(Format::AzureFunctions),
            _ => None,
        }
    }

    /// Guess the format from the file name and its first line.
    pub fn detect(path: &Path, text: &str) -> Format {
        let first = text
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches('\u{feff}');
        if first.trim_start().starts_with('{') {
            Format::FaroJsonl
        } else if first.starts_with("HashOwner") {
            Format::AzureFunctions
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("json" | "jsonl" | "ndjson")
        ) {
            Format::FaroJsonl
        } else {
            Format::MinuteCsv
        }
    }
}

/// Read a trace file; the format is detected when `format` is `None`.
pub fn read_trace(path: &Path, format: Option<Format>) -> Result<RawTrace, TraceError> {
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    read_trace_str(path, &text, format)
}

/// Parse trace text; `path` is used in error messages and to tell an Azure file's day.
pub fn read_trace_str(
    path: &Path,
    text: &str,
    format: Option<Format>,
) -> Result<RawTrace, TraceError> {
    let format = format.unwrap_or_else(|| Format::detect(path, text));
    let trace = match format {
        Format::FaroJsonl => read_faro_jsonl(path, text)?,
        Format::MinuteCsv => read_minute_csv(path, text)?,
        Format::AzureFunctions => read_azure(path, text)?,
    };
    if trace.series.is_empty() {
        return Err(TraceError::malformed(path, 0, "the file holds no series"));
    }
    Ok(trace)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaroLine {
    ts: u64,
    counts: BTreeMap<String, BTreeMap<String, f64>>,
}

fn read_faro_jsonl(path: &Path, text: &str) -> Result<RawTrace, TraceError> {
    // job name -> minute -> requests
    let mut jobs: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: FaroLine = serde_json::from_str(line).map_err(|e| {
            TraceError::malformed(path, lineno, format!("not a replay record: {e}"))
        })?;
        for (job, models) in parsed.counts {
            let single = models.len() == 1;
            for (model, n) in models {
                if !(n.is_finite() && n >= 0.0) {
                    return Err(TraceError::malformed(
                        path,
                        lineno,
                        format!("{job}/{model}: requests must be finite and >= 0, got {n}"),
                    ));
                }
                let name = if single {
                    job.clone()
                } else {
                    format!("{job}/{model}")
                };
                let minutes = jobs.entry(name.clone()).or_insert_with(|| {
                    order.push(name.clone());
                    BTreeMap::new()
                });
                if minutes.insert(parsed.ts, n).is_some() {
                    return Err(TraceError::malformed(
                        path,
                        lineno,
                        format!("{name}: minute {} appears twice", parsed.ts),
                    ));
                }
            }
        }
    }
    let series = order
        .into_iter()
        .map(|name| {
            let minutes = jobs.remove(&name).unwrap_or_default();
            Series {
                job: name,
                day: None,
                requests_per_min: dense(&minutes),
            }
        })
        .collect();
    Ok(RawTrace { series })
}

/// Minutes 0..=max as a vector; minutes the source does not list have no requests.
fn dense(minutes: &BTreeMap<u64, f64>) -> Vec<f64> {
    let len = minutes.keys().next_back().map_or(0, |m| *m as usize + 1);
    let mut v = vec![0.0; len];
    for (m, n) in minutes {
        v[*m as usize] = *n;
    }
    v
}

const MAX_MINUTE: u64 = 60 * 24 * 366;

fn read_minute_csv(path: &Path, text: &str) -> Result<RawTrace, TraceError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = rdr
        .headers()
        .map_err(|e| TraceError::malformed(path, 1, format!("cannot read the header: {e}")))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let need = |name: &str| {
        col(name).ok_or_else(|| {
            TraceError::malformed(
                path,
                1,
                format!("the header has no `{name}` column (it needs job, minute, requests; day is optional)"),
            )
        })
    };
    let (c_job, c_min, c_req) = (need("job")?, need("minute")?, need("requests")?);
    let c_day = col("day");

    let mut series: BTreeMap<(Option<u32>, usize), BTreeMap<u64, f64>> = BTreeMap::new();
    let mut job_order: Vec<String> = Vec::new();
    let mut job_index: BTreeMap<String, usize> = BTreeMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            TraceError::malformed(path, line, e.to_string())
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        let field = |c: usize, name: &str| {
            rec.get(c)
                .ok_or_else(|| TraceError::malformed(path, line, format!("missing `{name}`")))
        };
        let job = field(c_job, "job")?.to_string();
        if job.is_empty() {
            return Err(TraceError::malformed(path, line, "empty `job`"));
        }
        let day = match c_day {
            Some(c) => Some(field(c, "day")?.parse::<u32>().map_err(|_| {
                TraceError::malformed(
                    path,
                    line,
                    format!(
                        "`day` must be a whole number, got {:?}",
                        rec.get(c).unwrap_or("")
                    ),
                )
            })?),
            None => None,
        };
        let minute_s = field(c_min, "minute")?;
        let minute = minute_s
            .parse::<u64>()
            .ok()
            .filter(|m| *m < MAX_MINUTE)
            .ok_or_else(|| {
                TraceError::malformed(
                    path,
                    line,
                    format!("`minute` must be a whole number below {MAX_MINUTE}, got {minute_s:?}"),
                )
            })?;
        let req_s = field(c_req, "requests")?;
        let requests = req_s
            .parse::<f64>()
            .ok()
            .filter(|r| r.is_finite() && *r >= 0.0)
            .ok_or_else(|| {
                TraceError::malformed(
                    path,
                    line,
                    format!("`requests` must be a number >= 0, got {req_s:?}"),
                )
            })?;
        let ji = *job_index.entry(job.clone()).or_insert_with(|| {
            job_order.push(job.clone());
            job_order.len() - 1
        });
        if series
            .entry((day, ji))
            .or_default()
            .insert(minute, requests)
            .is_some()
        {
            let d = day.map_or(String::new(), |d| format!(" day {d}"));
            return Err(TraceError::malformed(
                path,
                line,
                format!("job {job}{d} minute {minute} appears twice"),
            ));
        }
    }
    // Jobs in order of first appearance, then days ascending.
    let mut keys: Vec<(Option<u32>, usize)> = series.keys().copied().collect();
    keys.sort_by_key(|(d, j)| (*j, *d));
    let out = keys
        .into_iter()
        .map(|(day, ji)| Series {
            job: job_order[ji].clone(),
            day,
            requests_per_min: dense(&series[&(day, ji)]),
        })
        .collect();
    Ok(RawTrace { series: out })
}

/// The day of an Azure Functions file from its name (`...d01.csv` -> 1).
fn azure_day(path: &Path) -> Option<u32> {
    let stem = path.file_stem()?.to_str()?;
    let last = stem.rsplit(['.', '_', '-']).next()?;
    last.strip_prefix('d')?.parse().ok()
}

fn read_azure(path: &Path, text: &str) -> Result<RawTrace, TraceError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let headers = rdr
        .headers()
        .map_err(|e| TraceError::malformed(path, 1, format!("cannot read the header: {e}")))?
        .clone();
    let first_minute = headers.iter().position(|h| h == "1").ok_or_else(|| {
        TraceError::malformed(path, 1, "the header has no minute columns `1`...`1440`")
    })?;
    let c_fn = headers
        .iter()
        .position(|h| h == "HashFunction")
        .ok_or_else(|| TraceError::malformed(path, 1, "the header has no `HashFunction` column"))?;
    let minutes = headers.len() - first_minute;
    for (k, h) in headers.iter().skip(first_minute).enumerate() {
        if h != (k + 1).to_string() {
            return Err(TraceError::malformed(
                path,
                1,
                format!("minute column {} is named {h:?}", k + 1),
            ));
        }
    }
    let day = azure_day(path);
    let mut order: Vec<String> = Vec::new();
    let mut by_fn: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            TraceError::malformed(path, line, e.to_string())
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        let name = rec.get(c_fn).unwrap_or("").to_string();
        if name.is_empty() {
            return Err(TraceError::malformed(path, line, "empty `HashFunction`"));
        }
        let counts = by_fn.entry(name.clone()).or_insert_with(|| {
            order.push(name.clone());
            vec![0.0; minutes]
        });
        for (k, cell) in rec.iter().skip(first_minute).enumerate() {
            let v: f64 = cell
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    TraceError::malformed(
                        path,
                        line,
                        format!(
                            "minute {}: invocations must be a number >= 0, got {cell:?}",
                            k + 1
                        ),
                    )
                })?;
            // The same function listed twice (several triggers) counts once, summed.
            counts[k] += v;
        }
    }
    let series = order
        .into_iter()
        .map(|name| {
            let requests_per_min = by_fn.remove(&name).unwrap_or_default();
            Series {
                job: name,
                day,
                requests_per_min,
            }
        })
        .collect();
    Ok(RawTrace { series })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> &Path {
        Path::new(name)
    }

    #[test]
    fn faro_jsonl_is_read_in_file_order() {
        let text = r#"{"ts": 0, "counts": {"serve-cluster0": {"classifier": 3}, "serve-cluster1": {"classifier": 5}}}
{"ts": 1, "counts": {"serve-cluster0": {"classifier": 4}, "serve-cluster1": {"classifier": 6}}}
"#;
        let t = read_trace_str(p("x.json"), text, None).unwrap();
        assert_eq!(t.series.len(), 2);
        assert_eq!(t.series[0].job, "serve-cluster0");
        assert_eq!(t.series[0].requests_per_min, vec![3.0, 4.0]);
        assert_eq!(t.series[1].requests_per_min, vec![5.0, 6.0]);
    }

    #[test]
    fn faro_jsonl_error_names_file_and_line() {
        let text = "{\"ts\": 0, \"counts\": {}}\n{\"ts\": 1, \"counts\": 7}\n";
        let e = read_trace_str(p("bad.json"), text, None).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("bad.json:2: "), "{msg}");
    }

    #[test]
    fn minute_csv_with_days_and_extra_columns() {
        let text =
            "job,source,day,minute,requests\n0,a,1,0,10\n0,a,1,1,11\n0,a,2,0,20\n1,b,1,0,5\n";
        let t = read_trace_str(p("t.csv"), text, None).unwrap();
        let got: Vec<(String, Option<u32>, Vec<f64>)> = t
            .series
            .iter()
            .map(|s| (s.job.clone(), s.day, s.requests_per_min.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("0".into(), Some(1), vec![10.0, 11.0]),
                ("0".into(), Some(2), vec![20.0]),
                ("1".into(), Some(1), vec![5.0]),
            ]
        );
    }

    #[test]
    fn minute_csv_errors() {
        let e = read_trace_str(p("t.csv"), "job,minute,requests\n0,0,5\n0,1,-3\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.csv:3: ") && e.contains("requests"), "{e}");
        let e = read_trace_str(p("t.csv"), "job,minute\n0,0\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `requests` column"), "{e}");
        let e = read_trace_str(p("t.csv"), "job,minute,requests\n0,0,5\n0,0,6\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.csv:3: ") && e.contains("twice"), "{e}");
        let e = read_trace_str(p("t.csv"), "job,minute,requests\n0,x,5\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.csv:2: ") && e.contains("minute"), "{e}");
    }

    #[test]
    fn azure_functions_file() {
        let mut header = String::from("HashOwner,HashApp,HashFunction,Trigger");
        for m in 1..=4 {
            header.push_str(&format!(",{m}"));
        }
        let text = format!("{header}\no1,a1,f1,http,1,2,3,4\no1,a1,f2,timer,0,0,9,0\n");
        let t = read_trace_str(p("invocations_per_function_md.anon.d03.csv"), &text, None).unwrap();
        assert_eq!(t.series.len(), 2);
        assert_eq!(t.series[0].day, Some(3));
        assert_eq!(t.series[0].job, "f1");
        assert_eq!(t.series[1].requests_per_min, vec![0.0, 0.0, 9.0, 0.0]);
        let bad = format!("{header}\no1,a1,f1,http,1,2,x,4\n");
        let e = read_trace_str(p("d01.csv"), &bad, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("d01.csv:2: ") && e.contains("minute 3"),
            "{e}"
        );
    }
}
