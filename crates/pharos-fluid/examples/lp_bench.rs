//! The discretised LP on random multiclass queueing networks: for each size K (servers
//! K / 10), seed and grid, the LP's objective, the dual SCLP's bound on the same grid,
//! the certified gap between them (as a share of the network's cost, the quantity the
//! literature reports), and the time of both solves; for K <= 20 also the grid refined
//! on events to a gap of 1e-8 of the objective.
//!
//!   cargo run --release -p pharos-fluid --example lp_bench [-- K...]

use pharos_fluid::generate::{McqnSpec, mcqn_network};
use pharos_fluid::lp::{Grid, refine, solve_bracketed};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![20, 50, 100]
    } else {
        sizes
    };
    println!(
        "{:>5} {:>4} {:>22} {:>14} {:>14} {:>12} {:>9}",
        "K", "seed", "grid", "cost (LP)", "cost >= (dual)", "gap/cost", "time_s"
    );
    for k in sizes {
        for seed in [1, 2] {
            let net = mcqn_network(&McqnSpec::new(k, (k / 10).max(1), seed))?;
            let p = net.to_sclp()?;
            let grids = [
                Grid::Uniform(10),
                Grid::Uniform(30),
                Grid::Dense(30),
                Grid::Uniform(100),
            ];
            let mut answers = grids
                .iter()
                .map(|g| solve_bracketed(&p, g))
                .collect::<Result<Vec<_>, _>>()?;
            if k <= 20 {
                answers.push(refine(&p, 10, 1e-8, 20)?);
            }
            for s in answers {
                let (hi_cost, lo_cost) = (net.cost(s.objective), net.cost(s.dual_objective));
                println!(
                    "{:>5} {:>4} {:>22} {:>14.3} {:>14.3} {:>11.2e}% {:>9.2}",
                    k,
                    seed,
                    s.method.trim_start_matches("lp-"),
                    hi_cost,
                    lo_cost,
                    100.0 * (hi_cost - lo_cost) / lo_cost.abs().max(1e-9),
                    s.solve_s
                );
            }
        }
    }
    Ok(())
}
