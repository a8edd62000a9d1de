"""CTC alone vs CTC with shallow LM fusion, on unseen sentences spoken by unseen voices.

Usage:
    .venv/bin/python bench/speech_lm.py                      # ~25 min on 2 cores (LM training included)
    .venv/bin/python bench/speech_lm.py --lm-steps 100 --dev 30 --limit 60   # a quick look

Recognizer: ``--asr`` (default ``runs/long/model``, the README's full-label recipe on the demo
corpus; any character CTC model works). Test audio: the demo's test manifest (sentences and
voices never used in training), split by a hash of the sentence into a dev part (fusion weights
are tuned there) and a test part (reported). The LMs read the built-in sentence generator's
*training* split only, so no test sentence is in their text:

* a character 8-gram (``speechlm ngram``), trained in seconds;
* a character causal Transformer LM (``speechlm pretrain text``), trained ``--lm-steps``.

The joint speech-LM (``speechlm finetune --task speech-lm``) starts from the same recognizer's
encoder (frozen) and the same Transformer LM (fully trained), with a frame-stacking projector,
and is trained ``--slm-minutes`` on the demo's training manifest to answer two prompts:
``transcribe`` and ``intent``. Its intent accuracy is compared with the text intent classifier
(``--intent``) reading the CTC transcripts.

CTC decoders read the same encoder outputs; real-time factor = (encoder + decoding time) /
audio time on this machine, single thread pool, one utterance at a time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import markdown_table, write_results  # noqa: E402

from speechlm.config import SpeechLMConfig, TextPretrainConfig, load_config  # noqa: E402
from speechlm.data import sentences  # noqa: E402
from speechlm.data.audio import load_audio  # noqa: E402
from speechlm.data.manifest import read_manifest  # noqa: E402
from speechlm.decode.ctc import DecodingOptions, decode  # noqa: E402
from speechlm.decode.lm_fusion import load_fusion_lm  # noqa: E402
from speechlm.decode.transcribe import Recognizer  # noqa: E402
from speechlm.metrics import error_rates  # noqa: E402
from speechlm.models.asr import count_parameters  # noqa: E402
from speechlm.models.ngram import CharNGram, NGramConfig  # noqa: E402
from speechlm.train.speech_lm import SpeechLMRunner, train_speech_lm  # noqa: E402
from speechlm.train.text import load_lm_dir, pretrain_text  # noqa: E402


def is_dev(text: str) -> bool:
    return hashlib.sha1(("dev:" + text).encode()).digest()[0] < 102  # ~40 % of sentences


def encode_all(rec: Recognizer, audios) -> tuple[list[torch.Tensor], float]:
    """Per-utterance CTC log-probabilities ``(T, V)`` and the encoder's total seconds."""
    out, start = [], time.perf_counter()
    with torch.inference_mode():
        for a in audios:
            res = rec.model(torch.from_numpy(a)[None], torch.tensor([a.size]))
            out.append(res.logits[0, : int(res.lens[0])].float().log_softmax(-1))
    return out, time.perf_counter() - start


def run_decoder(rec, log_probs, options, lm) -> tuple[list[str], float]:
    start = time.perf_counter()
    hyps = []
    for lp in log_probs:
        ids = decode(lp[None], torch.tensor([lp.shape[0]]), options, lm)[0]
        hyps.append(rec.tokenizer.decode(ids))
    return hyps, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--asr", default="runs/long/model", help="character CTC recognizer")
    ap.add_argument("--test-manifest", default="data/demo/test/manifest.jsonl")
    ap.add_argument("--run", default="runs/speech_lm", help="where the LMs are trained (reused when present)")
    ap.add_argument("--intent", default="runs/demo/intent", help="text intent classifier for the pipeline row (skipped if absent)")
    ap.add_argument("--lm-sentences", type=int, default=60000, help="generator training-split sentences the LMs read")
    ap.add_argument("--lm-steps", type=int, default=600)
    ap.add_argument("--order", type=int, default=8)
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--weights", default="0.3,0.6,1.0", help="LM weights tried on dev")
    ap.add_argument("--bonuses", default="0,1,2", help="per-token bonuses tried on dev")
    ap.add_argument("--dev", type=int, default=60, help="dev utterances used for tuning")
    ap.add_argument("--limit", type=int, default=0, help="test utterances (0 = all)")
    ap.add_argument("--train-manifest", default="data/demo/train/manifest.jsonl", help="paired data for the joint model")
    ap.add_argument("--slm-minutes", type=float, default=12.0, help="joint speech-LM training time")
    ap.add_argument("--slm-beam", type=int, default=4, help="joint speech-LM beam (the headline); greedy is reported beside it")
    args = ap.parse_args()
    run = Path(args.run)
    torch.manual_seed(0)

    utts = read_manifest(args.test_manifest, require_text=True)
    dev = [u for u in utts if is_dev(u.text)][: args.dev]
    test = [u for u in utts if not is_dev(u.text)]
    test = test[: args.limit] if args.limit else test
    print(f"dev {len(dev)} / test {len(test)} utterances, test voices: {', '.join(sorted({u.speaker for u in test}))}")

    # --- LMs on the generator's training split (test sentences excluded by construction)
    train_split, _ = sentences.split(sentences.generate(args.lm_sentences * 2, seed=1))
    lm_text = [s.text for s in train_split[: args.lm_sentences]]
    leaked = {u.text for u in utts} & set(lm_text)
    assert not leaked, f"{len(leaked)} test sentences in the LM text"
    run.mkdir(parents=True, exist_ok=True)
    (run / "lm_text.txt").write_text("\n".join(lm_text) + "\n")
    start = time.perf_counter()
    CharNGram.train(lm_text, NGramConfig(order=args.order)).save(run / "ngram")
    ngram_minutes = (time.perf_counter() - start) / 60
    lm_dir = run / "lm" / "model"
    if not lm_dir.is_dir():
        cfg = load_config(TextPretrainConfig, overrides=[
            f"data.train_files={[str(run / 'lm_text.txt')]}", "train.precision=fp32", "tokenizer.kind=char", "lm.arch=causal", "lm.d_model=192", "lm.n_layers=4",
            "lm.n_heads=4", "lm.context=128", f"train.max_steps={args.lm_steps}", "train.max_batch_size=32", "train.lr=2e-3", "train.warmup_steps=100",
        ])  # fmt: skip
        pretrain_text(cfg, run / "lm", progress=False)
    lm_cfg, lm_model, _, _ = load_lm_dir(lm_dir)
    lm_params = count_parameters(lm_model)

    # --- one encoder pass, several decoders
    rec = Recognizer.load(args.asr)
    dev_audio = [load_audio(u.audio_filepath) for u in dev]
    test_audio = [load_audio(u.audio_filepath) for u in test]
    audio_seconds = sum(a.size for a in test_audio) / 16000
    dev_lp, _ = encode_all(rec, dev_audio)
    test_lp, encoder_s = encode_all(rec, test_audio)
    refs = [u.text for u in test]
    lms = {"char 8-gram": load_fusion_lm(run / "ngram", rec.tokenizer), "char Transformer LM": load_fusion_lm(lm_dir, rec.tokenizer)}

    rows, tuning = [], []

    def add(method, options, lm, weight=None, bonus=None):
        hyps, decode_s = run_decoder(rec, test_lp, options, lm)
        er = error_rates(refs, hyps)
        rows.append({"method": method, "wer": er.wer, "cer": er.cer, "rtf": (encoder_s + decode_s) / audio_seconds,
                     "lm_weight": weight, "lm_bonus": bonus, "hyps": hyps})  # fmt: skip
        print(f"  {method}: WER {er.wer:.2%} CER {er.cer:.2%} RTF {rows[-1]['rtf']:.4f}")

    print("== CTC without an LM")
    add("CTC greedy", DecodingOptions("greedy"), None)
    add(f"CTC beam {args.beam}", DecodingOptions("beam", beam_size=args.beam), None)
    for name, lm in lms.items():
        print(f"== tuning {name} fusion on dev")
        best = None
        for w in map(float, args.weights.split(",")):
            for b in map(float, args.bonuses.split(",")):
                hyps, _ = run_decoder(rec, dev_lp, DecodingOptions("beam", beam_size=args.beam, lm_weight=w, lm_bonus=b), lm)
                wer = error_rates([u.text for u in dev], hyps).wer
                tuning.append({"lm": name, "lm_weight": w, "lm_bonus": b, "dev_wer": wer})
                print(f"  weight {w} bonus {b}: dev WER {wer:.2%}")
                best = min(best or (wer, w, b), (wer, w, b))
        _, w, b = best
        add(f"CTC beam {args.beam} + {name}", DecodingOptions("beam", beam_size=args.beam, lm_weight=w, lm_bonus=b), lm, w, b)

    print("== joint speech-LM")
    slm_dir = run / "slm" / "model"
    if not slm_dir.is_dir():
        cfg = load_config(SpeechLMConfig, overrides=[
            f"data.train_manifest={args.train_manifest}", f"lm_init={lm_dir}", f"finetune.init={args.asr}", "finetune.freeze_encoder_steps=-1",
            "lm_mode=full", "projector.stack=4", f"train.max_minutes={args.slm_minutes}", "train.max_steps=1000000", "train.lr=1e-3",
            "train.warmup_steps=100", "train.batch_seconds=120", "train.precision=fp32", "train.log_every=50",
        ])  # fmt: skip
        train_speech_lm(cfg, run / "slm", progress=False)
    slm = SpeechLMRunner.load(slm_dir)
    slm_summary = json.loads((slm_dir / "training.json").read_text())
    labelled = [(i, u) for i, u in enumerate(test) if u.label]
    slm_intent_acc = {}
    for beam in (1, args.slm_beam):
        name = f"joint speech-LM (transcribe prompt, {'greedy' if beam == 1 else f'beam {beam}'})"
        start = time.perf_counter()
        hyps = slm.answer(test_audio, "transcribe", beam_size=beam)
        er = error_rates(refs, hyps)
        rows.append({"method": name, "wer": er.wer, "cer": er.cer, "rtf": (time.perf_counter() - start) / audio_seconds,
                     "lm_weight": None, "lm_bonus": None, "hyps": hyps})  # fmt: skip
        intents = slm.answer([test_audio[i] for i, _ in labelled], "intent", beam_size=beam)
        slm_intent_acc[beam] = sum(p == u.label for p, (_, u) in zip(intents, labelled)) / len(labelled)
        print(f"  {name}: WER {er.wer:.2%} CER {er.cer:.2%} RTF {rows[-1]['rtf']:.4f}; intent accuracy {slm_intent_acc[beam]:.2%}")

    intent = None
    if Path(args.intent).exists():
        from speechlm.intent import IntentClassifier

        clf = IntentClassifier.load(args.intent)
        intent = {r["method"]: sum(p.intent == u.label for p, (_, u) in zip(clf.predict([r["hyps"][i] for i, _ in labelled]), labelled)) / len(labelled)
                  for r in rows if not r["method"].startswith("joint")}  # fmt: skip

    ctc, joint = rows[0], rows[-1]  # the joint model's headline decoding: beam --slm-beam
    fused = min(rows[2:-2], key=lambda r: r["wer"])
    headline = {
        "wer_ctc": round(ctc["wer"], 4), "wer_ctc_lm_fusion": round(fused["wer"], 4), "wer_speech_lm": round(joint["wer"], 4),
        "intent_acc_speech_lm": round(slm_intent_acc[args.slm_beam], 4), "intent_acc_classifier": intent and round(intent[ctc["method"]], 4),
        "rtf_ctc": round(ctc["rtf"], 4), "rtf_speech_lm": round(joint["rtf"], 4),
    }  # fmt: skip
    rel = 1 - fused["wer"] / ctc["wer"]
    rel_joint = 1 - joint["wer"] / ctc["wer"]
    body = [
        f"Recognizer `{args.asr}` ({count_parameters(rec.model) / 1e6:.2f} M parameters); test: {len(test)} utterances "
        f"({audio_seconds / 60:.1f} min) of unseen sentences by unseen voices ({', '.join(sorted({u.speaker for u in test}))}); "
        f"dev for tuning: {len(dev)} other utterances of the same test set.",
        f"LM text: {len(lm_text)} generator training-split sentences (no test sentence). Character {args.order}-gram built in "
        f"{ngram_minutes:.1f} min; causal Transformer LM {lm_params / 1e6:.2f} M parameters, {lm_cfg.train.max_steps} steps.",
        markdown_table(["method", "WER", "CER", "RTF", "LM weight", "bonus"] + (["intent acc. (text classifier)"] if intent else []), [
            [r["method"], f"{r['wer']:.2%}", f"{r['cer']:.2%}", round(r["rtf"], 4), r["lm_weight"] if r["lm_weight"] is not None else "-",
             r["lm_bonus"] if r["lm_bonus"] is not None else "-"] + ([f"{intent[r['method']]:.2%}" if r["method"] in intent else "-"] if intent else [])
            for r in rows]),
        f"Best fusion: **{fused['method']}**, WER {ctc['wer']:.2%} -> {fused['wer']:.2%} ({rel:.1%} relative; target ≥ 15 %).",
        "Dev tuning grid:",
        markdown_table(["LM", "weight", "bonus", "dev WER"], [[t["lm"], t["lm_weight"], t["lm_bonus"], f"{t['dev_wer']:.2%}"] for t in tuning]),
        f"Joint speech-LM: encoder of `{args.asr}` (frozen) -> projector (stack 4 frames = 160 ms per LM position) -> the "
        f"Transformer LM above (fully trained); {slm_summary['params'] / 1e6:.2f} M parameters, {slm_summary['trainable_params'] / 1e6:.2f} M "
        f"trained, {slm_summary['steps']} steps in {args.slm_minutes:g} min on `{args.train_manifest}` (prompts transcribe and intent, "
        f"answers per task {slm_summary['tasks']}). WER {ctc['wer']:.2%} (CTC greedy) -> {joint['wer']:.2%} ({rel_joint:.1%} relative). "
        f"Intent accuracy from one prompt: **{slm_intent_acc[args.slm_beam]:.2%}** with beam {args.slm_beam} ({slm_intent_acc[1]:.2%} greedy) vs "
        f"{format(headline['intent_acc_classifier'], '.2%') if intent else '-'} for the text classifier on CTC greedy transcripts (target ≥ 97 %). "
        f"One utterance at a time; the headline is beam {args.slm_beam}, chosen before the run.",
    ]  # fmt: skip
    for r in rows:
        r["examples"] = [{"ref": refs[i], "hyp": r["hyps"][i]} for i in range(min(5, len(refs)))]
        del r["hyps"]
    write_results("speech_lm", "CTC vs CTC + LM fusion vs the joint speech-LM", headline, "\n\n".join(body), {"rows": rows, "tuning": tuning})


if __name__ == "__main__":
    main()
