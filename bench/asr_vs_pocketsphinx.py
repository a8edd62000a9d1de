"""speechlm's recognizer vs pocketsphinx on the same files, per TTS engine and on real speech.

Usage:
    .venv/bin/python bench/asr_vs_pocketsphinx.py --model runs/demo/model --test data/demo/test/manifest.jsonl \
        --lm runs/demo/ngram --lm-weight 0.6 --lm-bonus 2

The synthesized test set holds sentences and voices never used in training. pocketsphinx
(a real HMM recognizer with its own US English acoustic model, dictionary and general language
model) recognizes espeak-ng's formant voices badly, so the headline WER is computed over the
audio that is not espeak-ng: unseen flite and festival voices plus real human recordings (the
FSDD spoken digits test split, when ../shared/data is present). Both systems see the same 16 kHz
samples; RTF is compute time over audio time on this machine, measured in the same run.

speechlm is scored twice: greedy, and the way the demo deploys it (`--lm`: beam search fused with
the demo's character n-gram of its training sentences, which hold the digit words but none of the
test sentences). pocketsphinx always decodes with its own general English language model.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, markdown_table, write_results  # noqa: E402

from speechlm.cli import decoding_options  # noqa: E402
from speechlm.data.audio import load_audio  # noqa: E402
from speechlm.data.manifest import read_manifest  # noqa: E402
from speechlm.data.sentences import ONES  # noqa: E402
from speechlm.decode.ctc import DecodingOptions  # noqa: E402
from speechlm.decode.transcribe import Recognizer  # noqa: E402
from speechlm.features import SAMPLE_RATE  # noqa: E402
from speechlm.metrics import error_rates  # noqa: E402


def fsdd_test_set(limit: int) -> list[tuple[str, str, str]]:
    """(path, reference words, group) for FSDD's official test split (file index 0-4)."""
    root = SHARED_DATA / "fsdd" / "recordings"
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.glob("*.wav")):
        digit, speaker, index = p.stem.split("_")
        if int(index) <= 4:
            out.append((str(p), ONES[int(digit)], "human (fsdd)"))
    return out[:limit]


def pocketsphinx_transcribe(audios: list[np.ndarray]) -> tuple[list[str], float]:
    from pocketsphinx import Decoder

    decoder = Decoder(loglevel="FATAL")
    hyps = []
    t0 = time.perf_counter()
    for a in tqdm(audios, desc="pocketsphinx", unit="utt", leave=False):
        decoder.start_utt()
        decoder.process_raw((np.clip(a, -1, 1) * 32767).astype(np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        hyps.append(hyp.hypstr if hyp else "")
    return hyps, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/demo/model")
    p.add_argument("--test", default="data/demo/test/manifest.jsonl")
    p.add_argument("--fsdd-limit", type=int, default=300, help="FSDD test files to include (0 = none)")
    p.add_argument("--lm", default="runs/demo/ngram", help="n-gram or LM directory fused into beam search ('' = greedy only)")
    p.add_argument("--lm-weight", type=float, default=0.6)
    p.add_argument("--lm-bonus", type=float, default=2.0)
    p.add_argument("--beam", type=int, default=8)
    args = p.parse_args()
    for path in (args.model, args.test, args.lm):
        if path and not Path(path).exists():
            raise SystemExit(f"error: {path} does not exist; run `make demo` first or pass --model / --test / --lm")

    items = [(u.audio_filepath, u.text, u.speaker.split("-")[0] if u.speaker else "?") for u in read_manifest(args.test)]
    items += fsdd_test_set(args.fsdd_limit)
    audios = [load_audio(path) for path, _, _ in tqdm(items, desc="load audio", leave=False)]
    groups = collections.defaultdict(list)
    for i, (_, _, g) in enumerate(items):
        groups[g].append(i)

    rec = Recognizer.load(args.model, lm=args.lm or None)  # greedy decoding never reads the LM
    ways = {"greedy": DecodingOptions()}
    if args.lm:
        ways["lm"] = decoding_options(args.beam, args.lm, args.lm_weight, args.lm_bonus)  # as `speechlm transcribe --lm` decodes
    ours = {way: {} for way in ways}  # way -> utterance index -> transcript
    ours_time = {way: {} for way in ways}  # way -> group -> seconds
    for way, options in ways.items():
        rec.transcribe(audios[:4], options)  # warm-up
        for g, idx in groups.items():
            t0 = time.perf_counter()
            hyps = rec.transcribe([audios[i] for i in idx], options)
            ours_time[way][g] = time.perf_counter() - t0
            ours[way].update(zip(idx, hyps))
    theirs, theirs_time = {}, {}
    for g, idx in groups.items():
        hyps, seconds = pocketsphinx_transcribe([audios[i] for i in idx])
        theirs_time[g] = seconds
        theirs.update(zip(idx, hyps))

    best = "lm" if args.lm else "greedy"  # the decoding the headline reports: the deployed one
    rows, per_group = [], {}
    for g, idx in sorted(groups.items()):
        refs = [items[i][1] for i in idx]
        secs = sum(audios[i].size for i in idx) / SAMPLE_RATE
        wer = {way: error_rates(refs, [ours[way][i] for i in idx]).wer for way in ways}
        theirs_wer = error_rates(refs, [theirs[i] for i in idx]).wer
        per_group[g] = {"utterances": len(idx), "audio_seconds": secs, "pocketsphinx_wer": theirs_wer, "pocketsphinx_rtf": theirs_time[g] / secs,
                        **{f"speechlm_{way}_wer": wer[way] for way in ways}, **{f"speechlm_{way}_rtf": ours_time[way][g] / secs for way in ways}}
        rows.append([g, len(idx), *wer.values(), theirs_wer, *(ours_time[way][g] / secs for way in ways), theirs_time[g] / secs])

    fair = [i for g, idx in groups.items() if g != "espeak" for i in idx]
    fair_secs = sum(audios[i].size for i in fair) / SAMPLE_RATE
    refs = [items[i][1] for i in fair]
    fair_wer = {way: error_rates(refs, [ours[way][i] for i in fair]).wer for way in ways}
    fair_rtf = {way: sum(t for g, t in ours_time[way].items() if g != "espeak") / fair_secs for way in ways}
    headline = {
        "speechlm_wer": fair_wer[best], "speechlm_rtf": fair_rtf[best], "speechlm_decoding": best,
        "speechlm_greedy_wer": fair_wer["greedy"], "speechlm_greedy_rtf": fair_rtf["greedy"],
        "pocketsphinx_wer": error_rates(refs, [theirs[i] for i in fair]).wer,
        "pocketsphinx_rtf": sum(theirs_time[g] for g in groups if g != "espeak") / fair_secs,
    }  # fmt: skip
    rows.append(["**all but espeak-ng (headline)**", len(fair), *fair_wer.values(), headline["pocketsphinx_wer"], *fair_rtf.values(),
                 headline["pocketsphinx_rtf"]])  # fmt: skip
    names = {"greedy": "speechlm greedy", "lm": "speechlm + LM"}
    header = ["test audio", "utts", *(f"{names[w]} WER" for w in ways), "pocketsphinx WER", *(f"{names[w]} RTF" for w in ways), "pocketsphinx RTF"]
    examples = [[items[i][2], items[i][1], *(ours[way][i] for way in ways), theirs[i]] for idx in groups.values() for i in idx[:2]]
    lm_note = (f"speechlm + LM: beam {args.beam} fused with `{args.lm}` (weight {args.lm_weight:g}, bonus {args.lm_bonus:g} per token), "
               "the decoding `make demo` prints for `speechlm serve`; the headline's speechlm figures are this decoding's.\n\n" if args.lm else "")
    body = (
        lm_note
        + markdown_table(header, rows)
        + f"\n\nRTF ratio (pocketsphinx / {names[best]}) on the headline set: "
        + f"{headline['pocketsphinx_rtf'] / headline['speechlm_rtf']:.1f}x\n\n"
        + markdown_table(["audio", "reference", *(names[w] for w in ways), "pocketsphinx"], examples)
    )
    write_results(
        "asr_vs_pocketsphinx", "speechlm vs pocketsphinx: unseen voices and real speech", headline, body,
        {"groups": per_group, "model": args.model, "test": args.test, "lm": args.lm or None,
         "decoding": {way: dataclasses.asdict(o) for way, o in ways.items()}},
    )  # fmt: skip


if __name__ == "__main__":
    main()
