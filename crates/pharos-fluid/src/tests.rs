use crate::generate::{McqnSpec, mcqn};
use crate::lp::{Grid, solve};
use crate::network::worked_example;
use crate::{FluidError, Sclp};

#[test]
fn the_worked_example_by_the_discretised_lp() {
    let net = worked_example();
    let p = net.to_sclp().unwrap();
    let s = solve(&p, &Grid::Uniform(2000)).unwrap();
    let cost = net.cost(s.objective);
    // The exact optimum is 303.6665; the LP is a restriction, so it costs at least that
    // (the spec's LP with N = 2000: 303.6675).
    assert!(cost >= 303.6665 - 1e-3 && (cost - 303.6665) / 303.6665 < 1e-5, "cost {cost}");
    assert!(s.relative_gap() < 1e-7, "the IPM's own gap");
    // The allocations of the exact solution's four intervals.
    let at = |t: f64| {
        let n = s.breakpoints.iter().position(|b| *b > t).unwrap() - 1;
        s.u[n].clone()
    };
    let close = |t: f64, want: [f64; 3]| {
        let u = at(t);
        // u is in CPUs (mu is per CPU).
        for q in 0..3 {
            assert!((u[q] - want[q]).abs() < 0.02, "t = {t}: {u:?} vs {want:?}");
        }
    };
    close(0.05, [0.0, 0.0, 6.0]);
    close(0.3, [0.0, 4.45, 1.55]);
    close(5.0, [1.93, 2.42, 1.65]);
    close(15.0, [1.5, 1.9, 1.3]);
    // Fewer intervals: still feasible, never better than the finer grid.
    let coarse = solve(&p, &Grid::Uniform(20)).unwrap();
    assert!(coarse.objective <= s.objective + 1e-6);
    // A grid dense near 0, where the plan changes most, beats a uniform one of the
    // same size.
    let dense = solve(&p, &Grid::Dense(200)).unwrap();
    let uniform = solve(&p, &Grid::Uniform(200)).unwrap();
    assert!(dense.objective > uniform.objective);
}

#[test]
fn finer_nested_grids_never_do_worse_on_random_networks() {
    for seed in [1, 2, 3] {
        let p = mcqn(&McqnSpec::new(20, 4, seed)).unwrap();
        let mut last = f64::NEG_INFINITY;
        for n in [10, 20, 40, 80] {
            let s = solve(&p, &Grid::Uniform(n)).unwrap();
            assert!(s.objective >= last - 1e-6 * last.abs().max(1.0), "seed {seed} N {n}");
            last = s.objective;
        }
    }
    // Same seed, same instance.
    let a = mcqn(&McqnSpec::new(30, 5, 9)).unwrap();
    assert_eq!(a, mcqn(&McqnSpec::new(30, 5, 9)).unwrap());
    assert_ne!(a, mcqn(&McqnSpec::new(30, 5, 10)).unwrap());
}

#[test]
fn json_round_trip_and_clear_errors() {
    let p = worked_example().to_sclp().unwrap();
    let text = p.to_json();
    for field in ["\"G\"", "\"H\"", "\"F\"", "\"alpha\"", "\"gamma\"", "\"T\""] {
        assert!(text.contains(field), "{field} in {text}");
    }
    assert_eq!(Sclp::from_json(&text).unwrap(), p);
    let err = |t: String| Sclp::from_json(&t).unwrap_err().to_string();
    assert!(err(text.replace("\"T\":20.0", "\"T\":-1")).contains("T must be"));
    let mut q = p.clone();
    q.g[1].pop();
    assert!(err(q.to_json()).contains("G row 1 has 2 columns"));
    let mut q = p.clone();
    q.alpha = vec![1.0];
    assert!(err(q.to_json()).contains("alpha has 1 entries"));
    let mut q = p.clone();
    q.alpha[2] = -1.0;
    assert!(err(q.to_json()).contains("infeasible"));
    assert!(err("{\"G\": 1}".into()).contains("not an SCLP"));
    assert!(matches!(
        solve(&p, &Grid::Points(vec![0.0, 5.0, 3.0, 20.0])),
        Err(FluidError::Invalid(_))
    ));
}

#[test]
fn the_dual_brackets_the_exact_optimum_on_every_grid() {
    let net = worked_example();
    let p = net.to_sclp().unwrap();
    // Exact optimum: cost 303.6665, objective 8320 - 303.6665.
    let exact = 8320.0 - 303.6665;
    let mut last_gap = f64::INFINITY;
    for n in [20, 200, 2000] {
        let s = crate::lp::solve_bracketed(&p, &Grid::Uniform(n)).unwrap();
        assert!(s.objective <= exact + 1e-4 && exact <= s.dual_objective + 1e-4, "N {n}: {s:?}");
        let gap = s.dual_objective - s.objective;
        assert!(gap < last_gap, "N {n}: gap {gap}");
        last_gap = gap;
    }
    // N = 2000 brackets the cost within 0.002 (the spec's LP: 303.6675).
    assert!(last_gap < 2e-3, "{last_gap}");
    // Random networks: the bracket holds the value of a much finer grid.
    let p = mcqn(&McqnSpec::new(15, 3, 4)).unwrap();
    let fine = solve(&p, &Grid::Uniform(320)).unwrap().objective;
    let s = crate::lp::solve_bracketed(&p, &Grid::Uniform(20)).unwrap();
    assert!(s.objective <= fine + 1e-6 * fine.abs() && fine <= s.dual_objective + 1e-6 * fine.abs());
}

#[test]
fn refining_on_events_certifies_the_worked_example_to_1e_8() {
    let net = worked_example();
    let p = net.to_sclp().unwrap();
    let s = crate::lp::refine(&p, 10, 1e-8, 30).unwrap();
    assert!(s.relative_gap() <= 1e-8, "{} {}", s.method, s.relative_gap());
    // The spec's exact cost, to its four decimals, with a few hundred intervals.
    assert!((net.cost(s.objective) - 303.6665).abs() < 1e-4, "{}", net.cost(s.objective));
    assert!(s.u.len() < 1000, "{}", s.u.len());
    s.verify(&p, 1e-6).unwrap();
}

#[test]
fn the_worked_example_exactly() {
    let net = worked_example();
    let p = net.to_sclp().unwrap();
    let (s, stats) = crate::exact::solve_with_stats(&p).unwrap();
    let cost = net.cost(s.objective);
    eprintln!("cost {cost} intervals {} stats {stats:?} bp {:?} u {:?}", s.u.len(), s.breakpoints, s.u);
    assert!((cost - 303.6665).abs() / 303.6665 < 1e-6, "cost {cost}");
}
