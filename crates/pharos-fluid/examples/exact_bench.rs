//! The exact solver on random multiclass queueing networks: for each size K (servers
//! K / 10 unless given) and seed, whether it solved (or why not), the number of intervals,
//! collisions and bases factorised, the cost, the primal-dual gap and the time; with `--lp` also the
//! discretised LP on 100 uniform intervals and its dual bound, which must bracket the
//! exact cost.
//!
//!   cargo run --release -p pharos-fluid --example exact_bench [-- [--lp] [--seeds N] [--servers I] K...]

use pharos_fluid::exact::solve_with_stats;
use pharos_fluid::generate::{McqnSpec, mcqn_network};
use pharos_fluid::lp::{Grid, solve_bracketed};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut lp = false;
    let mut seeds = 3u64;
    let mut servers: Option<usize> = None;
    let mut sizes = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--lp" => lp = true,
            "--seeds" => seeds = args.next().ok_or("--seeds needs a number")?.parse()?,
            "--servers" => servers = Some(args.next().ok_or("--servers needs a number")?.parse()?),
            _ => sizes.push(a.parse::<usize>()?),
        }
    }
    if sizes.is_empty() {
        sizes = vec![20, 50, 100];
    }
    println!(
        "{:>5} {:>4} {:>9} {:>10} {:>8} {:>14} {:>10} {:>9} {:>14} {:>14}",
        "K",
        "seed",
        "intervals",
        "collisions",
        "bases",
        "cost",
        "gap",
        "time_s",
        "LP-100 cost",
        "LP dual bound"
    );
    for k in sizes {
        for seed in 1..=seeds {
            let net = mcqn_network(&McqnSpec::new(k, servers.unwrap_or((k / 10).max(1)), seed))?;
            let p = net.to_sclp()?;
            let (lp_cost, lp_bound) = if lp {
                let s = solve_bracketed(&p, &Grid::Uniform(100))?;
                (
                    format!("{:.4}", net.cost(s.objective)),
                    format!("{:.4}", net.cost(s.dual_objective)),
                )
            } else {
                (String::from("-"), String::from("-"))
            };
            match solve_with_stats(&p) {
                Ok((s, st)) => println!(
                    "{:>5} {:>4} {:>9} {:>10} {:>8} {:>14.6} {:>10.1e} {:>9.3} {:>14} {:>14}",
                    k,
                    seed,
                    s.u.len(),
                    st.collisions,
                    st.factorisations,
                    net.cost(s.objective),
                    s.relative_gap(),
                    s.solve_s,
                    lp_cost,
                    lp_bound
                ),
                Err(e) => println!("{k:>5} {seed:>4} failed: {e} {lp_cost} {lp_bound}"),
            }
        }
    }
    Ok(())
}
