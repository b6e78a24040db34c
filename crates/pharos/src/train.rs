//! `pharos train ...`: training jobs from the command line.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::client::*;
use anyhow::{Context, Result};

#[derive(clap::Subcommand)]
pub enum TrainCommand {
    /// Submit a training job: a manifest and, optionally, a model directory (uploaded
    /// as a tar archive; the learners find it in $MODEL_DIR).
    Submit {
        manifest: PathBuf,
        model_dir: Option<PathBuf>,
        /// Makes retries safe: a second submission with the same key returns the first
        /// job.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List jobs.
    List {
        /// Only jobs in this state (e.g. QUEUED).
        #[arg(long)]
        state: Option<String>,
        /// At most this many jobs (one page when at most 1000); all by default.
        #[arg(long)]
        limit: Option<usize>,
        /// Jobs after this one (a job id: `training-N` or N), to go on from a page.
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        json: bool,
        /// Print the list again whenever it changes.
        #[arg(long, short)]
        watch: bool,
    },
    /// A job's status, history and why it waits.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// A learner's log lines.
    Logs {
        id: String,
        #[arg(long, default_value_t = 1)]
        learner: u32,
        /// Keep printing new lines until the job ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Evaluation metrics extracted from the logs.
    Metrics {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// A job's events (restarts, preemptions, halts).
    Events { id: String },
    /// Stop a job; its learners are stopped and its logs and results stored.
    Halt { id: String },
    /// Re-queue a halted job; its learners start from the latest checkpoint.
    Resume { id: String },
    /// Halt (if needed) and delete a job and its files.
    Delete { id: String },
}

pub fn train(cmd: TrainCommand, conn: &Conn) -> Result<()> {
    let c = Client::new(conn);
    match cmd {
        TrainCommand::Submit {
            manifest,
            model_dir,
            idempotency_key,
            json,
        } => submit(
            &c,
            &manifest,
            model_dir.as_deref(),
            idempotency_key.as_deref(),
            json,
        ),
        TrainCommand::List {
            state,
            limit,
            after,
            json,
            watch,
        } => {
            let after = match after {
                Some(a) => a
                    .trim_start_matches("training-")
                    .parse::<i64>()
                    .map_err(|_| {
                        anyhow::anyhow!("--after: a job id (training-N or N), got {a:?}")
                    })?,
                None => 0,
            };
            if limit == Some(0) {
                anyhow::bail!("--limit: at least 1");
            }
            let page = Page { limit, after };
            if watch {
                return crate::client::watch(|| list(&c, state.as_deref(), page, json));
            }
            print!("{}", list(&c, state.as_deref(), page, json)?);
            Ok(())
        }
        TrainCommand::Show { id, json } => show(&c, &id, json),
        TrainCommand::Logs {
            id,
            learner,
            follow,
        } => logs(&c, &id, learner, follow),
        TrainCommand::Metrics { id, json } => metrics(&c, &id, json),
        TrainCommand::Events { id } => events(&c, &id),
        TrainCommand::Halt { id } => halt(&c, &id),
        TrainCommand::Resume { id } => resume(&c, &id),
        TrainCommand::Delete { id } => delete(&c, &id),
    }
}

fn submit(
    c: &Client,
    manifest: &Path,
    model_dir: Option<&Path>,
    idempotency_key: Option<&str>,
    json: bool,
) -> Result<()> {
    let text =
        std::fs::read(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    // Checked here first, so that an error names the file, the line and the field.
    let name = manifest.display().to_string();
    let m: pharos_server::Manifest =
        pharos_engine::yaml::parse(&String::from_utf8_lossy(&text), &name)?;
    m.validate().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let auth = c.auth()?;
    // A key of its own when none is given, so that a submission sent again to another
    // server (the first did not answer) is stored once.
    let key = idempotency_key.map(str::to_string).unwrap_or_else(|| {
        use rand::RngExt;
        format!("cli-{:032x}", rand::rng().random::<u128>())
    });
    let (ct, body) = match &model_dir {
        Some(dir) => {
            let archive = tar_dir(dir)?;
            let (ct, body) = multipart(&text, &archive);
            (ct, body)
        }
        None => ("application/yaml".to_string(), text.clone()),
    };
    let resp = c.call(|base| {
        c.agent
            .post(format!("{base}/v1/models"))
            .header("Authorization", &auth)
            .header("Idempotency-Key", &key)
            .content_type(&ct)
            .send(&body[..])
    })?;
    let v = c.check(resp)?;
    if json {
        println!("{v}");
    } else {
        println!(
            "{} {}",
            v["model_id"].as_str().unwrap_or("?"),
            v["state"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// Which jobs a list shows: at most `limit` (all when None) after job `after`.
#[derive(Clone, Copy)]
struct Page {
    limit: Option<usize>,
    after: i64,
}

fn list(c: &Client, state: Option<&str>, page: Page, json: bool) -> Result<String> {
    let mut o = String::new();
    // Page by page, in id order, until the limit.
    let mut models = Vec::new();
    let mut after = page.after;
    let next = loop {
        let want = page
            .limit
            .map_or(1000, |l| l.saturating_sub(models.len()).clamp(1, 1000));
        let path = match &state {
            Some(s) => format!("/v1/models?state={s}&after={after}&limit={want}"),
            None => format!("/v1/models?after={after}&limit={want}"),
        };
        let got = c.get(&path)?;
        models.extend(got["models"].as_array().cloned().unwrap_or_default());
        match got["next_after"].as_i64() {
            Some(n) if page.limit.is_none_or(|l| models.len() < l) => after = n,
            next => break next,
        }
    };
    let v = serde_json::json!({ "models": models });
    if json {
        wln!(o, "{}", serde_json::to_string_pretty(&v["models"])?);
        return Ok(o);
    }
    wln!(
        o,
        "{:<14} {:<24} {:<11} {:<10} {:>8} {:>8}  MESSAGE",
        "ID",
        "NAME",
        "STATE",
        "QUEUE",
        "LEARNERS",
        "RESTARTS"
    );
    for j in v["models"].as_array().into_iter().flatten() {
        let why = j["wait_reason"]
            .as_str()
            .map(|r| format!("waiting: {r}"))
            .unwrap_or_else(|| j["message"].as_str().unwrap_or("").to_string());
        wln!(
            o,
            "{:<14} {:<24} {:<11} {:<10} {:>8} {:>8}  {}",
            j["model_id"].as_str().unwrap_or(""),
            j["name"].as_str().unwrap_or(""),
            j["state"].as_str().unwrap_or(""),
            j["queue"].as_str().unwrap_or(""),
            j["learners"].to_string(),
            j["restarts"].to_string(),
            why
        );
    }
    if let (Some(n), Some(_)) = (next, page.limit) {
        wln!(o, "(more: --after training-{n})");
    }
    Ok(o)
}

fn show(c: &Client, id: &str, json: bool) -> Result<()> {
    let v = c.get(&id_path(id))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} ({})",
        v["model_id"].as_str().unwrap_or(""),
        v["name"].as_str().unwrap_or("")
    );
    println!("  state:     {}", v["state"].as_str().unwrap_or(""));
    if let Some(code) = v["error_code"].as_str() {
        let meaning = pharos_server::ErrorCode::parse(code).map_or("", |c| c.describe());
        println!("  error:     {code} ({meaning}; docs/errors.md)");
    }
    println!("  message:   {}", v["message"].as_str().unwrap_or(""));
    println!(
        "  queue:     {} (priority {})",
        v["queue"].as_str().unwrap_or(""),
        v["priority"]
    );
    if let Some(p) = v["queue_position"].as_i64() {
        println!("  position:  {p}");
    }
    if let Some(r) = v["wait_reason"].as_str() {
        println!("  waiting:   {r}");
    }
    println!(
        "  learners:  {}  attempt {}  restarts {}",
        v["learners"], v["attempt"], v["restarts"]
    );
    println!(
        "  results:   {}",
        v["directories"]["results"].as_str().unwrap_or("")
    );
    println!("  conditions:");
    let mut lines = String::new();
    crate::services::conditions(&mut lines, &v["conditions"], "    ", 10);
    print!("{lines}");
    println!("  history:");
    for h in v["status_history"].as_array().into_iter().flatten() {
        println!(
            "    {}  {:<11} {}{}",
            ms(&h["time_ms"]),
            h["state"].as_str().unwrap_or(""),
            h["message"].as_str().unwrap_or(""),
            h["error_code"]
                .as_str()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn logs(c: &Client, id: &str, learner: u32, follow: bool) -> Result<()> {
    if follow {
        let resp = c.get_response(&format!(
            "{}/logs?learner={learner}&follow=true",
            id_path(id)
        ))?;
        if !resp.status().is_success() {
            c.check(resp)?;
            return Ok(());
        }
        let mut reader = resp.into_body().into_reader();
        let mut out = std::io::stdout().lock();
        let mut buf = [0u8; 8192];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            out.flush()?;
        }
        return Ok(());
    }
    let mut offset = 0;
    loop {
        let v = c.get(&format!(
            "{}/logs?learner={learner}&offset={offset}&limit=5000",
            id_path(id)
        ))?;
        let lines = v["lines"].as_array().cloned().unwrap_or_default();
        for l in &lines {
            println!("{}", l.as_str().unwrap_or(""));
        }
        if lines.is_empty() {
            break;
        }
        offset = v["next_offset"].as_u64().unwrap_or(0) as usize;
    }
    Ok(())
}

fn metrics(c: &Client, id: &str, json: bool) -> Result<()> {
    let v = c.get(&format!("{}/metrics", id_path(id)))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let points = v["points"].as_array().cloned().unwrap_or_default();
    let mut names: Vec<String> = points
        .iter()
        .flat_map(|p| {
            p["values"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k.clone())
        })
        .collect();
    names.sort();
    names.dedup();
    // The step first, where there is one.
    if let Some(i) = names.iter().position(|n| n == "step") {
        let step = names.remove(i);
        names.insert(0, step);
    }
    let mut head = format!("{:>7} {:>7} {:>7}", "ATTEMPT", "LEARNER", "LINE");
    for n in &names {
        head.push_str(&format!(" {:>12}", n.to_uppercase()));
    }
    println!("{head}");
    for p in &points {
        let mut row = format!(
            "{:>7} {:>7} {:>7}",
            p["attempt"]
                .as_u64()
                .map_or("-".to_string(), |a| a.to_string()),
            p["learner"],
            p["line"]
        );
        for n in &names {
            let cell = p["values"][n.as_str()]
                .as_f64()
                .map_or("-".to_string(), crate::services::fmt_num);
            row.push_str(&format!(" {cell:>12}"));
        }
        println!("{row}");
    }
    if v["truncated"] == true {
        println!(
            "(the latest {} of {} points)",
            points.len(),
            v["total_points"]
        );
    }
    Ok(())
}

fn events(c: &Client, id: &str) -> Result<()> {
    let v = c.get(&format!("{}/events", id_path(id)))?;
    for e in v["events"].as_array().into_iter().flatten() {
        println!(
            "{}  {:<15} {}",
            ms(&e["time_ms"]),
            e["kind"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn halt(c: &Client, id: &str) -> Result<()> {
    let v = c.send_json(
        "PATCH",
        &id_path(id),
        &serde_json::json!({"status": "halt"}),
    )?;
    println!("{} halting", v["model_id"].as_str().unwrap_or(id));
    Ok(())
}

fn resume(c: &Client, id: &str) -> Result<()> {
    let v = c.send_json(
        "PATCH",
        &id_path(id),
        &serde_json::json!({"status": "resume"}),
    )?;
    println!(
        "{} {}",
        v["model_id"].as_str().unwrap_or(id),
        v["state"].as_str().unwrap_or("")
    );
    Ok(())
}

fn delete(c: &Client, id: &str) -> Result<()> {
    c.delete(&id_path(id))?;
    println!("{id} deleting");
    Ok(())
}
