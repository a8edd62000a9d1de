"""The demo: synthesize the built-in corpus, pretrain a speech encoder without labels, fine-tune it
with a tenth of the labels, fine-tune the same tenth from scratch, and compare on unseen voices.

Usage:
    make demo                                  # installs everything, then runs this script
    .venv/bin/python recipes/demo.py           # the same, once installed
    .venv/bin/python recipes/demo.py --train-sentences 500 --pretrain-minutes 1 --finetune-minutes 1   # a quick look

Writes runs/demo/: model/ (the recognizer fine-tuned from the pretrained encoder), pretrain/
(the self-supervised encoder), scratch/ (the same labels, no pretraining), intent/ (the
assistant's text intent classifier, served by `speechlm serve`), checkpoints/,
tensorboard/ and report/ (report.md, loss.png, summary.json, per-utterance results).
Re-running reuses the synthesized audio.
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

from speechlm.config import ASRConfig, SpeechPretrainConfig, to_dict  # noqa: E402
from speechlm.data.manifest import read_manifest  # noqa: E402
from speechlm.decode.transcribe import Recognizer  # noqa: E402
from speechlm.evaluate import evaluate  # noqa: E402
from speechlm.intent import IntentClassifier, read_labeled_text  # noqa: E402
from speechlm.models.encoders import small  # noqa: E402
from speechlm.train.asr import train_asr  # noqa: E402
from speechlm.train.finetune import config_from_pretrained  # noqa: E402
from speechlm.train.loop import TrainConfig  # noqa: E402
from speechlm.train.pretrain import pretrain_speech  # noqa: E402


def synth(out: Path, n: int, split: str, voices: str, seed: int) -> None:
    if (out / "manifest.jsonl").is_file() and len(read_manifest(out / "manifest.jsonl")) >= n * 0.98:
        print(f"reusing {out}")
        return
    cmd = [sys.executable, "-m", "speechlm.cli", "synth", str(out), "--builtin", str(n), "--split", split, "--voices", voices, "--seed", str(seed)]
    subprocess.run(cmd, check=True)


def engine_of(speaker: str | None) -> str:
    return (speaker or "unknown").split("-")[0]


def wer_by_engine(rows: list[dict]) -> dict[str, float]:
    counts = collections.defaultdict(lambda: [0, 0])
    for r in rows:
        counts[engine_of(r["speaker"])][0] += r["word_errors"]
        counts[engine_of(r["speaker"])][1] += r["words"]
    return {e: errs / max(words, 1) for e, (errs, words) in sorted(counts.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/demo", help="where synthesized audio goes")
    p.add_argument("--run", default="runs/demo", help="run directory")
    p.add_argument("--train-sentences", type=int, default=6000)
    p.add_argument("--test-sentences", type=int, default=400)
    p.add_argument("--pretrain-minutes", type=float, default=7.0, help="self-supervised pretraining budget (no labels)")
    p.add_argument("--labeled-fraction", type=float, default=0.1, help="labels used for fine-tuning")
    p.add_argument("--finetune-minutes", type=float, default=4.5, help="budget of each fine-tuning run (pretrained, scratch)")
    args = p.parse_args()
    t_start = time.time()
    data, run = Path(args.data), Path(args.run)
    train_manifest = str(data / "train" / "manifest.jsonl")

    print("== 1/5 synthesize the built-in corpus (training voices; test sentences and voices held out)")
    synth(data / "train", args.train_sentences, "train", "train", seed=1)
    synth(data / "test", args.test_sentences, "test", "test", seed=2)

    print(f"== 2/5 pretrain the Conformer encoder on the training audio without its transcripts ({args.pretrain_minutes:g} min)")
    pre_cfg = SpeechPretrainConfig()
    pre_cfg = dataclasses.replace(
        pre_cfg,
        data=dataclasses.replace(pre_cfg.data, train_manifest=train_manifest),
        encoder=small(),
        train=dataclasses.replace(pre_cfg.train, max_steps=100_000, max_minutes=args.pretrain_minutes, checkpoint_every=500),
    )
    pre = pretrain_speech(pre_cfg, run / "pretrain")

    cfg = ASRConfig()
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, train_manifest=train_manifest),
        encoder=small(),
        finetune=dataclasses.replace(cfg.finetune, labeled_fraction=args.labeled_fraction),
        train=TrainConfig(max_steps=100_000, max_minutes=args.finetune_minutes, checkpoint_every=500),
    )
    print(f"== 3/5 fine-tune it with {args.labeled_fraction:.0%} of the labels ({args.finetune_minutes:g} min)")
    result = train_asr(config_from_pretrained(cfg, run / "pretrain"), run)
    print(f"== 4/5 the same labels and budget from scratch ({args.finetune_minutes:g} min)")
    scratch = train_asr(cfg, run / "scratch")

    print("== 5/5 evaluate both on held-out sentences spoken by held-out voices")
    test = read_manifest(data / "test" / "manifest.jsonl", require_text=True)
    ev = evaluate(Recognizer.load(run / "model"), test)
    ev_scratch = evaluate(Recognizer.load(run / "scratch" / "model"), test)
    engine_wer, engine_wer_scratch = wer_by_engine(ev.rows), wer_by_engine(ev_scratch.rows)

    # the assistant's second stage: intents from the training sentences' labels, scored on the
    # test sentences as written and as the recognizer heard them (the pipeline `speechlm serve` runs)
    intent = IntentClassifier.train(*read_labeled_text([train_manifest]))
    intent.save(run / "intent")
    labels = [u.label for u in test]
    intent_acc_text = sum(p.intent == y for p, y in zip(intent.predict([u.text for u in test]), labels)) / len(test)
    intent_acc_asr = sum(p.intent == y for p, y in zip(intent.predict([r["hypothesis"] for r in ev.rows]), labels)) / len(test)

    report = run / "report"
    report.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot([h["step"] for h in pre.history], [h["loss"] for h in pre.history])
    axes[0].set(xlabel="step", ylabel="masked-prediction loss", title="pretraining (no labels)")
    for res, name in ((result, "from pretrained encoder"), (scratch, "from scratch")):
        axes[1].plot([h["step"] for h in res.history], [h["loss"] for h in res.history], label=name)
    axes[1].set(xlabel="step", ylabel="CTC loss per token", yscale="log", title=f"fine-tuning on {args.labeled_fraction:.0%} of the labels")
    axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(report / "loss.png", dpi=120)
    labeled_minutes = sum(u.duration for u in read_manifest(train_manifest)) / 60 * args.labeled_fraction
    summary = {
        **ev.summary(),
        "wer_scratch": ev_scratch.rates.wer,
        "cer_scratch": ev_scratch.rates.cer,
        "wer_by_engine": engine_wer,
        "wer_by_engine_scratch": engine_wer_scratch,
        "labeled_fraction": args.labeled_fraction,
        "pretrain_steps": pre.steps,
        "pretrain_masked_acc": pre.history[-1].get("masked_acc") if pre.history else None,
        "intent_acc_reference_text": intent_acc_text,
        "intent_acc_transcripts": intent_acc_asr,
        "train_steps": result.steps,
        "train_steps_scratch": scratch.steps,
        "train_audio_hours": sum(u.duration for u in read_manifest(train_manifest)) / 3600,
        "train_throughput_audio_s_per_s": result.throughput,
        "train_minutes": result.train_seconds / 60,
        "total_minutes": (time.time() - t_start) / 60,
        "test_voices": sorted({u.speaker for u in test}),
        "config": to_dict(config_from_pretrained(cfg, run / "pretrain")),
    }
    (report / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (report / "utterances.json").write_text(json.dumps(ev.rows, indent=1) + "\n")
    examples = ev.rows[:: max(1, len(ev.rows) // 6)][:6]
    lines = [
        "# speechlm demo report",
        "",
        f"Conformer ({cfg.encoder.d_model}x{cfg.encoder.n_layers}) pretrained {pre.steps} steps ({args.pretrain_minutes:g} min) on "
        f"{summary['train_audio_hours']:.2f} h of synthesized speech without transcripts, then CTC fine-tuned on "
        f"{args.labeled_fraction:.0%} of the labels ({labeled_minutes:.0f} min of audio) for {args.finetune_minutes:g} min; "
        f"the same labels and budget from scratch for comparison.",
        "",
        "| held-out sentences, held-out voices | WER | CER | steps |",
        "|---|---|---|---|",
        f"| fine-tuned from the pretrained encoder | {ev.rates.wer:.2%} | {ev.rates.cer:.2%} | {result.steps} |",
        f"| from scratch | {ev_scratch.rates.wer:.2%} | {ev_scratch.rates.cer:.2%} | {scratch.steps} |",
        "",
        "| engine (unseen voices) | WER pretrained | WER scratch |",
        "|---|---|---|",
        *[f"| {e} | {w:.2%} | {engine_wer_scratch.get(e, float('nan')):.2%} |" for e, w in engine_wer.items()],
        "",
        f"Intent of the test commands (10 intents): {intent_acc_text:.1%} from the reference text, "
        f"{intent_acc_asr:.1%} from the fine-tuned model's transcripts (the assistant pipeline).",
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
    print(f"{args.labeled_fraction:.0%} of the labels ({labeled_minutes:.0f} min), {len(test)} test utterances by unseen voices:")
    print(f"  WER {ev.rates.wer:.2%}  (CER {ev.rates.cer:.2%})  fine-tuned from the pretrained encoder")
    print(f"  WER {ev_scratch.rates.wer:.2%}  (CER {ev_scratch.rates.cer:.2%})  from scratch, same labels and budget")
    print("WER by engine (pretrained / scratch): " + ", ".join(f"{e} {w:.1%} / {engine_wer_scratch.get(e, float('nan')):.1%}" for e, w in engine_wer.items()))
    for r in examples[:4]:
        print(f"  REF: {r['reference']}\n  HYP: {r['hypothesis']}   [{r['speaker']}]")
    print(f"intent accuracy: {intent_acc_text:.1%} on the reference text, {intent_acc_asr:.1%} on the transcripts")
    print(f"report: {report / 'report.md'}   model: {run / 'model'}   total {summary['total_minutes']:.1f} min")
    print(f"talk to it: .venv/bin/speechlm serve {run} --intent-model {run / 'intent'}   then open http://127.0.0.1:8000/")


if __name__ == "__main__":
    main()
