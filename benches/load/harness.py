#!/usr/bin/env python3
"""Orchestration of the load harness; `benches/load/run.sh` builds the binaries and calls
`harness.py run`. Standard library only. See benches/load/README.md.

    harness.py executable BUILD_JSON TARGET   path of a built executable, from cargo's JSON
    harness.py run --origin ... --work DIR     prepare the fleet, start servers, measure
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse

MIB = 1024 * 1024
GIB = 1024 * MIB


def env_int(name, default):
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"harness: {name} must be a whole number, not {value!r}")


def env_flag(name):
    return os.environ.get(name, "") not in ("", "0", "no", "false")


# Settings (environment variables; documented in README.md).
DURATION = env_int("DURATION", 8)  # seconds per wrk run
ROUNDS = env_int("ROUNDS", 3)
WARMUP = env_int("WARMUP", 2)  # seconds per server and test kind before round 1; 0: none
SKIP_1GIB = env_flag("SKIP_1GIB")
TTFB_TRIES = env_int("TTFB_TRIES", 5)
RSS_FAST = env_int("RSS_FAST", 48)
RSS_SLOW = env_int("RSS_SLOW", 16)
SLOW_RATE = os.environ.get("SLOW_RATE", "20M")  # curl --limit-rate of the slow readers
KEEP_WORK = env_flag("KEEP_WORK")
WRK_TIMEOUT = "60s"  # a 256 MiB response at c=32 takes seconds; wrk's default is 2 s

META_CONNS = (1, 32, 128)
PAYLOAD_CONNS = (1, 8, 32)
SERVERS = ("origin", "nginx", "ceiling")

# The fleet. Every binary is incompressible pseudo-random bytes, the same on every machine.
# (app, size, cpuArch or None, device attributes)
MAIN_FLEET = [
    ("os_bench", 64 * MIB, "bench", []),
    ("bench_a", 64 * MIB, None, ["bench"]),
    ("bench_b", 64 * MIB, None, ["bench"]),
    ("bench_c", 64 * MIB, None, ["bench"]),
]
SMALL_FLEET = [("os_small", 1 * MIB, "small", [])]
HUGE_FLEET = [("os_huge", 1 * GIB, "huge", [])]
FLEET = MAIN_FLEET + SMALL_FLEET + ([] if SKIP_1GIB else HUGE_FLEET)
VERSION = "1.0.0"
CHANNEL = "prod"

MAIN_QUERY = "cpuArch=bench&attrBench=prod"
META_QUERY = MAIN_QUERY + "&payloadType=metadataOnly"
# Time to first byte: (label, query, binaries in the package)
TTFB_PACKAGES = [
    ("1 MiB", "cpuArch=small", ["os_small"]),
    ("64 MiB", "cpuArch=bench", ["os_bench"]),
    ("1 GiB", "cpuArch=huge", ["os_huge"]),
]

WRK_SCRIPT = r"""
-- Written by harness.py: prints wrk's summary as one JSON line.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%.0f,"requests":%.0f,"bytes":%.0f,' ..
    '"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,' ..
    '"p50_us":%.0f,"p99_us":%.0f,"max_us":%.0f}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


class Failure(Exception):
    """A check failed; the message says which and why."""


class Stopped(Exception):
    """SIGTERM arrived (from run.sh's trap, on Ctrl-C or a failure there)."""


def on_sigterm(signum, frame):
    raise Stopped()


def say(message):
    print(f"[load] {message}", file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------


class Processes:
    """Everything this run starts, so that all of it is stopped at the end, by pid."""

    def __init__(self, pidfile):
        self.pidfile = pidfile
        self.running = []

    def spawn(self, name, argv, *, log=None, server=False, env=None, stdout=None):
        out = stdout
        if log is not None:
            out = open(log, "ab")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out if out is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
                env=env,
                # Servers get a session of their own: a terminal's Ctrl-C reaches the
                # harness, which stops them in order, rather than all at once.
                start_new_session=server,
            )
        except FileNotFoundError as error:
            raise Failure(f"cannot start {name}: {error}")
        finally:
            if log is not None:
                out.close()
        proc.name = name
        self.running.append(proc)
        if server:
            with open(self.pidfile, "a") as pids:
                pids.write(f"{proc.pid} {name}\n")
        return proc

    def stop(self, proc, grace=5.0):
        if proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                say(f"{proc.name} (pid {proc.pid}) did not stop in {grace:.0f} s; killing it")
                proc.kill()
                proc.wait()
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self):
        for proc in reversed(list(self.running)):
            self.stop(proc)


def run_quiet(argv, timeout=None):
    """Output of a short command (stdout and stderr), or a note that it failed."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"({argv[0]}: {error})"
    return (done.stdout + done.stderr).strip()


# --- HTTP -----------------------------------------------------------------------------


def http_request(url, method="GET", to_file=None, timeout=60):
    """(status, headers as a lower-case dict, body bytes or bytes written to `to_file`)."""
    parts = urllib.parse.urlsplit(url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, target)
        response = conn.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        if to_file is None:
            return response.status, headers, response.read()
        written = 0
        with open(to_file, "wb") as out:
            while True:
                chunk = response.read(MIB)
                if not chunk:
                    break
                out.write(chunk)
                written += len(chunk)
        return response.status, headers, written
    finally:
        conn.close()


def wait_until(what, proc, check, timeout, log=None):
    """Polls `check()` until it returns a value; fails if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise Failure(f"{what}: {proc.name} exited with status {proc.returncode}" + log_tail(log))
        try:
            value = check()
        except (OSError, http.client.HTTPException):
            value = None
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise Failure(f"{what}: not ready after {timeout} s" + log_tail(log))
        time.sleep(0.05)


def log_tail(log, lines=15):
    if log is None or not os.path.exists(log):
        return ""
    with open(log, errors="replace") as text:
        tail = text.read().splitlines()[-lines:]
    return f"\n--- last lines of {log} ---\n" + "\n".join(tail)


def listening_address(log, pattern):
    """The address a server printed when it started listening, once it has."""
    if not os.path.exists(log):
        return None
    with open(log, errors="replace") as text:
        match = re.search(pattern, text.read())
    return match.group(1) if match else None


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def md5_of(data):
    """MD5 of what a binary file object holds from its position on, read in chunks."""
    digest = hashlib.md5()
    while chunk := data.read(4 * MIB):
        digest.update(chunk)
    return digest.hexdigest()


def file_md5(path):
    with open(path, "rb") as data:
        return md5_of(data)


# --- the run --------------------------------------------------------------------------


class Run:
    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.work)
        self.store = os.path.join(self.work, "store")
        self.src = os.path.join(self.work, "src")
        self.static = os.path.join(self.work, "static")
        self.logs = os.path.join(self.work, "logs")
        self.procs = Processes(os.path.join(self.work, "pids"))
        self.notes = []  # remarks for the report
        # Neither the origin nor seed should pick up settings from the caller's
        # environment: the documented defaults are part of what is measured.
        self.clean_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPACK_")}
        for sub in (self.store, self.src, self.static, self.logs, os.path.join(self.logs, "wrk")):
            os.makedirs(sub, exist_ok=True)

    # --- fleet ---

    def check_disk(self):
        sizes = [size for _, size, *_ in FLEET]
        # Each binary is stored with its segment (about as large: the bytes do not
        # compress), the largest source file exists once more while it is published, and
        # the saved package is one more copy of the main fleet.
        needed = 2 * sum(sizes) + max(sizes) + sum(size for _, size, *_ in MAIN_FLEET) + GIB
        free = shutil.disk_usage(self.work).free
        say(f"disk: {free / GIB:.1f} GiB free in {self.work}, {needed / GIB:.1f} GiB needed")
        if free < needed:
            raise Failure(
                f"not enough disk space: {free / GIB:.1f} GiB free, {needed / GIB:.1f} GiB needed"
                + ("" if SKIP_1GIB else " (SKIP_1GIB=1 needs about 3 GiB less)")
            )

    def publish_fleet(self):
        for app, size, cpu_arch, attrs in FLEET:
            path = os.path.join(self.src, app + ".bin")
            started = time.monotonic()
            write_binary(path, app, size)
            argv = [self.args.seed, "--store", "local", "--data-dir", self.store, "publish", path,
                    "--app", app, "--channel", CHANNEL, "--version", VERSION]
            if cpu_arch:
                argv += ["--cpu-arch", cpu_arch]
            for attr in attrs:
                argv += ["--attr", attr]
            log = os.path.join(self.logs, "seed.log")
            with open(log, "ab") as out:
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=self.clean_env)
            os.remove(path)
            if done.returncode != 0:
                raise Failure(f"fleetpack-seed publish {app} failed (status {done.returncode})" + log_tail(log))
            say(f"published {app} ({human_size(size)}) in {time.monotonic() - started:.1f} s")
        with open(os.path.join(self.store, "rules.json")) as text:
            rules = json.load(text)
        self.levels = {}
        for app, *_ in FLEET:
            rule = next((r for r in rules if r.get("app") == app), None)
            if rule is None:
                raise Failure(f"no rule for {app} in {self.store}/rules.json after publishing")
            if not rule.get("segment"):
                raise Failure(f"the rule of {app} has no stored segment: the spliced path cannot be measured")
            self.levels[app] = rule.get("deflateLevel")

    # --- servers ---

    def start_origin(self, tag):
        log = os.path.join(self.logs, f"origin-{tag}.log")
        proc = self.procs.spawn(
            "fleetpack-origin",
            [self.args.origin, "--store", "local", "--data-dir", self.store,
             "--listen", "127.0.0.1:0", "--shutdown-grace", "1s"],
            log=log, server=True, env=self.clean_env,
        )
        address = wait_until("origin start", proc,
                             lambda: listening_address(log, r"listening on http://(\S+)"), 60, log)
        base = f"http://{address}"

        def ready():
            status, _, _ = http_request(base + "/readyz", timeout=5)
            return True if status == 200 else None

        wait_until("origin /readyz 200", proc, ready, 60, log)
        say(f"origin ({tag}) ready at {base}, pid {proc.pid}")
        return proc, base

    def start_nginx(self):
        nginx_dir = os.path.join(self.work, "nginx")
        os.makedirs(nginx_dir, exist_ok=True)
        log = os.path.join(self.logs, "nginx-error.log")
        conf = os.path.join(nginx_dir, "nginx.conf")
        for attempt in range(3):
            port = free_port()
            with open(conf, "w") as out:
                out.write(nginx_config(nginx_dir, self.static, log, port))
            test = subprocess.run([self.args.nginx, "-t", "-q", "-p", nginx_dir, "-c", conf, "-e", log],
                                  capture_output=True, text=True)
            if test.returncode != 0:
                raise Failure(f"nginx rejects its configuration {conf}:\n{test.stderr}")
            proc = self.procs.spawn("nginx", [self.args.nginx, "-p", nginx_dir, "-c", conf, "-e", log],
                                    log=os.path.join(self.logs, "nginx.out"), server=True)
            base = f"http://127.0.0.1:{port}"

            def up():
                status, _, _ = http_request(base + "/metadata.json", timeout=5)
                return True if status == 200 else None

            try:
                wait_until("nginx start", proc, up, 30, log)
            except Failure:
                self.procs.stop(proc)
                with open(log, errors="replace") as text:
                    if "Address already in use" in text.read() and attempt < 2:
                        continue
                raise
            say(f"nginx ready at {base}, pid {proc.pid}")
            return proc, base
        raise Failure("nginx: no free port found")

    def start_ceiling(self):
        log = os.path.join(self.logs, "ceiling.log")
        proc = self.procs.spawn(
            "ceiling",
            [self.args.ceiling, "--listen", "127.0.0.1:0",
             "--file", os.path.join(self.static, "metadata.json") + ":/metadata.json",
             "--file", os.path.join(self.static, "package.tar.gz") + ":/package.tar.gz"],
            log=log, server=True,
        )
        address = wait_until("ceiling start", proc,
                             lambda: listening_address(log, r"listening on http://(\S+)"), 60, log)
        base = f"http://{address}"
        say(f"ceiling ready at {base}, pid {proc.pid}")
        return proc, base

    # --- reference files and checks ---

    def save_reference_files(self, base):
        """Fetches the metadata and the package from the origin once, checks them, and
        saves them for nginx and the ceiling."""
        status, headers, body = http_request(base + "/package?" + META_QUERY)
        if status != 200:
            raise Failure(f"origin metadataOnly: status {status}: {body[:300]!r}")
        if headers.get("content-type") != "application/json":
            raise Failure(f"origin metadataOnly: Content-Type {headers.get('content-type')!r}")
        details = json.loads(body)
        expected_apps = [app for app, *_ in MAIN_FLEET]
        if sorted(details) != sorted(expected_apps):
            raise Failure(f"origin metadataOnly lists {sorted(details)}, expected {sorted(expected_apps)}")
        with open(os.path.join(self.static, "metadata.json"), "wb") as out:
            out.write(body)
        self.metadata_len = len(body)

        before = spliced_count(base)
        package = os.path.join(self.static, "package.tar.gz")
        status, headers, written = http_request(base + "/package?" + MAIN_QUERY, to_file=package, timeout=300)
        if status != 200:
            raise Failure(f"origin package: status {status}")
        if headers.get("content-type") != "application/gzip":
            raise Failure(f"origin package: Content-Type {headers.get('content-type')!r}")
        if "content-length" not in headers or headers.get("accept-ranges") != "bytes":
            raise Failure("origin package has no Content-Length or no Accept-Ranges: bytes, so it was "
                          "not spliced from stored segments (see the origin log)")
        if int(headers["content-length"]) != written:
            raise Failure(f"origin package: Content-Length {headers['content-length']} but {written} bytes came")
        after = spliced_count(base)
        if before is not None and after is not None and after != before + 1:
            raise Failure(f"fleetpack_packages_spliced_total went from {before} to {after}, expected +1")
        self.package_len = written
        self.package_md5 = file_md5(package)
        check_package(package, details)
        say(f"saved metadata ({self.metadata_len} bytes) and package ({written} bytes); "
            "the package decodes and every binary has its MD5")

    def check_static_server(self, name, base):
        with open(os.path.join(self.static, "metadata.json"), "rb") as data:
            metadata = data.read()
        status, headers, body = http_request(base + "/metadata.json")
        if status != 200 or body != metadata:
            raise Failure(f"{name} /metadata.json: status {status}, {len(body)} bytes; expected the saved file")
        if headers.get("content-type") != "application/json":
            raise Failure(f"{name} /metadata.json: Content-Type {headers.get('content-type')!r}")
        fetched = os.path.join(self.work, f"check-{name}.tar.gz")
        status, headers, written = http_request(base + "/package.tar.gz", to_file=fetched, timeout=300)
        same = status == 200 and written == self.package_len and file_md5(fetched) == self.package_md5
        os.remove(fetched)
        if not same:
            raise Failure(f"{name} /package.tar.gz: status {status}, {written} bytes, not the saved package")
        if headers.get("content-type") != "application/gzip":
            raise Failure(f"{name} /package.tar.gz: Content-Type {headers.get('content-type')!r}")

    # --- wrk ---

    def wrk(self, url, conns, duration, label):
        argv = ["wrk", "-t", str(min(2, conns)), "-c", str(conns), "-d", f"{duration}s",
                "--latency", "--timeout", WRK_TIMEOUT, "-s", self.wrk_script, url]
        proc = self.procs.spawn("wrk", argv, stdout=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=duration + 120)
        except subprocess.TimeoutExpired:
            self.procs.stop(proc)
            raise Failure(f"wrk {label} did not finish")
        self.procs.running.remove(proc)
        out = out.decode(errors="replace")
        with open(os.path.join(self.logs, "wrk", label + ".txt"), "w") as raw:
            raw.write(" ".join(argv) + "\n" + out + err.decode(errors="replace"))
        line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
        if proc.returncode != 0 or line is None:
            raise Failure(f"wrk {label} failed (status {proc.returncode}):\n{out}{err.decode(errors='replace')}")
        result = json.loads(line[len("WRKJSON "):])
        errors = {k: int(result[k]) for k in ("connect", "read", "write", "status")}
        if any(errors.values()):
            raise Failure(f"wrk {label}: errors {errors} (status counts responses that are not 2xx/3xx)")
        if result["bytes"] <= 0 or (result["requests"] <= 0 and "meta" in label):
            raise Failure(f"wrk {label}: nothing was received")
        if result["timeout"]:
            self.notes.append(f"wrk {label}: {int(result['timeout'])} requests over the {WRK_TIMEOUT} timeout")
        seconds = result["duration_us"] / 1e6
        return {
            "rps": result["requests"] / seconds,
            "mbps": result["bytes"] / seconds / 1e6,
            "p99_ms": result["p99_us"] / 1000,
            "requests": int(result["requests"]),
        }

    def measure_wrk(self, bases):
        self.wrk_script = os.path.join(self.work, "report.lua")
        with open(self.wrk_script, "w") as out:
            out.write(WRK_SCRIPT)
        urls = {
            "origin": {"meta": bases["origin"] + "/package?" + META_QUERY,
                       "payload": bases["origin"] + "/package?" + MAIN_QUERY},
        }
        for name in ("nginx", "ceiling"):
            urls[name] = {"meta": bases[name] + "/metadata.json", "payload": bases[name] + "/package.tar.gz"}
        tests = [("meta", c) for c in META_CONNS] + [("payload", c) for c in PAYLOAD_CONNS]
        if WARMUP > 0:
            for kind in ("meta", "payload"):
                for server in SERVERS:
                    self.wrk(urls[server][kind], 8, WARMUP, f"warmup-{kind}-{server}")
            say(f"warmed up every server ({WARMUP} s each per test kind)")
        results = {test: {server: [] for server in SERVERS} for test in tests}
        total = ROUNDS * len(tests) * len(SERVERS)
        done = 0
        for rnd in range(ROUNDS):
            for index, (kind, conns) in enumerate(tests):
                # The servers take turns going first, so none always runs after another.
                shift = (rnd + index) % len(SERVERS)
                for server in SERVERS[shift:] + SERVERS[:shift]:
                    label = f"r{rnd + 1}-{kind}-c{conns}-{server}"
                    result = self.wrk(urls[server][kind], conns, DURATION, label)
                    results[(kind, conns)][server].append(result)
                    done += 1
                    shown = f"{result['rps']:,.0f} req/s, p99 {result['p99_ms']:.2f} ms" if kind == "meta" \
                        else f"{result['mbps']:,.0f} MB/s"
                    say(f"[{done}/{total}] round {rnd + 1} {kind} c={conns} {server}: {shown}")
        return results

    # --- RSS under 64 downloads ---

    def measure_rss(self):
        proc, base = self.start_origin("rss")
        status, _, _ = http_request(base + "/package?" + META_QUERY)
        if status != 200:
            raise Failure(f"origin metadataOnly: status {status}")
        time.sleep(0.5)
        baseline = read_status_kib(proc.pid, "VmRSS")
        sampler = RssSampler(proc.pid)
        sampler.start()
        url = base + "/package?" + MAIN_QUERY
        rss_dir = os.path.join(self.logs, "rss")
        os.makedirs(rss_dir, exist_ok=True)
        downloads = []
        started = time.monotonic()
        try:
            for index in range(RSS_FAST + RSS_SLOW):
                slow = index < RSS_SLOW
                headers = os.path.join(rss_dir, f"{index:02d}.headers")
                argv = ["curl", "-sS", "-o", "/dev/null", "-D", headers, "--max-time", "900",
                        "-w", "%{http_code} %{size_download} %{time_total}\\n", url]
                if slow:
                    argv[1:1] = ["--limit-rate", SLOW_RATE]
                curl = self.procs.spawn("curl", argv, stdout=subprocess.PIPE)
                downloads.append((curl, slow, headers))
            outcomes = []
            for curl, slow, headers in downloads:
                out, err = curl.communicate(timeout=960)
                self.procs.running.remove(curl)
                outcomes.append((curl.returncode, out.decode(), err.decode(), slow, headers))
        finally:
            sampler.stop()
        elapsed = time.monotonic() - started
        if proc.poll() is not None:
            raise Failure(f"the origin exited during the downloads (status {proc.returncode})" + log_tail(
                os.path.join(self.logs, "origin-rss.log")))
        if sampler.error is not None:
            raise Failure(f"reading the origin's RSS failed: {sampler.error}")
        hwm = read_status_kib(proc.pid, "VmHWM")
        problems = []
        times = {True: [], False: []}
        for index, (rc, out, err, slow, headers) in enumerate(outcomes):
            fields = out.split()
            length = header_value(headers, "content-length")
            if rc != 0 or len(fields) != 3 or fields[0] != "200" or length is None \
                    or int(fields[1]) != int(length) or int(length) != self.package_len:
                problems.append(f"download {index}: curl status {rc}, -w {out.strip()!r}, "
                                f"Content-Length {length}, {err.strip()}")
            else:
                times[slow].append(float(fields[2]))
        if problems:
            raise Failure(f"{len(problems)} of {len(outcomes)} downloads failed:\n" + "\n".join(problems[:10]))
        self.procs.stop(proc)
        say(f"RSS: baseline {baseline / 1024:.1f} MiB, sampled peak {sampler.peak / 1024:.1f} MiB, "
            f"VmHWM {hwm / 1024:.1f} MiB; {len(outcomes)} downloads complete in {elapsed:.1f} s")
        return {
            "baseline_mib": baseline / 1024,
            "peak_mib": sampler.peak / 1024,
            "hwm_mib": hwm / 1024,
            "samples": sampler.samples,
            "elapsed": elapsed,
            "fast_s": times[False],
            "slow_s": times[True],
        }

    # --- time to first byte ---

    def measure_ttfb(self):
        proc, base = self.start_origin("ttfb")
        results = {}
        for label, query, apps in TTFB_PACKAGES:
            if SKIP_1GIB and "os_huge" in apps:
                continue
            url = base + "/package?" + query
            status, headers, _ = http_request(url, method="HEAD")
            if status != 200 or "content-length" not in headers:
                raise Failure(f"HEAD {url}: status {status}, Content-Length {headers.get('content-length')}")
            length = int(headers["content-length"])
            tries = []
            # The first try is not counted: it opens the files for the first time.
            for attempt in range(TTFB_TRIES + 1):
                argv = ["curl", "-sS", "-o", "/dev/null", "--max-time", "600",
                        "-w", "%{http_code} %{time_starttransfer} %{size_download}", url]
                curl = self.procs.spawn("curl", argv, stdout=subprocess.PIPE)
                out, err = curl.communicate(timeout=660)
                self.procs.running.remove(curl)
                fields = out.decode().split()
                if curl.returncode != 0 or len(fields) != 3 or fields[0] != "200" or int(fields[2]) != length:
                    raise Failure(f"TTFB {label}: curl status {curl.returncode}, -w {out.decode()!r}, "
                                  f"expected {length} bytes; {err.decode().strip()}")
                if attempt > 0:
                    tries.append(float(fields[1]) * 1000)
            results[label] = {"ms": tries, "bytes": length}
            say(f"TTFB {label}: median {statistics.median(tries):.2f} ms over {len(tries)} tries")
        self.procs.stop(proc)
        return results

    # --- the whole run ---

    def run(self):
        machine = describe_machine(self.args.nginx)
        self.check_disk()
        self.publish_fleet()
        origin, origin_base = self.start_origin("wrk")
        self.save_reference_files(origin_base)
        nginx, nginx_base = self.start_nginx()
        self.check_static_server("nginx", nginx_base)
        ceiling, ceiling_base = self.start_ceiling()
        self.check_static_server("ceiling", ceiling_base)
        bases = {"origin": origin_base, "nginx": nginx_base, "ceiling": ceiling_base}
        throughput = self.measure_wrk(bases)
        for proc in (ceiling, nginx, origin):
            self.procs.stop(proc)
        rss = self.measure_rss()
        ttfb = self.measure_ttfb()
        report = render_report(machine, self, throughput, rss, ttfb)
        with open(self.args.results, "w") as out:
            out.write(report)
        print(report)
        say(f"results written to {self.args.results}")

    def cleanup(self):
        self.procs.stop_all()
        if KEEP_WORK:
            return
        # The large files; the logs stay for a look after the run.
        for sub in (self.store, self.src, self.static):
            shutil.rmtree(sub, ignore_errors=True)
        for name in os.listdir(self.work):
            if name.startswith("check-"):
                os.remove(os.path.join(self.work, name))


# --- helpers of the run ---------------------------------------------------------------


def write_binary(path, app, size):
    """Incompressible bytes that depend only on the app's name and the size."""
    rng = random.Random(f"fleetpack-load:{app}:{size}")
    with open(path, "wb") as out:
        left = size
        while left:
            take = min(left, 4 * MIB)
            out.write(rng.randbytes(take))
            left -= take


def spliced_count(base):
    status, _, body = http_request(base + "/metrics")
    if status != 200:
        return None
    match = re.search(rb"^fleetpack_packages_spliced_total (\d+)", body, re.M)
    return int(match.group(1)) if match else None


def check_package(path, details):
    """Decodes the package as a device does (streaming) and checks each binary's MD5."""
    seen = []
    with tarfile.open(path, "r|gz") as archive:
        for member in archive:
            seen.append((member.name, member.size, md5_of(archive.extractfile(member))))
    expected = [("package_details.json", None, None)] + [
        (f"{app}_{info['latestVersion']}", info.get("size"), info["md5"]) for app, info in details.items()]
    if [name for name, *_ in seen] != [name for name, *_ in expected]:
        raise Failure(f"the package holds {[n for n, *_ in seen]}, expected {[n for n, *_ in expected]}")
    for (name, size, md5), (_, want_size, want_md5) in zip(seen[1:], expected[1:]):
        if md5 != want_md5 or (want_size is not None and size != want_size):
            raise Failure(f"{name} in the package: {size} bytes, MD5 {md5}; expected {want_size}, {want_md5}")


def header_value(path, name):
    try:
        with open(path, errors="replace") as text:
            for line in text:
                key, _, value = line.partition(":")
                if key.strip().lower() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def read_status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise Failure(f"no {field} in /proc/{pid}/status")


class RssSampler(threading.Thread):
    """The largest VmRSS of a process, read every 50 ms."""

    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.error = None
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, read_status_kib(self.pid, "VmRSS"))
                self.samples += 1
            except (OSError, Failure) as error:
                self.error = error
                return
            self.stopped.wait(self.interval)

    def stop(self):
        self.stopped.set()
        self.join()


def nginx_config(prefix, root, error_log, port):
    # As root, workers run as root too, so they can read files wherever the checkout is.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""# Written by benches/load/harness.py for one run.
daemon off;
master_process on;
worker_processes auto;
{user}pid {prefix}/nginx.pid;
error_log {error_log} warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    # The clients reuse their connections for the whole run, as with the other servers.
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    types {{
        application/json json;
        application/gzip gz;
    }}
    default_type application/octet-stream;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def describe_machine(nginx):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as info:
            kib = int(info.readline().split()[1])
            mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    commit = run_quiet(["git", "rev-parse", "--short", "HEAD"])
    if run_quiet(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": run_quiet(["nproc"]),
        "cpu": cpu,
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "loadavg": " ".join(open("/proc/loadavg").read().split()[:3]),
        "nginx": run_quiet([nginx, "-v"]).replace("nginx version: ", ""),
        "wrk": " ".join(run_quiet(["wrk", "-v"]).split()[:2]),
        "curl": " ".join(run_quiet(["curl", "--version"]).split()[:2]),
        "rustc": run_quiet(["rustc", "--version"]),
        "python": platform.python_version(),
        "commit": commit,
    }


# --- report ---------------------------------------------------------------------------


def human_size(size):
    return f"{size // GIB} GiB" if size >= GIB else f"{size // MIB} MiB"


def spread(values, fmt):
    """Median (min-max)."""
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def goal_text(ratio_values, minimum, what):
    if not ratio_values:
        return "-"
    median = statistics.median(ratio_values)
    verdict = "met" if median >= minimum else "NOT met"
    return f"{what} >= {minimum:g}x: {verdict}"


def render_report(machine, run, throughput, rss, ttfb):
    int_fmt = lambda v: f"{v:,.0f}"  # noqa: E731
    ms_fmt = lambda v: f"{v:.2f}"  # noqa: E731
    ratio_fmt = lambda v: f"{v:.2f}x"  # noqa: E731
    levels = sorted({str(run.levels[app]) for app, *_ in MAIN_FLEET})
    lines = [
        "# fleetpack load results",
        "",
        f"- Date: {machine['date']}; commit {machine['commit']}",
        f"- Machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory']} RAM, "
        f"{machine['kernel']}; load average at start {machine['loadavg']}",
        f"- Software: {machine['nginx']}; {machine['wrk']}; {machine['curl']}; "
        f"{machine['rustc']}; Python {machine['python']}",
        f"- Settings: DURATION={DURATION} s per wrk run, ROUNDS={ROUNDS}, WARMUP={WARMUP} s, "
        f"wrk -t min(2,c) --timeout {WRK_TIMEOUT}; TTFB_TRIES={TTFB_TRIES}; "
        f"RSS test {RSS_FAST} full-speed + {RSS_SLOW} at --limit-rate {SLOW_RATE}; "
        f"SKIP_1GIB={'1' if SKIP_1GIB else '0'}",
        f"- Package `/package?{MAIN_QUERY}`: {run.package_len:,} bytes, 4 x 64 MiB incompressible "
        f"binaries spliced from stored segments (deflate level {', '.join(levels)}); "
        f"metadataOnly JSON: {run.metadata_len:,} bytes",
        "- Servers: origin (fleetpack-origin, local store, default settings); nginx serving the "
        "saved package and JSON as static files (sendfile, tcp_nopush, worker_processes auto); "
        "ceiling (benches/ceiling.rs, hyper 1 + tokio, the same files from memory)",
        "- Each cell: median over rounds (min-max). Ratios are taken within a round, then the "
        "median of the ratios is shown. MB = 10^6 bytes.",
        "",
        "## Throughput and latency",
        "",
        "| test | c | origin | nginx | ceiling | origin / nginx | origin / ceiling | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]

    def rows(kind, metric, title, fmt, goals):
        for conns in (META_CONNS if kind == "meta" else PAYLOAD_CONNS):
            cell = throughput[(kind, conns)]
            values = {s: [r[metric] for r in cell[s]] for s in SERVERS}
            vs_nginx = [o / n for o, n in zip(values["origin"], values["nginx"]) if n]
            vs_ceiling = [o / c for o, c in zip(values["origin"], values["ceiling"]) if c]
            goal = []
            for against, minimum in goals.get(conns, []):
                goal.append(goal_text(vs_nginx if against == "nginx" else vs_ceiling, minimum, against))
            lines.append(
                f"| {title} | {conns} | {spread(values['origin'], fmt)} | {spread(values['nginx'], fmt)} | "
                f"{spread(values['ceiling'], fmt)} | {spread(vs_nginx, ratio_fmt)} | "
                f"{spread(vs_ceiling, ratio_fmt)} | {'; '.join(goal)} |")

    rows("meta", "rps", "metadataOnly req/s", int_fmt, {32: [("nginx", 1.2), ("ceiling", 0.75)]})
    rows("meta", "p99_ms", "metadataOnly p99 ms (lower is better)", ms_fmt, {})
    rows("payload", "mbps", "full payload MB/s", int_fmt, {1: [("nginx", 0.95)], 8: [("nginx", 0.95)]})

    slow, fast = rss["slow_s"], rss["fast_s"]
    peak = max(rss["peak_mib"], rss["hwm_mib"])
    lines += [
        "",
        f"## Origin memory during {RSS_FAST + RSS_SLOW} concurrent downloads of the package",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| RSS before the downloads (idle, after one metadata request) | {rss['baseline_mib']:.1f} MiB |",
        f"| peak RSS, sampled every 50 ms ({rss['samples']} samples in {rss['elapsed']:.1f} s) | "
        f"{rss['peak_mib']:.1f} MiB |",
        f"| VmHWM of the fresh process (start to end of the downloads) | {rss['hwm_mib']:.1f} MiB |",
        f"| goal: peak < 100 MiB | {'met' if peak < 100 else 'NOT met'} ({peak:.1f} MiB) |",
        f"| downloads complete, each its Content-Length ({run.package_len:,} bytes) | "
        f"{len(fast) + len(slow)} of {RSS_FAST + RSS_SLOW} |",
        f"| time of a full-speed download, median (min-max) | {spread(fast, lambda v: f'{v:.1f} s')} |",
        f"| time of a slow download (--limit-rate {SLOW_RATE}), median (min-max) | "
        f"{spread(slow, lambda v: f'{v:.1f} s')} |",
        f"| wall time of the test | {rss['elapsed']:.1f} s |",
        "",
        f"## Time to first byte (origin, one request at a time, {TTFB_TRIES} tries after one uncounted)",
        "",
        "| package | bytes | TTFB ms, median (min-max) |",
        "|---|---:|---:|",
    ]
    for label, data in ttfb.items():
        lines.append(f"| {label} | {data['bytes']:,} | {spread(data['ms'], ms_fmt)} |")
    if "1 GiB" in ttfb and "1 MiB" in ttfb:
        ratio = statistics.median(ttfb["1 GiB"]["ms"]) / statistics.median(ttfb["1 MiB"]["ms"])
        lines.append(f"| ratio 1 GiB / 1 MiB (goal <= 2x: {'met' if ratio <= 2 else 'NOT met'}) | | "
                     f"{ratio:.2f}x |")
    else:
        lines.append("| ratio 1 GiB / 1 MiB | | skipped (SKIP_1GIB=1) |")
    if run.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in run.notes]
    return "\n".join(lines) + "\n"


# --- entry points ---------------------------------------------------------------------


def executable(build_json, target):
    found = None
    with open(build_json) as messages:
        for line in messages:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("reason") == "compiler-artifact" and message.get("executable") \
                    and message["target"]["name"] == target:
                found = message["executable"]
    if not found:
        raise SystemExit(f"harness: no executable for {target} in {build_json}")
    print(found)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    exe = sub.add_parser("executable")
    exe.add_argument("build_json")
    exe.add_argument("target")
    run = sub.add_parser("run")
    for flag in ("--origin", "--seed", "--ceiling", "--nginx", "--work", "--results"):
        run.add_argument(flag, required=True)
    args = parser.parse_args()
    if args.command == "executable":
        executable(args.build_json, args.target)
        return 0
    if DURATION < 1 or ROUNDS < 1 or TTFB_TRIES < 1:
        raise SystemExit("harness: DURATION, ROUNDS and TTFB_TRIES must be at least 1")
    # SIGTERM (from run.sh's trap) and Ctrl-C both end up in the `finally` below.
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    harness = Run(args)
    try:
        harness.run()
        return 0
    except Failure as failure:
        say(f"FAILED: {failure}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; stopping what the harness started")
        return 130
    except Stopped:
        say("stopped by SIGTERM; stopping what the harness started")
        return 143
    finally:
        harness.cleanup()


if __name__ == "__main__":
    sys.exit(main())
