#!/usr/bin/env python3
"""Samples a live pharos server every 2 s for the live benches (benches/live,
benches/graphs-live) until killed:

    sample.py services URL TOKEN OUT.csv   # every service's replicas and queue
    sample.py graphs URL TOKEN OUT.csv     # every graph function's replicas, size and
                                           # queue, and the CPU time the machine's
                                           # pharos-replica processes have used

Replica CPU time is utime + stime from /proc, by pid (a process that exits loses at most
its last 2 s)."""
import json
import os
import sys
import time
import urllib.request

mode, url, token, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
tick = os.sysconf("SC_CLK_TCK")
cpu_by_pid = {}


def replica_cpu_s():
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name != "pharos-replica":
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        cpu_by_pid[pid] = (int(fields[11]) + int(fields[12])) / tick
    return sum(cpu_by_pid.values())


def service_rows(doc, t):
    for s in doc["services"]:
        yield (f"{t:.1f},{s['name']},{s['ready_replicas']},{s['starting_replicas']},"
               f"{s['target_replicas']},{s['queued']},{s['in_flight']}")


def graph_rows(doc, t):
    used = replica_cpu_s()
    for g in doc["graphs"]:
        for fn in g["functions"]:
            yield (f"{t:.1f},{g['name']},{fn['name']},{fn['ready_replicas']},"
                   f"{fn['starting_replicas']},{fn['target_replicas']},"
                   f"{fn['resources_per_replica']['cpus']},{fn['queued']},"
                   f"{fn['in_flight']},{used:.2f}")


MODES = {
    "services": ("/v1/services", "t_s,service,ready,starting,target,queued,in_flight", service_rows),
    "graphs": ("/v1/graphs",
               "t_s,graph,function,ready,starting,target,cpus,queued,in_flight,replica_cpu_s",
               graph_rows),
}
path, header, rows = MODES[mode]
t0 = time.time()
with open(out, "w") as f:
    f.write(header + "\n")
    while True:
        req = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                doc = json.load(r)
            for row in rows(doc, time.time() - t0):
                f.write(row + "\n")
            f.flush()
        except OSError:
            pass
        time.sleep(2)
