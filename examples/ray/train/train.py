"""A training entrypoint for Ray Jobs: logistic regression by gradient descent on a
synthetic, seeded dataset, with numpy only.

pharos submits it with the job's directory as the working directory and FfDL's
variables in the environment. It prints `step=N loss=X accuracy=Y` lines (the
manifest's evaluation metrics), writes a checkpoint to CHECKPOINT_DIR every 10 steps
when that directory is reachable, and resumes from it after a restart.
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--sleep-ms", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    n, d = 2000, 10
    x = rng.standard_normal((n, d))
    true_w = rng.standard_normal(d)
    y = (x @ true_w + 0.3 * rng.standard_normal(n) > 0).astype(float)

    w = np.zeros(d)
    start = 0
    ckpt_dir = os.environ.get("CHECKPOINT_DIR", "")
    ckpt = os.path.join(ckpt_dir, "logreg.json") if ckpt_dir and os.path.isdir(ckpt_dir) else None
    if ckpt and os.path.exists(ckpt):
        with open(ckpt) as f:
            state = json.load(f)
        w, start = np.array(state["w"]), state["step"]
        print(f"resumed from step {start}", flush=True)
    print(
        f"learner {os.environ.get('LEARNER_ID', '?')} of {os.environ.get('NUM_LEARNERS', '?')}, "
        f"training {os.environ.get('TRAINING_ID', '?')}, attempt {os.environ.get('ATTEMPT', '?')}",
        flush=True,
    )
    for step in range(start + 1, args.steps + 1):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        loss = -np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))
        w -= args.lr * x.T @ (p - y) / n
        acc = np.mean((p > 0.5) == (y > 0.5))
        print(f"step={step} loss={loss:.5f} accuracy={acc:.4f}", flush=True)
        if ckpt and step % 10 == 0:
            tmp = ckpt + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"w": w.tolist(), "step": step}, f)
            os.replace(tmp, ckpt)
        if args.sleep_ms > 0:
            time.sleep(args.sleep_ms / 1000.0)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
