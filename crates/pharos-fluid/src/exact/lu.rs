//! Dense LU factorisation with partial pivoting, for the bases of the rates LP.

use super::add_work;

/// Dense LU factorisation with partial pivoting (row-major).
pub(super) struct Lu {
    pub(super) n: usize,
    pub(super) a: Vec<f64>,
    pub(super) piv: Vec<usize>,
}

impl Lu {
    pub(super) fn factor(mut a: Vec<f64>, n: usize) -> Option<Lu> {
        let mut piv: Vec<usize> = (0..n).collect();
        let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if scale == 0.0 {
            return None;
        }
        // The scan for the scale, the pivots' column scans and every row update.
        let mut ops = (n * n) as u64;
        for k in 0..n {
            ops += (n - k) as u64;
            let (mut p, mut best) = (k, a[k * n + k].abs());
            for r in k + 1..n {
                let v = a[r * n + k].abs();
                if v > best {
                    best = v;
                    p = r;
                }
            }
            if best <= 1e-12 * scale {
                add_work(ops);
                return None;
            }
            if p != k {
                for c in 0..n {
                    a.swap(k * n + c, p * n + c);
                }
                piv.swap(k, p);
            }
            let d = a[k * n + k];
            for r in k + 1..n {
                let f = a[r * n + k] / d;
                a[r * n + k] = f;
                if f != 0.0 {
                    ops += (n - k) as u64;
                    let (top, bottom) = a.split_at_mut(r * n);
                    let pivot_row = &top[k * n + k + 1..k * n + n];
                    for (x, y) in bottom[k + 1..n].iter_mut().zip(pivot_row) {
                        *x -= f * y;
                    }
                }
            }
        }
        add_work(ops);
        Some(Lu { n, a, piv })
    }

    /// x with A x = b.
    pub(super) fn solve(&self, b: &[f64]) -> Vec<f64> {
        let n = self.n;
        add_work((n * n) as u64);
        let mut x: Vec<f64> = self.piv.iter().map(|&p| b[p]).collect();
        for r in 0..n {
            let row = &self.a[r * n..r * n + r];
            let s: f64 = row.iter().zip(&x[..r]).map(|(l, v)| l * v).sum();
            x[r] -= s;
        }
        for r in (0..n).rev() {
            let row = &self.a[r * n + r + 1..r * n + n];
            let s: f64 = row.iter().zip(&x[r + 1..]).map(|(u, v)| u * v).sum();
            x[r] = (x[r] - s) / self.a[r * n + r];
        }
        x
    }

    /// y with A' y = b.
    pub(super) fn solve_t(&self, b: &[f64]) -> Vec<f64> {
        let n = self.n;
        add_work((n * n) as u64);
        let mut z = b.to_vec();
        for r in 0..n {
            let mut s = z[r];
            for c in 0..r {
                s -= self.a[c * n + r] * z[c];
            }
            z[r] = s / self.a[r * n + r];
        }
        for r in (0..n).rev() {
            let mut s = z[r];
            for c in r + 1..n {
                s -= self.a[c * n + r] * z[c];
            }
            z[r] = s;
        }
        let mut y = vec![0.0; n];
        for (i, &p) in self.piv.iter().enumerate() {
            y[p] = z[i];
        }
        y
    }
}
