#!/usr/bin/env python3
"""A SimPy model of pharos's inference-cluster simulator, for a static allocation.

This is a reference implementation to compare speed with pharos. It reproduces the
semantics of pharos's engine (crates/pharos-sim/src/engine.rs) under the `fairshare`
policy: a fixed number of replicas per job, all ready at time 0, no autoscaling (so no
pods and no cold starts).

- Arrivals: for each job and minute m with r requests in the trace, floor(r) requests
  (plus one with probability r - floor(r)) arrive at independent uniform times within
  [60 m, 60 (m + 1)) seconds.
- Each request draws a service time 0.079302 + 0.068581 exp(0.42247 Z) and a router
  delay 0.0034853 + 0.0009878 exp(0.48078 Z'), Z and Z' standard normal, and reaches
  its job's router after the router delay.
- Router: a request is dropped when `max_queue` requests already wait in the router
  queue; otherwise, if that queue is empty, it goes to the next replica (round robin)
  holding fewer than `max_concurrent` requests; else it waits in the FIFO router queue.
  When a replica finishes a request, the head of the router queue (if any) is handed
  to the next replica (round robin) with room.
- A replica serves the requests it holds one at a time, in order.
- Latency = completion time - arrival time (router delay included).
- SLO violation rate: per job and arrival minute, (requests over the SLO + drops) /
  arrivals; the mean over the jobs with arrivals in the minute; the mean over minutes.

Usage:
    python benches/simpy_reference.py --csv data/faro-10jobs/requests_per_minute.csv \
        --day 11 --replicas 3 --seed 42 [--minutes 360]

Prints one JSON line with the totals, the violation rate and the wall time of the
simulation (the trace loading excluded).
"""

import argparse
import csv
import json
import math
import random
import sys
import time
from collections import deque

import simpy

MINUTE_S = 60.0
SLO_S = 0.72
MAX_CONCURRENT = 4
MAX_QUEUE = 50

# scipy-style lognorm(shape, loc, scale): loc + scale * exp(shape * Z).
SERVICE = (0.079302, 0.068581, 0.42247)
ROUTER_DELAY = (0.0034853, 0.0009878, 0.48078)


def load_trace(path, day, minutes):
    """Requests per minute of each job on `day`: {job: [r_0, r_1, ...]}, job order."""
    per_job = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if int(row["day"]) != day:
                continue
            m = int(row["minute"])
            if m >= minutes:
                continue
            series = per_job.setdefault(int(row["job"]), {})
            series[m] = series.get(m, 0.0) + float(row["requests"])
    if not per_job:
        sys.exit(f"no rows for day {day} in {path}")
    n = max(max(s) for s in per_job.values()) + 1
    return [[per_job[j].get(m, 0.0) for m in range(n)] for j in sorted(per_job)]


class Metrics:
    """Per job, per arrival minute: arrivals and violations (drops included)."""

    def __init__(self, minutes):
        self.arrivals = [0] * minutes
        self.violations = [0] * minutes
        self.dropped = 0
        self.completed = 0


class Request:
    __slots__ = ("arrival_s", "service_s", "minute")

    def __init__(self, arrival_s, service_s):
        self.arrival_s = arrival_s
        self.service_s = service_s
        self.minute = int(arrival_s // MINUTE_S)


class Replica:
    """Serves the requests the router hands it, one at a time, FIFO."""

    def __init__(self, env, job):
        self.env = env
        self.job = job
        self.held = 0  # the request in service plus those waiting in `inbox`
        self.inbox = simpy.Store(env)
        env.process(self.serve())

    def serve(self):
        env, job = self.env, self.job
        metrics = job.metrics
        while True:
            req = yield self.inbox.get()
            yield env.timeout(req.service_s)
            self.held -= 1
            metrics.completed += 1
            if env.now - req.arrival_s > SLO_S:
                metrics.violations[req.minute] += 1
            job.replica_freed()


class Job:
    """One inference job: its router (queue + round robin) and its replicas."""

    def __init__(self, env, index, rpm, replicas, seed):
        self.env = env
        self.rpm = rpm
        self.metrics = Metrics(len(rpm))
        self.replicas = [Replica(env, self) for _ in range(replicas)]
        self.rr = 0
        self.queue = deque()
        # Independent random streams per job and purpose.
        self.rng_arrival = random.Random(f"{seed}/{index}/arrival")
        self.rng_service = random.Random(f"{seed}/{index}/service")
        self.rng_router = random.Random(f"{seed}/{index}/router")
        env.process(self.arrivals())

    def arrivals(self):
        """The job's arrival stream: each request starts a process of its own."""
        env = self.env
        rng = self.rng_arrival
        gauss_s = self.rng_service.gauss
        gauss_r = self.rng_router.gauss
        s_loc, s_scale, s_shape = SERVICE
        r_loc, r_scale, r_shape = ROUTER_DELAY
        arrivals = self.metrics.arrivals
        for m, r in enumerate(self.rpm):
            whole = math.floor(r)
            n = int(whole) + (1 if rng.random() < r - whole else 0)
            if n == 0:
                continue
            start = m * MINUTE_S
            times = sorted([start + MINUTE_S * rng.random() for _ in range(n)])
            arrivals[m] += n
            for t in times:
                yield env.timeout(max(0.0, t - env.now))
                service = s_loc + s_scale * math.exp(s_shape * gauss_s(0.0, 1.0))
                delay = r_loc + r_scale * math.exp(r_shape * gauss_r(0.0, 1.0))
                env.process(self.request(Request(t, service), delay))

    def request(self, req, router_delay):
        yield self.env.timeout(router_delay)
        self.route(req)

    def route(self, req):
        """A request reaches the router: hand it to a replica, queue it, or drop it."""
        if not self.queue and self.dispatch(req):
            return
        if len(self.queue) >= MAX_QUEUE:
            self.metrics.dropped += 1
            self.metrics.violations[req.minute] += 1
        else:
            self.queue.append(req)

    def dispatch(self, req):
        """Round robin over the replicas with room; False when all are full."""
        reps = self.replicas
        n = len(reps)
        for k in range(n):
            idx = (self.rr + k) % n
            rep = reps[idx]
            if rep.held < MAX_CONCURRENT:
                self.rr = (idx + 1) % n
                rep.held += 1
                rep.inbox.put(req)
                return True
        return False

    def replica_freed(self):
        if self.queue:
            req = self.queue.popleft()
            ok = self.dispatch(req)
            assert ok, "the replica that finished has room"


def violation_rate(jobs):
    minutes = len(jobs[0].metrics.arrivals)
    total, bins = 0.0, 0
    for m in range(minutes):
        v, k = 0.0, 0
        for job in jobs:
            a = job.metrics.arrivals[m]
            if a > 0:
                v += job.metrics.violations[m] / a
                k += 1
        if k > 0:
            total += v / k
            bins += 1
    return total / bins if bins else 0.0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--csv", default="data/faro-10jobs/requests_per_minute.csv")
    p.add_argument("--day", type=int, default=11)
    p.add_argument("--replicas", type=int, default=3, help="replicas per job")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--minutes", type=int, default=360, help="simulate the first N minutes")
    args = p.parse_args()
    if args.replicas < 1 or args.minutes < 1:
        p.error("--replicas and --minutes must be at least 1")

    trace = load_trace(args.csv, args.day, args.minutes)

    start = time.perf_counter()
    env = simpy.Environment()
    jobs = [Job(env, i, rpm, args.replicas, args.seed) for i, rpm in enumerate(trace)]
    env.run()  # until no event is left: every request served or dropped
    wall_s = time.perf_counter() - start

    requests = sum(sum(j.metrics.arrivals) for j in jobs)
    dropped = sum(j.metrics.dropped for j in jobs)
    completed = sum(j.metrics.completed for j in jobs)
    assert requests == dropped + completed, "every request is served or dropped"
    out = {
        "requests": requests,
        "dropped": dropped,
        "completed": completed,
        "slo_violation_rate": violation_rate(jobs),
        "wall_s": round(wall_s, 3),
        "sim_time_s": env.now,
    }
    # SimPy numbers its scheduled events with an internal counter.
    eid = getattr(env, "_eid", None)
    if eid is not None:
        out["events"] = next(eid)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
