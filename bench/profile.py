#!/usr/bin/env python3
"""Profiles sipcast under load: `python3 bench/profile.py SCENARIO N [SECONDS]` starts nginx, the release
sipcast and the loadgen like bench/run.py, places N calls, then samples sipcast with `perf record -g` for
SECONDS (default 20) and writes bench/profile-SCENARIO-N.txt: CPU from /proc, threads by name, and perf's
top symbols (self and by shared object). BENCH_SIPCAST / BENCH_LOADGEN override the binaries;
PROFILE_CONFIG_TOML is appended to the gateway's [media] table (to measure a template or setting)."""

import collections
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402


def threads_by_name(pid):
    names = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        # udpsrc12:src -> udpsrc:src
        names["".join(c for c in name if not c.isdigit())] += 1
    return names


def thread_ticks(pid):
    """tid -> (name without digits, utime+stime ticks) for every thread of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                data = f.read()
        except OSError:
            continue
        name = data[data.index("(") + 1:data.rindex(")")]
        fields = data[data.rindex(")") + 2:].split()
        out[tid] = ("".join(c for c in name if not c.isdigit()), int(fields[11]) + int(fields[12]))
    return out


def main():
    scenario = sys.argv[1] if len(sys.argv) > 1 else "aac"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 20
    extra = os.environ.get("PROFILE_CONFIG_TOML", "")
    if extra:
        run.SCENARIOS[scenario] = dict(run.SCENARIOS[scenario],
                                       media_toml=run.SCENARIOS[scenario]["media_toml"] + extra + "\n")
    work = tempfile.mkdtemp(prefix="sipcast-profile-")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(run.ROOT, "target"))
    ctx = {"work": work,
           "sipcast_bin": os.environ.get("BENCH_SIPCAST", os.path.join(target, "release", "sipcast")),
           "loadgen_bin": os.environ.get("BENCH_LOADGEN", os.path.join(target, "release", "loadgen"))}
    ctx["tone"], ctx["video"] = run.prepare_media(os.path.join(work, "media"))
    ctx["hook"] = run.PublishHook()
    ctx["nginx"] = run.Nginx(work, ctx["hook"].port)
    report = []
    original_measure = run.measure_window

    def measure_with_perf(nginx, names, groups, window_s, sample_rss, stats_file):
        pid = groups["system"][0]
        snap0 = run.cpu_snapshot(groups)
        threads0 = thread_ticks(pid)
        perf_data = os.path.join(work, "perf.data")
        perf = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-p", str(pid), "-o", perf_data,
                                 "--", "sleep", str(seconds)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        perf.wait()
        snap1 = run.cpu_snapshot(groups)
        threads1 = thread_ticks(pid)
        cpu = run.cpu_delta(snap0, snap1)
        by_name = collections.Counter()
        for tid, (name, ticks) in threads1.items():
            by_name[name] += ticks - threads0.get(tid, (name, 0))[1]
        dt = snap1["_t"] - snap0["_t"]
        report.append(f"# sipcast profile: {scenario}, N={n}, {seconds:.0f} s\n")
        report.append(f"CPU: sipcast {cpu['system'] * 100:.1f} % of one core ({cpu['system'] * 100 / n:.3f} % per "
                      f"call); loadgen {cpu['loadgen'] * 100:.1f} %; nginx {cpu['nginx'] * 100:.1f} %; others "
                      f"{cpu['_others'] * 100:.1f} %\n")
        report.append(f"RSS {run.proc_status_kb(pid, 'VmRSS') / 1024:.0f} MB, threads {run.proc_threads(pid)}: "
                      + ", ".join(f"{k} {v}" for k, v in threads_by_name(pid).most_common()) + "\n")
        report.append("\nCPU by thread kind (from /proc, % of one core, all calls): " + ", ".join(
            f"{k} {v / run.TICKS / dt * 100:.1f}" for k, v in by_name.most_common() if v > 0) + "\n")
        for title, args in (("self time by symbol", ["--no-children", "--sort", "dso,symbol"]),
                            ("self time by shared object", ["--no-children", "--sort", "dso"]),
                            ("self time by thread", ["--no-children", "--sort", "comm"])):
            out = subprocess.run(["perf", "report", "-i", perf_data, "--stdio", "-g", "none",
                                  "--percent-limit", "0.7", *args], capture_output=True, text=True).stdout
            lines = [line for line in out.splitlines() if line.strip() and not line.startswith("#")]
            report.append(f"\n## {title}\n\n```\n" + "\n".join(lines[:45]) + "\n```\n")
        return original_measure(nginx, names, groups, 1, sample_rss, stats_file)

    run.measure_window = measure_with_perf
    run.CONFIG["settle_s"] = 5
    try:
        r = run.run_sipcast_step(ctx, scenario, n)
        report.append(f"\nStep figures: {r['established']}/{n} established, {r['rtmp_active']}/{n} RTMP active, "
                      f"startup median {r['startup_ms_median']} ms\n")
    finally:
        ctx["nginx"].proc.stop()
        ctx["hook"].server.shutdown()
    suffix = os.environ.get("PROFILE_SUFFIX", "")
    out = os.path.join(run.BENCH_DIR, f"profile-{scenario}-{n}{suffix}.txt")
    with open(out, "w") as f:
        f.write("".join(report))
    print(out)


if __name__ == "__main__":
    main()
