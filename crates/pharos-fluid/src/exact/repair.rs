//! Repairing a collision: the new base sequences that continue the homotopy (SCLP
//! pivots through the neighbouring bases, short searched paths), kept to back up to.

use super::*;

/// The other valid repairs of a collision, kept to back up to.
pub(super) struct Choice {
    pub(super) t: f64,
    /// The sequence before the repair, and its collision.
    pub(super) before: Plan,
    pub(super) what: Event,
    pub(super) options: Vec<Plan>,
    /// Whether the wide search has been done.
    pub(super) widened: bool,
    pub(super) seen: FastSet<Vec<Vec<usize>>>,
    pub(super) stuck: usize,
}

pub(super) fn signature(plan: &Plan) -> Vec<Vec<usize>> {
    plan.bases.iter().map(|b| b.basis.clone()).collect()
}

/// The valid repairs of a collision at horizon t, less those already met at t, the one
/// that goes furthest first.
pub(super) fn repair(
    ctx: &Ctx,
    plan: &Plan,
    t: f64,
    what: Event,
    seen: &FastSet<Vec<Vec<usize>>>,
    wide_only: bool,
) -> Result<Vec<Plan>, FluidError> {
    let bases = &plan.bases;
    let n = bases.len();
    let mut cands: Vec<Vec<Rc<Rates>>> = Vec::new();
    let with = |at: usize, remove: usize, insert: Vec<Rc<Rates>>| {
        let mut v = bases[..at].to_vec();
        v.extend(insert);
        v.extend_from_slice(&bases[at + remove..]);
        v
    };
    match what {
        Event::Time(q) => {
            if n > 1 && (q == 0 || q + 1 == n) {
                cands.push(with(q, 1, vec![]));
            } else if n > 2 {
                let (l, r) = (&bases[q - 1], &bases[q + 1]);
                let outs: Vec<usize> = l.basis.iter().copied().filter(|&c| !r.basic[c]).collect();
                let inns: Vec<usize> = r.basis.iter().copied().filter(|&c| !l.basic[c]).collect();
                match outs.len() {
                    0 => cands.push(with(q, 2, vec![])),
                    1 => cands.push(with(q, 1, vec![])),
                    _ => {
                        for &o in &outs {
                            for &i in &inns {
                                let b = Ctx::swap(&l.basis, o, i);
                                if b != bases[q].basis
                                    && let Some(r) = ctx.rates(b)
                                {
                                    cands.push(with(q, 1, vec![r]));
                                }
                            }
                        }
                    }
                }
            }
        }
        Event::State(c, q) if q == n => {
            let last = &bases[n - 1];
            for b in neighbours_out(ctx, last, c) {
                let mut v = bases.clone();
                v.push(b);
                cands.push(v);
            }
        }
        Event::State(c, q) => {
            let (l, r) = (&bases[q - 1], &bases[q]);
            if let Some((_, inn)) = pivot(l, r)
                && let Some(b) = ctx.rates(Ctx::swap(&l.basis, c, inn))
            {
                cands.push(with(q, 0, vec![b]));
            }
        }
        Event::Dual(c, 0) => {
            for b in neighbours_in(ctx, &bases[0], c) {
                let mut v = vec![b];
                v.extend(bases.iter().cloned());
                cands.push(v);
            }
        }
        Event::Dual(c, q) => {
            let (l, r) = (&bases[q - 1], &bases[q]);
            if let Some((out, _)) = pivot(l, r)
                && let Some(b) = ctx.rates(Ctx::swap(&l.basis, out, c))
            {
                cands.push(with(q, 0, vec![b]));
            }
        }
    }
    if wide_only {
        cands = sclp_pivot(ctx, plan, t, what, true);
    } else {
        cands.extend(sclp_pivot(ctx, plan, t, what, false));
    }
    let mut valid: Vec<(f64, Plan)> = Vec::new();
    let mut wide = wide_only;
    // Sequences already evaluated: the same sequence gives the same plan, so it is
    // solved once (paths joined different ways often meet in one sequence).
    let mut tried: FastSet<Vec<Vec<usize>>> = FastSet::default();
    loop {
        for bases in std::mem::take(&mut cands) {
            if bases.windows(2).any(|w| w[0].basis == w[1].basis) {
                continue;
            }
            let sig: Vec<Vec<usize>> = bases.iter().map(|b| b.basis.clone()).collect();
            let met = seen.contains(&sig);
            if !tried.insert(sig) {
                continue;
            }
            let Some(plan) = Plan::new(ctx, bases) else {
                continue;
            };
            let look = plan.look(ctx, t);
            if look.worst < -1e-7 || (met && look.next <= t * (1.0 + 1e-12) + 1e-14) {
                continue;
            }
            valid.push((look.next, plan));
        }
        // None: search again over the columns the sequence pivots on near the point.
        if !valid.is_empty() || wide {
            break;
        }
        wide = true;
        cands = sclp_pivot(ctx, plan, t, what, true);
    }
    // The furthest first; a stable sort keeps the order of generation among ties.
    valid.sort_by(|a, b| b.0.total_cmp(&a.0));
    if !valid.is_empty() {
        return Ok(valid.into_iter().map(|(_, p)| p).collect());
    }
    Err(FluidError::Solver(format!(
        "at T = {t} no repair of the collision {what:?} (of {n} intervals) was found: this \
             solver joins a collision's neighbours by short pivot paths only, without Weiss's \
             recursive sub-problems or impulse controls at the boundaries"
    )))
}

/// Bases one pivot from `b` in which state column `c` leaves, valid on their own.
pub(super) fn neighbours_out(ctx: &Ctx, b: &Rates, c: usize) -> Vec<Rc<Rates>> {
    let Some(lu) = ctx.factor(&b.basis) else {
        return Vec::new();
    };
    let pos = b.basis.iter().position(|&x| x == c).expect("c is basic");
    let mut e = vec![0.0; ctx.m];
    e[pos] = 1.0;
    let z = lu.solve_t(&e);
    let mut out = Vec::new();
    for w in 0..ctx.ncol {
        if b.basic[w] {
            continue;
        }
        let row = ctx.dot_col(w, &z);
        if row.abs() <= 1e-9 {
            continue;
        }
        // Dual controls after the pivot must stay >= 0 (c itself among them).
        let ratio = b.dual[w] / row;
        if -ratio < -ctx.tol {
            continue;
        }
        let ok = (ctx.j..ctx.j + ctx.k)
            .all(|s| s == w || b.basic[s] || b.dual[s] - ratio * ctx.dot_col(s, &z) >= -ctx.tol);
        // At T: a control whose dual state ends positive cannot enter, and a dual state
        // that ends at 0 cannot start falling (loose checks).
        let loose = 10.0 * ctx.tol;
        let at_end_ok = (ctx.is_state(w) || ctx.qn[w] <= ctx.tol)
            && (0..ctx.ncol).all(|u| {
                u == w
                    || ctx.is_state(u)
                    || b.basic[u]
                    || ctx.qn[u] > ctx.tol
                    || b.dual[u] - ratio * ctx.dot_col(u, &z) >= -loose
            });
        if !ok || !at_end_ok {
            continue;
        }
        // Controls after the pivot must stay >= 0 too (a loose check; the factorised
        // rates decide).
        let mut a = vec![0.0; ctx.m];
        for &(r, v) in &ctx.cols[w] {
            a[r] = v;
        }
        let col = lu.solve(&a);
        let theta = b.prim[c] / col[pos];
        let primal_ok = (ctx.is_state(w) || theta >= -loose)
            && b.basis
                .iter()
                .enumerate()
                .all(|(p2, &x)| x == c || ctx.is_state(x) || b.prim[x] - theta * col[p2] >= -loose);
        if primal_ok && let Some(r) = ctx.rates(Ctx::swap(&b.basis, c, w)) {
            out.push(r);
        }
    }
    out
}

/// Bases one pivot from `b` in which control column `c` enters, valid on their own.
pub(super) fn neighbours_in(ctx: &Ctx, b: &Rates, c: usize) -> Vec<Rc<Rates>> {
    let Some(lu) = ctx.factor(&b.basis) else {
        return Vec::new();
    };
    let mut a = vec![0.0; ctx.m];
    for &(r, v) in &ctx.cols[c] {
        a[r] = v;
    }
    let col = lu.solve(&a);
    let mut out = Vec::new();
    for (pos, &v) in b.basis.iter().enumerate() {
        if col[pos].abs() <= 1e-9 {
            continue;
        }
        let theta = b.prim[v] / col[pos];
        if theta < -ctx.tol {
            continue;
        }
        let ok =
            b.basis.iter().enumerate().all(|(p2, &x)| {
                x == v || ctx.is_state(x) || b.prim[x] - theta * col[p2] >= -ctx.tol
            });
        if ok && let Some(r) = ctx.rates(Ctx::swap(&b.basis, v, c)) {
            out.push(r);
        }
    }
    out
}

/// Weiss's SCLP pivot: at the collision point, the states and dual states that are
/// positive there fix the sign restrictions of a rates LP (a positive state's rate is
/// free, a control whose dual state is positive is 0); its optimal basis D is the new
/// basis at the point. The simplex paths from the neighbouring bases to D join them to
/// it. Candidates only: the caller checks them.
pub(super) fn sclp_pivot(
    ctx: &Ctx,
    plan: &Plan,
    t: f64,
    what: Event,
    wide: bool,
) -> Vec<Vec<Rc<Rates>>> {
    let bases = &plan.bases;
    let n = bases.len();
    // (left neighbour, right neighbour, breakpoint of the collision point).
    let (mut left, mut right, bp) = match what {
        Event::Time(q) => (q.checked_sub(1), (q + 1 < n).then_some(q + 1), q),
        Event::State(_, q) | Event::Dual(_, q) => (q.checked_sub(1), (q < n).then_some(q), q),
    };
    // Intervals of zero length next to the point collide with it: the repair spans them.
    let taus = plan.taus(t);
    let zero = 1e-9 * t.max(1.0);
    while let Some(r) = right
        && taus[r] <= zero
    {
        right = (r + 1 < n).then_some(r + 1);
    }
    while let Some(l) = left
        && taus[l] <= zero
    {
        left = l.checked_sub(1);
    }
    let (x, q) = levels_at(ctx, plan, t, bp);
    let free: Vec<bool> = (0..ctx.ncol)
        .map(|c| ctx.is_state(c) && x[c] > ctx.tol * (1.0 + t))
        .collect();
    let fixed: Vec<bool> = (0..ctx.ncol)
        .map(|c| !ctx.is_state(c) && q[c] > ctx.tol * (1.0 + t))
        .collect();
    let path_l = left.and_then(|l| rates_lp(ctx, &bases[l].basis, &free, &fixed));
    let path_r = right.and_then(|r| rates_lp(ctx, &bases[r].basis, &free, &fixed));
    // The new basis at the point, and the ways to reach it from each side: the simplex
    // path itself and every path that changes one differing column at a time through
    // valid bases.
    let mut targets: Vec<Vec<usize>> = Vec::new();
    for p in [&path_l, &path_r].into_iter().flatten() {
        if let Some(t) = p.last()
            && !targets.contains(t)
        {
            targets.push(t.clone());
        }
    }
    // The columns in play: those that differ between the neighbours, the new bases and
    // the simplex paths, and the colliding one.
    let mut universe: Vec<usize> = Vec::new();
    let mut add = |b: &[usize], other: &[usize]| {
        for &c in b
            .iter()
            .filter(|c| !other.contains(c))
            .chain(other.iter().filter(|c| !b.contains(c)))
        {
            if !universe.contains(&c) {
                universe.push(c);
            }
        }
    };
    let anchor: Vec<usize> = left
        .or(right)
        .map(|i| bases[i].basis.clone())
        .or_else(|| targets.first().cloned())
        .unwrap_or_default();
    for p in [&path_l, &path_r].into_iter().flatten() {
        for b in p {
            add(b, &anchor);
        }
    }
    for i in [left, right].into_iter().flatten() {
        add(&bases[i].basis, &anchor);
    }
    if let Event::State(c, _) | Event::Dual(c, _) = what
        && !universe.contains(&c)
    {
        universe.push(c);
    }
    // Wide: also the pivots of the sequence near the point.
    let near = if wide {
        bases[bp.saturating_sub(3)..(bp + 3).min(n)].to_vec()
    } else {
        Vec::new()
    };
    for w in near.windows(2) {
        if let Some((o, i)) = pivot(&w[0], &w[1]) {
            for c in [o, i] {
                if !universe.contains(&c) {
                    universe.push(c);
                }
            }
        }
    }
    let universe: Vec<usize> = universe
        .into_iter()
        .filter(|&c| !free[c] && !fixed[c])
        .collect();
    let mut out = Vec::new();
    for target in &targets {
        join_at(
            ctx,
            plan,
            (left, right),
            (&path_l, &path_r),
            target,
            &universe,
            &mut out,
        );
    }
    // Both neighbours: also any short valid path from one to the other.
    if let (Some(l), Some(r)) = (left, right) {
        for path in search_paths(ctx, &bases[l].basis, &bases[r].basis, &universe, 5, 40) {
            let mut v: Vec<Rc<Rates>> = bases[..=l].to_vec();
            let ok = path[..path.len() - 1]
                .iter()
                .all(|b| match ctx.rates(b.clone()) {
                    Some(x) => {
                        v.push(x);
                        true
                    }
                    None => false,
                });
            if ok {
                v.extend_from_slice(&bases[r..]);
                out.push(v);
            }
        }
    }
    out
}

/// Valid paths of at most `max_len` pivots from `from` to `to` (sorted bases; `from`
/// excluded, `to` included) that only swap columns of `universe`, shortest first, at
/// most `limit` of them.
pub(super) fn search_paths(
    ctx: &Ctx,
    from: &[usize],
    to: &[usize],
    universe: &[usize],
    max_len: usize,
    limit: usize,
) -> Vec<Vec<Vec<usize>>> {
    let mut found: Vec<Vec<Vec<usize>>> = Vec::new();
    // Iterative deepening keeps the shortest paths first.
    let mut budget = 4000usize;
    for depth in 1..=max_len {
        let mut stack: Vec<(Vec<usize>, Vec<Vec<usize>>)> = vec![(from.to_vec(), Vec::new())];
        while let Some((cur, path)) = stack.pop() {
            let outs: Vec<usize> = cur
                .iter()
                .copied()
                .filter(|c| universe.contains(c))
                .collect();
            let inns: Vec<usize> = universe
                .iter()
                .copied()
                .filter(|c| cur.binary_search(c).is_err())
                .collect();
            // Columns still to change bound the pivots left.
            let differ = cur.iter().filter(|c| to.binary_search(c).is_err()).count();
            if differ > depth - path.len() {
                continue;
            }
            // The rates of the neighbours, from one factorisation, where they may be
            // stepped to (at the last pivot only the target counts).
            if path.len() + 1 < depth
                && let Some(r) = ctx.rates(cur.clone())
            {
                ctx.expand(&r, &outs, &inns);
            }
            for &o in &outs {
                for &i in &inns {
                    let next = Ctx::swap(&cur, o, i);
                    if next.as_slice() == to {
                        if path.len() + 1 == depth {
                            let mut p = path.clone();
                            p.push(next);
                            found.push(p);
                            if found.len() >= limit {
                                return found;
                            }
                        }
                        continue;
                    }
                    if path.len() + 1 >= depth
                        || next.as_slice() == from
                        || path.contains(&next)
                        || budget == 0
                    {
                        continue;
                    }
                    budget -= 1;
                    if ctx.rates(next.clone()).is_some() {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push((next, p));
                    }
                }
            }
        }
    }
    found
}

/// The rates LP max c'u with sign restrictions: states with `free` have a free rate
/// (and must be basic), other states a rate >= 0; controls with `fixed` are 0, the
/// others >= 0. Warm-started from `start` by the primal simplex when it is primal feasible and
/// by the dual simplex when it is dual feasible (None otherwise, or when unbounded or
/// infeasible). Returns the bases visited, `start` first and the optimum last.
pub(super) fn rates_lp(
    ctx: &Ctx,
    start: &[usize],
    free: &[bool],
    fixed: &[bool],
) -> Option<Vec<Vec<usize>>> {
    let (m, n) = (ctx.m, ctx.ncol);
    if start.iter().any(|&c| fixed[c]) || (0..n).any(|c| free[c] && !start.contains(&c)) {
        return None;
    }
    // The revised simplex: one factorisation per pivot, columns and rows on demand.
    let mut basis = start.to_vec();
    let mut is_basic = vec![false; n];
    basis.iter().for_each(|&c| is_basic[c] = true);
    let tol = ctx.tol;
    let mut path = vec![start.to_vec()];
    let mut a = vec![0.0; m];
    for iter in 0..20 * (m + n) {
        let bland = iter > 5 * (m + n);
        let lu = ctx.factor(&basis)?;
        let beta = lu.solve(&ctx.rhs);
        let cb: Vec<f64> = basis.iter().map(|&c| ctx.cost[c]).collect();
        let y = lu.solve_t(&cb);
        let d: Vec<f64> = (0..n)
            .map(|c| {
                if is_basic[c] {
                    0.0
                } else {
                    ctx.dot_col(c, &y) - ctx.cost[c]
                }
            })
            .collect();
        let primal_bad: Vec<usize> = (0..m)
            .filter(|&r| !free[basis[r]] && beta[r] < -tol)
            .collect();
        let dual_bad: Vec<usize> = (0..n)
            .filter(|&c| !is_basic[c] && !fixed[c] && d[c] < -tol)
            .collect();
        let (r, e) = match (primal_bad.is_empty(), dual_bad.is_empty()) {
            (true, true) => return Some(path),
            (true, false) => {
                let e = if bland {
                    dual_bad[0]
                } else {
                    *dual_bad.iter().min_by(|&&a, &&b| d[a].total_cmp(&d[b]))?
                };
                a.iter_mut().for_each(|v| *v = 0.0);
                for &(r, v) in &ctx.cols[e] {
                    a[r] = v;
                }
                let col = lu.solve(&a);
                let mut leave: Option<(usize, f64)> = None;
                for r in 0..m {
                    let v = col[r];
                    if free[basis[r]] || v <= 1e-11 {
                        continue;
                    }
                    let ratio = beta[r].max(0.0) / v;
                    if leave.is_none_or(|(lr, lv)| {
                        ratio < lv - 1e-12 || (ratio <= lv + 1e-12 && basis[r] < basis[lr])
                    }) {
                        leave = Some((r, ratio));
                    }
                }
                (leave?.0, e)
            }
            (false, true) => {
                let r = if bland {
                    *primal_bad.iter().min_by_key(|&&r| basis[r])?
                } else {
                    *primal_bad
                        .iter()
                        .min_by(|&&a, &&b| beta[a].total_cmp(&beta[b]))?
                };
                let mut unit = vec![0.0; m];
                unit[r] = 1.0;
                let z = lu.solve_t(&unit);
                let mut enter: Option<(usize, f64)> = None;
                for c in 0..n {
                    if is_basic[c] || fixed[c] {
                        continue;
                    }
                    let v = ctx.dot_col(c, &z);
                    if v >= -1e-11 {
                        continue;
                    }
                    let ratio = d[c].max(0.0) / -v;
                    if enter.is_none_or(|(ec, ev)| {
                        ratio < ev - 1e-12 || (ratio <= ev + 1e-12 && c < ec)
                    }) {
                        enter = Some((c, ratio));
                    }
                }
                (r, enter?.0)
            }
            (false, false) => return None,
        };
        is_basic[basis[r]] = false;
        is_basic[e] = true;
        basis[r] = e;
        let mut b = basis.clone();
        b.sort_unstable();
        path.push(b);
    }
    None
}

/// The candidate sequences that replace what lies between `left` and `right` (indices
/// of the plan's bases; None at the ends) by a path through `target`.
pub(super) fn join_at(
    ctx: &Ctx,
    plan: &Plan,
    (left, right): (Option<usize>, Option<usize>),
    (path_l, path_r): (&Option<Path>, &Option<Path>),
    target: &[usize],
    universe: &[usize],
    out: &mut Vec<Vec<Rc<Rates>>>,
) {
    let bases = &plan.bases;
    let n = bases.len();
    let prefix = left.map_or(0, |l| l + 1);
    let suffix = right.unwrap_or(n);
    let side = |from: Option<usize>, path: &Option<Vec<Vec<usize>>>| -> Vec<Vec<Vec<usize>>> {
        let Some(f) = from else {
            return vec![vec![target.to_vec()]];
        };
        let mut ways = Vec::new();
        if let Some(p) = path
            && p.last().map(Vec::as_slice) == Some(target)
        {
            ways.push(p[1..].to_vec());
        }
        for w in search_paths(ctx, &bases[f].basis, target, universe, 5, 12) {
            if !ways.contains(&w) {
                ways.push(w);
            }
        }
        ways
    };
    let lefts = side(left, path_l);
    let rights = side(right, path_r);
    for l in lefts.iter().take(12) {
        for r in rights.iter().take(12) {
            // l ends at the target; r runs from right's neighbour to the target.
            let mut middle: Vec<Vec<usize>> = l.clone();
            if right.is_some() {
                middle.extend(r.iter().rev().skip(1).cloned());
            } else if left.is_none() {
                middle = r.clone();
            }
            let mut v: Vec<Rc<Rates>> = bases[..prefix].to_vec();
            let mut ok = true;
            for b in middle {
                if v.last().is_some_and(|x| x.basis == b) {
                    continue;
                }
                match ctx.rates(b) {
                    Some(r) => v.push(r),
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            for b in &bases[suffix..] {
                if v.last().is_none_or(|x| x.basis != b.basis) {
                    v.push(b.clone());
                }
            }
            if ok {
                out.push(v);
            }
        }
    }
}
