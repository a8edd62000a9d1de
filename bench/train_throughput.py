"""Training throughput: our encoder (CTC fine-tuning and BEST-RQ pretraining steps) vs transformers'
Wav2Vec2ForPreTraining and HubertModel of about the same size, on the same batch, in the same run;
audio-seconds per second and model FLOP utilization.

Usage:
    .venv/bin/python bench/train_throughput.py --preset small --batch-seconds 60 --steps 5

The transformers models are built offline from a config (random init): Wav2Vec2ForPreTraining
with its contrastive + diversity loss (masks and negatives sampled by its own helpers), and
HubertModel with a linear head and cross-entropy on masked frames against random targets (the
HuBERT objective; transformers ships no HuBERT pretraining head). Their convolutional feature
encoder reads raw samples; ours reads log-mel frames computed inside the model.

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

from speechlm.config import ASRConfig, SpeechPretrainConfig  # noqa: E402
from speechlm.models.asr import count_parameters  # noqa: E402
from speechlm.models.encoders import PRESETS  # noqa: E402
from speechlm.objectives.ctc import ctc_loss  # noqa: E402
from speechlm.objectives.masked_prediction import masked_prediction_loss  # noqa: E402
from speechlm.train.asr import build_model  # noqa: E402
from speechlm.train.loop import use_bf16  # noqa: E402
from speechlm.train.pretrain import build_pretrainer  # noqa: E402


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 10) -> float:
    """Best of ``reps`` n x n x n matmuls after warm-up (a noisy machine only makes single runs slower)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3 if dtype == torch.float32 else 1):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def hf_models(target_params: int) -> dict:
    """Wav2Vec2ForPreTraining and HubertModel (+ a masked-prediction head) sized close to ``target_params``."""
    import warnings

    warnings.filterwarnings("ignore")
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2ForPreTraining

    def size(layers: int, cls, cfg_cls) -> tuple:
        cfg = cfg_cls(hidden_size=144, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=576,
                      conv_dim=(320,) * 7, mask_time_prob=0.5, mask_time_length=5, num_negatives=20)  # fmt: skip
        torch.manual_seed(0)
        m = cls(cfg)
        return abs(count_parameters(m) - target_params), m

    return {
        "transformers Wav2Vec2ForPreTraining": min((size(n, Wav2Vec2ForPreTraining, Wav2Vec2Config) for n in range(4, 16)), key=lambda x: x[0])[1],
        "transformers HubertModel + masked CE": min((size(n, HubertModel, HubertConfig) for n in range(4, 16)), key=lambda x: x[0])[1],
    }


def hf_step_fn(model, audio: torch.Tensor):
    """A training step function for a transformers model on ``audio`` (B, N)."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

    B = audio.shape[0]
    T = int(model._get_feat_extract_output_lengths(torch.tensor(audio.shape[1])))
    cfg = model.config
    mask = torch.from_numpy(_compute_mask_indices((B, T), cfg.mask_time_prob, cfg.mask_time_length, min_masks=2))
    opt_params = list(model.parameters())
    if hasattr(model, "quantizer"):  # Wav2Vec2ForPreTraining
        negatives = torch.from_numpy(_sample_negative_indices((B, T), cfg.num_negatives, mask_time_indices=mask.numpy()))

        def loss_fn():
            return model(audio, mask_time_indices=mask, sampled_negative_indices=negatives).loss
    else:
        head = torch.nn.Linear(cfg.hidden_size, 512)
        opt_params += list(head.parameters())
        targets = torch.randint(0, 512, (B, T))

        def loss_fn():
            h = model(audio, mask_time_indices=mask).last_hidden_state
            return torch.nn.functional.cross_entropy(head(h[mask]), targets[mask])

    opt = torch.optim.AdamW(opt_params, 1e-4)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def timed(step, bf16: bool, steps: int) -> float:
    step(bf16)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(bf16)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def flops_of(step) -> int:
    with FlopCounterMode(display=False) as fc:
        step(False)
    return fc.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=list(PRESETS))
    p.add_argument("--batch-seconds", type=float, default=60.0)
    p.add_argument("--utt-seconds", type=float, default=2.5, help="length of each utterance in the batch")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--bf16", action="store_true", help="also time bf16 autocast (slow where the CPU has no bf16 units)")
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

    torch.manual_seed(0)
    pre_cfg = SpeechPretrainConfig(encoder=PRESETS[args.preset]())
    pretrainer = build_pretrainer(pre_cfg).train()
    pre_opt = torch.optim.AdamW(pretrainer.parameters(), 1e-4)

    def pre_step(bf16: bool) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = masked_prediction_loss(pretrainer(audio, lens)).loss
        pre_opt.zero_grad()
        loss.backward()
        pre_opt.step()

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16, reps=2)}
    models = {
        "speechlm conformer, CTC fine-tuning": (model, step),
        "speechlm conformer, BEST-RQ pretraining": (pretrainer, pre_step),
    }
    for name, m in hf_models(count_parameters(pretrainer)).items():
        models[name] = (m.train(), hf_step_fn(m, audio))
    rows, data = [], {}
    for name, (m, fn) in models.items():
        flops = flops_of(fn)
        for prec, bf16 in (("fp32", False), ("bf16", True)):
            if bf16 and not args.bf16:
                continue
            t = timed(fn, bf16, args.steps)
            d = {"params_m": count_parameters(m) / 1e6, "step_s": t, "audio_s_per_s": B * args.utt_seconds / t,
                 "model_gflop_per_step": flops / 1e9, "achieved_gflops": flops / t / 1e9,
                 "matmul_peak_gflops": peaks[prec] / 1e9, "mfu": flops / t / peaks[prec]}  # fmt: skip
            data[f"{name} [{prec}]"] = d
            rows.append([name, prec, round(d["params_m"], 2), d["audio_s_per_s"], d["step_s"], d["model_gflop_per_step"], d["achieved_gflops"], d["mfu"]])
            print(rows[-1], flush=True)
    ours = data["speechlm conformer, BEST-RQ pretraining [fp32]"]["audio_s_per_s"]
    peers = {k: v["audio_s_per_s"] for k, v in data.items() if k.startswith("transformers") and k.endswith("[fp32]")}
    headline = {
        "speedup_vs_transformers": ours / max(peers.values()),
        "speedup_vs_wav2vec2": ours / data["transformers Wav2Vec2ForPreTraining [fp32]"]["audio_s_per_s"],
        "speedup_vs_hubert": ours / data["transformers HubertModel + masked CE [fp32]"]["audio_s_per_s"],
        "audio_s_per_s_fp32": data["speechlm conformer, CTC fine-tuning [fp32]"]["audio_s_per_s"],
        "mfu_fp32": data["speechlm conformer, CTC fine-tuning [fp32]"]["mfu"],
        "mfu_bf16": data.get("speechlm conformer, CTC fine-tuning [bf16]", {}).get("mfu"),  # None: not timed (no bf16 units)
    }
    body = markdown_table(["model", "precision", "params (M)", "audio-s/s", "step s", "GFLOP/step", "achieved GFLOP/s", "MFU"], rows)
    body += (
        f"\n\nSame batch for every model: {B} x {args.utt_seconds} s of audio. Matmul peak measured in this run: "
        f"fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s. "
        f"Speedup of our pretraining step over the fastest transformers model: {headline['speedup_vs_transformers']:.2f}x. "
        f"`precision=auto` picks bf16 here: {use_bf16('auto', torch.device('cpu'))}.\n"
    )
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        pre_step(False)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=40)
    body += "\nWhere the time goes (one BEST-RQ pretraining step, torch.profiler, top self-CPU ops):\n\n```\n" + table + "\n```\n"
    if peaks["bf16"] < peaks["fp32"]:
        body += (
            "\nThis CPU has no bf16 matrix units (bf16 matmul is slower than fp32 here), so bf16 rows are skipped "
            "unless `--bf16` is given; `precision=auto` trains in fp32 on such machines.\n"
        )
    write_results("train_throughput", "Training throughput: speechlm vs transformers wav2vec 2.0 / HuBERT", headline, body,
                  {"runs": data, "batch_size": B})  # fmt: skip


if __name__ == "__main__":
    main()
