//! Global models: one model per horizon step, trained across all jobs and days.
//!
//! Features of an origin (a history of n minutes) for the target minute n + h, all
//! divided by the job's level s (the mean of its last 15 minutes, plus 1) so that jobs
//! of every size share one model:
//! - the last 15 minutes;
//! - the target minute, its neighbours and the origin minute one day earlier, the
//!   previous day's mean over the same 15 minutes, and the target minute two days
//!   earlier (filled with the current level, and flagged, where the history is shorter);
//! - the time of day of the target (two harmonics), ln s, and a constant.
//!
//! The target is the count divided by s, and every sample weighs s^2, so the training
//! loss is the squared error in requests per minute - what RMSE measures.
//!
//! [`GlobalLinear`] is weighted ridge regression on these features; [`GlobalGbm`] adds
//! gradient-boosted regression trees (histogram splits, depth-limited, shrinkage) fitted
//! to the ridge model's residuals. Both are deterministic: where a step has more than
//! `max_samples` training origins (100,000 by default), every k-th origin is taken, k
//! the smallest stride that fits, counted across jobs and days so that the kept
//! origins move through the time of day.
//! Histories shorter than 2 minutes hold the last value.

use crate::{ForecastError, Forecaster, TrainSet, check_input, flat_quantiles};

/// Minutes of lags (and of the level).
const LAGS: usize = 15;
/// Days averaged into the seasonal profile.
const PROFILE_DAYS: usize = 7;
/// Features per sample.
const FEATURES: usize = LAGS + 17;

/// The features of target step `h` (0-based) after `y`; returns the scale s.
fn features(y: &[f64], h: usize, day: usize, out: &mut [f64; FEATURES]) -> f64 {
    let n = y.len();
    let w = LAGS.min(n);
    let level = y[n - w..].iter().sum::<f64>() / w as f64;
    let s = level + 1.0;
    for k in 0..LAGS {
        out[k] = y[n.saturating_sub(k + 1).min(n - 1)] / s;
    }
    let t = n + h;
    let back = |t: usize, days: usize| -> Option<f64> {
        let b = days * day;
        (t >= b && t - b < n).then(|| y[t - b])
    };
    // The mean of the `w` minutes before the origin, `days` days earlier.
    let level_back = |days: usize| -> Option<f64> {
        let b = days * day;
        (n >= b + w).then(|| y[n - w - b..n - b].iter().sum::<f64>() / w as f64)
    };
    let ratio = |today: f64, before: f64| ((today + 1.0) / (before + 1.0)).clamp(0.25, 4.0);
    let mut i = LAGS;
    match (back(t, 1), back(n - 1, 1), level_back(1)) {
        (Some(target), Some(origin), Some(prev_level)) => {
            out[i] = target / s;
            out[i + 1] = back(t.saturating_sub(1), 1).unwrap_or(target) / s;
            out[i + 2] = back(t + 1, 1).unwrap_or(target) / s;
            out[i + 3] = origin / s;
            out[i + 4] = (prev_level + 1.0) / s;
            out[i + 5] = back(t, 2).unwrap_or(target) / s;
            // The previous day scaled to today's level.
            out[i + 6] = target * ratio(level, prev_level) / s;
            out[i + 7] = 1.0;
        }
        _ => {
            let l = level / s;
            out[i..i + 7].fill(l);
            out[i + 7] = 0.0;
        }
    }
    i += 8;
    // The seasonal profile: the same minute averaged over up to a week of days, and
    // scaled to today's level.
    let (mut sum_t, mut sum_l, mut k) = (0.0, 0.0, 0usize);
    for d in 1..=PROFILE_DAYS {
        if let (Some(v), Some(l)) = (back(t, d), level_back(d)) {
            sum_t += v;
            sum_l += l;
            k += 1;
        }
    }
    if k > 0 {
        let (pt, pl) = (sum_t / k as f64, sum_l / k as f64);
        out[i] = pt / s;
        out[i + 1] = pt * ratio(level, pl) / s;
        out[i + 2] = 1.0;
    } else {
        out[i] = level / s;
        out[i + 1] = level / s;
        out[i + 2] = 0.0;
    }
    i += 3;
    let phase = std::f64::consts::TAU * (t % day.max(1)) as f64 / day.max(1) as f64;
    out[i] = phase.sin();
    out[i + 1] = phase.cos();
    out[i + 2] = (2.0 * phase).sin();
    out[i + 3] = (2.0 * phase).cos();
    out[i + 4] = s.ln() / 8.0;
    out[i + 5] = 1.0;
    debug_assert_eq!(i + 6, FEATURES);
    s
}

/// Training samples of one step: features (row-major), normalised targets, weights.
pub(crate) struct Samples {
    pub(crate) x: Vec<[f64; FEATURES]>,
    pub(crate) y: Vec<f64>,
    pub(crate) w: Vec<f64>,
}

/// Each horizon step's samples, from step 0 up to `max_horizon` or the first step the
/// days are too short for (later steps then reuse the last model).
fn steps(
    train: &TrainSet,
    max_horizon: usize,
    context: usize,
    max_samples: usize,
) -> impl Iterator<Item = Samples> {
    (0..max_horizon)
        .map(move |h| samples(train, h, context, max_samples))
        .take_while(|s| !s.y.is_empty())
}

/// The default bound on a step's training samples.
const MAX_SAMPLES: usize = 100_000;

/// The ridge penalty of the global models (relative to the mean diagonal of the
/// normal equations).
const RIDGE_LAMBDA: f64 = 1e-4;

pub(crate) fn samples(train: &TrainSet, h: usize, context: usize, max_samples: usize) -> Samples {
    let day = train.day_minutes();
    let first = context.max(2);
    // The origins of step h in a day, and in all.
    let per_day = day.saturating_sub(first + h);
    let total: usize = train.jobs().iter().map(|s| s.len() / day * per_day).sum();
    let stride = total.div_ceil(max_samples.max(1)).max(1);
    let kept = total.div_ceil(stride);
    let mut out = Samples {
        x: Vec::with_capacity(kept),
        y: Vec::with_capacity(kept),
        w: Vec::with_capacity(kept),
    };
    let mut f = [0.0; FEATURES];
    let mut k = 0usize;
    for series in train.jobs() {
        for d in 0..series.len() / day {
            let start = d * day;
            for origin in (start + first)..(start + day) {
                if origin + h >= start + day {
                    break;
                }
                k += 1;
                if !(k - 1).is_multiple_of(stride) {
                    continue;
                }
                let s = features(&series[..origin], h, day, &mut f);
                out.x.push(f);
                out.y.push(series[origin + h] / s);
                out.w.push(s * s);
            }
        }
    }
    out
}

/// Solves (A + lambda I) x = b for symmetric positive semi-definite A by Cholesky.
fn ridge_solve(mut a: Vec<Vec<f64>>, b: Vec<f64>, lambda: f64) -> Option<Vec<f64>> {
    let n = b.len();
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += lambda;
    }
    // In place: a becomes L (lower).
    for j in 0..n {
        let mut d = a[j][j];
        for k in 0..j {
            d -= a[j][k] * a[j][k];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        a[j][j] = d;
        for i in j + 1..n {
            let mut v = a[i][j];
            for k in 0..j {
                v -= a[i][k] * a[j][k];
            }
            a[i][j] = v / d;
        }
    }
    let mut z = b;
    for i in 0..n {
        for k in 0..i {
            z[i] -= a[i][k] * z[k];
        }
        z[i] /= a[i][i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            z[i] -= a[k][i] * z[k];
        }
        z[i] /= a[i][i];
    }
    Some(z)
}

fn fit_ridge(s: &Samples, lambda_rel: f64) -> Result<Vec<f64>, ForecastError> {
    let mut a = vec![vec![0.0; FEATURES]; FEATURES];
    let mut b = vec![0.0; FEATURES];
    for ((x, y), w) in s.x.iter().zip(&s.y).zip(&s.w) {
        for i in 0..FEATURES {
            let wx = w * x[i];
            b[i] += wx * y;
            for j in 0..=i {
                a[i][j] += wx * x[j];
            }
        }
    }
    for i in 0..FEATURES {
        for j in 0..i {
            a[j][i] = a[i][j];
        }
    }
    let trace: f64 = (0..FEATURES).map(|i| a[i][i]).sum();
    let lambda = lambda_rel * trace / FEATURES as f64;
    ridge_solve(a, b, lambda.max(1e-9))
        .ok_or_else(|| ForecastError::Invalid("the ridge regression is singular".into()))
}

fn dot(w: &[f64], x: &[f64; FEATURES]) -> f64 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

/// Shared by both global models: the training window and the fallback.
fn predict_with(
    job: usize,
    history: &[f64],
    horizon: usize,
    qs: &[f64],
    day: usize,
    trained: usize,
    step: impl Fn(usize, &[f64; FEATURES]) -> f64,
) -> Result<Vec<Vec<f64>>, ForecastError> {
    let last = check_input(job, history, qs)?;
    if trained == 0 || history.len() < 2 {
        return Ok(flat_quantiles(vec![last; horizon], qs));
    }
    let mut f = [0.0; FEATURES];
    let point = (0..horizon)
        .map(|h| {
            let s = features(history, h, day, &mut f);
            (s * step(h.min(trained - 1), &f)).max(0.0)
        })
        .collect();
    Ok(flat_quantiles(point, qs))
}

/// Weighted ridge regression on the global features (see the module).
#[derive(Debug, Clone)]
pub struct GlobalLinear {
    pub max_horizon: usize,
    /// The first origin of a day used for training.
    pub context: usize,
    /// Ridge penalty relative to the mean diagonal of the normal equations.
    pub lambda: f64,
    /// The most training samples per step (see the module).
    pub max_samples: usize,
    day_minutes: usize,
    weights: Vec<Vec<f64>>,
}

impl Default for GlobalLinear {
    fn default() -> Self {
        Self {
            max_horizon: 8,
            context: 15,
            lambda: RIDGE_LAMBDA,
            max_samples: MAX_SAMPLES,
            day_minutes: 1440,
            weights: Vec::new(),
        }
    }
}

impl Forecaster for GlobalLinear {
    fn name(&self) -> &str {
        "global-linear"
    }
    fn fit(&mut self, train: &TrainSet) -> Result<(), ForecastError> {
        self.day_minutes = train.day_minutes();
        self.weights = steps(train, self.max_horizon, self.context, self.max_samples)
            .map(|s| fit_ridge(&s, self.lambda))
            .collect::<Result<_, _>>()?;
        Ok(())
    }
    fn save(&self) -> serde_json::Value {
        serde_json::json!({ "day_minutes": self.day_minutes, "weights": self.weights })
    }
    fn load(&mut self, state: &serde_json::Value) -> Result<(), ForecastError> {
        #[derive(serde::Deserialize)]
        struct S {
            day_minutes: usize,
            weights: Vec<Vec<f64>>,
        }
        let s: S = crate::state_of("global-linear", state)?;
        check_weights("global-linear", &s.weights)?;
        self.day_minutes = s.day_minutes.max(1);
        self.weights = s.weights;
        Ok(())
    }
    fn predict(
        &mut self,
        job: usize,
        history: &[f64],
        horizon: usize,
        qs: &[f64],
    ) -> Result<Vec<Vec<f64>>, ForecastError> {
        let w = &self.weights;
        predict_with(
            job,
            history,
            horizon,
            qs,
            self.day_minutes,
            w.len(),
            |h, f| dot(&w[h], f),
        )
    }
}

/// Every step's weights have one per feature (a state that would index out of bounds
/// is refused).
fn check_weights(model: &str, w: &[Vec<f64>]) -> Result<(), ForecastError> {
    match w.iter().find(|v| v.len() != FEATURES) {
        Some(v) => Err(ForecastError::Invalid(format!(
            "{model}: a saved state with {} weights where there are {FEATURES} features",
            v.len()
        ))),
        None => Ok(()),
    }
}

/// A regression tree over binned features; leaves hold values.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Node {
    Leaf(f64),
    Split {
        feature: usize,
        /// Samples whose value is <= threshold go left.
        threshold: f64,
        left: usize,
        right: usize,
    },
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// Every split names a feature and nodes that exist, further down the tree (a saved
    /// tree that would loop or index out of bounds is refused).
    fn check(&self) -> Result<(), ForecastError> {
        let n = self.nodes.len();
        let bad = |why: &str| {
            Err(ForecastError::Invalid(format!(
                "global-gbm: a saved tree {why}"
            )))
        };
        if n == 0 {
            return bad("is empty");
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if let Node::Split {
                feature,
                left,
                right,
                ..
            } = node
            {
                if *feature >= FEATURES {
                    return bad("splits on a feature that does not exist");
                }
                if *left <= i || *right <= i || *left >= n || *right >= n {
                    return bad("points outside itself or back up");
                }
            }
        }
        Ok(())
    }

    fn eval(&self, x: &[f64; FEATURES]) -> f64 {
        let mut i = 0;
        loop {
            match &self.nodes[i] {
                Node::Leaf(v) => return *v,
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => {
                    i = if x[*feature] <= *threshold {
                        *left
                    } else {
                        *right
                    }
                }
            }
        }
    }
}

const BINS: usize = 64;

/// Bin edges per feature (quantiles of the training values) and the binned samples.
struct Binned {
    edges: Vec<Vec<f64>>,
    /// bins[f][sample]
    bins: Vec<Vec<u8>>,
}

fn bin(x: &[[f64; FEATURES]]) -> Binned {
    let mut edges = Vec::with_capacity(FEATURES);
    let mut bins = Vec::with_capacity(FEATURES);
    for f in 0..FEATURES {
        let mut v: Vec<f64> = x.iter().map(|r| r[f]).collect();
        v.sort_by(f64::total_cmp);
        let mut e: Vec<f64> = (1..BINS).map(|k| v[(k * (v.len() - 1)) / BINS]).collect();
        e.dedup();
        // Bin b holds values in (e[b - 1], e[b]]; the last bin everything above.
        let b = x
            .iter()
            .map(|r| e.partition_point(|edge| *edge < r[f]) as u8)
            .collect();
        edges.push(e);
        bins.push(b);
    }
    Binned { edges, bins }
}

struct GbmParams {
    rounds: usize,
    depth: usize,
    learning_rate: f64,
    l2: f64,
    /// Minimum hessian (weight) per child, relative to the total.
    min_child: f64,
}

fn grow(data: &Binned, grad: &[f64], hess: &[f64], p: &GbmParams, min_hess: f64) -> Tree {
    let mut tree = Tree::default();
    let all: Vec<u32> = (0..grad.len() as u32).collect();
    // (node index, samples, depth)
    let mut stack = vec![(0usize, all, 0usize)];
    tree.nodes.push(Node::Leaf(0.0));
    let leaf_value = |idx: &[u32]| {
        let (g, h) = idx.iter().fold((0.0, 0.0), |(g, h), &i| {
            (g + grad[i as usize], h + hess[i as usize])
        });
        -g / (h + p.l2) * p.learning_rate
    };
    while let Some((node, idx, depth)) = stack.pop() {
        let (gt, ht) = idx.iter().fold((0.0, 0.0), |(g, h), &i| {
            (g + grad[i as usize], h + hess[i as usize])
        });
        let mut best: Option<(f64, usize, usize)> = None;
        if depth < p.depth && idx.len() >= 2 {
            let parent = gt * gt / (ht + p.l2);
            for f in 0..FEATURES {
                let nb = data.edges[f].len() + 1;
                let mut hg = [0.0f64; BINS + 1];
                let mut hh = [0.0f64; BINS + 1];
                let col = &data.bins[f];
                for &i in &idx {
                    let b = col[i as usize] as usize;
                    hg[b] += grad[i as usize];
                    hh[b] += hess[i as usize];
                }
                let (mut gl, mut hl) = (0.0, 0.0);
                for b in 0..nb - 1 {
                    gl += hg[b];
                    hl += hh[b];
                    let (gr, hr) = (gt - gl, ht - hl);
                    if hl < min_hess || hr < min_hess {
                        continue;
                    }
                    let gain = gl * gl / (hl + p.l2) + gr * gr / (hr + p.l2) - parent;
                    if gain > 1e-12 && best.is_none_or(|(g, _, _)| gain > g) {
                        best = Some((gain, f, b));
                    }
                }
            }
        }
        match best {
            None => tree.nodes[node] = Node::Leaf(leaf_value(&idx)),
            Some((_, f, b)) => {
                let (l, r): (Vec<u32>, Vec<u32>) = idx
                    .iter()
                    .partition(|&&i| (data.bins[f][i as usize] as usize) <= b);
                let (li, ri) = (tree.nodes.len(), tree.nodes.len() + 1);
                tree.nodes.push(Node::Leaf(0.0));
                tree.nodes.push(Node::Leaf(0.0));
                tree.nodes[node] = Node::Split {
                    feature: f,
                    threshold: data.edges[f][b],
                    left: li,
                    right: ri,
                };
                stack.push((ri, r, depth + 1));
                stack.push((li, l, depth + 1));
            }
        }
    }
    tree
}

/// Ridge regression plus gradient-boosted trees on its residuals (see the module).
#[derive(Debug, Clone)]
pub struct GlobalGbm {
    pub max_horizon: usize,
    pub context: usize,
    pub rounds: usize,
    pub depth: usize,
    pub learning_rate: f64,
    /// The most training samples per step (see the module).
    pub max_samples: usize,
    day_minutes: usize,
    linear: Vec<Vec<f64>>,
    trees: Vec<Vec<Tree>>,
}

impl Default for GlobalGbm {
    fn default() -> Self {
        Self {
            max_horizon: 8,
            context: 15,
            rounds: 60,
            depth: 4,
            learning_rate: 0.1,
            max_samples: MAX_SAMPLES,
            day_minutes: 1440,
            linear: Vec::new(),
            trees: Vec::new(),
        }
    }
}

impl Forecaster for GlobalGbm {
    fn name(&self) -> &str {
        "global-gbm"
    }
    fn fit(&mut self, train: &TrainSet) -> Result<(), ForecastError> {
        self.day_minutes = train.day_minutes();
        let p = GbmParams {
            rounds: self.rounds,
            depth: self.depth,
            learning_rate: self.learning_rate,
            l2: 1.0,
            min_child: 0.01,
        };
        self.linear.clear();
        self.trees.clear();
        for s in steps(train, self.max_horizon, self.context, self.max_samples) {
            let w = fit_ridge(&s, RIDGE_LAMBDA)?;
            let mut pred: Vec<f64> = s.x.iter().map(|x| dot(&w, x)).collect();
            let data = bin(&s.x);
            let total: f64 = s.w.iter().sum();
            let min_hess = p.min_child * total;
            let mut trees = Vec::with_capacity(p.rounds);
            let mut grad = vec![0.0; s.y.len()];
            for _ in 0..p.rounds {
                for i in 0..grad.len() {
                    grad[i] = s.w[i] * (pred[i] - s.y[i]);
                }
                let tree = grow(&data, &grad, &s.w, &p, min_hess);
                for (i, x) in s.x.iter().enumerate() {
                    pred[i] += tree.eval(x);
                }
                trees.push(tree);
            }
            self.linear.push(w);
            self.trees.push(trees);
        }
        Ok(())
    }
    fn save(&self) -> serde_json::Value {
        serde_json::json!({
            "day_minutes": self.day_minutes,
            "linear": self.linear,
            "trees": self.trees,
        })
    }
    fn load(&mut self, state: &serde_json::Value) -> Result<(), ForecastError> {
        #[derive(serde::Deserialize)]
        struct S {
            day_minutes: usize,
            linear: Vec<Vec<f64>>,
            trees: Vec<Vec<Tree>>,
        }
        let s: S = crate::state_of("global-gbm", state)?;
        check_weights("global-gbm", &s.linear)?;
        if s.trees.len() != s.linear.len() {
            return Err(ForecastError::Invalid(
                "global-gbm: a saved state with trees for another number of steps".into(),
            ));
        }
        s.trees.iter().flatten().try_for_each(Tree::check)?;
        self.day_minutes = s.day_minutes.max(1);
        self.linear = s.linear;
        self.trees = s.trees;
        Ok(())
    }
    fn predict(
        &mut self,
        job: usize,
        history: &[f64],
        horizon: usize,
        qs: &[f64],
    ) -> Result<Vec<Vec<f64>>, ForecastError> {
        let (lin, trees) = (&self.linear, &self.trees);
        predict_with(
            job,
            history,
            horizon,
            qs,
            self.day_minutes,
            lin.len(),
            |h, f| dot(&lin[h], f) + trees[h].iter().map(|t| t.eval(f)).sum::<f64>(),
        )
    }
}

/// The mean of several forecasters' medians (a point forecast), each fitted on the
/// same data.
#[derive(Clone)]
pub struct Mean {
    name: String,
    members: Vec<Box<dyn Forecaster>>,
}

impl Mean {
    pub fn new(name: &str, members: Vec<Box<dyn Forecaster>>) -> Self {
        Self {
            name: name.to_string(),
            members,
        }
    }
}

impl Forecaster for Mean {
    fn name(&self) -> &str {
        &self.name
    }
    fn fit(&mut self, train: &TrainSet) -> Result<(), ForecastError> {
        self.members.iter_mut().try_for_each(|m| m.fit(train))
    }
    fn save(&self) -> serde_json::Value {
        serde_json::Value::Array(self.members.iter().map(|m| m.save()).collect())
    }
    fn load(&mut self, state: &serde_json::Value) -> Result<(), ForecastError> {
        match state.as_array() {
            Some(v) if v.len() == self.members.len() => self
                .members
                .iter_mut()
                .zip(v)
                .try_for_each(|(m, s)| m.load(s)),
            _ => Err(ForecastError::Invalid(format!(
                "{}: a saved state that is not one per member",
                self.name
            ))),
        }
    }
    fn update(&mut self, job: usize, history: &[f64]) {
        self.members.iter_mut().for_each(|m| m.update(job, history));
    }
    fn predict(
        &mut self,
        job: usize,
        history: &[f64],
        horizon: usize,
        qs: &[f64],
    ) -> Result<Vec<Vec<f64>>, ForecastError> {
        check_input(job, history, qs)?;
        let mut point = vec![0.0; horizon];
        let k = self.members.len().max(1) as f64;
        for m in &mut self.members {
            let p = m.predict(job, history, horizon, &[0.5])?;
            for (a, b) in point.iter_mut().zip(&p[0]) {
                *a += b / k;
            }
        }
        Ok(flat_quantiles(point, qs))
    }
}
