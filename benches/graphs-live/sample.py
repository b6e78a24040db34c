#!/usr/bin/env python3
"""Samples every graph function's replicas every 2 s, and the CPU time the machine's
pharos-replica processes have used (utime + stime from /proc, by pid; a process that
exits loses at most its last 2 s): sample.py URL TOKEN OUT.csv"""
import json
import os
import sys
import time
import urllib.request

url, token, out = sys.argv[1], sys.argv[2], sys.argv[3]
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


t0 = time.time()
with open(out, "w") as f:
    f.write("t_s,graph,function,ready,starting,target,cpus,queued,in_flight,replica_cpu_s\n")
    while True:
        req = urllib.request.Request(f"{url}/v1/graphs", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                doc = json.load(r)
            t = time.time() - t0
            used = replica_cpu_s()
            for g in doc["graphs"]:
                for fn in g["functions"]:
                    f.write(f"{t:.1f},{g['name']},{fn['name']},{fn['ready_replicas']},"
                            f"{fn['starting_replicas']},{fn['target_replicas']},"
                            f"{fn['resources_per_replica']['cpus']},{fn['queued']},"
                            f"{fn['in_flight']},{used:.2f}\n")
            f.flush()
        except OSError:
            pass
        time.sleep(2)
