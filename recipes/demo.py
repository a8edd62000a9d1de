"""The demo: synthesize the built-in corpus, train the default recognizer, evaluate on unseen voices.

Usage:
    make demo                                  # installs everything, then runs this script
    .venv/bin/python recipes/demo.py           # the same, once installed
    .venv/bin/python recipes/demo.py --train-sentences 500 --train-minutes 2   # a quick look

Writes runs/demo/: model/ (the trained recognizer), checkpoints/, tensorboard/ and report/
(report.md, loss.png, summary.json, per-utterance results). Re-running reuses the synthesized audio.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from speechlm.config import ASRConfig, to_dict  # noqa: E402
from speechlm.data.manifest import read_manifest  # noqa: E402
from speechlm.decode.transcribe import Recognizer  # noqa: E402
from speechlm.evaluate import evaluate  # noqa: E402
from speechlm.models.encoders import small  # noqa: E402
from speechlm.train.asr import train_asr  # noqa: E402
from speechlm.train.loop import TrainConfig  # noqa: E402


def synth(out: Path, n: int, split: str, voices: str, seed: int) -> None:
    if (out / "manifest.jsonl").is_file() and len(read_manifest(out / "manifest.jsonl")) >= n * 0.98:
        print(f"reusing {out}")
        return
    cmd = [sys.executable, "-m", "speechlm.cli", "synth", str(out), "--builtin", str(n), "--split", split, "--voices", voices, "--seed", str(seed)]
    subprocess.run(cmd, check=True)


def engine_of(speaker: str | None) -> str:
    return (speaker or "unknown").split("-")[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/demo", help="where synthesized audio goes")
    p.add_argument("--run", default="runs/demo", help="run directory")
    p.add_argument("--train-sentences", type=int, default=6000)
    p.add_argument("--test-sentences", type=int, default=400)
    p.add_argument("--train-minutes", type=float, default=14.0, help="wall-clock training budget")
    args = p.parse_args()
    t_start = time.time()
    data, run = Path(args.data), Path(args.run)

    print("== 1/4 synthesize the built-in corpus (training voices; test sentences and voices held out)")
    synth(data / "train", args.train_sentences, "train", "train", seed=1)
    synth(data / "test", args.test_sentences, "test", "test", seed=2)

    print("== 2/4 train the default Conformer-CTC recognizer")
    cfg = ASRConfig()
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, train_manifest=str(data / "train" / "manifest.jsonl")),
        encoder=small(),
        train=TrainConfig(max_steps=100_000, max_minutes=args.train_minutes, checkpoint_every=500),
    )
    result = train_asr(cfg, run)

    print("== 3/4 evaluate on held-out sentences spoken by held-out voices")
    rec = Recognizer.load(run / "model")
    test = read_manifest(data / "test" / "manifest.jsonl", require_text=True)
    ev = evaluate(rec, test)
    by_engine = collections.defaultdict(lambda: [0, 0])
    for r in ev.rows:
        by_engine[engine_of(r["speaker"])][0] += r["word_errors"]
        by_engine[engine_of(r["speaker"])][1] += r["words"]
    engine_wer = {e: errs / max(words, 1) for e, (errs, words) in sorted(by_engine.items())}

    print("== 4/4 write the report")
    report = run / "report"
    report.mkdir(parents=True, exist_ok=True)
    steps = [h["step"] for h in result.history]
    plt.figure(figsize=(6, 3.5))
    plt.plot(steps, [h["loss"] for h in result.history])
    plt.yscale("log")
    plt.xlabel("step")
    plt.ylabel("CTC loss per token")
    plt.title("demo training loss")
    plt.grid(alpha=0.3)
    plt.tight_layout()
    plt.savefig(report / "loss.png", dpi=120)
    summary = {
        **ev.summary(),
        "wer_by_engine": engine_wer,
        "train_steps": result.steps,
        "train_audio_hours": sum(u.duration for u in read_manifest(cfg.data.train_manifest)) / 3600,
        "train_throughput_audio_s_per_s": result.throughput,
        "train_minutes": result.train_seconds / 60,
        "total_minutes": (time.time() - t_start) / 60,
        "test_voices": sorted({u.speaker for u in test}),
        "config": to_dict(cfg),
    }
    (report / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (report / "utterances.json").write_text(json.dumps(ev.rows, indent=1) + "\n")
    examples = ev.rows[:: max(1, len(ev.rows) // 6)][:6]
    lines = [
        "# speechlm demo report",
        "",
        f"Conformer-CTC ({cfg.encoder.d_model}x{cfg.encoder.n_layers}), trained {result.steps} steps "
        f"({summary['train_minutes']:.1f} min) on {summary['train_audio_hours']:.2f} h of synthesized speech.",
        "",
        "| test set | WER | CER | RTF |",
        "|---|---|---|---|",
        f"| held-out sentences, held-out voices ({len(test)} utt) | {ev.rates.wer:.2%} | {ev.rates.cer:.2%} | {ev.rtf:.4f} |",
        "",
        "| engine (unseen voices) | WER |",
        "|---|---|",
        *[f"| {e} | {w:.2%} |" for e, w in engine_wer.items()],
        "",
        "![loss](loss.png)",
        "",
        "| voice | reference | hypothesis |",
        "|---|---|---|",
        *[f"| {r['speaker']} | {r['reference']} | {r['hypothesis']} |" for r in examples],
        "",
    ]
    (report / "report.md").write_text("\n".join(lines))

    print()
    print(f"WER {ev.rates.wer:.2%}   CER {ev.rates.cer:.2%}   RTF {ev.rtf:.4f}   ({len(test)} utterances, unseen voices)")
    print("WER by engine: " + ", ".join(f"{e} {w:.1%}" for e, w in engine_wer.items()))
    for r in examples[:4]:
        print(f"  REF: {r['reference']}\n  HYP: {r['hypothesis']}   [{r['speaker']}]")
    print(f"report: {report / 'report.md'}   model: {run / 'model'}   total {summary['total_minutes']:.1f} min")


if __name__ == "__main__":
    main()
