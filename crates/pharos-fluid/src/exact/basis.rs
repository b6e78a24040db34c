//! The rates LP: the problem as it sees it ([`Ctx`]), the primal and dual rates of a
//! basis ([`Rates`], cached), one pivot between two bases, and the initial basis.

use super::*;

/// The primal and dual rates of one basis.
pub(super) struct Rates {
    /// Basic columns, sorted.
    pub(super) basis: Vec<usize>,
    pub(super) basic: Vec<bool>,
    /// Basic values (0 off the basis): controls u, s and state rates x'.
    pub(super) prim: Vec<f64>,
    /// Reduced costs (0 on the basis): dual controls p, dual-state rates q', r'.
    pub(super) dual: Vec<f64>,
}

/// The problem as the rates LP sees it.
pub(super) struct Ctx<'a> {
    pub(super) p: &'a Sclp,
    pub(super) k: usize,
    pub(super) j: usize,
    pub(super) m: usize,
    pub(super) ncol: usize,
    /// Column entries (row, value).
    pub(super) cols: Vec<Vec<(usize, f64)>>,
    pub(super) rhs: Vec<f64>,
    pub(super) cost: Vec<f64>,
    /// State levels at t = 0 (state columns; 0 elsewhere).
    pub(super) x0: Vec<f64>,
    /// Dual-state levels at t = T (control columns; 0 elsewhere).
    pub(super) qn: Vec<f64>,
    /// Tolerance on rates and levels.
    pub(super) tol: f64,
    pub(super) cache: RefCell<FastMap<Vec<usize>, Option<Rc<Rates>>>>,
    pub(super) factorisations: Cell<u64>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(p: &'a Sclp) -> Ctx<'a> {
        let (k, j, i) = (p.k(), p.j(), p.i());
        let m = k + i;
        let ncol = j + k + i;
        let mut cols = vec![Vec::new(); ncol];
        for (q, col) in cols.iter_mut().enumerate().take(j) {
            for r in 0..k {
                if p.g[r][q] != 0.0 {
                    col.push((r, p.g[r][q]));
                }
            }
            for r in 0..i {
                if p.h[r][q] != 0.0 {
                    col.push((k + r, p.h[r][q]));
                }
            }
        }
        for r in 0..m {
            cols[j + r].push((r, 1.0));
        }
        let rhs: Vec<f64> = p.a.iter().chain(&p.b).copied().collect();
        let mut cost = vec![0.0; ncol];
        cost[..j].copy_from_slice(&p.c);
        let mut x0 = vec![0.0; ncol];
        x0[j..j + k].copy_from_slice(&p.alpha);
        let mut qn = vec![0.0; ncol];
        for q in 0..j {
            qn[q] = -p.gamma[q];
        }
        let scale = p
            .alpha
            .iter()
            .chain(&p.a)
            .chain(&p.b)
            .chain(&p.c)
            .chain(&p.gamma)
            .fold(1.0f64, |s, v| s.max(v.abs()));
        Ctx {
            p,
            k,
            j,
            m,
            ncol,
            cols,
            rhs,
            cost,
            x0,
            qn,
            tol: 1e-9 * scale,
            cache: RefCell::new(FastMap::default()),
            factorisations: Cell::new(0),
        }
    }

    pub(super) fn is_state(&self, col: usize) -> bool {
        col >= self.j && col < self.j + self.k
    }

    pub(super) fn factor(&self, basis: &[usize]) -> Option<Lu> {
        let m = self.m;
        let mut b = vec![0.0; m * m];
        for (pos, &col) in basis.iter().enumerate() {
            for &(r, v) in &self.cols[col] {
                b[r * m + pos] = v;
            }
        }
        self.factorisations.set(self.factorisations.get() + 1);
        Lu::factor(b, m)
    }

    pub(super) fn dot_col(&self, col: usize, y: &[f64]) -> f64 {
        self.cols[col].iter().map(|&(r, v)| v * y[r]).sum()
    }

    /// The rates of `basis` (sorted) if it is a basis whose controls are >= 0 and whose
    /// dual controls are >= 0.
    pub(super) fn rates(&self, basis: Vec<usize>) -> Option<Rc<Rates>> {
        if let Some(hit) = self.cache.borrow().get(&basis) {
            return hit.clone();
        }
        let out = self.compute_rates(&basis).map(Rc::new);
        self.cache.borrow_mut().insert(basis, out.clone());
        out
    }

    pub(super) fn compute_rates(&self, basis: &[usize]) -> Option<Rates> {
        let lu = self.factor(basis)?;
        let xb = lu.solve(&self.rhs);
        let cb: Vec<f64> = basis.iter().map(|&c| self.cost[c]).collect();
        let y = lu.solve_t(&cb);
        let mut basic = vec![false; self.ncol];
        let mut prim = vec![0.0; self.ncol];
        for (pos, &c) in basis.iter().enumerate() {
            basic[c] = true;
            prim[c] = xb[pos];
        }
        let mut dual = vec![0.0; self.ncol];
        for c in 0..self.ncol {
            if !basic[c] {
                dual[c] = self.dot_col(c, &y) - self.cost[c];
            }
        }
        for c in 0..self.ncol {
            let bad = if self.is_state(c) {
                !basic[c] && dual[c] < -self.tol
            } else {
                basic[c] && prim[c] < -self.tol
            };
            if bad {
                return None;
            }
        }
        Some(Rates {
            basis: basis.to_vec(),
            basic,
            prim,
            dual,
        })
    }

    /// The rates of every basis one pivot from `b` (a column of `outs` for one of
    /// `inns`) into the cache, from one factorisation of `b`: the tableau column of each
    /// entering column and the tableau row of each leaving one give the pivot's new
    /// basic values and reduced costs.
    pub(super) fn expand(&self, b: &Rates, outs: &[usize], inns: &[usize]) {
        let todo: Vec<(usize, usize)> = outs
            .iter()
            .flat_map(|&o| inns.iter().map(move |&i| (o, i)))
            .filter(|&(o, i)| {
                !self
                    .cache
                    .borrow()
                    .contains_key(&Self::swap(&b.basis, o, i))
            })
            .collect();
        if todo.is_empty() {
            return;
        }
        let Some(lu) = self.factor(&b.basis) else {
            return;
        };
        let m = self.m;
        let mut cols: HashMap<usize, Vec<f64>> = HashMap::new();
        let mut rows: HashMap<usize, Vec<f64>> = HashMap::new();
        for (o, i) in todo {
            let pos = b.basis.binary_search(&o).expect("o is basic");
            let col = cols.entry(i).or_insert_with(|| {
                let mut a = vec![0.0; m];
                for &(r, v) in &self.cols[i] {
                    a[r] = v;
                }
                lu.solve(&a)
            });
            let piv = col[pos];
            let key = Self::swap(&b.basis, o, i);
            // A zero pivot: the swap's determinant is exactly zero (in a sparse basis,
            // most swaps are structurally singular), so it is not a basis. Near-singular
            // pivots are left to a fresh factorisation.
            if piv == 0.0 {
                self.cache.borrow_mut().insert(key, None);
                continue;
            }
            let size = col.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            if piv.abs() <= 1e-9 * size.max(1e-300) {
                continue;
            }
            add_work((self.m + self.k) as u64);
            let theta = b.prim[o] / piv;
            // Validity first, without building the rates (most neighbours are not
            // valid): the controls of the new basis >= 0, then the dual controls of
            // the states out of it >= 0.
            let tol = self.tol;
            let prim_ok = (self.is_state(i) || theta >= -tol)
                && b.basis.iter().enumerate().all(|(p2, &c)| {
                    c == o || self.is_state(c) || b.prim[c] - theta * col[p2] >= -tol
                });
            if !prim_ok {
                self.cache.borrow_mut().insert(key, None);
                continue;
            }
            let row = rows.entry(o).or_insert_with(|| {
                let mut e = vec![0.0; m];
                e[pos] = 1.0;
                let z = lu.solve_t(&e);
                (0..self.ncol)
                    .map(|c| {
                        if b.basic[c] {
                            f64::from(u8::from(c == o))
                        } else {
                            self.dot_col(c, &z)
                        }
                    })
                    .collect()
            });
            let f = b.dual[i] / piv;
            let dual_ok = (self.j..self.j + self.k)
                .all(|c| ((b.basic[c] && c != o) || c == i) || b.dual[c] - f * row[c] >= -tol);
            if !dual_ok {
                self.cache.borrow_mut().insert(key, None);
                continue;
            }
            let mut prim = vec![0.0; self.ncol];
            for (p2, &c) in b.basis.iter().enumerate() {
                if c != o {
                    prim[c] = b.prim[c] - theta * col[p2];
                }
            }
            prim[i] = theta;
            let mut basic = b.basic.clone();
            basic[o] = false;
            basic[i] = true;
            let dual: Vec<f64> = (0..self.ncol)
                .map(|c| {
                    if basic[c] {
                        0.0
                    } else {
                        b.dual[c] - f * row[c]
                    }
                })
                .collect();
            let r = Some(Rc::new(Rates {
                basis: key.clone(),
                basic,
                prim,
                dual,
            }));
            self.cache.borrow_mut().insert(key, r);
        }
    }

    /// `basis` (sorted) with `out` replaced by `inn`, sorted: one pass, no sort.
    pub(super) fn swap(basis: &[usize], out: usize, inn: usize) -> Vec<usize> {
        add_work(basis.len() as u64);
        let mut b = Vec::with_capacity(basis.len() + 1);
        let mut placed = false;
        for &c in basis {
            if c == out {
                continue;
            }
            if !placed && inn <= c {
                b.push(inn);
                placed = true;
            }
            b.push(c);
        }
        if !placed {
            b.push(inn);
        }
        b
    }
}

/// A fast hash for the bases the solver caches and compares (column indices it makes
/// itself, so hash flooding is not a concern): a multiply-rotate over 8-byte words.
#[derive(Default, Clone, Copy)]
pub(super) struct WordHasher(u64);

impl WordHasher {
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_usize(&mut self, x: usize) {
        self.add(x as u64);
    }
    fn write_u64(&mut self, x: u64) {
        self.add(x);
    }
    /// Mixed so that every bit of the result depends on every word (the table's bucket
    /// comes from the low bits, which the multiply alone leaves weak).
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

pub(super) type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<WordHasher>>;
pub(super) type FastSet<K> = HashSet<K, std::hash::BuildHasherDefault<WordHasher>>;

/// Bases one pivot apart, in order.
pub(super) type Path = Vec<Vec<usize>>;

/// The one column in `a` and not in `b`, when they are one pivot apart.
pub(super) fn pivot(a: &Rates, b: &Rates) -> Option<(usize, usize)> {
    let out: Vec<usize> = a.basis.iter().copied().filter(|&c| !b.basic[c]).collect();
    let inn: Vec<usize> = b.basis.iter().copied().filter(|&c| !a.basic[c]).collect();
    (out.len() == 1 && inn.len() == 1).then(|| (out[0], inn[0]))
}

/// The basis for T -> 0: optimal for max c'u over the rates LP with the boundary's sign
/// restrictions, by a dense primal simplex from the slack basis (Dantzig's rule, Bland's
/// after a run of degenerate pivots).
pub(super) fn initial_basis(ctx: &Ctx) -> Result<Vec<usize>, FluidError> {
    let (m, n) = (ctx.m, ctx.ncol);
    let unsupported = |why: String| Err(FluidError::Solver(why));
    // Free: states with alpha > 0 (never leave). Excluded: controls that cost at T.
    let free: Vec<bool> = (0..n)
        .map(|c| ctx.is_state(c) && ctx.x0[c] > ctx.tol)
        .collect();
    let allowed: Vec<bool> = (0..n)
        .map(|c| ctx.is_state(c) || ctx.qn[c] <= 0.0)
        .collect();
    let mut basis: Vec<usize> = (ctx.j..n).collect();
    let mut tab = vec![0.0; m * n];
    for (c, col) in ctx.cols.iter().enumerate() {
        for &(r, v) in col {
            tab[r * n + c] = v;
        }
    }
    let mut beta = ctx.rhs.clone();
    for r in 0..m {
        if !free[basis[r]] && beta[r] < -ctx.tol {
            return unsupported(format!(
                "row {r} starts at 0 with a negative rate; the boundary LP needs a phase 1"
            ));
        }
    }
    let mut d: Vec<f64> = ctx.cost.iter().map(|c| -c).collect();
    let mut degenerate = 0;
    for _ in 0..50 * (m + n) {
        let candidates = (0..n).filter(|&c| allowed[c] && d[c] < -ctx.tol && !basis.contains(&c));
        let enter = if degenerate > 20 {
            candidates.min()
        } else {
            candidates.min_by(|&a, &b| d[a].total_cmp(&d[b]))
        };
        let Some(e) = enter else {
            let mut b = basis;
            b.sort_unstable();
            return Ok(b);
        };
        let mut leave: Option<(usize, f64)> = None;
        for r in 0..m {
            let v = tab[r * n + e];
            if free[basis[r]] || v <= 1e-11 {
                continue;
            }
            let ratio = beta[r] / v;
            let better = match leave {
                None => true,
                Some((lr, lv)) => {
                    ratio < lv - 1e-12 || (ratio <= lv + 1e-12 && basis[r] < basis[lr])
                }
            };
            if better {
                leave = Some((r, ratio));
            }
        }
        let Some((r, ratio)) = leave else {
            return unsupported("the rates LP is unbounded".into());
        };
        degenerate = if ratio.abs() <= 1e-12 {
            degenerate + 1
        } else {
            0
        };
        let pv = tab[r * n + e];
        for c in 0..n {
            tab[r * n + c] /= pv;
        }
        beta[r] /= pv;
        for q in 0..m {
            let f = tab[q * n + e];
            if q != r && f != 0.0 {
                for c in 0..n {
                    tab[q * n + c] -= f * tab[r * n + c];
                }
                beta[q] -= f * beta[r];
            }
        }
        let f = d[e];
        for c in 0..n {
            d[c] -= f * tab[r * n + c];
        }
        basis[r] = e;
    }
    unsupported("the simplex for the rates LP did not finish".into())
}
