"""Load test of `speechlm serve` on loopback: latency and throughput at concurrency 1, 4, 8 and at
4x capacity, against the same model called in-process in the same run.

Usage:
    .venv/bin/python bench/serve_load.py                          # ~3 min on 2 cores, the demo's model
    .venv/bin/python bench/serve_load.py --model runs/asr --requests 40
    .venv/bin/python bench/serve_load.py --asr-lm runs/demo/ngram --asr-lm-weight 0.6 --asr-lm-bonus 2   # as make demo serves;
                                                                         # writes serve_load_lm.json/.md

The server is a separate process (`speechlm serve`, default settings: 8 transcriptions per batch,
16 waiting per model) and the load generator an asyncio httpx client sending 5.0 s WAV clips
(generated sentences spoken by held-out espeak-ng voices, a different clip for every request of
the run, so no cache ever sees an utterance twice) to POST /v1/transcribe as a raw body. Each
phase has a fixed request count and a time limit. The reference is the same recognizer called directly in this
process on clips of the same kind (batch 1 for latency, batches of 8 for throughput): the server's
overhead is the ratio between the two. The overload phase keeps 4x the server's capacity in
flight: it must answer 429 (with Retry-After) for what it cannot queue, never 5xx, and its
memory must stay bounded (resident set sampled every 0.1 s). With --asr-lm, the server and the
in-process peer both decode by beam search (8 wide) fused with that LM, as `make demo` prints the
serve command; without it, greedily.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, write_results  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from speechlm.cli import decoding_options  # noqa: E402
from speechlm.data.audio import encode_wav  # noqa: E402
from speechlm.decode.ctc import DecodingOptions  # noqa: E402
from speechlm.decode.transcribe import Recognizer  # noqa: E402
from speechlm.features import SAMPLE_RATE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIP_SECONDS = 5.0
PEER_REPEATS = 30  # in-process calls per latency measurement


def make_clips(n: int) -> list[np.ndarray]:
    """``n`` different 5.0 s clips: two generated sentences each, spoken by the bank's held-out espeak-ng voices in
    turn, cut or padded with silence to length."""
    from tqdm import tqdm

    from speechlm.data.sentences import generate
    from speechlm.data.synth import synthesize, voice_bank

    voices = [v for v in voice_bank() if v.split == "test" and v.engine == "espeak-ng"]
    texts = [s.text for s in generate(2 * n, seed=7)]
    size = int(CLIP_SECONDS * SAMPLE_RATE)
    clips = []
    for i in tqdm(range(n), desc="synthesize clips", leave=False):
        audio = synthesize(f"{texts[2 * i]}. {texts[2 * i + 1]}", voices[i % len(voices)])
        clips.append(np.pad(audio, (0, max(0, size - audio.size)))[:size])
    return clips


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


async def phase(url: str, bodies: Iterator[bytes], concurrency: int, requests: int, time_limit: float) -> dict:
    """``requests`` POSTs, each the next of ``bodies``, with ``concurrency`` in flight, stopping early at ``time_limit`` seconds."""
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
                r = await client.post("/v1/transcribe", content=next(bodies), headers={"content-type": "audio/wav"})
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


def in_process(model: str, clips: Iterator[np.ndarray], repeats: int, lm: str | None = None, options: DecodingOptions = DecodingOptions()) -> dict:
    """The peer: the same recognizer called directly (no HTTP, no queue), decoding as the server does, each call on
    the next of ``clips``."""
    rec = Recognizer.load(model, lm=lm)
    rec.transcribe([next(clips) for _ in range(8)], options)  # warm-up
    single, paused = [], []
    for _ in range(repeats):
        clip = next(clips)
        start = time.perf_counter()
        rec.transcribe([clip], options)
        single.append(1000 * (time.perf_counter() - start))
    for _ in range(repeats):  # as a server sees them: a short idle gap before each request
        clip = next(clips)
        time.sleep(0.01)
        start = time.perf_counter()
        rec.transcribe([clip], options)
        paused.append(1000 * (time.perf_counter() - start))
    batches = [[next(clips) for _ in range(8)] for _ in range(max(1, repeats // 4))]
    start = time.perf_counter()
    for batch in batches:
        rec.transcribe(batch, options)
    batch_rps = 8 * len(batches) / (time.perf_counter() - start)
    return {
        "p50_ms": percentile(single, 50), "p95_ms": percentile(single, 95), "rps_batch8": batch_rps,
        "p50_ms_after_idle": percentile(paused, 50), "p95_ms_after_idle": percentile(paused, 95),
    }  # fmt: skip


def start_server(model: str, intent: str, port: int, max_batch: int, queue_size: int, lm_flags: list[str]) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "speechlm.cli", "serve", model, "--intent-model", intent, "--port", str(port),
        "--max-batch", str(max_batch), "--queue-size", str(queue_size), *lm_flags,
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
    ap.add_argument("--asr-lm", default=None, help="server --asr-lm: an n-gram or LM fused into beam search (default: greedy decoding)")
    ap.add_argument("--asr-lm-weight", type=float, default=0.5, help="server --asr-lm-weight")
    ap.add_argument("--asr-lm-bonus", type=float, default=0.0, help="server --asr-lm-bonus")
    args = ap.parse_args()

    for path in (args.model, args.asr_lm):
        if path and not Path(path).exists():
            raise SystemExit(f"error: {path} does not exist; run `make demo` first or pass --model / --asr-lm")
    served = 10 + 17 * args.requests  # the warm-up and the four phases: a different clip for each
    peer_clips = 8 + 2 * PEER_REPEATS + 8 * max(1, PEER_REPEATS // 4)
    clips = make_clips(served + peer_clips)
    bodies = [encode_wav(c) for c in clips[:served]]
    stream = iter(bodies)
    lm_flags = ["--asr-lm", args.asr_lm, "--asr-lm-weight", str(args.asr_lm_weight), "--asr-lm-bonus", str(args.asr_lm_bonus)] if args.asr_lm else []
    options = decoding_options(1, args.asr_lm, args.asr_lm_weight, args.asr_lm_bonus, "asr-")  # what `speechlm serve` decodes with
    peer = in_process(args.model, iter(clips[served:]), PEER_REPEATS, args.asr_lm, options)
    print(f"in-process: p50 {peer['p50_ms']:.1f} ms, p95 {peer['p95_ms']:.1f} ms (after idle {peer['p95_ms_after_idle']:.1f}), batch-8 {peer['rps_batch8']:.1f} clips/s")

    with tempfile.TemporaryDirectory() as tmp:
        intent = Path(tmp) / "intent"
        subprocess.run([sys.executable, "-m", "speechlm.cli", "intent", "train", str(intent), "--builtin", "4000"], check=True, cwd=ROOT)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = start_server(args.model, str(intent), port, args.max_batch, args.queue_size, lm_flags)
        url = f"http://127.0.0.1:{port}"
        capacity = args.max_batch + args.queue_size
        rows = {}
        try:
            idle_rss = rss_mb(server.pid)
            asyncio.run(phase(url, stream, 2, 10, 30))  # warm-up
            for name, conc, n in (("c1", 1, args.requests), ("c4", 4, 4 * args.requests), ("c8", 8, 4 * args.requests),
                                  ("overload", 4 * capacity, 8 * args.requests)):  # fmt: skip
                with MemoryWatch(server.pid) as mem:
                    rows[name] = asyncio.run(phase(url, stream, conc, n, args.time_limit))
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
    how = (f"beam 8 fused with `{args.asr_lm}` (weight {args.asr_lm_weight:g}, bonus {args.asr_lm_bonus:g}), server and peer alike"
           if args.asr_lm else "greedy, server and peer alike")
    body_md = f"""Clips: {served} different {CLIP_SECONDS} s WAVs ({len(bodies[0]) / 1024:.0f} KB each), one per request, POST /v1/transcribe, model `{args.model}`; decoding: {how}.
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
    write_results(  # greedy and fused decoding keep separate results: serve_load.md and serve_load_lm.md
        "serve_load_lm" if args.asr_lm else "serve_load",
        "Serving load: latency and throughput on loopback" + (", beam search with an LM" if args.asr_lm else ""), headline, body_md,
        {"phases": rows, "in_process": peer, "decoding": dataclasses.asdict(options), "asr_lm": args.asr_lm, "idle_rss_mb": idle_rss, "final_rss_mb": final_rss, "clip_seconds": CLIP_SECONDS,
         "server_metrics_excerpt": [l for l in metrics.splitlines() if l.startswith("speechlm_requests_total")]},
    )  # fmt: skip


if __name__ == "__main__":
    main()
