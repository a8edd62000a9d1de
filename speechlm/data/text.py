"""Plain-text corpora for language modelling: validated reading, packing into fixed-length sequences.

Lines become ``BOS ids EOS`` and are concatenated into one token stream, cut into sequences of
``context + 1`` tokens (the causal LM predicts tokens 1..n from 0..n-1). Batches hold
``max_batch_size`` sequences in an order that depends only on ``(seed, epoch)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from speechlm.data.tokenizer import normalize_text
from speechlm.errors import SpeechLMError


def pad_tokens(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id sequences -> ``(B, L)`` ids zero-padded on the right (``L >= 1``) and ``(B,)`` lengths."""
    lens = torch.tensor([len(s) for s in seqs])
    tokens = torch.zeros(len(seqs), max(1, int(lens.max())), dtype=torch.long)
    for b, s in enumerate(seqs):
        tokens[b, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return tokens, lens


class TextError(SpeechLMError):
    """A text file cannot be used: unreadable, not UTF-8, binary, or empty."""


def read_text_lines(paths: Sequence[str | Path]) -> list[str]:
    """Non-empty lines of UTF-8 text files; a bad file is an error naming the file and the position."""
    lines = []
    for path in paths:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise TextError(f"{path}: cannot read ({e.strerror})") from None
        if b"\x00" in raw[:65536]:
            raise TextError(f"{path}: looks like a binary file (NUL bytes), expected UTF-8 text")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise TextError(f"{path}: invalid UTF-8 at byte {e.start} (line {line}); convert the file to UTF-8") from None
        kept = [ln.strip() for ln in text.splitlines() if normalize_text(ln)]
        if not kept:
            raise TextError(f"{path}: no text (empty or only punctuation/whitespace)")
        lines.extend(kept)
    return lines


def split_lines(lines: Sequence[str], valid_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """A deterministic (train, valid) split of lines; valid holds about ``valid_fraction`` of them."""
    rng = np.random.default_rng(seed)
    is_valid = rng.random(len(lines)) < valid_fraction
    return [ln for ln, v in zip(lines, is_valid) if not v], [ln for ln, v in zip(lines, is_valid) if v]


def token_stream(lines: Sequence[str], encode, bos: int, eos: int) -> np.ndarray:
    """``BOS ids EOS`` for every line, concatenated: ``(N,)`` int64."""
    out = []
    for ln in lines:
        ids = encode(ln)
        if ids:
            out.append(np.array([bos, *ids, eos], dtype=np.int64))
    if not out:
        raise TextError("no tokens: the tokenizer produced nothing for the given text")
    return np.concatenate(out)


@dataclasses.dataclass
class TextBatch:
    tokens: torch.Tensor  # (B, L) ids, zero-padded on the right
    lens: torch.Tensor  # (B,) valid ids

    @property
    def amount(self) -> float:
        """Tokens in the batch: the training loop's throughput unit."""
        return float(self.lens.sum())

    def to(self, device: torch.device | str) -> "TextBatch":
        return TextBatch(self.tokens.to(device), self.lens.to(device))


class TextDataset:
    """A token stream cut into sequences of ``seq_len`` tokens."""

    unit = "tokens"

    def __init__(self, stream: np.ndarray, seq_len: int, seed: int = 0):
        self.stream, self.seq_len, self.seed = stream, seq_len, seed
        self.epoch = 0
        self.n = max(1, int(np.ceil(len(stream) / seq_len)))

    def __len__(self) -> int:
        return self.n

    def make_batches(self, cfg, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        bs = cfg.max_batch_size
        return [order[i : i + bs].tolist() for i in range(0, self.n, bs)]

    def collate(self, indices: Sequence[int]) -> TextBatch:
        seqs = [self.stream[i * self.seq_len : (i + 1) * self.seq_len] for i in indices]
        return TextBatch(*pad_tokens(seqs))
