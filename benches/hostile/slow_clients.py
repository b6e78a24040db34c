#!/usr/bin/env python3
"""1,000 idle and slow connections against a real `pharos server`: a normal client's
latency while they are open (p50/p99 over 200 requests), and how long until the server
has closed every one of them.

    python3 benches/hostile/slow_clients.py [target/release]

Starts its own server (a temporary data directory, loopback, the listener timeouts set
to 5 s), and stops it at the end. Only loopback addresses are used.
"""
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

bin_dir = sys.argv[1] if len(sys.argv) > 1 else "target/release"
IDLE, SLOW, TIMEOUT_S = 900, 100, 5


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(url):
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        r.read()
    return time.perf_counter() - t0


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


with tempfile.TemporaryDirectory() as d:
    port = free_port()
    cfg = os.path.join(d, "server.yaml")
    with open(cfg, "w") as f:
        f.write(f"listen: 127.0.0.1:{port}\ndata_dir: {d}/data\n"
                f"listener: {{header_read_timeout_s: {TIMEOUT_S}, idle_timeout_s: {TIMEOUT_S}}}\n")
    env = dict(os.environ, PHAROS_ADMIN_TOKEN="bench-admin-token-0123456789")
    server = subprocess.Popen([f"{bin_dir}/pharos", "server", "--config", cfg], env=env,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        for _ in range(400):
            try:
                get(url)
                break
            except OSError:
                time.sleep(0.05)
        base = [get(url) for _ in range(200)]
        socks = []
        t_open = time.monotonic()
        for i in range(IDLE + SLOW):
            s = socket.create_connection(("127.0.0.1", port))
            if i >= IDLE:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never end
            socks.append(s)
        t_loaded = time.monotonic()
        loaded = [get(url) for _ in range(200)]
        # Slow clients trickle a header byte every second; idle ones send nothing.
        open_ = set(socks)
        closed_at = []
        last_trickle = 0.0
        while open_ and time.monotonic() - t_open < 10 * TIMEOUT_S:
            now = time.monotonic()
            if now - last_trickle > 1.0:
                last_trickle = now
                for s in list(open_):
                    if socks.index(s) >= IDLE:
                        try:
                            s.send(b"X")
                        except OSError:
                            pass
            r, _, _ = select.select(list(open_), [], [], 0.2)
            for s in r:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    open_.discard(s)
                    closed_at.append((socks.index(s) >= IDLE, time.monotonic() - t_open))
        print(f"# {IDLE} idle + {SLOW} slow-header connections, listener timeouts {TIMEOUT_S} s")
        print(f"normal client alone:      p50 {pct(base, .5) * 1e3:.2f} ms, p99 {pct(base, .99) * 1e3:.2f} ms")
        print(f"with them open:           p50 {pct(loaded, .5) * 1e3:.2f} ms, p99 {pct(loaded, .99) * 1e3:.2f} ms")
        idle_t = [t for slow, t in closed_at if not slow]
        slow_t = [t for slow, t in closed_at if slow]
        print(f"opening them took {t_loaded - t_open:.1f} s")
        print(f"closed by the server:     {len(idle_t)} of {IDLE} idle, the last "
              f"{max(idle_t, default=float('nan')):.1f} s after the first was opened; "
              f"{len(slow_t)} of {SLOW} slow, the last after {max(slow_t, default=float('nan')):.1f} s")
        for s in socks:
            s.close()
    finally:
        server.terminate()
        server.wait()
