"""Transcription: a model directory plus waveforms in, text out.

>>> rec = Recognizer.load("runs/demo/model")      # doctest: +SKIP
>>> rec.transcribe([load_audio("clip.wav")])      # doctest: +SKIP
['set an alarm for seven thirty']
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from speechlm.data.batching import bucket_batches
from speechlm.decode.ctc import DecodingOptions, decode
from speechlm.features import SAMPLE_RATE

MAX_CHUNK_SECONDS = 30.0  # longer inputs are cut at quiet points so attention memory stays bounded
MIN_SECONDS = 0.1  # shorter inputs are padded with silence to this length (the encoder's convolutions need frames)


def split_long(audio: np.ndarray, max_seconds: float = MAX_CHUNK_SECONDS) -> list[np.ndarray]:
    """Cut ``audio`` into pieces of at most ``max_seconds``, each cut at the quietest 10 ms
    frame in the last sixth of the piece, so that words are rarely split."""
    max_len = int(max_seconds * SAMPLE_RATE)
    pieces, start = [], 0
    while audio.size - start > max_len:
        window = audio[start + max_len - max_len // 6 : start + max_len]
        frames = window[: window.size // 160 * 160].reshape(-1, 160)
        quietest = int(np.argmin((frames**2).mean(1)))
        cut = start + max_len - max_len // 6 + quietest * 160 + 80
        pieces.append(audio[start:cut])
        start = cut
    pieces.append(audio[start:])
    return pieces


class Recognizer:
    def __init__(self, cfg, model: torch.nn.Module, tokenizer):
        self.cfg = cfg
        self.model = model.eval()
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, model_dir: str | Path) -> "Recognizer":
        from speechlm.train.asr import load_model_dir

        return cls(*load_model_dir(model_dir))

    @torch.inference_mode()
    def transcribe(
        self, audios: Sequence[np.ndarray], options: DecodingOptions = DecodingOptions(), batch_seconds: float = 200.0
    ) -> list[str]:
        """Waveforms (float32, 16 kHz) -> transcripts, batched by duration, in input order.

        Inputs longer than :data:`MAX_CHUNK_SECONDS` are transcribed in pieces and joined; inputs
        shorter than :data:`MIN_SECONDS` are padded with trailing silence.
        """
        pieces, owner = [], []
        min_len = int(MIN_SECONDS * SAMPLE_RATE)
        for n, audio in enumerate(audios):
            if audio.size < min_len:
                audio = np.pad(audio, (0, min_len - audio.size))
            for piece in split_long(audio):
                pieces.append(piece)
                owner.append(n)
        durations = [a.size / SAMPLE_RATE for a in pieces]
        texts: list[str] = [""] * len(pieces)
        for idx in bucket_batches(durations, batch_seconds, 256, seed=0, epoch=0, shuffle=False):
            lens = torch.tensor([pieces[i].size for i in idx])
            batch = torch.zeros(len(idx), int(lens.max()))
            for b, i in enumerate(idx):
                batch[b, : pieces[i].size] = torch.from_numpy(pieces[i])
            res = self.model(batch, lens)
            for i, ids in zip(idx, decode(res.logits, res.lens, options)):
                texts[i] = self.tokenizer.decode(ids)
        out: list[list[str]] = [[] for _ in audios]
        for n, text in zip(owner, texts):
            if text:
                out[n].append(text)
        return [" ".join(t) for t in out]
