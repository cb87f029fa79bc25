#!/usr/bin/env python3
"""bench/scale_client.py: a small metanetd control-socket client for bench/scale.sh.

Speaks the control API of proto/src/control.rs: one JSON request per line,
`{"id": N, "method": "...", "params": {...}}`, one response line
`{"id": N, "result": {...}}` or `{"id": N, "error": {"kind": ..., "message": ...}}`.
Every call has a time limit; every subcommand prints one JSON object on stdout.

  scale_client.py req SOCK METHOD [PARAMS_JSON]        one request, the response as is
  scale_client.py id-new SOCK PREFIX FROM TO CONC       identities PREFIX<FROM>..PREFIX<TO-1>
  scale_client.py connect SOCK ADDRESS ENDPOINT PREFIX FROM TO CONC
                                                        connect each of them to ADDRESS
  scale_client.py wait-connected SOCK PREFIX COUNT TIMEOUT
                                                        until COUNT peers of identities
                                                        PREFIX* have completed a handshake
                                                        (or TIMEOUT s)
  scale_client.py peers SOCK                            peers: total, connected, handshaken
  scale_client.py time-cli TIMEOUT COUNT INTERVAL CMD... run CMD COUNT times, wall ms each

CONC clients each hold one connection to the socket and send their requests on it
one after another (the daemon answers a connection's requests in order).
"""

import json
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time

TIMEOUT = 30.0


class Client:
    def __init__(self, path, timeout=TIMEOUT):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.f = self.s.makefile("rb")
        self.next_id = 1

    def call(self, method, params=None):
        req = {"id": self.next_id, "method": method}
        if params is not None:
            req["params"] = params
        self.next_id += 1
        self.s.sendall(json.dumps(req).encode() + b"\n")
        line = self.f.readline()
        if not line:
            raise ConnectionError("the daemon closed the connection")
        return json.loads(line)

    def close(self):
        try:
            self.f.close()
            self.s.close()
        except OSError:
            pass


def one(path, method, params=None, timeout=TIMEOUT):
    c = Client(path, timeout)
    try:
        return c.call(method, params)
    finally:
        c.close()


def parallel(path, jobs, conc):
    """Run jobs (method, params) over `conc` connections; returns a summary."""
    q = queue.Queue()
    for j in jobs:
        q.put(j)
    lock = threading.Lock()
    res = {"ok": 0, "errors": 0, "first_error": None, "latencies_ms": []}

    def worker():
        c = None
        while True:
            try:
                method, params = q.get_nowait()
            except queue.Empty:
                break
            t0 = time.monotonic()
            err = None
            try:
                if c is None:
                    c = Client(path)
                r = c.call(method, params)
                if r.get("error"):
                    err = "%s: %s" % (r["error"].get("kind"), r["error"].get("message"))
            except Exception as e:  # a dead connection: count it, open a new one
                err = "%s: %s" % (type(e).__name__, e)
                if c is not None:
                    c.close()
                c = None
            ms = (time.monotonic() - t0) * 1000
            with lock:
                res["latencies_ms"].append(ms)
                if err is None:
                    res["ok"] += 1
                else:
                    res["errors"] += 1
                    if res["first_error"] is None:
                        res["first_error"] = err
        if c is not None:
            c.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, conc))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    lat = sorted(res.pop("latencies_ms"))
    res.update(
        count=len(jobs),
        concurrency=conc,
        seconds=round(secs, 3),
        per_s=round(res["ok"] / secs, 1) if secs > 0 else None,
        latency_ms_median=round(statistics.median(lat), 2) if lat else None,
        latency_ms_max=round(lat[-1], 2) if lat else None,
    )
    return res


def peers_of(path, prefix=None, timeout=TIMEOUT):
    r = one(path, "peers", timeout=timeout)
    if r.get("error"):
        raise RuntimeError(r["error"].get("message"))
    peers = r["result"]["peers"]
    if prefix is not None:
        peers = [p for p in peers if p["identity"].startswith(prefix)]
    return (len(peers), sum(1 for p in peers if p["connected"]),
            sum(1 for p in peers if p.get("last_handshake") is not None))


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "req":
        params = json.loads(args[2]) if len(args) > 2 else None
        print(json.dumps(one(args[0], args[1], params)))
    elif cmd == "id-new":
        path, prefix, lo, hi, conc = args[0], args[1], int(args[2]), int(args[3]), int(args[4])
        jobs = [("id_new", {"name": "%s%d" % (prefix, i)}) for i in range(lo, hi)]
        print(json.dumps(parallel(path, jobs, conc)))
    elif cmd == "connect":
        path, address, endpoint, prefix = args[0], args[1], args[2], args[3]
        lo, hi, conc = int(args[4]), int(args[5]), int(args[6])
        jobs = [("connect", {"address": address, "endpoint": endpoint, "identity": "%s%d" % (prefix, i)})
                for i in range(lo, hi)]
        print(json.dumps(parallel(path, jobs, conc)))
    elif cmd == "wait-connected":
        path, prefix, count, limit = args[0], args[1], int(args[2]), float(args[3])
        t0 = time.monotonic()
        total = up = shaken = 0
        polls = errors = 0
        last_err = None
        while True:
            try:
                total, up, shaken = peers_of(path, prefix)
            except Exception as e:
                errors += 1
                last_err = str(e)
            polls += 1
            elapsed = time.monotonic() - t0
            if shaken >= count or elapsed >= limit:
                break
            time.sleep(0.25)
        print(json.dumps({"peers": total, "connected": up, "handshaken": shaken, "wanted": count,
                          "seconds": round(elapsed, 2), "done": shaken >= count, "polls": polls, "poll_errors": errors, "last_error": last_err}))
    elif cmd == "peers":
        total, up, shaken = peers_of(args[0])
        print(json.dumps({"peers": total, "connected": up, "handshaken": shaken}))
    elif cmd == "time-cli":
        limit, count, interval, command = float(args[0]), int(args[1]), float(args[2]), args[3:]
        ms, failures = [], 0
        for _ in range(count):
            t0 = time.monotonic()
            try:
                p = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=limit)
                if p.returncode != 0:
                    failures += 1
            except subprocess.TimeoutExpired:
                failures += 1
            ms.append((time.monotonic() - t0) * 1000)
            time.sleep(interval)
        print(json.dumps({"count": count, "failures": failures,
                          "ms_median": round(statistics.median(ms), 2) if ms else None,
                          "ms_max": round(max(ms), 2) if ms else None,
                          "ms_min": round(min(ms), 2) if ms else None}))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
