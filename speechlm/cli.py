"""``speechlm`` command line: one subcommand per verb.

Usage:
    speechlm synth data/train --builtin 3000 --split train --voices train
    speechlm prepare AUDIO_DIR data/mine.jsonl --label-from folder
    speechlm train runs/asr --train-manifest data/train/manifest.jsonl --preset small train.max_steps=2000
    speechlm pretrain speech runs/ssl --train-manifest data/unlabeled/manifest.jsonl train.max_minutes=60
    speechlm finetune runs/ft --init runs/ssl --train-manifest data/train/manifest.jsonl --labeled-fraction 0.1
    speechlm pretrain text runs/lm --text book.txt other.txt lm.arch=causal
    speechlm pretrain joint runs/joint --train-manifest data/train/manifest.jsonl --text book.txt --paired-fraction 0.1
    speechlm generate runs/lm --prompt "set an alarm" --temperature 0.8 --top-p 0.9
    speechlm perplexity runs/lm held_out.txt
    speechlm transcribe runs/asr clip.wav other.flac
    speechlm transcribe runs/asr clip.wav --beam 8 --nbest 8 --json
    speechlm evaluate runs/asr data/test/manifest.jsonl
    speechlm finetune runs/kws --task classify --init runs/ssl --train-manifest data/kws.jsonl --peft lora
    speechlm predict runs/kws clip.wav
    speechlm predict runs/e2e clip.wav --pipeline runs/asr runs/intent --lm runs/ngram --pipeline-nbest 8 --pipeline-weight 0.9
    speechlm finetune runs/txt --task text-classify --init runs/lm --train-file labeled.csv --valid-file test.csv
    speechlm predict runs/txt "book a table for two"
    speechlm ngram runs/ngram --text sentences.txt && speechlm evaluate runs/asr data/test/manifest.jsonl --lm runs/ngram
    speechlm finetune runs/slm --task speech-lm --init runs/asr --lm runs/lm --train-manifest data/train/manifest.jsonl
    speechlm intent train runs/intent --data data/train/manifest.jsonl
    speechlm intent predict runs/intent "set an alarm for seven"
    speechlm serve runs/asr --intent-model runs/intent --port 8000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from speechlm.config import ConfigError
from speechlm.errors import SpeechLMError

DEFAULTS = argparse.ArgumentDefaultsHelpFormatter
ENSEMBLE_HELP = ("speech classifiers of the same labels (other seeds or recipes) whose class probabilities are averaged with MODEL_DIR's; "
                 "a speech recognizer among them scores each label's phrase (--choices)")
CHOICES_ENSEMBLE_HELP = ("with a speech recognizer in --ensemble: the phrase of each label, a line each ('label<TAB>phrase', or the label "
                         "alone when it is the phrase); its CTC scores over them become class probabilities")
BALANCE_HELP = ("label the clips together, as a batch that holds every label about equally often (a new user reading each "
                "word of a list): class probabilities rescaled so that each label gets an equal share of the batch")
TTA_HELP = ("test-time augmentation: average each clip's class probabilities over copies played at these speeds "
            "(e.g. 0.9 1.0 1.1, the training speed perturbation); each factor between 0.5 and 2; with --pipeline, "
            "each of the product's two members averages over them")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def cmd_synth(args: argparse.Namespace) -> None:
    from speechlm.data import sentences
    from speechlm.data.synth import plan_jobs, read_text_items, select_voices, synthesize_corpus, voice_bank

    if args.list_voices:
        for v in voice_bank():
            print(f"{v.name:42s} {v.engine:10s} {v.split:5s} voice={v.voice} variant={v.variant or '-'} rate={v.rate} pitch={v.pitch}")
        return
    if args.out_dir is None:
        raise SpeechLMError("synth needs OUT_DIR (or --list-voices)")
    if args.text and args.builtin:
        raise SpeechLMError("give either --text FILE... or --builtin N, not both")
    if not args.text and args.builtin < 1:  # 0 is also the default: neither was given
        raise SpeechLMError("give either --text FILE... or --builtin N (N >= 1)" + (f", got --builtin {args.builtin}" if args.builtin else ""))
    voices = select_voices(args.voices, seed=args.seed)
    if args.text:
        items = read_text_items(args.text)
    else:
        pool = sentences.generate(args.builtin_pool, seed=args.seed)
        train, test = sentences.split(pool)
        chosen = {"train": train, "test": test, "all": pool}[args.split]
        if args.builtin > len(chosen):
            raise SpeechLMError(f"--builtin {args.builtin} exceeds the {len(chosen)} {args.split} sentences (raise --builtin-pool)")
        items = [(s.text, s.intent) for s in chosen[: args.builtin]]
    jobs = plan_jobs(
        items, voices, Path(args.out_dir), args.seed, args.voices_per_sentence, args.speed_perturb,
        args.noise_snr if args.noise_prob > 0 else None, args.noise_prob, args.max_hz,
    )  # fmt: skip
    print(f"synthesizing {len(jobs)} utterances of {len(items)} sentences with {len(voices)} voices -> {args.out_dir}")
    utts, failures = synthesize_corpus(jobs, args.out_dir, args.jobs)
    for f in failures[:10]:
        print(f"failed: {f}", file=sys.stderr)
    hours = sum(u.duration for u in utts) / 3600
    print(f"wrote {len(utts)} utterances ({hours:.2f} h) to {Path(args.out_dir) / 'manifest.jsonl'}; {len(failures)} failed")
    if not utts:
        raise SystemExit(1)


def cmd_prepare(args: argparse.Namespace) -> None:
    from speechlm.data.prepare import prepare

    report = prepare(
        args.source, args.manifest, args.format, args.label_from, args.speaker_from, args.require_text,
        args.min_duration, args.max_duration,
    )  # fmt: skip
    print(f"kept {report.kept} entries -> {args.manifest}")
    if report.skipped:
        print(f"skipped {len(report.skipped)}: {report.counts()} (each listed in {args.manifest}.report.json)")


def _run_config(cls, args: argparse.Namespace, overrides: list[str] = ()):
    """Defaults (or the saved config of a resumed run), a preset, the config file, then overrides."""
    from speechlm.config import load_config
    from speechlm.models.encoders import PRESETS

    base = cls()
    saved = Path(args.run_dir) / "config.json"
    if args.resume and saved.is_file():
        base = load_config(cls, saved)  # a resumed run keeps its own config unless told otherwise
    if getattr(args, "init", None) and not args.resume:
        from speechlm.train.finetune import config_from_pretrained

        base = config_from_pretrained(base, args.init)  # the encoder is the pretrained one
    if getattr(args, "preset", None) or getattr(args, "arch", None):
        enc = PRESETS[args.preset or "small"](args.arch or "conformer")
        base = dataclasses.replace(base, encoder=enc)
    overrides = [*overrides, *args.overrides]
    if getattr(args, "train_manifest", None):
        overrides.append(f"data.train_manifest={args.train_manifest}")
    return load_config(cls, args.config, overrides, base=base)


def _set_threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def cmd_train(args: argparse.Namespace) -> None:
    from speechlm.config import ASRConfig
    from speechlm.train.asr import train_asr

    _set_threads(args)
    overrides = []
    for flag, key in (("labeled_fraction", "labeled_fraction"), ("labeled_minutes", "labeled_minutes"),
                      ("freeze_encoder_steps", "freeze_encoder_steps"), ("layer_decay", "layer_decay")):  # fmt: skip
        if getattr(args, flag, None) is not None:
            overrides.append(f"finetune.{key}={getattr(args, flag)}")
    if getattr(args, "keep_head", False):
        if getattr(args, "task", "asr") != "asr" or not args.init:
            raise SpeechLMError("--keep-head adapts the speech recognizer given as --init (--task asr): it keeps that recognizer's vocabulary and output layer")
        overrides.append("finetune.init_head=true")
    if getattr(args, "task", "asr") == "text-classify":
        _train_text_classifier(args, overrides)
        return
    if getattr(args, "task", "asr") == "speech-lm":
        _train_speech_lm(args, overrides)
        return
    if getattr(args, "task", "asr") == "classify":
        from speechlm.config import ClassifyConfig
        from speechlm.train.classify import train_classifier

        for flag in ("peft", "lora_rank", "pooling"):
            value = getattr(args, flag, None)
            if value is not None:
                overrides.append({"peft": "peft.method", "lora_rank": "peft.rank", "pooling": "head.pooling"}[flag] + f"={value}")
        if getattr(args, "layer_weights", False):
            overrides.append("head.layer_weights=true")
        if args.valid_manifest:
            overrides.append(f"data.valid_manifest={args.valid_manifest}")
        cfg = _run_config(ClassifyConfig, args, overrides)
        result = train_classifier(cfg, args.run_dir, resume=args.resume)
        print(f"done: {result.steps} steps, final loss {result.final_loss:.4f}; model -> {Path(args.run_dir) / 'model'}")
        if cfg.data.valid_manifest:
            _report_classifier(Path(args.run_dir) / "model", cfg.data.valid_manifest, Path(args.run_dir) / "valid")
        return
    cfg = _run_config(ASRConfig, args, overrides)
    result = train_asr(cfg, args.run_dir, resume=args.resume)
    print(
        f"done: {result.steps} steps, final loss {result.final_loss:.4f}, "
        f"{result.throughput:.1f} audio-s/s; model -> {Path(args.run_dir) / 'model'}"
    )


def _train_speech_lm(args: argparse.Namespace, overrides: list[str]) -> None:
    from speechlm.config import SpeechLMConfig
    from speechlm.train.speech_lm import train_speech_lm

    for flag, key in (("lm", "lm_init"), ("lm_mode", "lm_mode"), ("lora_rank", "peft.rank")):
        if getattr(args, flag, None) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.tasks:
        overrides.append(f"tasks={json.dumps(args.tasks.split(','))}")
    cfg = _run_config(SpeechLMConfig, args, overrides)
    result = train_speech_lm(cfg, args.run_dir, resume=args.resume)
    print(f"done: {result.steps} steps, final loss {result.final_loss:.4f}; model -> {Path(args.run_dir) / 'model'}")
    print(f"use it: speechlm transcribe {Path(args.run_dir)} clip.wav | speechlm predict {Path(args.run_dir)} clip.wav (intent)")


def _train_text_classifier(args: argparse.Namespace, overrides: list[str]) -> None:
    from speechlm.config import TextClassifyConfig, load_config
    from speechlm.train.text_classify import train_text_classifier

    overrides = [o for o in overrides if not o.startswith("finetune.")]
    for flag, key in (("train_file", "data.train_file"), ("valid_file", "data.valid_file"), ("init", "finetune.init"),
                      ("peft", "peft.method"), ("lora_rank", "peft.rank"), ("pooling", "head.pooling")):  # fmt: skip
        if getattr(args, flag, None) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    cfg = load_config(TextClassifyConfig, args.config, [*overrides, *args.overrides])
    result = train_text_classifier(cfg, args.run_dir)
    print(f"done: {result.steps} steps, final loss {result.final_loss:.4f}; model -> {Path(args.run_dir) / 'model'}")
    if cfg.data.valid_file:
        _report_classifier(Path(args.run_dir) / "model", cfg.data.valid_file, Path(args.run_dir) / "valid")


def _speech_classifier_only(what: str, ensemble: Sequence[str] = (), balance: bool = False, speeds: Sequence[float] = (),
                            pipeline: Sequence[str] | None = None, reject: float = 0.0) -> None:  # fmt: skip
    """Refuse the options that only a speech classifier takes when the model directory holds ``what``."""
    if reject:
        raise SpeechLMError(f"--reject-below applies to speech classifiers; the model directory holds {what}")
    if pipeline:
        raise SpeechLMError(f"--pipeline (and its --beam, --lm) joins an ASR -> intent pipeline to a speech classifier; the model directory holds {what}")
    if ensemble:
        raise SpeechLMError(f"--ensemble averages speech classifiers; the model directory holds {what}")
    if balance:
        raise SpeechLMError(f"--balance applies to speech classifiers; the model directory holds {what}")
    if speeds:
        raise SpeechLMError(f"--tta-speeds applies to speech classifiers; the model directory holds {what}")


def _check_tta_speeds(speeds: Sequence[float] | None, option: str = "--tta-speeds") -> None:
    from speechlm.train.classify import check_speeds

    if speeds:
        try:
            check_speeds(speeds)
        except ValueError as e:
            raise SpeechLMError(f"{option}: {e}") from None


def _load_speech_classifier(model_dir: str | Path, ensemble: Sequence[str], speeds: Sequence[float] | None, choices: str | None = None,
                            args: argparse.Namespace | None = None):  # fmt: skip
    """The classifier (with its --ensemble, --tta-speeds); a recognizer in the ensemble scores the --choices phrases.
    With ``args.pipeline`` (predict, evaluate), its weighted product with that ASR -> intent pipeline."""
    from speechlm.train.classify import load_classifier

    _check_tta_speeds(speeds)
    clf = load_classifier(model_dir, ensemble, speeds or (), _ensemble_phrases(ensemble, choices))
    return _with_pipeline(clf, model_dir, args) if args is not None else clf


def _pipeline_asked(args: argparse.Namespace) -> bool:
    """Whether ``predict`` or ``evaluate`` was given --pipeline or a flag of its recognizer (--beam, --lm)."""
    return bool(args.pipeline or args.beam > 1 or args.lm)


def _with_pipeline(clf, model_dir: str | Path, args: argparse.Namespace):
    """``clf`` times the spoken-intent pipeline of ``--pipeline ASR INTENT`` (ASR -> intent classifier, decoded with --beam,
    --lm and read over --pipeline-nbest transcripts), weighted ``1 - W`` and ``W`` (--pipeline-weight W); ``clf`` alone
    without --pipeline, where the pipeline's own flags are an error. With --tta-speeds (``clf`` averages over them already)
    the pipeline's probabilities are averaged over the same speeds, each speed decoded on its own."""
    from speechlm.train.classify import SpokenIntentPipeline, WeightedProduct, check_spoken_intent_flags, is_recognizer_dir

    if not args.pipeline:
        used = [flag for flag, on in (("--pipeline-nbest", args.pipeline_nbest != 1), ("--pipeline-weight", args.pipeline_weight != 0.5),
                                      ("--beam", args.beam > 1), ("--lm", bool(args.lm))) if on]  # fmt: skip
        if used:
            raise SpeechLMError(f"{', '.join(used)}: for the ASR -> intent pipeline beside a classifier; add --pipeline ASR_DIR INTENT_DIR")
        return clf
    asr, intent = args.pipeline
    check_spoken_intent_flags(weight=args.pipeline_weight)
    if not is_recognizer_dir(asr):
        raise SpeechLMError(f"--pipeline {asr}: not a speech recognizer (train one with `speechlm train`); give the recognizer, then the intent classifier")
    options = _decoding(args)
    check_spoken_intent_flags(options, args.pipeline_nbest)
    pipe = SpokenIntentPipeline.load(asr, intent, args.lm, options, args.pipeline_nbest, args.tta_speeds or ())
    return WeightedProduct([clf, pipe], [str(model_dir), f"--pipeline {asr} {intent}"], [1 - args.pipeline_weight, args.pipeline_weight])


def _ensemble_phrases(ensemble: Sequence[str], choices: str | None, option: str = "--choices", ensemble_option: str = "--ensemble") -> dict[str, str] | None:
    """The label -> phrase map of a --choices FILE for the speech recognizer among a classifier's ``ensemble`` (None without the file)."""
    from speechlm.train.classify import is_recognizer_dir

    recognizers = [d for d in ensemble if is_recognizer_dir(d)]
    if choices and not recognizers:
        raise SpeechLMError(f"{option} with a classifier names the phrase of each label for a speech recognizer in {ensemble_option}; none is there")
    if recognizers and not choices:
        raise SpeechLMError(f"{recognizers[0]} in {ensemble_option} is a speech recognizer: it joins the classifier only with the phrase of each "
                            f"label ({option} FILE: a line per label, 'label<TAB>phrase', or the label alone when it is the phrase)")
    return _label_phrases(choices, option) if choices else None


def _choice_lines(path: str, layout: str, option: str = "--choices") -> list[str]:
    """The lines of a --choices FILE (``layout`` says what a line holds, for the error when the file is missing)."""
    p = Path(path)
    if not p.is_file():
        raise SpeechLMError(f"{option} {p}: no such file ({layout})")
    try:
        return p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SpeechLMError(f"{option} {p}: cannot read it as UTF-8 text ({e.__class__.__name__})") from None


def _label_phrases(path: str, option: str = "--choices") -> dict[str, str]:
    """--choices FILE beside a classifier: label -> phrase, a line each ('label<TAB>phrase', or the label alone when it is the phrase)."""
    out: dict[str, str] = {}
    for n, line in enumerate(_choice_lines(path, "one line per label: 'label<TAB>phrase', or the label alone", option), 1):
        label, _, phrase = line.partition("\t")
        label, phrase = label.strip(), phrase.strip() or label.strip()
        if not label:
            continue
        if label in out:
            raise SpeechLMError(f"{option} {path}: line {n} gives label {label!r} a second phrase")
        out[label] = phrase
    return out


def _is_text_classifier(model_dir: Path) -> bool:
    d = model_dir if (model_dir / "labels.json").is_file() else model_dir / "model"
    try:
        return "lm" in json.loads((d / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False


def _report_classifier(model_dir: Path, manifest: str, out: Path | None, ensemble: Sequence[str] = (), balance: bool = False,
                       speeds: Sequence[float] = (), choices: str | None = None, args: argparse.Namespace | None = None) -> None:
    from speechlm.train.classify import evaluate_classifier, read_labeled

    threshold, label = _rejection(args)
    if _is_text_classifier(model_dir):
        _speech_classifier_only("a text classifier", ensemble, balance, speeds, args and _pipeline_asked(args), threshold)
        from speechlm.intent import read_labeled_text
        from speechlm.train.text_classify import TextClassifierModel

        model = TextClassifierModel.load(model_dir)
        texts, truth = read_labeled_text([manifest])
        preds = model.predict(texts)
        report = model.evaluate(texts, truth)
        rows = [{"text": t, "label": y, "predicted": p, "confidence": c} for t, y, (p, c) in zip(texts, truth, preds)]
    else:
        try:
            report, rows, _ = evaluate_classifier(_load_speech_classifier(model_dir, ensemble, speeds, choices, args), read_labeled(manifest), balance,
                                                  threshold, label)  # fmt: skip
        except ValueError as e:  # --balance with fewer clips than labels
            raise SpeechLMError(f"{manifest}: {e}") from None
    _print_report(report, rows, out)
    if threshold:
        _print_rejection(report, label, threshold)


def _rejection(args: argparse.Namespace | None) -> tuple[float, str]:
    """``--reject-below T`` (checked to lie in [0, 1]) and ``--reject-label``; (0, "oos") where the command has none."""
    from speechlm.train.classify import check_spoken_intent_flags

    threshold, label = getattr(args, "reject_below", 0.0), getattr(args, "reject_label", "oos")
    check_spoken_intent_flags(reject_below=threshold)
    if label != "oos" and not threshold:
        raise SpeechLMError(f"--reject-label {label}: the answer below --reject-below T, which is not given (0 = never reject)")
    if not label.strip():
        raise SpeechLMError("--reject-label must be a non-empty label")
    return threshold, label


def _print_rejection(report, label: str, threshold: float) -> None:
    """In-scope accuracy and out-of-scope recall of a classifier that answers ``label`` below ``threshold``."""
    sc = report.scope(label)
    inside = f"in-scope accuracy {sc['in_scope_accuracy']:.2%} ({sc['in_scope_examples']} utterances)" if sc["in_scope_examples"] else "no in-scope utterances"
    caught = f"{label!r} recall {sc['oos_recall']:.2%} ({sc['oos_examples']} utterances)" if sc["oos_examples"] else f"no utterance labeled {label!r}"
    print(f"rejecting below {threshold:g}: {inside}, {caught}")


def _print_report(report, rows: list[dict], out: Path | None) -> None:
    """A classification report on the terminal; with ``out``, also report.json and confusion.png in that folder."""
    from speechlm.train.classify import plot_confusion

    s = report.summary()
    print(f"accuracy {s['accuracy']:.2%}  macro P/R/F1 {s['macro_precision']:.3f}/{s['macro_recall']:.3f}/{s['macro_f1']:.3f}  ({s['examples']} utterances)")
    for lab, m in report.per_class.items():
        print(f"  {lab:24s} precision {m['precision']:.3f}  recall {m['recall']:.3f}  f1 {m['f1']:.3f}  n={m['support']}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps({"summary": s, "per_class": report.per_class, "confusion": report.confusion,
                                                     "labels": report.labels, "utterances": rows}, indent=1))  # fmt: skip
        plot_confusion(report, out / "confusion.png")
        print(f"report -> {out / 'report.json'}, confusion matrix -> {out / 'confusion.png'}")


def cmd_predict(args: argparse.Namespace) -> None:
    from speechlm.data.audio import load_audio
    from speechlm.train.speech_lm import SpeechLMRunner, is_speech_lm_dir

    if is_speech_lm_dir(args.model_dir):
        _speech_classifier_only("a speech-text model", args.ensemble, speeds=args.tta_speeds, pipeline=_pipeline_asked(args), reject=_rejection(args)[0])
        answers = SpeechLMRunner.load(args.model_dir).answer([load_audio(f) for f in args.files], "intent")
        for f, label in zip(args.files, answers):
            print(json.dumps({"audio_filepath": f, "label": label}) if args.json else f"{f}\t{label}")
        return
    if _is_text_classifier(Path(args.model_dir)):
        from speechlm.train.text_classify import TextClassifierModel

        _speech_classifier_only("a text classifier", args.ensemble, speeds=args.tta_speeds, pipeline=_pipeline_asked(args), reject=_rejection(args)[0])
        for text, (label, conf) in zip(args.files, TextClassifierModel.load(args.model_dir).predict(args.files)):
            print(json.dumps({"text": text, "label": label, "confidence": round(conf, 4)}) if args.json else f"{label}\t{conf:.3f}\t{text}")
        return
    clf = _load_speech_classifier(args.model_dir, args.ensemble, args.tta_speeds, args.choices, args)
    for f, (label, conf) in zip(args.files, clf.predict([load_audio(f) for f in args.files], False, *_rejection(args))):
        print(json.dumps({"audio_filepath": f, "label": label, "confidence": round(conf, 4)}) if args.json else f"{f}\t{label}\t{conf:.3f}")


def cmd_pseudo_label(args: argparse.Namespace) -> None:
    from collections import Counter

    from speechlm.data.manifest import read_manifest, write_manifest
    from speechlm.train.classify import pseudo_label

    if Path(args.out).resolve() == Path(args.manifest).resolve():
        raise SpeechLMError(f"{args.out}: the output would overwrite the input manifest; write the pseudo-labels to another file")
    if not 0.0 <= args.min_confidence <= 1.0:
        raise SpeechLMError(f"--min-confidence must be between 0 and 1, got {args.min_confidence}")
    if args.per_label is not None and args.per_label < 1:
        raise SpeechLMError(f"--per-label must be at least 1, got {args.per_label}")
    if _is_text_classifier(Path(args.model_dir)):
        raise SpeechLMError(f"{args.model_dir} is a text classifier; pseudo-label takes a speech classifier (speechlm finetune --task classify)")
    utts = read_manifest(args.manifest)
    try:
        clf = _load_speech_classifier(args.model_dir, args.ensemble, args.tta_speeds, args.choices)
        kept = pseudo_label(clf, utts, args.min_confidence, args.per_label, args.balance)
    except ValueError as e:  # --balance with fewer clips than labels
        raise SpeechLMError(f"{args.manifest}: {e}") from None
    if not kept:
        raise SpeechLMError(f"no clip of {args.manifest} reached probability {args.min_confidence}; nothing written to {args.out} "
                            "(lower --min-confidence, or the model does not know this audio)")
    write_manifest(args.out, kept)
    counts = Counter(u.label for u in kept)
    print(f"kept {len(kept)} of {len(utts)} clips ({'balanced ' if args.balance else ''}probability >= {args.min_confidence}"
          + (f", at most {args.per_label} per label" if args.per_label else "") + f") -> {args.out}")
    print("  " + "  ".join(f"{label}: {n}" for label, n in sorted(counts.items())))
    truth = {u.audio_filepath: u.label for u in utts if u.label}
    checked = [u for u in kept if u.audio_filepath in truth]
    if checked:  # the manifest had labels: how many of the pseudo-labels agree with them
        agree = sum(truth[u.audio_filepath] == u.label for u in checked)
        print(f"  agree with the manifest's own labels: {agree} of {len(checked)} ({agree / len(checked):.1%})")


def cmd_merge_adapter(args: argparse.Namespace) -> None:
    from speechlm.train.classify import checkpoint_bytes, merge_adapter_dir

    out = merge_adapter_dir(args.model_dir, args.out_dir)
    print(f"merged {args.model_dir} ({checkpoint_bytes(args.model_dir) / 1e6:.2f} MB) -> {out} ({checkpoint_bytes(out) / 1e6:.2f} MB, standalone)")


def cmd_pretrain_speech(args: argparse.Namespace) -> None:
    from speechlm.config import SpeechPretrainConfig
    from speechlm.train.pretrain import pretrain_speech

    _set_threads(args)
    cfg = _run_config(SpeechPretrainConfig, args, [f"ssl.target={args.target}"] if args.target else [])
    result = pretrain_speech(cfg, args.run_dir, resume=args.resume)
    acc = result.history[-1].get("masked_acc", float("nan")) if result.history else float("nan")
    print(
        f"done: {result.steps} steps, final loss {result.final_loss:.4f}, masked-prediction accuracy {acc:.1%}, "
        f"{result.throughput:.1f} audio-s/s; encoder -> {Path(args.run_dir) / 'model'} (fine-tune with --init)"
    )


def _text_overrides(args: argparse.Namespace, section: str) -> list[str]:
    """``--text``, ``--valid-text`` and ``--builtin`` as overrides of the config's text section."""
    for name in ("text", "valid_text"):  # key=value overrides typed after --text FILE... land in its list
        values = getattr(args, name, None) or []
        files = [v for v in values if "=" not in v or Path(v).exists()]
        args.overrides = [*args.overrides, *[v for v in values if v not in files]]
        setattr(args, name, files)
    overrides = []
    if args.text:
        overrides.append(f"{section}.train_files={json.dumps(args.text)}")
    if args.builtin:
        overrides.append(f"{section}.builtin_sentences={args.builtin}")
    if getattr(args, "valid_text", None):
        overrides.append(f"{section}.valid_files={json.dumps(args.valid_text)}")
    return overrides


def cmd_pretrain_joint(args: argparse.Namespace) -> None:
    from speechlm.config import JointPretrainConfig
    from speechlm.train.joint_pretrain import pretrain_joint

    _set_threads(args)
    overrides = _text_overrides(args, "text") + ([f"ssl.target={args.target}"] if args.target else [])
    if args.paired_fraction is not None:
        overrides.append(f"joint.paired_fraction={args.paired_fraction}")
    cfg = _run_config(JointPretrainConfig, args, overrides)
    result = pretrain_joint(cfg, args.run_dir, resume=args.resume)
    last = result.history[-1] if result.history else {}
    print(
        f"done: {result.steps} steps, final loss {result.final_loss:.4f} (masked prediction {last.get('mp_loss', float('nan')):.3f}, "
        f"CTC {last.get('ctc_loss', float('nan')):.3f}, masked LM {last.get('mlm_loss', float('nan')):.3f}), "
        f"{result.throughput:.1f} audio-s/s; encoder -> {Path(args.run_dir) / 'model'} (fine-tune with --init)"
    )


def cmd_pretrain_text(args: argparse.Namespace) -> None:
    from speechlm.config import TextPretrainConfig
    from speechlm.train.text import pretrain_text

    _set_threads(args)
    overrides = _text_overrides(args, "data")
    if args.lm_arch:
        overrides.append(f"lm.arch={args.lm_arch}")
    cfg = _run_config(TextPretrainConfig, args, overrides)
    result = pretrain_text(cfg, args.run_dir, resume=args.resume)
    print(f"done: {result.steps} steps, final loss {result.final_loss:.4f}, {result.throughput:.0f} tokens/s; model -> {Path(args.run_dir) / 'model'}")


def cmd_generate(args: argparse.Namespace) -> None:
    from speechlm.decode.generate import GenerationOptions, generate
    from speechlm.train.speech_lm import SpeechLMRunner, is_speech_lm_dir
    from speechlm.train.text import load_lm_dir

    if is_speech_lm_dir(args.model_dir):  # the joint model's LM continues text too
        runner = SpeechLMRunner.load(args.model_dir)
        model, tokenizer, special = runner.model.lm, runner.tokenizer, runner.model.special
    else:
        _, model, tokenizer, special = load_lm_dir(args.model_dir)
    opts = GenerationOptions(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed)
    for i in range(args.num):
        ids = generate(model, tokenizer.encode(args.prompt), special, dataclasses.replace(opts, seed=args.seed + i))
        print(" ".join(x for x in (tokenizer.decode(tokenizer.encode(args.prompt)), tokenizer.decode(ids)) if x))


def cmd_perplexity(args: argparse.Namespace) -> None:
    from speechlm.data.text import read_text_lines, token_stream
    from speechlm.train.text import evaluate_lm, load_lm_dir

    cfg, model, tokenizer, special = load_lm_dir(args.model_dir)
    stream = token_stream(read_text_lines(args.files), tokenizer.encode, special.bos, special.eos)
    res = evaluate_lm(model, stream, special)
    kind = "masked-token perplexity" if cfg.lm.arch == "mlm" else f"perplexity (sliding window, context {cfg.lm.context})"
    print(f"{kind}: {res.perplexity:.3f} over {res.tokens} tokens (nll {res.nll:.4f} nats/token)")


def cmd_ngram(args: argparse.Namespace) -> None:
    import math

    from speechlm.data.text import read_text_lines
    from speechlm.models.ngram import CharNGram, NGramConfig

    alphabet: list[str] = []
    if args.recognizer:  # every character it can emit gets a place, so the n-gram fuses into its beam search
        from speechlm.data.tokenizer import TOKENIZER_FILE, CharTokenizer, load_tokenizer
        from speechlm.train.checkpoint import resolve_model_dir
        from speechlm.train.classify import is_recognizer_dir

        if not is_recognizer_dir(args.recognizer):
            raise SpeechLMError(f"--recognizer {args.recognizer}: not a speech recognizer (it has no {TOKENIZER_FILE}; train one with `speechlm train`)")
        tokenizer = load_tokenizer(resolve_model_dir(args.recognizer))
        if not isinstance(tokenizer, CharTokenizer):
            raise SpeechLMError(f"--recognizer {args.recognizer}: a character n-gram fuses only into a character-level recognizer; "
                                f"this one uses {tokenizer.kind} pieces")  # fmt: skip
        alphabet = tokenizer.chars
    lm = CharNGram.train(read_text_lines(args.text), NGramConfig(order=args.order), alphabet=alphabet)
    path = lm.save(args.out)
    print(f"{len(lm.symbols) - 1} characters, {len(lm.counts)} histories (order {args.order}) -> {path}")
    if args.valid:
        nll = n = 0
        for line in read_text_lines(args.valid):
            lp, k = lm.log_prob(line)
            nll, n = nll - lp, n + k
        print(f"held-out character perplexity: {math.exp(nll / max(n, 1)):.3f} over {n} characters")


def cmd_label_efficiency(args: argparse.Namespace) -> None:
    from speechlm import label_efficiency as le
    from speechlm.config import ASRConfig

    _set_threads(args)
    base = _run_config(ASRConfig, argparse.Namespace(**{**vars(args), "init": None, "run_dir": args.out, "resume": False}))
    fractions = [float(f) for f in args.fractions.split(",")]
    rows = le.run_grid(args.out, base, args.test_manifest, args.init, fractions, args.seeds, jobs=args.jobs)
    summary = le.report(args.out, rows)
    print(le.markdown(summary))
    print(f"plot -> {Path(args.out) / 'wer_vs_labels.png'}, rows -> {Path(args.out) / 'rows.json'}")


def _decoding_flags(s: argparse.ArgumentParser, whose: str = "") -> None:
    s.add_argument("--beam", type=int, default=1, help=f"beam size{whose} (1 = greedy; 8 when --lm is given)")
    s.add_argument("--lm", default=None, help=f"fuse this LM into beam search{whose}: an n-gram (speechlm ngram) or causal/LSTM LM directory")
    s.add_argument("--lm-weight", type=float, default=0.5, help="weight of the LM's log-probabilities")
    s.add_argument("--lm-bonus", type=float, default=0.0, help="score added per emitted token with --lm")


def _pipeline_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument("--pipeline", nargs=2, default=None, metavar=("ASR_DIR", "INTENT_DIR"),
                   help="spoken intent both ways: the classifier's probabilities times those of this recognizer -> intent classifier "
                        "(speechlm intent train) pipeline, which decodes with --beam and --lm")
    s.add_argument("--pipeline-weight", type=float, default=0.5, metavar="W",
                   help="the pipeline's share of the product, p ∝ p_classifier^(1-W) * p_pipeline^W (choose it on held-out clips)")
    s.add_argument("--pipeline-nbest", type=int, default=1, metavar="N",
                   help="the pipeline's intent classifier reads the beam's N best transcripts, weighted by their probabilities")


def _reject_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument("--reject-below", type=float, default=0.0, metavar="T",
                   help="speech classifier: answer --reject-label where the best label's probability is below T (out of scope; 0 = never)")
    s.add_argument("--reject-label", default="oos", help="the answer for a rejected clip; evaluate scores clips with this label too")


def _decoding(args: argparse.Namespace):
    return decoding_options(args.beam, args.lm, args.lm_weight, args.lm_bonus)


def decoding_options(beam: int, lm: str | None, lm_weight: float, lm_bonus: float, prefix: str = ""):
    """Decoding by ``--beam`` (8 when an LM is fused: fusion happens in beam search), with the LM's weight and bonus."""
    from speechlm.decode.ctc import DecodingOptions

    beam = beam if beam > 1 or not lm else 8
    try:
        return DecodingOptions(method="beam" if beam > 1 else "greedy", beam_size=max(1, beam), lm_weight=lm_weight, lm_bonus=lm_bonus)
    except ValueError as e:
        raise SpeechLMError(f"--{prefix}lm-weight: {e}") from None


def _recognizer(args: argparse.Namespace):
    """A CTC recognizer (optionally with a fusion LM) or a joint speech-LM asked to transcribe."""
    from speechlm.decode.transcribe import Recognizer
    from speechlm.train.speech_lm import SpeechLMRunner, is_speech_lm_dir

    if is_speech_lm_dir(args.model_dir):
        if args.lm or getattr(args, "timestamps", False):
            raise SpeechLMError("a joint speech-LM writes text with its own LM; --lm and --timestamps are for CTC models")
        return SpeechLMRunner.load(args.model_dir)
    return Recognizer.load(args.model_dir, lm=args.lm)


def cmd_transcribe(args: argparse.Namespace) -> None:
    from speechlm.data.audio import load_audio

    if args.nbest < 1:
        raise SpeechLMError(f"--nbest must be >= 1, got {args.nbest}")
    rec = _recognizer(args)
    audios = [load_audio(f) for f in args.files]
    if args.choices:
        _transcribe_choices(args, rec, audios)
        return
    if args.timestamps:
        if args.beam > 1 or args.lm:
            raise SpeechLMError("--timestamps come from the greedy alignment; drop --beam and --lm")
        for f, t in zip(args.files, rec.transcribe_words(audios)):
            words = [dataclasses.asdict(w) for w in t.words]
            if args.json:
                print(json.dumps({"audio_filepath": f, "text": t.text, "words": words}))
            else:
                print(f"{f}\t{t.text}" if len(args.files) > 1 else t.text)
                for w in t.words:
                    print(f"  {w.start:7.2f} {w.end:7.2f}  {w.word}")
        return
    if args.nbest > 1:
        _transcribe_nbest(args, rec, audios)
        return
    texts = rec.transcribe(audios, _decoding(args))
    for f, t in zip(args.files, texts):
        print(json.dumps({"audio_filepath": f, "text": t}) if args.json else (f"{f}\t{t}" if len(args.files) > 1 else t))


def _transcribe_nbest(args: argparse.Namespace, rec, audios: list) -> None:
    """Each file's ``--nbest`` best transcripts by beam search with their scores (log-probabilities, LM included)."""
    from speechlm.decode.transcribe import Recognizer

    if not isinstance(rec, Recognizer):
        raise SpeechLMError("--nbest lists a CTC recognizer's beam; this is a joint speech-LM")
    if args.timestamps:
        raise SpeechLMError("--timestamps come from the greedy alignment; drop --nbest")
    options = _decoding(args)
    if not options.lists(args.nbest):
        raise SpeechLMError(f"--nbest {args.nbest} needs a beam at least that wide: add --beam {max(args.nbest, 8)}")
    for f, hyps in zip(args.files, rec.transcribe_nbest(audios, options, args.nbest)):
        if args.json:
            print(json.dumps({"audio_filepath": f, "text": hyps[0][0], "nbest": [{"text": t, "score": round(s, 3)} for t, s in hyps]}))
        else:
            print(f)
            for rank, (t, s) in enumerate(hyps, 1):
                print(f"  {rank:2d} {s:9.2f}  {t}")


def _read_choices(args: argparse.Namespace, rec) -> list[str]:
    """The phrases of the file ``args.choices`` (one per line), after checking that ``rec`` and the other flags can
    score them; a clear error otherwise."""
    from speechlm.decode.transcribe import Recognizer

    if not isinstance(rec, Recognizer):
        raise SpeechLMError("--choices scores phrases with a CTC recognizer; this is a joint speech-LM")
    if getattr(args, "timestamps", False) or args.beam > 1 or args.lm or getattr(args, "nbest", 1) > 1:
        raise SpeechLMError("--choices scores every phrase exactly; drop --timestamps, --beam, --lm and --nbest")
    return [line.strip() for line in _choice_lines(args.choices, "one phrase per line") if line.strip()]


def _choose(args: argparse.Namespace, rec, audios: list, phrases: list[str]) -> list[tuple[str, float]]:
    """Each clip's most likely phrase and its log-likelihood; a bad phrase list is named by its file."""
    try:
        return rec.choose(audios, phrases)
    except SpeechLMError as e:
        raise SpeechLMError(f"--choices {args.choices}: {e}") from None


def _evaluate_choices(args: argparse.Namespace, rec) -> None:
    """`evaluate RECOGNIZER MANIFEST --choices FILE`: the recognizer as a classifier over the file's phrases, each
    clip's transcript the truth (one of the phrases, once normalized); accuracy, per-phrase report, confusion matrix."""
    from speechlm.data.audio import load_audio
    from speechlm.data.manifest import read_manifest
    from speechlm.data.tokenizer import normalize_text
    from speechlm.metrics import classification_report

    phrases = _read_choices(args, rec)
    utts = read_manifest(args.manifest, require_text=True)
    known = {normalize_text(p) for p in phrases}
    strays = [u for u in utts if normalize_text(u.text) not in known]
    if phrases and strays:
        raise SpeechLMError(f"{args.manifest}: {len(strays)} transcript(s) are none of the --choices phrases, e.g. {strays[0].text!r} "
                            f"({strays[0].audio_filepath}); every clip must say one of them")
    chosen = _choose(args, rec, [load_audio(u.audio_filepath) for u in utts], phrases)
    truth = [normalize_text(u.text) for u in utts]
    predicted = [normalize_text(text) for text, _ in chosen]
    report = classification_report(truth, predicted, sorted(known))
    rows = [{"audio_filepath": u.audio_filepath, "label": y, "predicted": p, "log_prob": round(lp, 3)} for u, y, p, (_, lp) in zip(utts, truth, predicted, chosen)]
    _print_report(report, rows, Path(args.out).with_suffix("") if args.out else None)


def _transcribe_choices(args: argparse.Namespace, rec, audios: list) -> None:
    """`transcribe --choices FILE`: each file's most likely phrase of the list (closed-vocabulary recognition)."""
    chosen = _choose(args, rec, audios, _read_choices(args, rec))
    for f, (text, log_prob) in zip(args.files, chosen):
        if args.json:
            print(json.dumps({"audio_filepath": f, "text": text, "log_prob": round(log_prob, 3)}))
        else:
            print(f"{f}\t{text}" if len(args.files) > 1 else text)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from speechlm.data.manifest import read_manifest
    from speechlm.evaluate import evaluate

    if (Path(args.model_dir) / "labels.json").is_file() or (Path(args.model_dir) / "model" / "labels.json").is_file():
        _report_classifier(Path(args.model_dir), args.manifest, Path(args.out).with_suffix("") if args.out else None, args.ensemble, args.balance,
                           args.tta_speeds or (), args.choices, args)
        return
    _speech_classifier_only("a recognizer", args.ensemble, args.balance, args.tta_speeds, args.pipeline, _rejection(args)[0])
    rec = _recognizer(args)
    if args.choices:
        _evaluate_choices(args, rec)
        return
    utts = read_manifest(args.manifest, require_text=True)
    res = evaluate(rec, utts, _decoding(args))
    s = res.summary()
    print(f"WER {s['wer']:.2%}  CER {s['cer']:.2%}  RTF {s['rtf']:.4f}  ({s['utterances']} utterances, {s['words']} words)")
    worst = sorted(res.rows, key=lambda r: -r["word_errors"])[: args.show]
    for r in worst:
        print(f"  [{r['word_errors']} err] REF: {r['reference']}\n           HYP: {r['hypothesis']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": s, "utterances": res.rows}, indent=1))
        print(f"per-utterance report -> {args.out}")


def cmd_intent_train(args: argparse.Namespace) -> None:
    import time

    from speechlm.data import sentences
    from speechlm.intent import IntentClassifier, IntentConfig, read_labeled_text

    if bool(args.data) == bool(args.builtin):
        raise SpeechLMError("give either --data FILE... or --builtin N")
    if args.data:
        texts, labels = read_labeled_text(args.data)
    else:
        train, _ = sentences.split(sentences.generate(args.builtin, seed=args.seed))
        texts, labels = [s.text for s in train], [s.intent for s in train]
    start = time.perf_counter()
    try:
        cfg = IntentConfig(c=args.c, word_ngram_max=args.word_ngrams, reject_below=args.reject_below, reject_label=args.reject_label)
    except ValueError as e:
        raise SpeechLMError(str(e).replace("intent reject_below", "--reject-below").replace("intent reject_label", "--reject-label")) from None
    clf = IntentClassifier.train(texts, labels, cfg)
    summary = {"examples": len(texts), "train_seconds": round(time.perf_counter() - start, 2)}
    if args.valid:
        vt, vl = read_labeled_text(args.valid)
        summary["valid_accuracy"] = sum(p.intent == y for p, y in zip(clf.predict(vt), vl)) / len(vl)
    out = clf.save(args.out_dir, summary)
    print(f"{len(clf.labels)} intents from {len(texts)} examples in {summary['train_seconds']} s"
          + (f"; held-out accuracy {summary['valid_accuracy']:.2%}" if args.valid else "") + f" -> {out}")


def cmd_intent_predict(args: argparse.Namespace) -> None:
    from speechlm.intent import IntentClassifier

    if args.reject_below is not None and not 0.0 <= args.reject_below < 1.0:
        raise SpeechLMError(f"--reject-below must be in [0, 1), got {args.reject_below}")
    clf = IntentClassifier.load(args.model_dir)
    for text, pred in zip(args.texts, clf.predict(args.texts, args.reject_below)):
        print(json.dumps({"text": text, "intent": pred.intent, "confidence": round(pred.confidence, 4)}))


def cmd_serve(args: argparse.Namespace) -> None:
    import logging

    import uvicorn

    from speechlm.serve.app import ServeConfig, create_app
    from speechlm.serve.assistant import Assistant

    _set_threads(args)
    key = args.api_key or os.environ.get("SPEECHLM_API_KEY", "")
    cfg = ServeConfig(
        key, args.max_upload_mb, args.max_audio_seconds, args.max_text_chars, args.timeout, args.max_batch, args.queue_size,
        tuple(args.cors_origin),
    )  # fmt: skip
    if (args.classifier_ensemble or args.classifier_tta_speeds or args.classifier_choices) and not args.classifier:
        raise SpeechLMError("--classifier-ensemble, --classifier-tta-speeds and --classifier-choices apply to a speech classifier: give it with --classifier DIR")
    _check_tta_speeds(args.classifier_tta_speeds, "--classifier-tta-speeds")
    assistant = Assistant.load(
        args.model_dir, args.intent_model, args.lm, args.voice, args.replies, args.reply_from, args.classifier, args.speech_lm,
        args.classifier_ensemble, args.classifier_tta_speeds or (),
        _ensemble_phrases(args.classifier_ensemble, args.classifier_choices, "--classifier-choices", "--classifier-ensemble"),
        decoding_options(args.beam, args.asr_lm, args.asr_lm_weight, args.asr_lm_bonus, "asr-"), args.asr_lm,
        args.pipeline_nbest, args.pipeline_weight, args.reject_below, args.pipeline_speeds or (),
    )
    app = create_app(assistant, cfg)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"serving {args.model_dir} on http://{args.host}:{args.port}/ (API docs at /docs"
          + (", API key required" if key else "") + ")", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="speechlm", description="Speech-language pretraining toolkit", formatter_class=DEFAULTS)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="synthesize a speech corpus from text with TTS engines", formatter_class=DEFAULTS)
    s.add_argument("out_dir", nargs="?", help="output folder (wav/ and manifest.jsonl)")
    s.add_argument("--text", nargs="+", help="text files, one sentence per line ('text<TAB>label' for labels)")
    s.add_argument("--builtin", type=int, default=0, help="number of sentences from the built-in generator")
    s.add_argument("--builtin-pool", type=int, default=12000, help="distinct sentences generated before the train/test split")
    s.add_argument("--split", choices=["train", "test", "all"], default="train", help="built-in sentence split")
    s.add_argument(
        "--voices", default="train",
        help="train, test, all, an engine name, random:N (N random espeak-ng voices), engines:N (N random flite/festival training voices) or comma-separated voice names; join with + for a union",
    )  # fmt: skip
    s.add_argument("--voices-per-sentence", type=int, default=1, help="distinct voices speaking each sentence")
    s.add_argument("--speed-perturb", type=_floats, default=(1.0,), help="speed factors drawn per utterance, e.g. 0.9,1.0,1.1")
    s.add_argument("--noise-snr", type=_floats, default=(10.0, 30.0), help="SNR range in dB for additive noise")
    s.add_argument("--noise-prob", type=float, default=0.0, help="fraction of utterances with additive noise")
    s.add_argument("--max-hz", type=float, help="band-limit the audio to this frequency (4000 matches 8 kHz recordings)")
    s.add_argument("--seed", type=int, default=0, help="sentence, voice and augmentation draws")
    s.add_argument("--jobs", type=int, default=os.cpu_count(), help="parallel synthesis processes")
    s.add_argument("--list-voices", action="store_true", help="print the voice bank and exit")
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("prepare", help="import audio (+ transcripts, labels) into a validated manifest", formatter_class=DEFAULTS)
    s.add_argument("source", help="audio folder, CSV/TSV table, or LJSpeech folder")
    s.add_argument("manifest", help="output JSON Lines manifest")
    s.add_argument("--format", choices=["auto", "folder", "table", "ljspeech"], default="auto")
    s.add_argument("--label-from", default=None, help="'folder', or a regex on the file name with a (?P<label>...) group")
    s.add_argument("--speaker-from", default=None, help="regex on the file name with a (?P<speaker>...) group")
    s.add_argument("--require-text", action="store_true", help="skip entries without a transcript")
    s.add_argument("--min-duration", type=float, default=0.1, help="seconds")
    s.add_argument("--max-duration", type=float, default=60.0, help="seconds")
    s.set_defaults(func=cmd_prepare)

    def run_args(s: argparse.ArgumentParser, speech: bool = True) -> None:
        s.add_argument("run_dir", help="output folder: checkpoints/, tensorboard/, model/")
        s.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. train.lr=1e-3 encoder.n_layers=8")
        s.add_argument("--config", default=None, help="YAML or JSON config file (values only)")
        if speech:
            s.add_argument("--train-manifest", default=None, help="shortcut for data.train_manifest=PATH")
            s.add_argument("--preset", choices=["tiny", "small", "base"], default=None, help="encoder size preset (default: small)")
            s.add_argument("--arch", choices=["conformer", "transformer", "lstm", "cnn"], default=None, help="encoder architecture")
        s.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in run_dir")
        s.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")

    s = sub.add_parser("train", help="train a CTC speech recognizer from scratch", formatter_class=DEFAULTS)
    run_args(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser(
        "finetune", formatter_class=DEFAULTS,
        help="train a CTC speech recognizer from a pretrained encoder (--init) or from scratch, on all or some labels",
    )  # fmt: skip
    run_args(s)
    s.add_argument("--init", default=None, help="pretrained model directory (speechlm pretrain speech; pretrain text for --task text-classify); absent = from scratch")
    s.add_argument("--keep-head", action="store_true", help="--init is a speech recognizer: adapt it whole (its vocabulary and output layer "
                                                            "too, finetune.init_head), e.g. to new speakers or words")
    s.add_argument("--labeled-fraction", type=float, default=None, help="use this fraction of the labeled utterances")
    s.add_argument("--labeled-minutes", type=float, default=None, help="use this many minutes of labeled audio")
    s.add_argument("--freeze-encoder-steps", type=int, default=None, help="encoder frozen for N steps (-1: throughout)")
    s.add_argument("--layer-decay", type=float, default=None, help="layer-wise learning-rate decay (1 = none)")
    s.add_argument("--task", choices=["asr", "classify", "text-classify", "speech-lm"], default="asr",
                   help="CTC recognition, utterance classification from manifest labels, text classification on a language model, "
                        "or the joint speech-LM (encoder from --init, causal LM from --lm)")
    s.add_argument("--lm", default=None, help="speech-lm: causal/LSTM LM directory (speechlm pretrain text) the model writes with")
    s.add_argument("--lm-mode", choices=["frozen", "lora", "full"], default=None, help="speech-lm: how the LM trains (lm_mode)")
    s.add_argument("--tasks", default=None, help="speech-lm: comma-separated prompts to train (transcribe,intent)")
    s.add_argument("--train-file", default=None, help="text-classify: CSV/TSV (text,label header) or JSON Lines with text and label")
    s.add_argument("--valid-file", default=None, help="text-classify: held-out file scored after training")
    s.add_argument("--valid-manifest", default=None, help="classify: labeled manifest scored after training (report + confusion matrix)")
    s.add_argument("--peft", choices=["none", "lora", "adapter"], default=None, help="classify: freeze the encoder, train LoRA or bottleneck adapters")
    s.add_argument("--lora-rank", type=int, default=None, help="classify, speech-lm: LoRA rank / adapter width (peft.rank)")
    s.add_argument("--pooling", choices=["mean", "attentive"], default=None, help="classify: pooling over frames (head.pooling)")
    s.add_argument("--layer-weights", action="store_true", help="classify: pool a learned weighted sum of every encoder block (SUPERB)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("pretrain", help="self-supervised pretraining of a speech encoder or a text language model")
    kinds = s.add_subparsers(dest="kind", required=True)
    s = kinds.add_parser("speech", help="masked prediction on unlabeled audio (BEST-RQ or k-means targets)", formatter_class=DEFAULTS)
    run_args(s)
    s.add_argument("--target", choices=["best-rq", "kmeans"], default=None, help="shortcut for ssl.target")
    s.set_defaults(func=cmd_pretrain_speech)
    s = kinds.add_parser(
        "joint", formatter_class=DEFAULTS,
        help="one encoder from unlabeled audio (masked prediction), a paired subset (CTC) and text (masked LM through shared blocks)",
    )  # fmt: skip
    run_args(s)
    s.add_argument("--text", nargs="+", default=None, help="unpaired UTF-8 text files, one sentence per line (default: built-in sentences)")
    s.add_argument("--builtin", type=int, default=0, help="without --text: this many built-in generator sentences (default 6000)")
    s.add_argument("--paired-fraction", type=float, default=None, help="transcribed utterances used with their transcripts (joint.paired_fraction)")
    s.add_argument("--target", choices=["best-rq", "kmeans"], default=None, help="shortcut for ssl.target")
    s.set_defaults(func=cmd_pretrain_joint)
    s = kinds.add_parser("text", help="causal, masked or LSTM language model on plain text", formatter_class=DEFAULTS)
    run_args(s, speech=False)
    s.add_argument("--text", nargs="+", default=None, help="UTF-8 text files (one sentence or paragraph per line)")
    s.add_argument("--valid-text", nargs="+", default=None, help="held-out text files (default: 2%% of the lines)")
    s.add_argument("--builtin", type=int, default=0, help="train on this many built-in generator sentences (the default corpus: 6000)")
    s.add_argument("--lm-arch", choices=["causal", "mlm", "lstm"], default=None, help="shortcut for lm.arch")
    s.set_defaults(func=cmd_pretrain_text)

    s = sub.add_parser(
        "label-efficiency", formatter_class=DEFAULTS,
        help="WER vs amount of labels, fine-tuned from a pretrained encoder and from scratch at equal compute (table + plot)",
    )  # fmt: skip
    s.add_argument("out", help="output folder: runs/, rows.json, summary.json, table.md, wer_vs_labels.png")
    s.add_argument("overrides", nargs="*", help="fine-tuning config overrides key=value (e.g. train.max_steps=400)")
    s.add_argument("--train-manifest", required=True, help="labeled training manifest (subsets are drawn from it)")
    s.add_argument("--test-manifest", required=True, help="labeled test manifest")
    s.add_argument("--init", default=None, help="pretrained model directory; absent = scratch curve only")
    s.add_argument("--fractions", default="0.01,0.05,0.1,1", help="labeled fractions")
    s.add_argument("--seeds", type=int, default=2, help="subset/initialisation seeds for fractions below 1")
    s.add_argument("--jobs", type=int, default=1, help="runs at a time (1 torch thread each when > 1)")
    s.add_argument("--config", default=None, help="YAML or JSON fine-tuning config file")
    s.add_argument("--preset", choices=["tiny", "small", "base"], default=None, help="encoder preset for the scratch runs")
    s.add_argument("--arch", choices=["conformer", "transformer", "lstm", "cnn"], default=None)
    s.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    s.set_defaults(func=cmd_label_efficiency)

    s = sub.add_parser("generate", help="continue a prompt with a causal or LSTM language model", formatter_class=DEFAULTS)
    s.add_argument("model_dir", help="language model directory (speechlm pretrain text), or a joint speech-LM")
    s.add_argument("--prompt", default="", help="text to continue")
    s.add_argument("--max-new-tokens", type=int, default=40)
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    s.add_argument("--top-k", type=int, default=0, help="0 = no top-k filter")
    s.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--num", type=int, default=1, help="continuations to print (seeds seed, seed+1, ...)")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("ngram", help="character n-gram LM for CTC beam-search fusion (transcribe/evaluate --lm)", formatter_class=DEFAULTS)
    s.add_argument("out", help="output directory (ngram.json.gz)")
    s.add_argument("--text", nargs="+", required=True, help="UTF-8 text files, one sentence per line")
    s.add_argument("--order", type=int, default=8, help="characters of history + 1")
    s.add_argument("--valid", nargs="+", default=None, help="text files to report held-out character perplexity on")
    s.add_argument("--recognizer", default=None, metavar="ASR_DIR",
                   help="also score every character this recognizer can write, where the text has none of it (fusion with it needs that)")
    s.set_defaults(func=cmd_ngram)

    s = sub.add_parser("perplexity", help="held-out perplexity of a language model on text files", formatter_class=DEFAULTS)
    s.add_argument("model_dir", help="language model directory")
    s.add_argument("files", nargs="+", help="UTF-8 text files")
    s.set_defaults(func=cmd_perplexity)

    for name, helptext in (("transcribe", "print transcripts of audio files"), ("evaluate", "WER/CER/RTF (recognizer) or accuracy/F1/confusion (classifier) on a manifest")):
        s = sub.add_parser(name, help=helptext, formatter_class=DEFAULTS)
        s.add_argument("model_dir", help="model directory (or a run directory with model/)")
        if name == "transcribe":
            s.add_argument("files", nargs="+", help="audio files (wav, flac, ogg, mp3 ...)")
            s.add_argument("--json", action="store_true", help="one JSON object per line")
            s.add_argument("--timestamps", action="store_true", help="each word's start and end in seconds (greedy decoding)")
            s.add_argument("--nbest", type=int, default=1, metavar="N",
                           help="list the N best transcripts of the beam with their scores (log-probabilities, fused LM included)")
            s.add_argument("--choices", default=None, metavar="FILE",
                           help="closed vocabulary: answer each file with the most likely of these phrases (one per line; CTC scores)")
            s.set_defaults(func=cmd_transcribe)
        else:
            s.add_argument("manifest", help="JSON Lines manifest with transcripts")
            s.add_argument("--choices", default=None, metavar="FILE",
                           help="a recognizer as a classifier over these phrases (one per line; every transcript one of them): "
                                "accuracy, per-phrase report, confusion matrix. With a classifier: " + CHOICES_ENSEMBLE_HELP)
            s.add_argument("--out", default=None, help="write per-utterance results as JSON here")
            s.add_argument("--show", type=int, default=5, help="print this many worst utterances")
            s.add_argument("--ensemble", nargs="+", default=[], metavar="DIR", help=ENSEMBLE_HELP)
            s.add_argument("--balance", action="store_true", help=BALANCE_HELP)
            s.add_argument("--tta-speeds", nargs="+", type=float, default=None, metavar="FACTOR", help=TTA_HELP)
            _pipeline_flags(s)
            _reject_flags(s)
            s.set_defaults(func=cmd_evaluate)
        _decoding_flags(s)

    s = sub.add_parser("predict", help="labels of audio files (speech classifier) or of texts (text classifier)", formatter_class=DEFAULTS)
    s.add_argument("model_dir", help="classifier directory (or its run directory)")
    s.add_argument("files", nargs="+", help="audio files, or texts for a text classifier")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.add_argument("--ensemble", nargs="+", default=[], metavar="DIR", help=ENSEMBLE_HELP)
    s.add_argument("--choices", default=None, metavar="FILE", help=CHOICES_ENSEMBLE_HELP)
    s.add_argument("--tta-speeds", nargs="+", type=float, default=None, metavar="FACTOR", help=TTA_HELP)
    _pipeline_flags(s)
    _reject_flags(s)
    _decoding_flags(s, " (of the recognizer in --pipeline)")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("pseudo-label", help="label unlabeled audio with a speech classifier's confident predictions (self-training)",
                       formatter_class=DEFAULTS)
    s.add_argument("model_dir", help="speech classifier directory (or its run directory)")
    s.add_argument("manifest", help="JSON Lines manifest of the audio to label (labels, if any, are replaced)")
    s.add_argument("out", help="write the confidently labeled clips here (a manifest to add to a training list)")
    s.add_argument("--min-confidence", type=float, default=0.9, help="keep a clip when its predicted label's probability is at least this")
    s.add_argument("--per-label", type=int, default=None, help="keep at most this many clips per predicted label, the most confident first")
    s.add_argument("--choices", default=None, metavar="FILE", help=CHOICES_ENSEMBLE_HELP)
    s.add_argument("--ensemble", nargs="+", default=[], metavar="DIR", help=ENSEMBLE_HELP)
    s.add_argument("--balance", action="store_true", help=BALANCE_HELP + "; the threshold applies to the balanced probabilities")
    s.add_argument("--tta-speeds", nargs="+", type=float, default=None, metavar="FACTOR", help=TTA_HELP)
    s.set_defaults(func=cmd_pseudo_label)

    s = sub.add_parser("merge-adapter", help="fold a LoRA/adapter classifier into a standalone model directory", formatter_class=DEFAULTS)
    s.add_argument("model_dir", help="adapter-only classifier directory")
    s.add_argument("out_dir", help="output model directory (full weights)")
    s.set_defaults(func=cmd_merge_adapter)

    s = sub.add_parser("intent", help="text intent classifier: train one or predict with one")
    kinds = s.add_subparsers(dest="action", required=True)
    s = kinds.add_parser("train", help="train on JSON Lines rows with text and label (e.g. a synth manifest)", formatter_class=DEFAULTS)
    s.add_argument("out_dir", help="output model directory")
    s.add_argument("--data", nargs="+", default=None, help="JSON Lines files with 'text' and 'label' (or 'intent')")
    s.add_argument("--builtin", type=int, default=0, help="or this many built-in generator sentences (their train split)")
    s.add_argument("--valid", nargs="+", default=None, help="held-out JSON Lines files to report accuracy on")
    s.add_argument("--c", type=float, default=10.0, help="inverse regularization strength")
    s.add_argument("--word-ngrams", type=int, default=0, choices=range(6), metavar="N", help="also word n-grams up to this length (helps on clean text, hurts on noisy transcripts)")
    s.add_argument("--seed", type=int, default=0, help="built-in sentence draw")
    s.add_argument("--reject-below", type=float, default=0.0, help="answer --reject-label when the best intent's probability is below this (0 = never); saved with the model")
    s.add_argument("--reject-label", default="oos", help="the out-of-scope answer")
    s.set_defaults(func=cmd_intent_train)
    s = kinds.add_parser("predict", help="print the intent of each text", formatter_class=DEFAULTS)
    s.add_argument("model_dir", help="intent model directory")
    s.add_argument("texts", nargs="+", help="texts to classify")
    s.add_argument("--reject-below", type=float, default=None, help="override the model's out-of-scope threshold (0 = never reject)")
    s.set_defaults(func=cmd_intent_predict)

    s = sub.add_parser("serve", help="HTTP server and web page: transcribe, intent, generate, synthesize, assistant", formatter_class=DEFAULTS)
    s.add_argument("model_dir", help="speech recognizer directory (or a run directory with model/): CTC, or a joint speech-LM (also /v1/answer)")
    s.add_argument("--intent-model", default=None, help="intent classifier directory (speechlm intent train)")
    s.add_argument("--lm", default=None, help="causal or LSTM language model directory, for /v1/generate")
    s.add_argument("--classifier", default=None, help="speech classifier directory (finetune --task classify), for /v1/classify")
    s.add_argument("--classifier-ensemble", nargs="+", default=[], metavar="DIR", help="/v1/classify: " + ENSEMBLE_HELP.replace("--choices", "--classifier-choices"))
    s.add_argument("--classifier-tta-speeds", nargs="+", type=float, default=None, metavar="FACTOR", help="/v1/classify: " + TTA_HELP)
    s.add_argument("--classifier-choices", default=None, metavar="FILE",
                   help="/v1/classify: " + CHOICES_ENSEMBLE_HELP.replace("--ensemble", "--classifier-ensemble"))
    s.add_argument("--speech-lm", default=None, help="joint speech-LM directory (finetune --task speech-lm) beside a CTC model_dir, for /v1/answer")
    s.add_argument("--beam", type=int, default=1, help="beam size of the assistant's transcripts and /v1/transcribe's default (1 = greedy; 8 when --asr-lm is given)")
    s.add_argument("--asr-lm", default=None, metavar="DIR", help="fuse this LM into the recognizer's beam search: an n-gram (speechlm ngram --recognizer) or causal/LSTM LM directory")
    s.add_argument("--asr-lm-weight", type=float, default=0.5, help="weight of --asr-lm's log-probabilities")
    s.add_argument("--asr-lm-bonus", type=float, default=0.0, help="score added per emitted token with --asr-lm")
    s.add_argument("--pipeline-nbest", type=int, default=1, metavar="N",
                   help="the assistant's intent: the intent model reads the beam's N best transcripts, weighted by their probabilities")
    s.add_argument("--pipeline-weight", type=float, default=None, metavar="W",
                   help="the assistant's intent: p ∝ p_classifier^(1-W) * p_intent_model^W, the --classifier (an end-to-end spoken-intent "
                        "model of the same labels) times the intent model on the transcripts (default: the intent model alone)")
    s.add_argument("--pipeline-speeds", nargs="+", type=float, default=None, metavar="FACTOR",
                   help="the assistant's intent: the intent model's probabilities averaged over each clip played at these speeds, each "
                        "decoded on its own (e.g. 0.9 1.0 1.1; the transcript is the clip's own); --classifier-tta-speeds does so for --classifier")
    s.add_argument("--reject-below", type=float, default=None, metavar="T",
                   help="the intent model answers its reject label (oos) where the intent's probability is below T, for /v1/intent and "
                        "the assistant (default: the threshold saved with the model, `intent train --reject-below`)")
    s.add_argument("--voice", default="espeak-en-us-steph-100", help="synthesis voice (speechlm synth --list-voices)")
    s.add_argument("--replies", default=None, help="JSON file {intent: reply template}; placeholders {transcript} {intent} {time} {date}")
    s.add_argument("--reply-from", choices=["templates", "lm"], default="templates", help="where assistant replies come from")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for every interface)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", default=None, help="require this key on compute endpoints (or set SPEECHLM_API_KEY)")
    s.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body")
    s.add_argument("--max-audio-seconds", type=float, default=120.0, help="longest audio accepted")
    s.add_argument("--max-text-chars", type=int, default=1000, help="longest text accepted")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds before a request gets 504")
    s.add_argument("--max-batch", type=int, default=8, help="transcriptions computed together")
    s.add_argument("--queue-size", type=int, default=16, help="requests waiting per model before 429")
    s.add_argument("--cors-origin", action="append", default=[], help="allow this browser origin (repeatable); default: none")
    s.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    s.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options; argparse alone cannot interleave them
    overrides = [e for e in extra if "=" in e and not e.startswith("-")]
    if len(overrides) != len(extra) or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if overrides:
        args.overrides = list(args.overrides) + overrides
    try:
        args.func(args)
    except (SpeechLMError, ConfigError, FileNotFoundError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, whatever the library said
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
