#!/usr/bin/env python3
"""Goodput of a team on one rate-limited key (issue 24).

A real `moziplus serve`, real agent processes (the `command` runtime running
this file with --agent), and a FAKE provider: NVIDIA's free tier cannot be
reached from here, so a small HTTP server in this process stands in for it.
The fake answers chat completions after a fixed answer time and enforces its
own rolling per-minute limit, answering 429 with Retry-After beyond it, the
way NVIDIA's API does.

Each agent run makes CALLS sequential LLM calls through the gateway (the
run's OPENAI_BASE_URL / OPENAI_API_KEY), retrying a 429 after its
Retry-After, then marks its task done. Work is always waiting: the board
holds more tasks than the window can finish. After WARMUP s an urgent task
is created every 30 s; its latency is created -> first answer.

Printed per scenario (one table row): share of the provider's limit turned
into answers (steady window), tasks per minute against the ceiling (limit /
calls per task), client-visible 429s, failed runs, urgent created -> first
answer (p50 / max), and the most runs in flight.

  bench/goodput.py [--legacy] [--bin target/debug/moziplus]
                   [--scenarios 5x2,15x2,5x8,15x8,5x30,15x30,15x2@30]

A scenario AxS[@L] is A agents (each may run up to 8 tasks at once,
`daemon.max_global_agents: 40`), S-second answers, and a provider that
allows L requests a minute (default 40) while the gateway is set for 40.
--legacy runs today's binary with the old settings (queue.concurrency 3,
limiter.capacity 40, no admission, no reserved slot) for comparison.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CALLS = 6
MINUTES = float(os.environ.get("GOODPUT_MINUTES", "4"))
WARMUP = 60.0
RATE = 40


# ---------------------------------------------------------------- the agent
def agent_main():
    base = os.environ["OPENAI_BASE_URL"].rstrip("/")
    key = os.environ["OPENAI_API_KEY"]
    task = os.environ["MOZI_TASK"]
    out = os.environ["GOODPUT_OUT"]
    calls = int(os.environ.get("GOODPUT_CALLS", CALLS))
    log = open(os.path.join(out, f"agent-{os.getpid()}.jsonl"), "a", buffering=1)
    for i in range(calls):
        while True:
            body = json.dumps(
                {"model": "nvidia/fake-model", "messages": [{"role": "user", "content": f"{task} step {i}"}]}
            ).encode()
            req = urllib.request.Request(
                base + "/chat/completions",
                data=body,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=300) as r:
                    r.read()
                log.write(json.dumps({"t": time.time(), "task": task, "answer": i}) + "\n")
                break
            except urllib.error.HTTPError as e:
                ra = float(e.headers.get("Retry-After") or 1)
                log.write(json.dumps({"t": time.time(), "task": task, "status": e.code}) + "\n")
                time.sleep(min(max(ra, 0.5), 30))
            except Exception as e:  # connection trouble: note it, retry
                log.write(json.dumps({"t": time.time(), "task": task, "error": str(e)}) + "\n")
                time.sleep(1)
    bin_ = os.environ["MOZI_BIN"]
    subprocess.run([bin_, "bb", "done", task], check=False, stdout=subprocess.DEVNULL)


# ------------------------------------------------------------- the fake API
class Fake:
    def __init__(self, answer, limit):
        self.answer = answer
        self.limit = limit
        self.accepted = deque()
        self.lock = threading.Lock()
        self.served = []
        self.refused = 0

    def admit(self):
        now = time.time()
        with self.lock:
            while self.accepted and now - self.accepted[0] >= 60:
                self.accepted.popleft()
            if len(self.accepted) >= self.limit:
                self.refused += 1
                return 60 - (now - self.accepted[0])
            self.accepted.append(now)
            return None


def serve_fake(fake):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(n)
            wait = fake.admit()
            if wait is not None:
                body = json.dumps({"error": {"message": "rate limit exceeded (fake provider)", "type": "rate_limit"}}).encode()
                self.send_response(429)
                self.send_header("Retry-After", str(max(1, int(wait + 0.999))))
            else:
                time.sleep(fake.answer)
                with fake.lock:
                    fake.served.append(time.time())
                body = json.dumps(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": "fake-model",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
                    }
                ).encode()
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


# --------------------------------------------------------------- a scenario
def scenario(bin_, agents, answer, limit, legacy):
    fake = Fake(answer, limit)
    srv = serve_fake(fake)
    fake_url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    home = tempfile.mkdtemp(prefix="moziplus-goodput-")
    out = os.path.join(home, "out")
    os.makedirs(out)
    os.makedirs(os.path.join(home, "config"))
    gateway = {
        "limiter": {"rate_per_minute": RATE},
        "queue": {"request_timeout": 60},
        "providers": [{"name": "nvidia", "base_url": fake_url, "limited": True}],
    }
    daemon = {
        "tick_interval": 1,
        "task_timeout": 1800,
        "max_global_agents": 40,
        "max_per_agent": 8,
    }
    if legacy:
        gateway["limiter"]["capacity"] = RATE
        gateway["queue"]["concurrency"] = 3
        daemon["admission"] = {"enabled": False}
        daemon["reserved_urgent_slots"] = 0
        # The old default team size: what the issue's table measured.
        daemon["max_global_agents"] = agents
        daemon["max_per_agent"] = 1
    with open(os.path.join(home, "config/default.yaml"), "w") as f:
        json.dump({"daemon": daemon, "gateway": gateway, "backup": {"interval_minutes": 0}}, f)
    me = os.path.abspath(__file__)
    with open(os.path.join(home, "config/agents.yaml"), "w") as f:
        f.write("agents:\n")
        for i in range(agents):
            f.write(
                f"  - id: a{i}\n    runtime: command\n    command: [\"{sys.executable}\", \"{me}\", \"--agent\"]\n"
                f"    env: {{GOODPUT_OUT: \"{out}\", GOODPUT_CALLS: \"{CALLS}\"}}\n"
            )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOZI_")}
    env["MOZI_HOME"] = home

    def mz(*args):
        return subprocess.run([bin_, "--home", home, *args], env=env, capture_output=True, text=True, check=True).stdout.strip()

    mz("project", "create", "--id", "g", "--name", "goodput")
    ceiling = limit / CALLS
    n_tasks = int(ceiling * (MINUTES + 1) * 1.5) + agents * 2
    for i in range(n_tasks):
        mz("bb", "--project", "g", "create", "--title", f"work {i}", "--kind", "code")
    port = free_port()
    log = open(os.path.join(home, "daemon.log"), "w")
    d = subprocess.Popen([bin_, "--home", home, "serve", "--bind", f"127.0.0.1:{port}"], env=env, stdout=log, stderr=log)
    t0 = time.time()
    urgent = {}
    max_runs = 0
    try:
        next_urgent = t0 + WARMUP
        while time.time() < t0 + WARMUP + MINUTES * 60:
            time.sleep(1)
            if time.time() >= next_urgent:
                tid = mz("bb", "--project", "g", "create", "--title", "urgent", "--priority", "urgent")
                urgent[tid] = time.time()
                next_urgent += 30
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/daemon/sessions", timeout=5) as r:
                    runs = len(json.load(r).get("active", []))
                    max_runs = max(max_runs, runs)
            except Exception:
                pass
        end = time.time()
    finally:
        d.send_signal(signal.SIGTERM)
        try:
            d.wait(60)
        except subprocess.TimeoutExpired:
            d.kill()
        subprocess.run(["pkill", "-f", out], check=False)
        srv.shutdown()
    answers, client_429, first = [], 0, {}
    for name in os.listdir(out):
        for line in open(os.path.join(out, name)):
            r = json.loads(line)
            if "answer" in r:
                answers.append(r["t"])
                first.setdefault(r["task"], r["t"])
                first[r["task"]] = min(first[r["task"]], r["t"])
            elif r.get("status") == 429:
                client_429 += 1
    lo, hi = t0 + WARMUP, end
    steady = [t for t in answers if lo <= t < hi]
    per_min = len(steady) / ((hi - lo) / 60)
    lat = [first[t] - c for t, c in urgent.items() if t in first]
    db = sqlite3.connect(os.path.join(home, "projects/g/blackboard.db"))
    # Runs that failed while the window was open (the stop at its end
    # interrupts the last ones; those are not counted).
    failed = db.execute(
        "SELECT COUNT(*) FROM session WHERE outcome != 'succeeded' AND ended_at < ?",
        (int(end * 1000),),
    ).fetchone()[0]
    db.close()
    shutil.rmtree(home, ignore_errors=True)
    return {
        "share": per_min / limit,
        "tasks_per_min": per_min / CALLS,
        "ceiling": ceiling,
        "client_429": client_429,
        "failed": failed,
        "urgent_p50": pct(lat, 0.5),
        "urgent_max": max(lat) if lat else float("nan"),
        "urgent_n": len(lat),
        "urgent_total": len(urgent),
        "max_runs": max_runs,
        "provider_429": fake.refused,
    }


def main():
    if "--agent" in sys.argv:
        agent_main()
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/debug/moziplus")
    ap.add_argument("--legacy", action="store_true")
    ap.add_argument("--scenarios", default="5x2,15x2,5x8,15x8,5x30,15x30,15x2@30")
    a = ap.parse_args()
    bin_ = os.path.abspath(a.bin)
    mode = "legacy settings" if a.legacy else "defaults"
    print(f"goodput ({mode}; fake provider; {CALLS} calls per task; {MINUTES:g} min measured after {WARMUP:.0f} s)")
    print("| agents | answer | provider limit | share of limit answered | tasks/min (ceiling) | client 429s | failed runs | urgent created→first answer p50 / max (n) | most runs | provider 429s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in a.scenarios.split(","):
        head, _, lim = s.partition("@")
        agents, answer = head.split("x")
        limit = int(lim or RATE)
        r = scenario(bin_, int(agents), float(answer), limit, a.legacy)
        print(
            f"| {agents} | {answer} s | {limit}/min | {r['share']:.2f} | {r['tasks_per_min']:.2f} ({r['ceiling']:.2f}) | {r['client_429']} | {r['failed']} "
            f"| {r['urgent_p50']:.1f} / {r['urgent_max']:.1f} s ({r['urgent_n']}/{r['urgent_total']}) | {r['max_runs']} | {r['provider_429']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
