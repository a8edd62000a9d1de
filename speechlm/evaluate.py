"""Evaluate a recognizer on a manifest: WER, CER, per-utterance errors, real-time factor."""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

from tqdm import tqdm

from speechlm.data.audio import load_audio
from speechlm.data.manifest import Utterance
from speechlm.decode.ctc import DecodingOptions
from speechlm.decode.transcribe import Recognizer
from speechlm.features import SAMPLE_RATE
from speechlm.metrics import ErrorRates, error_rates, utterance_errors


@dataclasses.dataclass
class EvalResult:
    rates: ErrorRates
    rtf: float  # compute seconds (features + model + decoding) per second of audio
    audio_seconds: float
    rows: list[dict]  # per utterance: path, speaker, reference, hypothesis, word_errors, words

    def summary(self) -> dict:
        return {
            "wer": self.rates.wer,
            "cer": self.rates.cer,
            "rtf": self.rtf,
            "utterances": len(self.rows),
            "words": self.rates.words,
            "audio_seconds": self.audio_seconds,
        }


def evaluate(
    recognizer: Recognizer, utts: Sequence[Utterance], options: DecodingOptions = DecodingOptions(), progress: bool = True
) -> EvalResult:
    audios = [load_audio(u.audio_filepath) for u in tqdm(utts, desc="load audio", unit="utt", disable=not progress, leave=False)]
    t0 = time.perf_counter()
    hyps = recognizer.transcribe(audios, options)
    compute = time.perf_counter() - t0
    seconds = sum(a.size for a in audios) / SAMPLE_RATE
    rows = []
    for u, h in zip(utts, hyps):
        errs, words = utterance_errors(u.text, h)
        rows.append(
            {"audio_filepath": u.audio_filepath, "speaker": u.speaker, "reference": u.text, "hypothesis": h, "word_errors": errs, "words": words}
        )
    return EvalResult(error_rates([u.text for u in utts], hyps), compute / max(seconds, 1e-9), seconds, rows)
