#!/usr/bin/env python3
"""Helper of bench/run.sh: raw measurement files -> JSON lines -> table and ratios.

  report.py result DIR         DIR holds info (key=value lines), tcp1.json, tcp4.json
                               and ping.txt; prints one JSON object (kind "result")
  report.py summary FILE RUN   reads the JSON lines of run RUN from FILE, prints the
                               table and the metanet/peer ratios, and appends one
                               JSON line (kind "ratio") per peer and metric to FILE
  report.py table FILE [RUN]   only the table (and ratios), appending nothing

Only the standard library is used.
"""
import json
import math
import re
import statistics
import sys

SUBJECT = "metanet"

# metric -> (column title, True when higher is better)
METRICS = {
    "tcp1_gbps": ("tcp 1 stream Gbit/s", True),
    "tcp4_gbps": ("tcp 4 streams Gbit/s", True),
    "rtt_min_ms": ("ping min ms", False),
    "rtt_avg_ms": ("ping avg ms", False),
    "rtt_p99_ms": ("ping p99 ms", False),
    "cpu_s_per_gbit": ("daemon CPU s/Gbit", False),
}

INT_FIELDS = {"round", "mtu", "ping_count", "daemons", "duration_s", "parallel", "udp_drops"}
FLOAT_FIELDS = {"setup_s", "cpu_s", "host_cpu_s"}


def read_info(path):
    info = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.rstrip("\n").partition("=")
                if sep:
                    info[key] = value
    except OSError:
        pass
    return info


def iperf_result(path):
    """(Gbit/s at the receiver, sender retransmits, error text or None)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None, None, "no iperf3 result"
    if data.get("error"):
        return None, None, "iperf3: " + str(data["error"])
    end = data.get("end") or {}
    received = end.get("sum_received") or {}
    bps = received.get("bits_per_second")
    if bps is None:
        return None, None, "iperf3 reported no received bytes"
    return round(bps / 1e9, 4), (end.get("sum_sent") or {}).get("retransmits"), None


def nearest_rank(sorted_xs, pct):
    k = max(0, min(len(sorted_xs) - 1, math.ceil(pct / 100.0 * len(sorted_xs)) - 1))
    return sorted_xs[k]


def ping_result(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return {}
    rtts = sorted(float(x) for x in re.findall(r"time[=<]([0-9.]+) ms", text))
    out = {"ping_replies": len(rtts)}
    m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    if m and int(m.group(1)):
        sent, got = int(m.group(1)), int(m.group(2))
        out["ping_loss_pct"] = round(100.0 * (sent - got) / sent, 2)
    if rtts:
        out["rtt_min_ms"] = round(rtts[0], 3)
        out["rtt_avg_ms"] = round(sum(rtts) / len(rtts), 3)
        out["rtt_p50_ms"] = round(nearest_rank(rtts, 50), 3)
        out["rtt_p99_ms"] = round(nearest_rank(rtts, 99), 3)
        out["rtt_max_ms"] = round(rtts[-1], 3)
    return out


def to_number(key, value):
    try:
        return int(value) if key in INT_FIELDS else float(value)
    except ValueError:
        return value


def result(directory):
    info = read_info(directory + "/info")
    r = {"kind": "result"}
    errors = []
    for key, value in info.items():
        if key == "error":
            errors.append(value)
        elif key in INT_FIELDS or key in FLOAT_FIELDS:
            if value != "":
                r[key] = to_number(key, value)
        else:
            r[key] = value
    measured = info.get("measured") == "1"
    r.pop("measured", None)
    if measured:
        for name in ("tcp1", "tcp4"):
            gbps, retr, err = iperf_result("%s/%s.json" % (directory, name))
            r[name + "_gbps"] = gbps
            r[name + "_retr"] = retr
            if err:
                errors.append("%s: %s" % (name, err))
        r.update(ping_result(directory + "/ping.txt"))
        if not r.get("ping_replies"):
            errors.append("ping: no reply")
        gbps, cpu, secs = r.get("tcp1_gbps"), r.get("cpu_s"), r.get("duration_s")
        if gbps and cpu is not None and secs:
            r["cpu_s_per_gbit"] = round(cpu / (gbps * secs), 3)
    r["ok"] = measured and not errors and info.get("alive", "1") == "1"
    if info.get("alive") == "0":
        errors.append("a tunnel daemon died during the measurement")
    r.pop("alive", None)
    if errors:
        r["error"] = "; ".join(errors)
    return r


def load(path, run_id=None):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if run_id is None or row.get("run_id") == run_id:
                rows.append(row)
    return rows


def fmt(x, digits=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        return "%.*f" % (digits, x)
    return str(x)


def spread(values, digits=3):
    """'median [min–max]' of the values, or '-'."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(float(med), digits)
    return "%s [%s–%s]" % (fmt(float(med), digits), fmt(float(min(values)), digits),
                           fmt(float(max(values)), digits))


def print_table(header, rows):
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def ratios(results):
    """One dict per (peer, metric): per-round metanet/peer ratios and their spread."""
    by_round = {}
    for r in results:
        if r.get("ok"):
            by_round.setdefault(r.get("round"), {})[r.get("tunnel")] = r
    peers = sorted({r.get("tunnel") for r in results} - {SUBJECT})
    out = []
    for peer in peers:
        for metric in METRICS:
            per_round = []
            for rnd in sorted(by_round, key=lambda x: (x is None, x)):
                mine = by_round[rnd].get(SUBJECT, {}).get(metric)
                theirs = by_round[rnd].get(peer, {}).get(metric)
                if mine is not None and theirs:
                    per_round.append(mine / theirs)
            if per_round:
                out.append({"peer": peer, "metric": metric, "rounds": len(per_round),
                            "median": round(statistics.median(per_round), 3),
                            "min": round(min(per_round), 3),
                            "max": round(max(per_round), 3),
                            "per_round": [round(x, 3) for x in per_round]})
    return out


def summary(path, run_id, append):
    rows = load(path, run_id)
    results = [r for r in rows if r.get("kind") == "result"]
    if not results:
        print("no results for run %s in %s" % (run_id, path))
        return 1
    tunnels = []
    for r in results:
        if r.get("tunnel") not in tunnels:
            tunnels.append(r.get("tunnel"))
    n_rounds = len({r.get("round") for r in results})
    print("\nrun %s, %d round(s); median [min–max] over rounds\n" % (run_id, n_rounds))
    header = ["tunnel", "ok"] + [METRICS[m][0] for m in METRICS] + ["loss %", "udp drops", "mtu"]
    table = []
    for t in tunnels:
        mine = [r for r in results if r.get("tunnel") == t]
        good = [r for r in mine if r.get("ok")]
        row = [t, "%d/%d" % (len(good), len(mine))]
        for m in METRICS:
            row.append(spread([r.get(m) for r in good], 2 if m.endswith("gbit") else 3))
        row.append(spread([r.get("ping_loss_pct") for r in good], 1))
        row.append(spread([r.get("udp_drops") for r in good], 0))
        row.append(fmt(mine[0].get("mtu")))
        table.append(row)
    print_table(header, table)
    for r in results:
        if r.get("error"):
            print("round %s %s: %s" % (r.get("round"), r.get("tunnel"), r["error"]))
    rs = ratios(results)
    if rs:
        print("\nmetanet / peer, per round then median [min–max]"
              " (throughput: >1 means metanet is faster; ping, CPU: <1 means metanet is better)\n")
        table = []
        for x in rs:
            table.append([x["peer"], METRICS[x["metric"]][0],
                          spread(x["per_round"], 2),
                          " ".join("%.2f" % v for v in x["per_round"])])
        print_table(["peer", "metric", "metanet/peer", "per round"], table)
    else:
        print("\nno ratios: metanet and a peer must both succeed in the same round")
    if append:
        with open(path, "a", encoding="utf-8") as f:
            for x in rs:
                line = {"kind": "ratio", "run_id": run_id}
                line.update(x)
                f.write(json.dumps(line) + "\n")
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "result":
        print(json.dumps(result(argv[2])))
        return 0
    if len(argv) == 4 and argv[1] == "summary":
        return summary(argv[2], argv[3], True)
    if len(argv) in (3, 4) and argv[1] == "table":
        run_id = argv[3] if len(argv) == 4 else None
        if run_id is None:
            runs = [r.get("run_id") for r in load(argv[2]) if r.get("kind") == "result"]
            if not runs:
                print("no results in %s" % argv[2])
                return 1
            run_id = runs[-1]
        return summary(argv[2], run_id, False)
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
