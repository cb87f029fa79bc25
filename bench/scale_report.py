#!/usr/bin/env python3
"""bench/scale_report.py: the JSON lines and the summary of bench/scale.sh.

  scale_report.py step INFO_FILE        one `kind: step` JSON line from a step's key=value file
  scale_report.py summary JSONL RUN_ID [--write]
                                        the table, the ratios vs N = 0 and PASS/FAIL per goal
                                        (--write: append them to JSONL as a `kind: goals` line)
"""

import json
import sys

# issue 13's goals
GOALS = {
    "throughput_ratio": 0.90,  # single-stream TCP at N vs N = 0, at least
    "rtt_ratio": 1.2,  # ping RTT at N vs N = 0, at most
    "bytes_per_session": 4096,  # A's RSS per idle session, at most
    "cpu_idle_pct": 2.0,  # A's CPU with N idle sessions, % of one core, at most
    "status_ms": 50.0,  # `metanet status --json` under load, slowest call, at most
    "connects_per_s": 100.0,  # at least
    "flood_ratio": 0.80,  # throughput under the flood vs without, at least
}


def num(v):
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v else f


def step(path):
    r = {"kind": "step"}
    errors = []
    for line in open(path):
        k, _, v = line.rstrip("\n").partition("=")
        if k == "error":
            errors.append(v)
        elif k.endswith("_json"):
            try:
                r[k[: -len("_json")]] = json.loads(v) if v.strip() else None
            except ValueError:
                r[k[: -len("_json")]] = {"unparsed": v}
        else:
            r[k] = num(v) if v != "" else None
    r["errors"] = errors
    r["measured"] = bool(r.get("measured"))
    # derived numbers
    added = r.get("added") or 0
    if added and r.get("cli_connects") and r.get("cli_connect_s"):
        r["cli_connects_per_s"] = round(r["cli_connects"] / r["cli_connect_s"], 1)
    c = r.get("connect") or {}
    r["socket_connects_per_s"] = c.get("per_s")
    s = r.get("sessions") or {}
    if added and r.get("sessions_s"):
        r["sessions_per_s"] = round(added / r["sessions_s"], 1)
        r["sessions_done"] = s.get("done")
    if added and r.get("rss_before_kib") is not None and r.get("rss_kib") is not None:
        r["bytes_per_session_step"] = round((r["rss_kib"] - r["rss_before_kib"]) * 1024 / added)
    st = r.get("status") or {}
    r["status_ms_median"], r["status_ms_max"] = st.get("ms_median"), st.get("ms_max")
    if r.get("gbps") and r.get("flood_gbps") is not None:
        r["flood_ratio"] = round(r["flood_gbps"] / r["gbps"], 3)
    f = r.get("fresh") or {}
    r["fresh_connected"] = bool(f.get("done"))
    return r


def fmt(v, spec="{}"):
    return "-" if v is None else spec.format(v)


def summary(path, run_id, write=False):
    run = None
    # step lines carry no run id: take those after this run's header
    steps = []
    seen = False
    for line in open(path):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("kind") == "run":
            seen = r.get("run_id") == run_id
            if seen:
                run = r
        elif seen and r.get("kind") == "step":
            steps.append(r)
    if not steps:
        print("no steps measured")
        return
    base = next((s for s in steps if s.get("n") == 0), None)

    def ratio(s, key):
        if not base or base.get(key) in (None, 0) or s.get(key) is None:
            return None
        return round(s[key] / base[key], 3)

    for s in steps:
        s["throughput_ratio"] = ratio(s, "gbps")
        s["rtt_ratio"] = ratio(s, "rtt_avg_ms")
        if base and s.get("n") and s.get("rss_kib") is not None and base.get("rss_kib") is not None:
            s["bytes_per_session"] = round((s["rss_kib"] - base["rss_kib"]) * 1024 / s["n"])
        else:
            s["bytes_per_session"] = None
        pa, pb = s.get("peers_a") or {}, s.get("peers_b") or {}
        s["a_peers"], s["a_connected"] = pa.get("peers"), pa.get("connected")
        s["b_connected"] = pb.get("connected")

    rows = [
        ("N idle sessions", "n", "{}"),
        ("A peers (with a session)", None, None),
        ("TCP 1 stream, Gbit/s", "gbps", "{:.2f}"),
        ("  ratio vs N=0", "throughput_ratio", "{:.3f}"),
        ("ping RTT avg, ms", "rtt_avg_ms", "{:.3f}"),
        ("  ratio vs N=0", "rtt_ratio", "{:.3f}"),
        ("ping loss, %", "ping_loss_pct", "{}"),
        ("A RSS, KiB", "rss_kib", "{}"),
        ("  bytes/session vs N=0", "bytes_per_session", "{}"),
        ("  bytes/session this step", "bytes_per_session_step", "{}"),
        ("A CPU idle, % of a core", "cpu_idle_pct", "{:.2f}"),
        ("B CPU idle, % of a core", "cpu_idle_b_pct", "{:.2f}"),
        ("status --json load, ms med", "status_ms_median", "{:.1f}"),
        ("status --json load, ms max", "status_ms_max", "{:.1f}"),
        ("  TCP during it, Gbit/s", "status_load_gbps", "{:.2f}"),
        ("id new on B, /s", None, None),
        ("connects CLI, /s", "cli_connects_per_s", "{:.1f}"),
        ("connects socket, /s", "socket_connects_per_s", "{:.1f}"),
        ("sessions up, /s", "sessions_per_s", "{:.1f}"),
        ("  all up (s)", None, None),
        ("TCP under flood, Gbit/s", "flood_gbps", "{:.2f}"),
        ("  ratio vs no flood", "flood_ratio", "{:.3f}"),
        ("  flood sent", None, None),
        ("  new peer: connect answered (s)", "fresh_connect_s", "{:.1f}"),
        ("  new peer: session up (s)", None, None),
    ]
    width = 32
    col = 14
    print()
    print("metanetd with N idle sessions (%s, %s cores, %s)" % (run.get("cpu"), run.get("nproc"), run.get("kernel")))
    print("binaries: %s (%s)" % (run.get("bin_dir"), run.get("metanetd_version")))
    print("B's overlay filter: %s" % ("on" if run.get("b_overlay_filter") else "off (overlay-filter = false)"))
    if run.get("label"):
        print("label: %s" % run["label"])
    print()
    for label, key, spec in rows:
        cells = []
        for s in steps:
            if key is not None:
                cells.append(fmt(s.get(key), spec))
            elif label.startswith("A peers"):
                cells.append("%s (%s)" % (fmt(s.get("a_peers")), fmt(s.get("a_connected"))))
            elif label.startswith("id new"):
                cells.append(fmt((s.get("id_new") or {}).get("per_s")))
            elif label.strip().startswith("all up"):
                w = s.get("sessions") or {}
                cells.append("-" if not w else "%s%s" % (fmt(s.get("sessions_s"), "{:.1f}"), "" if w.get("done") else " (%s/%s)" % (w.get("handshaken"), w.get("wanted"))))
            elif label.strip().startswith("flood sent"):
                out = s.get("flood_out") or ""
                cells.append(out.split("(")[-1].rstrip(")") if "(" in out else "-")
            elif label.strip().startswith("new peer: session"):
                f = s.get("fresh") or {}
                cells.append("-" if not f else ("yes %s s" % fmt(s.get("fresh_s"), "{:.1f}")) if f.get("done") else "NO")
        print(label.ljust(width) + "".join(c.rjust(col) for c in cells))
    print("(`connect` is answered once the session is up, or as still connecting after 20 s:"
          " its rate is one of sessions; A peers counts those A holds, with a live keypair in brackets)")
    for s in steps:
        for e in s.get("errors") or []:
            print("N=%s: %s" % (s.get("n"), e))
        if s.get("warning"):
            print("N=%s: %s" % (s.get("n"), s["warning"]))

    # the goals, at every N > 0 (the largest N decides the verdict)
    print()
    print("issue 13 goals (informative), per N > 0:")
    big = [s for s in steps if s.get("n")]
    results = []

    def goal(name, key, op, limit, unit=""):
        vals = []
        verdicts = []
        for s in big:
            v = s.get(key)
            if v is None:
                vals.append("n/a")
                verdicts.append(None)
            else:
                ok = v >= limit if op == ">=" else v <= limit
                vals.append("%s %s" % (v, "ok" if ok else "FAIL"))
                verdicts.append(ok)
        last = verdicts[-1] if verdicts else None
        word = "n/a " if last is None else "PASS" if last else "FAIL"
        print("  %s %-42s %s" % (word, "%s %s %s%s" % (name, op, limit, unit), "; ".join(
            "N=%s: %s" % (s["n"], v) for s, v in zip(big, vals))))
        results.append({"goal": name, "op": op, "limit": limit, "pass": last,
                        "values": {str(s["n"]): s.get(key) for s in big}})

    if not big:
        print("  (no N > 0 measured)")
    else:
        goal("throughput ratio", "throughput_ratio", ">=", GOALS["throughput_ratio"])
        goal("RTT ratio", "rtt_ratio", "<=", GOALS["rtt_ratio"])
        goal("bytes per idle session", "bytes_per_session", "<=", GOALS["bytes_per_session"], " B")
        goal("A CPU idle", "cpu_idle_pct", "<=", GOALS["cpu_idle_pct"], " %")
        goal("status --json under load, max", "status_ms_max", "<=", GOALS["status_ms"], " ms")
        goal("connects/s, CLI", "cli_connects_per_s", ">=", GOALS["connects_per_s"])
        goal("connects/s, socket", "socket_connects_per_s", ">=", GOALS["connects_per_s"])
        goal("sessions up/s", "sessions_per_s", ">=", GOALS["connects_per_s"])
        goal("flood throughput ratio", "flood_ratio", ">=", GOALS["flood_ratio"])
        for s in big:
            s["fresh_connected_num"] = 1 if s.get("fresh_connected") else 0 if s.get("fresh") else None
        goal("new peer connects under flood", "fresh_connected_num", ">=", 1)
    if not write:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"kind": "goals", "run_id": run_id, "goals": results,
                            "ratios": {str(s["n"]): {"throughput": s.get("throughput_ratio"), "rtt": s.get("rtt_ratio"),
                                                     "bytes_per_session": s.get("bytes_per_session")} for s in big}}) + "\n")


def main(argv):
    if len(argv) >= 3 and argv[1] == "step":
        print(json.dumps(step(argv[2])))
    elif len(argv) >= 4 and argv[1] == "summary":
        summary(argv[2], argv[3], write="--write" in argv[4:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
