#!/usr/bin/env python3
"""A closed-loop put load on etcd's v3 HTTP/JSON gateway, for tools/etcd_curve.sh when etcd's
own `benchmark` tool is not installed: CONNECTIONS threads, each with one keep-alive HTTP
connection and one put in flight, for DURATION seconds after a WARMUP; prints one JSON line
shaped like `loadgen --json` (connections, msgs_per_s, latency_ms p50/p90/p99/max). Stdlib only;
it only talks HTTP to the endpoints it is given.

    python3 tools/etcd_load.py --endpoints 127.0.0.1:2379,127.0.0.1:22379 --connections 16

Python's GIL caps this client near a few thousand puts/s on one core: at high connection
counts it measures the client as much as etcd (the output's "client" field says which client).
With --pids (the members' process ids) it adds the members' CPU time per measured put, from
/proc/<pid>/stat (utime + stime) over the measured interval.
"""
import argparse
import base64
import http.client
import json
import os
import socket
import threading
import time


def put_body(conn_id, n, size):
    key = base64.b64encode(f"curve-{conn_id}-{n % 16}".encode()).decode()
    value = base64.b64encode(b"x" * size).decode()
    return json.dumps({"key": key, "value": value})


def connect(host, port):
    """A keep-alive connection with Nagle off (http.client writes head and body apart)."""
    http_conn = http.client.HTTPConnection(host, port, timeout=10)
    http_conn.connect()
    http_conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return http_conn


def worker(endpoint, conn_id, size, start, warmup_end, end, out):
    """One connection's closed loop; appends measured latencies (s) to out[conn_id]."""
    host, port = endpoint.rsplit(":", 1)
    http_conn = connect(host, int(port))
    latencies, errors, n = [], 0, 0
    while time.monotonic() < start:
        time.sleep(0.001)
    while True:
        sent = time.monotonic()
        if sent >= end:
            break
        try:
            http_conn.request("POST", "/v3/kv/put", put_body(conn_id, n, size),
                              {"Content-Type": "application/json"})
            answer = http_conn.getresponse()
            answer.read()
            ok = answer.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            http_conn.close()
            try:
                http_conn = connect(host, int(port))
            except OSError:
                time.sleep(0.01)
        done = time.monotonic()
        n += 1
        if not ok:
            errors += 1
        elif sent >= warmup_end and done <= end:
            latencies.append(done - sent)
    out[conn_id] = (latencies, errors)


def cpu_ticks(pids):
    """utime + stime of the pids, in clock ticks; None if one cannot be read."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            return None
    return total


def sleep_until(t):
    while (left := t - time.monotonic()) > 0:
        time.sleep(left)


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoints", required=True, help="HOST:PORT,... (connections spread over them)")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--pids", default="", help="etcd member pids: adds cpu_us_per_msg")
    args = ap.parse_args()
    endpoints = args.endpoints.split(",")
    start = time.monotonic() + 0.2
    warmup_end = start + args.warmup
    end = warmup_end + args.duration
    out = [None] * args.connections
    threads = [threading.Thread(target=worker, args=(endpoints[i % len(endpoints)], i, args.size,
                                                     start, warmup_end, end, out))
               for i in range(args.connections)]
    for t in threads:
        t.start()
    pids = [int(p) for p in args.pids.split(",") if p]
    sleep_until(warmup_end)
    ticks_before = cpu_ticks(pids) if pids else None
    sleep_until(end)
    ticks_after = cpu_ticks(pids) if pids else None
    for t in threads:
        t.join()
    latencies = sorted(l for lat, _ in out for l in lat)
    errors = sum(e for _, e in out)
    ms = lambda s: round(s * 1000, 3)
    report = {
        "connections": args.connections, "pipeline": 1, "size": args.size,
        "client": "etcd_load.py (HTTP gateway)", "committed": len(latencies),
        "elapsed_s": args.duration, "msgs_per_s": round(len(latencies) / args.duration, 1),
        "latency_ms": {"p50": ms(percentile(latencies, 0.5)), "p90": ms(percentile(latencies, 0.9)),
                       "p99": ms(percentile(latencies, 0.99)),
                       "max": ms(latencies[-1] if latencies else 0.0)},
        "errors": errors,
    }
    if ticks_before is not None and ticks_after is not None and latencies:
        cpu_s = (ticks_after - ticks_before) / os.sysconf("SC_CLK_TCK")
        report["cpu_us_per_msg"] = round(cpu_s * 1e6 / len(latencies), 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
