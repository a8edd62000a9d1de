"""Load test of `speechlm serve` on loopback: latency and throughput at concurrency 1, 4, 8 and at
4x capacity, against the same model called in-process in the same run.

Usage:
    .venv/bin/python bench/serve_load.py                          # ~3 min on 2 cores, the demo's model
    .venv/bin/python bench/serve_load.py --model runs/asr --requests 40

The server is a separate process (`speechlm serve`, default settings: 8 transcriptions per batch,
16 waiting per model) and the load generator an asyncio httpx client sending a 5.0 s WAV clip
(synthesized with a held-out voice) to POST /v1/transcribe as a raw body. Each phase has a fixed
request count and a time limit. The reference is the same recognizer called directly in this
process on the same clip (batch 1 for latency, batches of 8 for throughput): the server's
overhead is the ratio between the two. The overload phase keeps 4x the server's capacity in
flight: it must answer 429 (with Retry-After) for what it cannot queue, never 5xx, and its
memory must stay bounded (resident set sampled every 0.1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, write_results  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from speechlm.data.audio import encode_wav  # noqa: E402
from speechlm.decode.transcribe import Recognizer  # noqa: E402
from speechlm.features import SAMPLE_RATE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIP_SECONDS = 5.0
SENTENCE = "remind me to call the dentist on monday morning and set an alarm for seven thirty tomorrow"


def make_clip() -> np.ndarray:
    """5.0 s of speech: a held-out espeak-ng voice, trimmed or padded with silence."""
    from speechlm.data.synth import synthesize, voice_bank

    voice = next(v for v in voice_bank() if v.split == "test" and v.engine == "espeak-ng")
    audio = synthesize(SENTENCE, voice)
    n = int(CLIP_SECONDS * SAMPLE_RATE)
    return np.pad(audio, (0, max(0, n - audio.size)))[:n]


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class MemoryWatch:
    """Samples a process's resident set every 0.1 s in a thread; ``peak`` in MB."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


async def phase(url: str, body: bytes, concurrency: int, requests: int, time_limit: float) -> dict:
    """``requests`` POSTs with ``concurrency`` in flight, stopping early at ``time_limit`` seconds."""
    latencies, server_ms, codes = [], [], {}
    retry_after = []
    next_index = 0
    deadline = time.perf_counter() + time_limit
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def user():
            nonlocal next_index
            while next_index < requests and time.perf_counter() < deadline:
                next_index += 1
                start = time.perf_counter()
                r = await client.post("/v1/transcribe", content=body, headers={"content-type": "audio/wav"})
                elapsed = time.perf_counter() - start
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    latencies.append(1000 * elapsed)
                    server_ms.append(r.json()["processing_ms"])
                elif r.status_code == 429:
                    retry_after.append(int(r.headers["Retry-After"]))

        start = time.perf_counter()
        await asyncio.gather(*[user() for _ in range(concurrency)])
        wall = time.perf_counter() - start
    return {
        "concurrency": concurrency, "sent": sum(codes.values()), "ok": codes.get(200, 0), "wall_s": round(wall, 2),
        "rps": codes.get(200, 0) / wall, "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99), "server_p95_ms": percentile(server_ms, 95), "count_429": codes.get(429, 0),
        "count_5xx": sum(n for c, n in codes.items() if c >= 500), "codes": {str(k): v for k, v in sorted(codes.items())},
        "retry_after_s": sorted(set(retry_after)),
    }  # fmt: skip


def in_process(model: str, clip: np.ndarray, repeats: int) -> dict:
    """The peer: the same recognizer called directly (no HTTP, no queue)."""
    rec = Recognizer.load(model)
    rec.transcribe([clip] * 8)  # warm-up
    single, paused = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        rec.transcribe([clip])
        single.append(1000 * (time.perf_counter() - start))
    for _ in range(repeats):  # as a server sees them: a short idle gap before each request
        time.sleep(0.01)
        start = time.perf_counter()
        rec.transcribe([clip])
        paused.append(1000 * (time.perf_counter() - start))
    start = time.perf_counter()
    for _ in range(max(1, repeats // 4)):
        rec.transcribe([clip] * 8)
    batch_rps = 8 * max(1, repeats // 4) / (time.perf_counter() - start)
    return {
        "p50_ms": percentile(single, 50), "p95_ms": percentile(single, 95), "rps_batch8": batch_rps,
        "p50_ms_after_idle": percentile(paused, 50), "p95_ms_after_idle": percentile(paused, 95),
    }  # fmt: skip


def start_server(model: str, intent: str, port: int, max_batch: int, queue_size: int) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "speechlm.cli", "serve", model, "--intent-model", intent, "--port", str(port),
        "--max-batch", str(max_batch), "--queue-size", str(queue_size),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not become ready in 120 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/demo/model", help="speech recognizer directory (make demo writes runs/demo)")
    ap.add_argument("--requests", type=int, default=100, help="requests per phase at concurrency 1 (4x that at 4 and 8)")
    ap.add_argument("--time-limit", type=float, default=45.0, help="seconds per phase at most")
    ap.add_argument("--max-batch", type=int, default=8, help="server --max-batch")
    ap.add_argument("--queue-size", type=int, default=16, help="server --queue-size")
    args = ap.parse_args()
    if not Path(args.model).exists():
        raise SystemExit(f"error: {args.model} does not exist; run `make demo` first or pass --model")

    clip = make_clip()
    body = encode_wav(clip)
    peer = in_process(args.model, clip, repeats=30)
    print(f"in-process: p50 {peer['p50_ms']:.1f} ms, p95 {peer['p95_ms']:.1f} ms (after idle {peer['p95_ms_after_idle']:.1f}), batch-8 {peer['rps_batch8']:.1f} clips/s")

    with tempfile.TemporaryDirectory() as tmp:
        intent = Path(tmp) / "intent"
        subprocess.run([sys.executable, "-m", "speechlm.cli", "intent", "train", str(intent), "--builtin", "4000"], check=True, cwd=ROOT)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = start_server(args.model, str(intent), port, args.max_batch, args.queue_size)
        url = f"http://127.0.0.1:{port}"
        capacity = args.max_batch + args.queue_size
        rows = {}
        try:
            idle_rss = rss_mb(server.pid)
            asyncio.run(phase(url, body, 2, 10, 30))  # warm-up
            for name, conc, n in (("c1", 1, args.requests), ("c4", 4, 4 * args.requests), ("c8", 8, 4 * args.requests),
                                  ("overload", 4 * capacity, 8 * args.requests)):  # fmt: skip
                with MemoryWatch(server.pid) as mem:
                    rows[name] = asyncio.run(phase(url, body, conc, n, args.time_limit))
                rows[name]["peak_rss_mb"] = round(mem.peak, 1)
                r = rows[name]
                print(f"{name}: {r['ok']}/{r['sent']} ok, {r['rps']:.1f} req/s, p95 {r['p95_ms'] or float('nan'):.1f} ms, "
                      f"429 {r['count_429']}, 5xx {r['count_5xx']}, peak RSS {mem.peak:.0f} MB")  # fmt: skip
            metrics = httpx.get(url + "/metrics").text
            final_rss = rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(10)

    c1, c8, over = rows["c1"], rows["c8"], rows["overload"]
    headline = {
        "p95_ms_c1": round(c1["p95_ms"], 1),
        "rps_c8": round(c8["rps"], 1),
        "count_5xx": sum(r["count_5xx"] for r in rows.values()),
        "count_429_overload": over["count_429"],
    }
    table = markdown_table(
        ["phase", "in flight", "ok / sent", "req/s", "p50 ms", "p95 ms", "p99 ms", "server p95 ms", "429", "5xx", "peak RSS MB"],
        [[k, r["concurrency"], f"{r['ok']}/{r['sent']}", round(r["rps"], 1),
          *(round(r[q], 1) if r[q] else "-" for q in ("p50_ms", "p95_ms", "p99_ms", "server_p95_ms")),
          r["count_429"], r["count_5xx"], r["peak_rss_mb"]] for k, r in rows.items()],
    )  # fmt: skip
    body_md = f"""Clip: {CLIP_SECONDS} s WAV ({len(body) / 1024:.0f} KB), POST /v1/transcribe, model `{args.model}`.
Server: `speechlm serve` defaults (max batch {args.max_batch}, queue {args.queue_size} per model: capacity {capacity} in flight), one process, 2 torch threads.

{table}

**Peer, same run: the recognizer called in-process** — batch 1 back to back: p50 {peer['p50_ms']:.1f} ms, p95 {peer['p95_ms']:.1f} ms; batch 1 after 10 ms idle (as requests arrive at a server): p50 {peer['p50_ms_after_idle']:.1f} ms, p95 {peer['p95_ms_after_idle']:.1f} ms; batches of 8: {peer['rps_batch8']:.1f} clips/s.
- HTTP + queue overhead at concurrency 1: p95 {c1['p95_ms']:.1f} ms vs {peer['p95_ms']:.1f} ms in-process back to back (**{c1['p95_ms'] / peer['p95_ms']:.2f}x**), {peer['p95_ms_after_idle']:.1f} ms in-process after idle (**{c1['p95_ms'] / peer['p95_ms_after_idle']:.2f}x**).
- Throughput at concurrency 8: {c8['rps']:.1f} req/s = **{c8['rps'] / peer['rps_batch8']:.2f}x** the in-process batch-8 rate (dynamic batching).
- Overload ({over['concurrency']} in flight = 4x capacity): {over['count_429']} answered 429 (Retry-After {over['retry_after_s']} s), {over['count_5xx']} 5xx; server RSS {idle_rss:.0f} MB idle, peak {over['peak_rss_mb']:.0f} MB, {final_rss:.0f} MB after.

Latencies are measured by the client (the figures the targets refer to); "server p95" is the
time from the request reaching the endpoint to its answer, as the server reports it in
`processing_ms`. The load generator runs on the same 2 cores as the server: under overload its
96 coroutines compete with the server for CPU, which inflates the client-side figures.

Targets: p95 < 150 ms at concurrency 1 — **{'met' if c1['p95_ms'] < 150 else 'not met'}** ({c1['p95_ms']:.1f} ms); ≥ 20 req/s at concurrency 8 — **{'met' if c8['rps'] >= 20 else 'not met'}** ({c8['rps']:.1f}); zero 5xx — **{'met' if headline['count_5xx'] == 0 else 'not met'}**.
"""
    write_results(
        "serve_load", "Serving load: latency and throughput on loopback", headline, body_md,
        {"phases": rows, "in_process": peer, "idle_rss_mb": idle_rss, "final_rss_mb": final_rss, "clip_seconds": CLIP_SECONDS,
         "server_metrics_excerpt": [l for l in metrics.splitlines() if l.startswith("speechlm_requests_total")]},
    )  # fmt: skip


if __name__ == "__main__":
    main()
