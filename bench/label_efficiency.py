"""Does pretraining pay? WER vs labeled minutes, fine-tuned from a self-supervised encoder and from scratch.

Usage:
    .venv/bin/python recipes/demo.py --synth-only                 # the built-in corpus, if not there yet
    .venv/bin/python bench/label_efficiency.py                    # defaults below, ~75 min on 2 cores
    .venv/bin/python bench/label_efficiency.py --pretrain-steps 200 --steps 50 --fractions 0.1,1 --seeds 1   # a quick look

1. Pretrain the small Conformer with BEST-RQ masked prediction on the training audio without
   its transcripts (speed and noise augmentation on), for a fixed number of steps.
2. Fine-tune CTC ASR on 1 %, 5 %, 10 % and 100 % of the labels, from that encoder and from
   scratch, each for the same number of steps at the same batch size (equal compute), 2 seeds
   (subset + initialisation) for the fractions below 100 %.
3. Evaluate every model on held-out sentences spoken by held-out voices; write the table, JSON
   and the plot to bench/results/label_efficiency.{md,json,png}.
Steps rather than minutes fix the compute, so a busy machine changes the duration, not the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, markdown_table, saved_figure, write_results  # noqa: E402

from speechlm import label_efficiency as le  # noqa: E402
from speechlm.config import ASRConfig, SpeechPretrainConfig, load_config  # noqa: E402
from speechlm.train.checkpoint import MODEL_FILE  # noqa: E402
from speechlm.train.pretrain import pretrain_speech  # noqa: E402


def plot_pretraining(log: list[dict], path: Path) -> None:
    with saved_figure(path, figsize=(6, 3.5)) as (fig, ax):
        steps = [r["step"] for r in log]
        ax.plot(steps, [r["loss"] for r in log], color="C0")
        ax.set(xlabel="step", ylabel="masked-prediction loss (nats)", title="BEST-RQ pretraining, small Conformer")
        ax2 = ax.twinx()
        ax2.plot(steps, [100 * r["masked_acc"] for r in log], color="C1")
        ax2.set_ylabel("masked-prediction accuracy (%)", color="C1")
        ax.grid(alpha=0.3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-manifest", default="data/demo/train/manifest.jsonl")
    p.add_argument("--test-manifest", default="data/demo/test/manifest.jsonl")
    p.add_argument("--out", default="runs/label_efficiency")
    p.add_argument("--pretrain-steps", type=int, default=1500)
    p.add_argument("--steps", type=int, default=500, help="fine-tuning steps per point")
    p.add_argument("--fractions", default="0.01,0.05,0.1,1")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2, help="fine-tuning runs at a time (1 thread each)")
    p.add_argument("--report-only", action="store_true", help="rewrite the results from OUT/rows.json without running anything")
    args = p.parse_args()
    out = Path(args.out)
    t0 = time.time()

    pre_cfg = load_config(SpeechPretrainConfig, overrides=[f"data.train_manifest={args.train_manifest}", f"train.max_steps={args.pretrain_steps}"])
    pre_dir = out / "pretrain"
    if not args.report_only and not (pre_dir / "model" / MODEL_FILE).is_file():
        print(f"== pretraining {args.pretrain_steps} steps on {args.train_manifest} (transcripts ignored)")
        resume = (pre_dir / "checkpoints" / "latest").is_file()
        pretrain_speech(pre_cfg, pre_dir, resume=resume)
    pre_log = [json.loads(line) for line in (pre_dir / "train_log.jsonl").read_text().splitlines()]
    shutil.copy(pre_dir / "train_log.jsonl", RESULTS / "label_efficiency_pretrain_log.jsonl")
    plot_pretraining(pre_log, RESULTS / "label_efficiency_pretrain.png")

    base = load_config(ASRConfig, overrides=[f"data.train_manifest={args.train_manifest}", f"train.max_steps={args.steps}", "train.checkpoint_every=100000"])
    fractions = [float(f) for f in args.fractions.split(",")]
    print(f"== fine-tuning grid: fractions {fractions}, {args.seeds} seeds, {args.steps} steps each")
    if args.report_only:
        rows = json.loads((out / "rows.json").read_text())
    else:
        rows = le.run_grid(out, base, args.test_manifest, str(pre_dir), fractions, args.seeds, jobs=args.jobs)
    summary = le.report(out, rows, title="CTC ASR: WER on unseen voices vs labeled audio")
    shutil.copy(out / "wer_vs_labels.png", RESULTS / "label_efficiency.png")

    wer = lambda init, f: le.wer_at(summary, init, f)  # noqa: E731
    headline = {
        "wer_pretrained_10pct": wer("pretrained", 0.1), "wer_scratch_10pct": wer("scratch", 0.1),
        "wer_scratch_100pct": wer("scratch", 1.0), "wer_pretrained_100pct": wer("pretrained", 1.0),
        "wer_pretrained_1pct": wer("pretrained", 0.01), "wer_scratch_1pct": wer("scratch", 0.01),
    }  # fmt: skip
    ratio = headline["wer_pretrained_10pct"] / headline["wer_scratch_10pct"]
    within = headline["wer_pretrained_10pct"] / headline["wer_scratch_100pct"]
    body = "\n".join([
        f"Pretraining: BEST-RQ masked prediction, {pre_log[-1]['step']} steps on {args.train_manifest} (no transcripts), "
        f"final loss {pre_log[-1]['loss']:.3f}, masked-prediction accuracy {pre_log[-1]['masked_acc']:.1%} "
        f"(codebook {pre_cfg.ssl.codebook_size}, chance {1 / pre_cfg.ssl.codebook_size:.2%}).",
        f"Fine-tuning: {args.steps} steps per point, batch {base.train.batch_seconds:g} s, lr {base.train.lr:g}, same recipe for both inits.",
        f"Test: {args.test_manifest} (held-out sentences, held-out voices). Wall time: {(time.time() - t0) / 60:.1f} min.",
        "",
        le.markdown(summary),
        "",
        f"Target 1: WER(pretrained @ 10 %) <= 0.5 x WER(scratch @ 10 %): ratio {ratio:.2f} -> {'met' if ratio <= 0.5 else 'not met'}.",
        f"Target 2: WER(pretrained @ 10 %) within 1.3 x WER(scratch @ 100 %): ratio {within:.2f} -> {'met' if within <= 1.3 else 'not met'}.",
        "",
        "![WER vs labeled minutes](label_efficiency.png)",
        "",
        "Pretraining curve (the reference for `speechlm pretrain speech` defaults):",
        "",
        "![pretraining loss and masked-prediction accuracy](label_efficiency_pretrain.png)",
        "",
        "Every run:",
        "",
        markdown_table(["init", "fraction", "seed", "labeled min", "WER", "CER", "final loss"],
                       [[r["init"], r["fraction"], r["seed"], round(r["labeled_minutes"], 1), r["wer"], r["cer"], r["final_loss"]] for r in rows]),
    ])  # fmt: skip
    write_results("label_efficiency", "Label efficiency: pretrained vs scratch", headline, body,
                  {"rows": rows, "pretrain": {"config": dataclasses.asdict(pre_cfg), "final": pre_log[-1]}, "finetune_steps": args.steps})  # fmt: skip


if __name__ == "__main__":
    main()
