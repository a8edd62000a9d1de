"""Training throughput of the default recognizer: audio-seconds per second and model FLOP utilization.

Usage:
    .venv/bin/python bench/train_throughput.py --preset small --batch-seconds 60 --steps 5

MFU = model FLOPs per step (counted by torch.utils.flop_counter on a forward + backward pass)
divided by step time, over the matmul peak measured in the same run (a 1024x1024x1024 matmul,
best of three) for the same precision. bf16 runs under torch.autocast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, write_results  # noqa: E402

from speechlm.config import ASRConfig  # noqa: E402
from speechlm.models.asr import count_parameters  # noqa: E402
from speechlm.models.encoders import PRESETS  # noqa: E402
from speechlm.objectives.ctc import ctc_loss  # noqa: E402
from speechlm.train.asr import build_model  # noqa: E402
from speechlm.train.loop import use_bf16  # noqa: E402


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 3) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=list(PRESETS))
    p.add_argument("--batch-seconds", type=float, default=60.0)
    p.add_argument("--utt-seconds", type=float, default=2.5, help="length of each utterance in the batch")
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = ASRConfig(encoder=PRESETS[args.preset]())
    model = build_model(cfg, vocab_size=30).train()
    B = max(1, int(args.batch_seconds / args.utt_seconds))
    N = int(args.utt_seconds * 16000)
    audio, lens = torch.randn(B, N) * 0.1, torch.full((B,), N)
    tokens, tlens = torch.randint(1, 30, (B, int(args.utt_seconds * 12))), torch.full((B,), int(args.utt_seconds * 12))
    opt = torch.optim.AdamW(model.parameters(), 1e-4)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = model(audio, lens)
            loss = ctc_loss(out.logits, out.lens, tokens, tlens).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        step(False)
    flops = fc.get_total_flops()
    rows, data = [], {}
    for name, bf16, dtype in (("fp32", False, torch.float32), ("bf16", True, torch.bfloat16)):
        peak = matmul_peak(dtype)
        step(bf16)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            step(bf16)
            times.append(time.perf_counter() - t0)
        t = sorted(times)[len(times) // 2]
        data[name] = {"step_s": t, "audio_s_per_s": B * args.utt_seconds / t, "model_gflop_per_step": flops / 1e9,
                      "achieved_gflops": flops / t / 1e9, "matmul_peak_gflops": peak / 1e9, "mfu": flops / t / peak}  # fmt: skip
        d = data[name]
        rows.append([name, d["audio_s_per_s"], d["step_s"], d["achieved_gflops"], d["matmul_peak_gflops"], d["mfu"]])
    headline = {
        "audio_s_per_s_fp32": data["fp32"]["audio_s_per_s"], "audio_s_per_s_bf16": data["bf16"]["audio_s_per_s"],
        "mfu_fp32": data["fp32"]["mfu"], "mfu_bf16": data["bf16"]["mfu"],
    }  # fmt: skip
    body = markdown_table(["precision", "audio-s/s", "step s", "achieved GFLOP/s", "matmul peak GFLOP/s", "MFU"], rows)
    body += (
        f"\n\nModel: {args.preset} conformer, {count_parameters(model) / 1e6:.2f} M parameters; batch {B} x {args.utt_seconds} s; "
        f"{flops / 1e9:.1f} GFLOP per training step. `precision=auto` picks bf16 here: {use_bf16('auto', torch.device('cpu'))}.\n"
    )
    if data["bf16"]["matmul_peak_gflops"] < data["fp32"]["matmul_peak_gflops"]:
        body += (
            "\nThis CPU has no bf16 matrix units (bf16 matmul is slower than fp32 here), so the bf16 MFU is "
            "relative to an emulated peak and means little; `precision=auto` trains in fp32 on such machines.\n"
        )
    write_results("train_throughput", "Training throughput and model FLOP utilization", headline, body, {"runs": data, "batch_size": B})


if __name__ == "__main__":
    main()
