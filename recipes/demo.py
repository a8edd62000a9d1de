"""The demo: synthesize the built-in corpus, pretrain a speech encoder without labels, fine-tune it
with a tenth of the labels, fine-tune the same tenth from scratch, and compare on unseen voices,
decoding greedily and with a character n-gram of the training sentences' text fused into beam search.

Usage:
    make demo                                  # installs everything, then runs this script
    .venv/bin/python recipes/demo.py           # the same, once installed
    .venv/bin/python recipes/demo.py --train-sentences 500 --pretrain-minutes 1 --finetune-minutes 1   # a quick look

Writes runs/demo/: model/ (the recognizer fine-tuned from the pretrained encoder), pretrain/
(the self-supervised encoder), scratch/ (the same labels, no pretraining), ngram/ (the character
8-gram of the training text, for `--lm`), intent/ (the assistant's text intent classifier,
served by `speechlm serve`), checkpoints/,
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
from speechlm.decode.ctc import DecodingOptions  # noqa: E402
from speechlm.decode.lm_fusion import load_fusion_lm  # noqa: E402
from speechlm.decode.transcribe import Recognizer  # noqa: E402
from speechlm.evaluate import evaluate  # noqa: E402
from speechlm.intent import IntentClassifier, read_labeled_text  # noqa: E402
from speechlm.features import SpecAugmentConfig  # noqa: E402
from speechlm.models.encoders import PRESETS  # noqa: E402
from speechlm.models.ngram import CharNGram, NGramConfig  # noqa: E402
from speechlm.train.asr import train_asr  # noqa: E402
from speechlm.train.finetune import config_from_pretrained  # noqa: E402
from speechlm.train.loop import TrainConfig  # noqa: E402
from speechlm.train.pretrain import pretrain_speech  # noqa: E402


def synth(out: Path, n: int, split: str, voices: str, seed: int) -> None:
    if (out / "manifest.jsonl").is_file() and len(read_manifest(out / "manifest.jsonl")) >= n * 0.98:
        print(f"reusing {out}")
        return
    cmd = [sys.executable, "-m", "speechlm.cli", "synth", str(out), "--builtin", str(n), "--split", split, "--voices", voices, "--seed", str(seed)]
    if subprocess.run(cmd).returncode:  # synth has printed its reason
        sys.exit(f"demo: synthesizing {out} failed; nothing was trained")


LM_DECODING = DecodingOptions(method="beam", beam_size=8, lm_weight=0.6, lm_bonus=2.0)


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
    p.add_argument("--finetune-minutes", type=float, default=4.5, help="budget of the fine-tuning from the pretrained encoder; the run from scratch gets as many steps")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="Conformer size (tiny ~1 M, small ~5 M parameters)")
    args = p.parse_args()
    for name in ("train_sentences", "test_sentences"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    t_start = time.time()
    data, run = Path(args.data), Path(args.run)
    train_manifest = str(data / "train" / "manifest.jsonl")

    print("== 1/5 synthesize the built-in corpus (training voices; test sentences and voices held out)")
    synth(data / "train", args.train_sentences, "train", "train", seed=1)
    synth(data / "test", args.test_sentences, "test", "test", seed=2)
    train_utts = read_manifest(train_manifest)

    # At these budgets the tiny Conformer learns more than the small one (2-3x the steps per minute), and SpecAugment
    # slows a 4.5-minute fine-tuning more than it helps. From scratch on the 10 % split, scored on the test set below:
    # small 91.4 % WER greedy (56.0 % with the n-gram), tiny 77.8 % (32.2 %), tiny without SpecAugment 73.7 % (28.5 %).
    encoder = PRESETS[args.preset]()
    print(f"== 2/5 pretrain the Conformer encoder on the training audio without its transcripts ({args.pretrain_minutes:g} min)")
    pre_cfg = SpeechPretrainConfig()
    pre_cfg = dataclasses.replace(
        pre_cfg,
        data=dataclasses.replace(pre_cfg.data, train_manifest=train_manifest),
        encoder=encoder,
        train=dataclasses.replace(pre_cfg.train, max_steps=100_000, max_minutes=args.pretrain_minutes, checkpoint_every=500),
    )
    pre = pretrain_speech(pre_cfg, run / "pretrain")

    cfg = ASRConfig()
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, train_manifest=train_manifest),
        spec_augment=SpecAugmentConfig(freq_masks=0, time_masks=0, warp=0.0),
        encoder=encoder,
        finetune=dataclasses.replace(cfg.finetune, labeled_fraction=args.labeled_fraction),
        train=TrainConfig(max_steps=100_000, max_minutes=args.finetune_minutes, checkpoint_every=500),
    )
    print(f"== 3/5 fine-tune it with {args.labeled_fraction:.0%} of the labels ({args.finetune_minutes:g} min)")
    result = train_asr(config_from_pretrained(cfg, run / "pretrain"), run)
    # equal compute whatever the machine's speed today: as many steps as the pretrained run got in its minutes
    print(f"== 4/5 the same labels and {result.steps} steps from scratch")
    scratch = train_asr(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=result.steps, max_minutes=0.0)), run / "scratch")

    print("== 5/5 evaluate both on held-out sentences spoken by held-out voices, greedy and with the n-gram")
    # plain text is the cheapest data a user has: the training sentences' text (all of it, no audio, the test
    # sentences held out) as a character 8-gram fused into beam search; weight and bonus as bench/downstream.py's
    # decoders use them, not tuned on this test
    recognizer, recognizer_scratch = Recognizer.load(run / "model"), Recognizer.load(run / "scratch" / "model")
    alphabet = sorted(set(recognizer.tokenizer.chars) | set(recognizer_scratch.tokenizer.chars))
    CharNGram.train([u.text for u in train_utts], NGramConfig(order=8), alphabet=alphabet).save(run / "ngram")
    for rec in (recognizer, recognizer_scratch):  # greedy decoding never reads the LM; beam search fuses it
        rec.lm = load_fusion_lm(run / "ngram", rec.tokenizer)
    test = read_manifest(data / "test" / "manifest.jsonl", require_text=True)
    ev, ev_scratch = evaluate(recognizer, test), evaluate(recognizer_scratch, test)
    ev_lm, ev_scratch_lm = evaluate(recognizer, test, LM_DECODING), evaluate(recognizer_scratch, test, LM_DECODING)
    engine_wer, engine_wer_scratch = wer_by_engine(ev.rows), wer_by_engine(ev_scratch.rows)
    engine_wer_lm, engine_wer_scratch_lm = wer_by_engine(ev_lm.rows), wer_by_engine(ev_scratch_lm.rows)
    for row, row_lm in zip(ev.rows, ev_lm.rows):
        row["hypothesis_lm"], row["word_errors_lm"] = row_lm["hypothesis"], row_lm["word_errors"]

    # the assistant's second stage: intents from the training sentences' labels, scored on the
    # test sentences as written and as the recognizer heard them (the pipeline `speechlm serve` runs)
    intent = IntentClassifier.train(*read_labeled_text([train_manifest]))
    intent.save(run / "intent")
    labels = [u.label for u in test]
    intent_acc_text = sum(p.intent == y for p, y in zip(intent.predict([u.text for u in test]), labels)) / len(test)
    intent_acc_asr, intent_acc_asr_lm = (
        sum(p.intent == y for p, y in zip(intent.predict([r[key] for r in ev.rows]), labels)) / len(test) for key in ("hypothesis", "hypothesis_lm")
    )

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
    labeled_minutes = sum(u.duration for u in train_utts) / 60 * args.labeled_fraction
    summary = {
        **ev.summary(),
        "wer_scratch": ev_scratch.rates.wer,
        "cer_scratch": ev_scratch.rates.cer,
        "wer_by_engine": engine_wer,
        "wer_by_engine_scratch": engine_wer_scratch,
        "wer_lm": ev_lm.rates.wer,
        "cer_lm": ev_lm.rates.cer,
        "wer_scratch_lm": ev_scratch_lm.rates.wer,
        "cer_scratch_lm": ev_scratch_lm.rates.cer,
        "wer_by_engine_lm": engine_wer_lm,
        "wer_by_engine_scratch_lm": engine_wer_scratch_lm,
        "lm_decoding": dataclasses.asdict(LM_DECODING),
        "labeled_fraction": args.labeled_fraction,
        "pretrain_steps": pre.steps,
        "pretrain_masked_acc": pre.history[-1].get("masked_acc") if pre.history else None,
        "intent_acc_reference_text": intent_acc_text,
        "intent_acc_transcripts": intent_acc_asr,
        "intent_acc_transcripts_lm": intent_acc_asr_lm,
        "train_steps": result.steps,
        "train_steps_scratch": scratch.steps,
        "train_audio_hours": sum(u.duration for u in train_utts) / 3600,
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
        f"the same labels and steps from scratch for comparison. Decoded greedily, and by beam search ({LM_DECODING.beam_size} "
        f"prefixes) with a character 8-gram of the {len(train_utts)} training sentences' text fused in "
        f"(LM weight {LM_DECODING.lm_weight:g}, bonus {LM_DECODING.lm_bonus:g} per character; `{run / 'ngram'}`).",
        "",
        "| held-out sentences, held-out voices | WER greedy | CER greedy | WER + n-gram | CER + n-gram | steps |",
        "|---|---|---|---|---|---|",
        f"| fine-tuned from the pretrained encoder | {ev.rates.wer:.2%} | {ev.rates.cer:.2%} | {ev_lm.rates.wer:.2%} | {ev_lm.rates.cer:.2%} | {result.steps} |",
        f"| from scratch | {ev_scratch.rates.wer:.2%} | {ev_scratch.rates.cer:.2%} | {ev_scratch_lm.rates.wer:.2%} | {ev_scratch_lm.rates.cer:.2%} | {scratch.steps} |",
        "",
        "| engine (unseen voices) | WER pretrained | WER scratch | WER pretrained + n-gram | WER scratch + n-gram |",
        "|---|---|---|---|---|",
        *[
            f"| {e} | {w:.2%} | {engine_wer_scratch.get(e, float('nan')):.2%} | {engine_wer_lm.get(e, float('nan')):.2%} | "
            f"{engine_wer_scratch_lm.get(e, float('nan')):.2%} |"
            for e, w in engine_wer.items()
        ],
        "",
        f"Intent of the test commands (10 intents): {intent_acc_text:.1%} from the reference text, "
        f"{intent_acc_asr:.1%} from the fine-tuned model's greedy transcripts and {intent_acc_asr_lm:.1%} from its transcripts "
        f"with the n-gram (the assistant pipeline).",
        "",
        "![loss](loss.png)",
        "",
        "| voice | reference | greedy | + n-gram |",
        "|---|---|---|---|",
        *[f"| {r['speaker']} | {r['reference']} | {r['hypothesis']} | {r['hypothesis_lm']} |" for r in examples],
        "",
    ]
    (report / "report.md").write_text("\n".join(lines))

    print()
    print(f"{args.labeled_fraction:.0%} of the labels ({labeled_minutes:.0f} min), {len(test)} test utterances by unseen voices:")
    print(f"  WER {ev.rates.wer:.2%}  (CER {ev.rates.cer:.2%})  fine-tuned from the pretrained encoder")
    print(f"  WER {ev_scratch.rates.wer:.2%}  (CER {ev_scratch.rates.cer:.2%})  from scratch, same labels and steps")
    print(f"  WER {ev_lm.rates.wer:.2%}  (CER {ev_lm.rates.cer:.2%})  pretrained, with the training text's 8-gram")
    print(f"  WER {ev_scratch_lm.rates.wer:.2%}  (CER {ev_scratch_lm.rates.cer:.2%})  from scratch, with the training text's 8-gram")
    print("WER by engine with the n-gram (pretrained / scratch): "
          + ", ".join(f"{e} {w:.1%} / {engine_wer_scratch_lm.get(e, float('nan')):.1%}" for e, w in engine_wer_lm.items()))  # fmt: skip
    for r in examples[:4]:
        print(f"  REF: {r['reference']}\n  HYP: {r['hypothesis_lm']}   [{r['speaker']}]")
    print(f"intent accuracy: {intent_acc_text:.1%} on the reference text, {intent_acc_asr_lm:.1%} on the transcripts with the n-gram")
    print(f"report: {report / 'report.md'}   model: {run / 'model'}   total {summary['total_minutes']:.1f} min")
    print(f"talk to it: .venv/bin/speechlm serve {run} --asr-lm {run / 'ngram'} --asr-lm-weight {LM_DECODING.lm_weight:g} "
          f"--asr-lm-bonus {LM_DECODING.lm_bonus:g} --intent-model {run / 'intent'}   then open http://127.0.0.1:8000/")


if __name__ == "__main__":
    main()
