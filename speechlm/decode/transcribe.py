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
        """Waveforms (float32, 16 kHz) -> transcripts, batched by duration, in input order."""
        durations = [a.size / SAMPLE_RATE for a in audios]
        out: list[str] = [""] * len(audios)
        for idx in bucket_batches(durations, batch_seconds, 256, seed=0, epoch=0, shuffle=False):
            lens = torch.tensor([audios[i].size for i in idx])
            batch = torch.zeros(len(idx), int(lens.max()))
            for b, i in enumerate(idx):
                batch[b, : audios[i].size] = torch.from_numpy(audios[i])
            res = self.model(batch, lens)
            for i, ids in zip(idx, decode(res.logits, res.lens, options)):
                out[i] = self.tokenizer.decode(ids)
        return out
