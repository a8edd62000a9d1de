"""A character n-gram language model with interpolated Witten-Bell smoothing.

Trained in seconds on normalized text (the same normalization as the recognizer's transcripts),
it is the cheap language model for CTC shallow fusion. ``<`` marks the start of a sentence in a
history and ``>`` (the last symbol) ends one; normalization removes both from text, so they
never collide with a real character.

    P(c | h) = (C(h c) + T(h) P(c | h')) / (C(h) + T(h))

where ``h'`` drops the oldest character of ``h``, ``C`` counts and ``T(h)`` is the number of
distinct characters seen after ``h``; the recursion ends in the uniform distribution.

>>> lm = CharNGram.train(["abc", "abd"], NGramConfig(order=3))
>>> p = lm.next_probs("<ab")
>>> round(float(p.sum()), 6), lm.symbols[int(p.argmax())] in "cd"
(1.0, True)
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from speechlm.data.tokenizer import normalize_text
from speechlm.errors import CheckpointError, SpeechLMError
from speechlm.files import replaced_atomically

BOS, EOS = "<", ">"
NGRAM_FILE = "ngram.json.gz"


@dataclasses.dataclass(frozen=True)
class NGramConfig:
    order: int = 8  # characters of history + 1

    def __post_init__(self):
        if self.order < 1:
            raise ValueError(f"ngram order must be >= 1, got {self.order}")


class CharNGram:
    def __init__(self, cfg: NGramConfig, symbols: list[str], counts: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.cfg = cfg
        self.symbols = symbols  # characters, then EOS
        self.index = {s: i for i, s in enumerate(symbols)}
        self.counts = counts  # history -> (symbol ids, counts) of what followed it
        # history -> (symbol ids, their counts / (C(h) + T(h)), T(h) / (C(h) + T(h))): next_probs's terms, computed once
        self._terms = {h: (ids, n / (n.sum() + len(n)), len(n) / (n.sum() + len(n))) for h, (ids, n) in counts.items()}

    @classmethod
    def train(cls, texts: Iterable[str], cfg: NGramConfig = NGramConfig(), alphabet: Iterable[str] = ()) -> "CharNGram":
        """``alphabet``: characters the model must score even where ``texts`` never has them (a
        recognizer's vocabulary); they receive only the smoothing's share, through the uniform base."""
        raw: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for text in texts:
            t = normalize_text(text)
            if not t:
                continue
            s = BOS * (cfg.order - 1) + t + EOS
            for i in range(cfg.order - 1, len(s)):
                for k in range(cfg.order):  # every history length 0 .. order-1
                    raw[s[i - k : i]][s[i]] += 1
        if not raw:
            raise SpeechLMError("cannot train an n-gram model on empty text")
        symbols = sorted(({c for follow in raw.values() for c in follow} | set(alphabet)) - {BOS, EOS}) + [EOS]
        index = {s: i for i, s in enumerate(symbols)}
        counts = {
            h: (np.array([index[c] for c in f], dtype=np.int32), np.array(list(f.values()), dtype=np.float64)) for h, f in raw.items()
        }
        return cls(cfg, symbols, counts)

    def next_probs(self, history: str) -> np.ndarray:
        """``(len(symbols),)`` probabilities of the next symbol after ``history`` (start with ``BOS``)."""
        p = np.full(len(self.symbols), 1.0 / len(self.symbols))
        for k in range(min(self.cfg.order - 1, len(history)) + 1):
            seen = self._terms.get(history[len(history) - k :])
            if seen is None:  # a longer history was never seen either
                break
            ids, share, backoff = seen
            p *= backoff
            p[ids] += share
        return p

    def log_prob(self, text: str) -> tuple[float, int]:
        """Natural-log probability of a whole sentence (end included) and the symbols scored."""
        t = normalize_text(text)
        history, total = BOS * (self.cfg.order - 1), 0.0
        for c in t + EOS:
            if c not in self.index:
                raise SpeechLMError(f"character {c!r} never occurs in the n-gram model's training text")
            total += math.log(self.next_probs(history)[self.index[c]])
            history += c
        return total, len(t) + 1

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / NGRAM_FILE
        data = {"order": self.cfg.order, "symbols": self.symbols, "counts": {h: [i.tolist(), n.astype(int).tolist()] for h, (i, n) in self.counts.items()}}
        with replaced_atomically(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as f:  # never a half-written model
            json.dump(data, f)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "CharNGram":
        path = Path(directory)
        path = path / NGRAM_FILE if path.is_dir() else path
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                data = json.load(f)
            counts = {h: (np.array(i, dtype=np.int32), np.array(n, dtype=np.float64)) for h, (i, n) in data["counts"].items()}
            return cls(NGramConfig(order=int(data["order"])), list(data["symbols"]), counts)
        except (OSError, EOFError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable n-gram model ({e})") from None


def is_ngram_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / NGRAM_FILE).is_file() or (p.is_file() and p.name.endswith(NGRAM_FILE))
