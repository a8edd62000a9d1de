"""Evaluate a recognizer on a manifest (WER, CER, per-utterance errors, real-time factor) and a language model on text (perplexity)."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import numpy as np
import torch
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


@dataclasses.dataclass
class PerplexityResult:
    perplexity: float  # exp(mean negative log-likelihood per token)
    nll: float  # mean negative log-likelihood per token, nats
    tokens: int  # tokens scored


@torch.no_grad()
def perplexity(model, stream: np.ndarray, context: int, stride: int | None = None, batch_size: int = 16) -> PerplexityResult:
    """Sliding-window perplexity of a causal/LSTM LM on a ``(N,)`` token stream.

    Windows of ``context`` tokens advance by ``stride`` (default ``context // 2``); every token
    after the first is scored exactly once, by the window that gives it the most left context
    among those that contain it.
    """
    stride = stride or max(1, context // 2)
    if not 0 < stride <= context:
        raise ValueError(f"stride must be in [1, context={context}], got {stride}")
    device = next(model.parameters()).device
    windows = []  # (begin, first target offset scored)
    begin = 0
    while True:
        windows.append((begin, 0 if begin == 0 else context - stride))
        if begin + context >= len(stream) - 1:
            break
        begin += stride
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        inputs = [stream[b : b + context] for b, _ in chunk]
        targets = [stream[b + 1 : b + context + 1] for b, _ in chunk]
        L = max(len(t) for t in targets)
        x = torch.zeros(len(chunk), L, dtype=torch.long)
        y = torch.full((len(chunk), L), -100, dtype=torch.long)
        for r, ((_, first), inp, tgt) in enumerate(zip(chunk, inputs, targets)):
            x[r, : len(tgt)] = torch.from_numpy(inp[: len(tgt)])
            y[r, first : len(tgt)] = torch.from_numpy(tgt[first:])
        lens = torch.tensor([len(t) for t in targets])
        logits = model(x.to(device), lens.to(device)).logits.float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.to(device).reshape(-1), ignore_index=-100, reduction="sum")
        total += float(nll)
        count += int((y != -100).sum())
    mean = total / max(count, 1)
    return PerplexityResult(math.exp(mean), mean, count)
