#!/usr/bin/env python3
"""sipcast capacity benchmark (issue 7): `make bench` runs this.

For each scenario (PCMU->AAC, PCMU passthrough, H.264 passthrough + AAC) and each system (sipcast: one
process, N calls placed through its REST API to the loadgen's SIP user agents; ffmpeg: one process per call,
fed by the loadgen's SIP-less RTP mode), N rises through a series until a limit: a step fails when a call or
stream is not live, a stream falls behind real time, RTP is lost, or the system under test uses more than
BENCH_CPU_LIMIT of the machine. Each step holds its N calls for BENCH_WINDOW seconds (default 60) and
measures from /proc: CPU (user+sys) of the process(es) under test, RSS (and PSS for ffmpeg), plus the
loadgen's, nginx's and everything else's CPU. Writes bench/results.json, bench/RESULTS.md, bench/capacity.png.

Standard library only; the plot needs matplotlib (Debian python3-matplotlib, installed by
scripts/install-deps.sh bench). Every process it starts is tracked by pid and stopped by pid.
"""

import http.server
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(ROOT, "bench")
TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def env_list(name, default):
    return [int(x) for x in os.environ.get(name, default).replace(" ", "").split(",") if x]


CONFIG = {
    "scenarios": os.environ.get("BENCH_SCENARIOS", "aac,passthrough,video").split(","),
    "systems": os.environ.get("BENCH_SYSTEMS", "sipcast,ffmpeg").split(","),
    "series": {
        ("aac", "sipcast"): env_list("BENCH_SERIES_AAC", "25,50,75,100,150,200"),
        ("aac", "ffmpeg"): env_list("BENCH_SERIES_AAC_FFMPEG", "25,50,75,100,150,200"),
        ("passthrough", "sipcast"): env_list("BENCH_SERIES_PASSTHROUGH", "50,100,150,200,250,500,1000"),
        ("passthrough", "ffmpeg"): env_list("BENCH_SERIES_PASSTHROUGH_FFMPEG", "50,100,150,250"),
        ("video", "sipcast"): env_list("BENCH_SERIES_VIDEO", "10,25,50,100"),
        ("video", "ffmpeg"): env_list("BENCH_SERIES_VIDEO_FFMPEG", "10,25,50,100"),
    },
    "window_s": float(os.environ.get("BENCH_WINDOW", "60")),
    "settle_s": float(os.environ.get("BENCH_SETTLE", "5")),
    "ramp_per_s": float(os.environ.get("BENCH_RAMP", "25")),
    "ffmpeg_ramp_per_s": float(os.environ.get("BENCH_FFMPEG_RAMP", "10")),
    # A step fails when the system under test uses more than this share of all cores.
    "cpu_limit": float(os.environ.get("BENCH_CPU_LIMIT", "0.85")),
    "max_loss": float(os.environ.get("BENCH_MAX_LOSS", "0.005")),
    # A stream whose (wall clock - media timestamp) grows by more than this over the window fell behind.
    "max_lag_growth_ms": float(os.environ.get("BENCH_MAX_LAG_GROWTH_MS", "500")),
    "min_free_mb": float(os.environ.get("BENCH_MIN_FREE_MB", "3000")),
    "budget_min": float(os.environ.get("BENCH_BUDGET_MIN", "45")),
    "out_dir": os.environ.get("BENCH_OUT", BENCH_DIR),
}

SCENARIOS = {
    "aac": {
        "title": "PCMU -> AAC 44.1 kHz (default config)",
        "media_toml": "",
        "video": False,
        "ffmpeg_codecs": ["-c:a", "aac", "-ar", "44100", "-ac", "1", "-b:a", "64k"],
    },
    "passthrough": {
        "title": "PCMU passthrough into FLV (audio-g711-passthrough.pipeline)",
        "media_toml": 'audio_g711_template = "audio-g711-passthrough.pipeline"\n',
        "video": False,
        "ffmpeg_codecs": ["-c:a", "copy"],
    },
    "video": {
        "title": "H.264 passthrough + PCMU -> AAC (hasVideo, av-g711-h264.pipeline)",
        "media_toml": "",
        "video": True,
        "ffmpeg_codecs": ["-c:v", "copy", "-c:a", "aac", "-ar", "44100", "-ac", "1", "-b:a", "64k"],
    },
}


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


# ------------------------------------------------------------------------------------------------
# /proc
# ------------------------------------------------------------------------------------------------

def proc_cpu_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def proc_status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_threads(pid):
    return proc_status_kb(pid, "Threads")


def system_busy_ticks():
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return total - idle, total


def mem_available_mb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0


def cpu_snapshot(groups):
    """groups: name -> list of pids. Returns name -> ticks (sum over live pids) and wall time."""
    snap = {name: sum(t for t in (proc_cpu_ticks(p) for p in pids) if t is not None)
            for name, pids in groups.items()}
    snap["_busy"], snap["_total"] = system_busy_ticks()
    snap["_t"] = time.monotonic()
    return snap


def cpu_delta(a, b):
    """name -> cores used between two snapshots; `_others` is the machine's busy time not in any group."""
    dt = b["_t"] - a["_t"]
    out = {}
    ours = 0.0
    for name in a:
        if name.startswith("_"):
            continue
        cores = (b[name] - a[name]) / TICKS / dt
        out[name] = cores
        ours += cores
    busy = (b["_busy"] - a["_busy"]) / TICKS / dt
    out["_machine"] = busy
    out["_others"] = max(0.0, busy - ours)
    return out


def others_top(limit=6):
    """The busiest processes that are not ours right now (for RESULTS.md: what else was running)."""
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], capture_output=True,
                             text=True, timeout=10).stdout.splitlines()[1:limit + 1]
        return [line.strip() for line in out]
    except Exception:  # noqa: BLE001 - informational only
        return []


# ------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------

class Proc:
    def __init__(self, name, argv, log_path, env=None, cwd=None):
        self.name = name
        self.log_path = log_path
        self.log_file = open(log_path, "ab")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                      stderr=subprocess.STDOUT, env=env, cwd=cwd)
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def stop(self, grace=8.0):
        if self.alive():
            try:
                self.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.log_file.close()

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(timeout, cond, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def http_json(method, url, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


# ------------------------------------------------------------------------------------------------
# nginx-rtmp with an on_publish hook (publish times for ffmpeg's startup figure)
# ------------------------------------------------------------------------------------------------

class PublishHook:
    def __init__(self):
        self.times = {}
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace")
                for kv in body.split("&"):
                    if kv.startswith("name="):
                        hook.times.setdefault(urllib.request.unquote(kv[5:]), time.monotonic())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Nginx:
    def __init__(self, work, hook_port):
        self.dir = os.path.join(work, "nginx")
        os.makedirs(self.dir, exist_ok=True)
        self.rtmp_port = free_port()
        self.http_port = free_port()
        d = self.dir
        conf = f"""load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx.log warn;
worker_rlimit_nofile 60000;
events {{ worker_connections 20000; }}
rtmp {{
    access_log off;
    server {{
        listen 127.0.0.1:{self.rtmp_port};
        application live {{
            live on;
            on_publish http://127.0.0.1:{hook_port}/publish;
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {d}/tmp_body;
    proxy_temp_path {d}/tmp_proxy;
    fastcgi_temp_path {d}/tmp_fastcgi;
    uwsgi_temp_path {d}/tmp_uwsgi;
    scgi_temp_path {d}/tmp_scgi;
    server {{
        listen 127.0.0.1:{self.http_port};
        location /stat {{ rtmp_stat all; }}
    }}
}}
"""
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(conf)
        self.proc = Proc("nginx", ["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"), "-e",
                                   os.path.join(d, "nginx.log")], os.path.join(d, "stdout.log"))
        if not wait_until(15, lambda: self.stat_xml() is not None):
            raise RuntimeError("nginx did not start: " + self.proc.log_text()[-2000:])

    @property
    def rtmp_url(self):
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live"

    def stat_xml(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/stat", timeout=20) as r:
                return r.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError):
            return None

    def streams(self):
        """name -> {publishing, bytes_in, time_ms (publisher connected), ts_ms (last media timestamp)}."""
        xml = self.stat_xml() or ""
        out = {}
        for block in xml.split("<stream>")[1:]:
            block = block.split("</stream>")[0]
            name = re.search(r"<name>(.*?)</name>", block)
            if not name:
                continue
            client = None
            for c in re.findall(r"<client>(.*?)</client>", block, re.S):
                if "<publishing/>" in c:
                    client = c
            own = block.rsplit("</client>", 1)[-1]
            bytes_in = re.search(r"<bytes_in>(\d+)</bytes_in>", block)
            entry = {"publishing": "<publishing/>" in own and client is not None,
                     "bytes_in": int(bytes_in.group(1)) if bytes_in else 0}
            if client:
                t = re.search(r"<time>(\d+)</time>", client)
                ts = re.search(r"<timestamp>(\d+)</timestamp>", client)
                entry["time_ms"] = int(t.group(1)) if t else 0
                entry["ts_ms"] = int(ts.group(1)) if ts else 0
            out[name.group(1)] = entry
        return out


# ------------------------------------------------------------------------------------------------
# Media files
# ------------------------------------------------------------------------------------------------

def prepare_media(media_dir):
    os.makedirs(media_dir, exist_ok=True)
    tone = os.path.join(media_dir, "tone-440hz.ul")
    video = os.path.join(media_dir, "testsrc-640x360-25fps.h264")
    if not os.path.exists(tone):
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "sine=frequency=440:sample_rate=8000", "-t", "10", "-ac", "1", "-ar", "8000",
                        "-f", "mulaw", tone], check=True)
    if not os.path.exists(video):
        # Constrained baseline, 500 kbit/s, a keyframe every second (with SPS/PPS), AUDs between pictures.
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=640x360:rate=25", "-t", "10", "-c:v", "libx264", "-profile:v",
                        "baseline", "-level", "3.1", "-preset", "veryfast", "-tune", "zerolatency",
                        "-b:v", "500k", "-maxrate", "500k", "-bufsize", "500k", "-g", "25",
                        "-keyint_min", "25", "-sc_threshold", "0", "-x264-params",
                        "aud=1:repeat-headers=1", "-bsf:v", "h264_mp4toannexb", "-f", "h264", video],
                       check=True)
    return tone, video


# ------------------------------------------------------------------------------------------------
# One step
# ------------------------------------------------------------------------------------------------

def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def lag_growth(before, after, names):
    """Per stream: how much (wall clock - media timestamp) grew between two stat samples, in ms."""
    growth = {}
    for name in names:
        a, b = before.get(name), after.get(name)
        if not a or not b or "time_ms" not in a or "time_ms" not in b:
            continue
        growth[name] = (b["time_ms"] - b["ts_ms"]) - (a["time_ms"] - a["ts_ms"])
    return growth


def measure_window(nginx, names, groups, window_s, sample_rss, loadgen_stats_file):
    """Holds the step for window_s: CPU from /proc over the window, RSS sampled every 5 s (max kept), the
    generator's pacing lateness every second (its worst second within the window), nginx stats at both
    ends."""
    streams0 = nginx.streams()
    snap0 = cpu_snapshot(groups)
    rss_max = 0
    rss_last = sample_rss()
    late_max = 0.0
    start = time.monotonic()
    end = start + window_s
    next_rss = start + 5
    while time.monotonic() < end:
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        late = (loadgen_stats(loadgen_stats_file).get("rtp") or {}).get("max_late_ms_last_second")
        late_max = max(late_max, late or 0.0)
        if time.monotonic() >= next_rss or time.monotonic() >= end:
            next_rss += 5
            rss_last = sample_rss()
            rss_max = max(rss_max, rss_last[0])
    snap1 = cpu_snapshot(groups)
    streams1 = nginx.streams()
    cpu = cpu_delta(snap0, snap1)
    growing = sum(1 for n in names if streams1.get(n, {}).get("bytes_in", 0)
                  > streams0.get(n, {}).get("bytes_in", 0) and streams1[n]["publishing"])
    lags = lag_growth(streams0, streams1, names)
    return {
        "cpu": cpu,
        "rss_max_kb": rss_max,
        "rss_end": rss_last,
        "streams_live": growing,
        "lag_growth_ms_max": max(lags.values()) if lags else None,
        "behind": sum(1 for v in lags.values() if v > CONFIG["max_lag_growth_ms"]),
        "generator_late_ms_window": late_max,
    }


def loadgen_stats(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def remove_work(path):
    """Deletes a work directory, unless BENCH_KEEP_WORK asks to keep it for its configs and logs."""
    if not os.environ.get("BENCH_KEEP_WORK"):
        shutil.rmtree(path, ignore_errors=True)


def start_loadgen(ctx, work, sc, mode_args):
    """Starts the load generator (`uas ...` or `rtp ...`) with the scenario's media; returns (proc, stats
    file) once it is ready, or raises with its log."""
    stats_file = os.path.join(work, "loadgen.json")
    args = [ctx["loadgen_bin"], *mode_args, "--audio-file", ctx["tone"], "--stats-file", stats_file]
    if sc["video"]:
        args += ["--video", "--video-file", ctx["video"]]
    lg = Proc("loadgen", args, os.path.join(work, "loadgen.log"))
    if not wait_until(10, lambda: "loadgen ready" in lg.log_text()):
        lg.stop()
        raise RuntimeError("loadgen did not start: " + lg.log_text()[-2000:])
    return lg, stats_file


def run_sipcast_step(ctx, scenario, n):
    sc = SCENARIOS[scenario]
    work = tempfile.mkdtemp(prefix=f"sipcast-bench-{scenario}-{n}-", dir=ctx["work"])
    http_port, sip_port, ua_port = free_port(), free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    config = f"""[http]
listen = "127.0.0.1:{http_port}"
[sip]
listen = "127.0.0.1:{sip_port}"
[media]
rtp_bind = "127.0.0.1"
rtp_port_min = 20000
rtp_port_max = 29999
pipelines_dir = "{os.environ.get("BENCH_PIPELINES_DIR", os.path.join(ROOT, "pipelines"))}"
{sc['media_toml']}
{os.environ.get("BENCH_MEDIA_TOML", "")}
[calls]
max_calls = {max(n * 2, 500)}
"""
    with open(os.path.join(work, "sipcast.toml"), "w") as f:
        f.write(config)
    gw = Proc("sipcast", [ctx["sipcast_bin"], "--config", os.path.join(work, "sipcast.toml")],
              os.path.join(work, "sipcast.log"), env=dict(os.environ, NO_COLOR="1", SIPCAST_LOG=os.environ.get("BENCH_SIPCAST_LOG", "warn")))
    base = f"http://127.0.0.1:{http_port}/rest-api"
    if not wait_until(20, lambda: http_json("GET", base + "/call/find_all", timeout=2)[0] in (200, 404)):
        gw.stop()
        raise RuntimeError("sipcast did not start: " + gw.log_text()[-2000:])
    time.sleep(1)
    idle_rss = proc_status_kb(gw.pid, "VmRSS")
    idle_threads = proc_threads(gw.pid)
    try:
        lg, stats_file = start_loadgen(ctx, work, sc, ["uas", "--sip", f"127.0.0.1:{ua_port}", "--users",
                                                       str(n), "--rtp-ports", "40000-59999"])
    except RuntimeError:
        gw.stop()
        raise
    names = [f"{scenario}-sc-{n}-{i}" for i in range(n)]
    t_place = time.monotonic()
    refused = 0
    for i, name in enumerate(names):
        due = t_place + i / CONFIG["ramp_per_s"]
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        status, _ = http_json("POST", base + "/call/startup", {
            "callId": name, "callee": f"ua{i}", "sipDomain": "127.0.0.1", "sipPort": ua_port,
            "rtmpUrl": ctx["nginx"].rtmp_url, "rtmpStream": name, "hasAudio": True,
            "hasVideo": sc["video"]})
        if status != 200:
            refused += 1
    placed_s = time.monotonic() - t_place

    def calls():
        status, body = http_json("GET", base + "/call/find_all", timeout=60)
        return body if status == 200 and isinstance(body, list) else []

    def all_up():
        cs = calls()
        up = sum(1 for c in cs if c.get("status") == "ESTABLISHED"
                 and c.get("rtmpStreamStatus") == "RTMP_STREAM_ACTIVE")
        return up >= n

    all_active = wait_until(30 + n / 20, all_up, interval=1.0)
    time.sleep(CONFIG["settle_s"])
    before = {c["callId"]: c for c in calls()}

    def sample_rss():
        return (proc_status_kb(gw.pid, "VmRSS"), proc_threads(gw.pid))

    groups = {"system": [gw.pid], "loadgen": [lg.pid], "nginx": [ctx["nginx"].proc.pid]}
    window = measure_window(ctx["nginx"], names, groups, CONFIG["window_s"], sample_rss, stats_file)
    after = calls()
    lg_stats = loadgen_stats(stats_file)
    established = sum(1 for c in after if c.get("status") == "ESTABLISHED")
    active = sum(1 for c in after if c.get("rtmpStreamStatus") == "RTMP_STREAM_ACTIVE")
    startup = [c["mediaStats"]["answerToFirstRtmpByteMs"] for c in after
               if (c.get("mediaStats") or {}).get("answerToFirstRtmpByteMs") is not None]
    lost = sum((c.get("mediaStats") or {}).get("rtpLost", 0) for c in after)
    pkts = sum((c.get("mediaStats") or {}).get("rtpPacketsIn", 0) for c in after)
    # Loss over the window only: lost during the window / expected during the window.
    lost_before = sum((c.get("mediaStats") or {}).get("rtpLost", 0) for c in before.values())
    pkts_before = sum((c.get("mediaStats") or {}).get("rtpPacketsIn", 0) for c in before.values())
    win_lost, win_pkts = lost - lost_before, pkts - pkts_before
    rss_end, threads = window["rss_end"]
    # Tear down: REST terminate (gateway sends BYE), then stop the processes.
    for name in names:
        http_json("POST", base + "/call/terminate", {"callId": name}, timeout=10)
    wait_until(20, lambda: (loadgen_stats(stats_file).get("sip") or {}).get("active", 1) == 0, 0.5)
    lg.stop()
    gw.stop(grace=15)
    result = {
        "system": "sipcast", "scenario": scenario, "n": n, "placed_s": placed_s, "refused": refused,
        "all_active_before_window": all_active, "established": established, "rtmp_active": active,
        "streams_live": window["streams_live"], "behind": window["behind"],
        "lag_growth_ms_max": window["lag_growth_ms_max"],
        "cpu_cores": window["cpu"]["system"], "loadgen_cores": window["cpu"]["loadgen"],
        "nginx_cores": window["cpu"]["nginx"], "others_cores": window["cpu"]["_others"],
        "machine_cores": window["cpu"]["_machine"],
        "rss_idle_kb": idle_rss, "rss_kb": rss_end, "rss_max_kb": window["rss_max_kb"],
        "threads_idle": idle_threads, "threads": threads,
        "rtp_lost": win_lost, "rtp_packets": win_pkts,
        "loss": (win_lost / (win_lost + win_pkts)) if (win_lost + win_pkts) else 0.0,
        "startup_ms_median": statistics.median(startup) if startup else None,
        "startup_ms_p95": percentile(startup, 95),
        "startup_samples": len(startup),
        "generator_late_ms_max": (lg_stats.get("rtp") or {}).get("max_late_ms"),
        "generator_late_ms_window": window["generator_late_ms_window"],
        "generator_send_errors": (lg_stats.get("rtp") or {}).get("send_errors"),
        "generator_sip": lg_stats.get("sip"),
    }
    remove_work(work)
    return result


def run_ffmpeg_step(ctx, scenario, n):
    sc = SCENARIOS[scenario]
    work = tempfile.mkdtemp(prefix=f"ffmpeg-bench-{scenario}-{n}-", dir=ctx["work"])
    # Below the ephemeral range (32768-), so the generator's own source ports never take ffmpeg's.
    base_port = 10000
    names = [f"{scenario}-ff-{n}-{i}" for i in range(n)]
    sdps = []
    for i in range(n):
        port = base_port + 4 * i
        sdp = ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        if sc["video"]:
            sdp += (f"m=video {port + 2} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                    "a=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n")
        path = os.path.join(work, f"call{i}.sdp")
        with open(path, "w") as f:
            f.write(sdp)
        sdps.append(path)
    # RTP flows first (as after a 200 OK); each ffmpeg's startup counts from its spawn to nginx's publish.
    lg, stats_file = start_loadgen(ctx, work, sc, ["rtp", "--base-port", str(base_port), "--count", str(n),
                                                   "--stride", "4"])
    procs = []
    t_place = time.monotonic()
    for i, (name, sdp) in enumerate(zip(names, sdps)):
        due = t_place + i / CONFIG["ffmpeg_ramp_per_s"]
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        argv = ["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning",
                "-protocol_whitelist", "file,udp,rtp", "-i", sdp, *sc["ffmpeg_codecs"],
                "-f", "flv", f"{ctx['nginx'].rtmp_url}/{name}"]
        procs.append(Proc("ffmpeg", argv, os.path.join(work, f"ffmpeg{i}.log")))
        if mem_available_mb() < CONFIG["min_free_mb"]:
            log(f"  memory low ({mem_available_mb():.0f} MB available): stopping the ramp at {i + 1}")
            break
    placed_s = time.monotonic() - t_place

    def published():
        streams = ctx["nginx"].streams()
        return sum(1 for nm in names if streams.get(nm, {}).get("publishing")) >= n

    all_active = wait_until(30 + n / 10, published, interval=1.0)
    time.sleep(CONFIG["settle_s"])
    pids = [p.pid for p in procs]

    def sample_rss():
        live = [p for p in pids if proc_cpu_ticks(p) is not None]
        return (sum(proc_status_kb(p, "VmRSS") for p in live), sum(proc_pss_kb(p) for p in live))

    groups = {"system": pids, "loadgen": [lg.pid], "nginx": [ctx["nginx"].proc.pid]}
    window = measure_window(ctx["nginx"], names, groups, CONFIG["window_s"], sample_rss, stats_file)
    alive = sum(1 for p in procs if p.alive())
    startup = [(ctx["hook"].times[nm] - p.started) * 1000 for nm, p in zip(names, procs)
               if nm in ctx["hook"].times]
    for p in procs:
        p.stop(grace=5)
    lg_stats = loadgen_stats(stats_file)
    lg.stop()
    missed = 0
    for p in procs:
        for m in re.finditer(r"missed (\d+) packets", p.log_text()):
            missed += int(m.group(1))
    rss_kb, pss_kb = window["rss_end"]
    sent = (lg_stats.get("rtp") or {}).get("packets", 0)
    result = {
        "system": "ffmpeg", "scenario": scenario, "n": n, "placed_s": placed_s,
        "processes": len(procs), "alive": alive,
        "all_active_before_window": all_active, "established": alive, "rtmp_active": alive,
        "streams_live": window["streams_live"], "behind": window["behind"],
        "lag_growth_ms_max": window["lag_growth_ms_max"],
        "cpu_cores": window["cpu"]["system"], "loadgen_cores": window["cpu"]["loadgen"],
        "nginx_cores": window["cpu"]["nginx"], "others_cores": window["cpu"]["_others"],
        "machine_cores": window["cpu"]["_machine"],
        "rss_idle_kb": 0, "rss_kb": rss_kb, "pss_kb": pss_kb, "rss_max_kb": window["rss_max_kb"],
        # ffmpeg reports RTP loss as "RTP: missed N packets" warnings (whole run, not only the window).
        "rtp_lost": missed, "rtp_packets": sent,
        "loss": missed / sent if sent else 0.0,
        "startup_ms_median": statistics.median(startup) if startup else None,
        "startup_ms_p95": percentile(startup, 95),
        "startup_samples": len(startup),
        "generator_late_ms_max": (lg_stats.get("rtp") or {}).get("max_late_ms"),
        "generator_late_ms_window": window["generator_late_ms_window"],
        "generator_send_errors": (lg_stats.get("rtp") or {}).get("send_errors"),
    }
    remove_work(work)
    return result


def verdict(r):
    """Why a step does not count as held (empty: held)."""
    n = r["n"]
    why = []
    if r["established"] < n or r["rtmp_active"] < n:
        why.append(f"live calls {min(r['established'], r['rtmp_active'])}/{n}")
    if r["streams_live"] < n:
        why.append(f"growing RTMP streams {r['streams_live']}/{n}")
    if r["behind"]:
        why.append(f"{r['behind']} streams fell behind real time")
    if r["loss"] > CONFIG["max_loss"]:
        why.append(f"RTP loss {r['loss'] * 100:.2f} %")
    if r["cpu_cores"] > CONFIG["cpu_limit"] * CORES:
        why.append(f"CPU {r['cpu_cores'] * 100:.0f} % of one core > {CONFIG['cpu_limit'] * 100:.0f} % "
                   f"of {CORES} cores")
    # Within the window only: process start-up storms during the ramp are not the steady state.
    late = r.get("generator_late_ms_window") or 0
    if late > 200:
        why.append(f"load generator late by {late:.0f} ms (machine saturated)")
    return why


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------

def machine_info():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])

    def version(argv, pattern):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            m = re.search(pattern, out.stdout + out.stderr)
            return m.group(1) if m else "?"
        except OSError:
            return "?"

    return {
        "cpu_model": model, "cores": CORES, "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(), "os": version(["cat", "/etc/debian_version"], r"(\S+)"),
        "gstreamer": version(["gst-launch-1.0", "--version"], r"GStreamer (\S+)"),
        "ffmpeg": version(["ffmpeg", "-version"], r"ffmpeg version (\S+)"),
        "nginx": version(["nginx", "-v"], r"nginx/(\S+)"),
    }


def main():
    out_dir = CONFIG["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="sipcast-bench-")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ctx = {
        "work": work,
        "sipcast_bin": os.environ.get("BENCH_SIPCAST", os.path.join(target, "release", "sipcast")),
        "loadgen_bin": os.environ.get("BENCH_LOADGEN", os.path.join(target, "release", "loadgen")),
    }
    for key in ("sipcast_bin", "loadgen_bin"):
        if not os.access(ctx[key], os.X_OK):
            sys.exit(f"bench: {ctx[key]} missing: build with `cargo build --release -p sipcast -p loadgen`")
    ctx["tone"], ctx["video"] = prepare_media(os.path.join(work, "media"))
    ctx["hook"] = PublishHook()
    ctx["nginx"] = Nginx(work, ctx["hook"].port)
    started = time.monotonic()
    info = machine_info()
    info["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    info["command"] = "make bench" + "".join(
        f" {k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_"))
    info["others_at_start"] = others_top()
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "pipelines"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["commit"] = commit + (" + uncommitted changes to src/" if dirty else "")
    except OSError:
        info["commit"] = "?"
    log(f"bench: {info['cpu_model']}, {CORES} cores, {info['mem_gib']} GiB; work dir {work}")
    results = []
    done = set()
    # BENCH_RESUME=1: keep the steps of an interrupted run (bench/results.json) and run only the rest.
    if os.environ.get("BENCH_RESUME") and os.path.exists(os.path.join(out_dir, "results.json")):
        with open(os.path.join(out_dir, "results.json")) as f:
            previous = json.load(f)
        results = previous["results"]
        info["resumed_from"] = previous["machine"].get("resumed_from", previous["machine"]["date"])
        for r in results:
            done.add((r["scenario"], r["system"], r["n"]))
            if "error" in r or r.get("why_not_held"):
                done.add((r["scenario"], r["system"], "limit"))
    try:
        for scenario in CONFIG["scenarios"]:
            for system in CONFIG["systems"]:
                if (scenario, system, "limit") in done:
                    continue
                for n in CONFIG["series"][(scenario, system)]:
                    if (scenario, system, n) in done:
                        continue
                    elapsed_min = (time.monotonic() - started) / 60
                    if elapsed_min > CONFIG["budget_min"]:
                        log(f"bench: time budget of {CONFIG['budget_min']} min used up; skipping "
                            f"{scenario}/{system} N={n}")
                        break
                    log(f"bench: {scenario} / {system} / N={n}")
                    step = run_sipcast_step if system == "sipcast" else run_ffmpeg_step
                    try:
                        r = step(ctx, scenario, n)
                    except Exception as e:  # noqa: BLE001 - a failed step is a result, not a crash
                        r = {"system": system, "scenario": scenario, "n": n, "error": str(e)[:2000]}
                        log(f"  step failed: {e}")
                        results.append(r)
                        break
                    r["why_not_held"] = verdict(r)
                    results.append(r)
                    log(f"  cpu {r['cpu_cores'] * 100:.1f} % core ({r['cpu_cores'] * 100 / n:.2f} %/call), "
                        f"rss {r['rss_kb'] / 1024:.0f} MB, loadgen {r['loadgen_cores'] * 100:.0f} %, "
                        f"others {r['others_cores'] * 100:.0f} %, live {r['streams_live']}/{n}, "
                        f"loss {r['loss'] * 100:.3f} %, startup med {r['startup_ms_median']} ms, "
                        f"lag+ {r['lag_growth_ms_max']} ms -> {'held' if not r['why_not_held'] else r['why_not_held']}")
                    with open(os.path.join(out_dir, "results.json"), "w") as f:
                        json.dump({"machine": info, "config": {k: v for k, v in CONFIG.items()
                                                               if k != "series"},
                                   "series": {f"{a}/{b}": v for (a, b), v in CONFIG["series"].items()},
                                   "results": results}, f, indent=1)
                    if r["why_not_held"]:
                        log(f"  limit reached for {scenario}/{system}")
                        break
    finally:
        ctx["nginx"].proc.stop()
        ctx["hook"].server.shutdown()
    info["duration_min"] = round((time.monotonic() - started) / 60, 1)
    data = {"machine": info, "config": {k: v for k, v in CONFIG.items() if k != "series"},
            "series": {f"{a}/{b}": v for (a, b), v in CONFIG["series"].items()}, "results": results}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(data, f, indent=1)
    import report  # noqa: E402 - beside this file
    report.write(data, out_dir)
    remove_work(work)
    log(f"bench: done in {info['duration_min']} min; see {out_dir}/RESULTS.md")


if __name__ == "__main__":
    sys.path.insert(0, BENCH_DIR)
    main()
