"""Language models that score a recognizer's token prefixes, for shallow fusion in CTC beam search.

A fusion LM answers one question: given a prefix of the recognizer's token ids, what is the
log-probability of each next token? Column 0 (the CTC blank, which never extends a prefix)
holds the log-probability of ending the sentence. :meth:`prepare` scores a set of prefixes at
once (one batched forward pass for a neural LM); :meth:`log_probs` then reads one back.

Both kinds need to see the transcript as the recognizer writes it, token for token:

* :class:`NGramFusion` wraps a :class:`~speechlm.models.ngram.CharNGram` (character recognizers);
* :class:`NeuralFusion` wraps a causal or LSTM :class:`~speechlm.models.lm.LanguageModel` whose
  tokenizer has one token for each of the recognizer's tokens (both character tokenizers, or
  the same SentencePiece model), reusing each prefix's key/value (or LSTM) state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
import torch

from speechlm.data.tokenizer import CharTokenizer, SentencePieceTokenizer, Tokenizer
from speechlm.errors import SpeechLMError
from speechlm.models.lm import LanguageModel, SpecialTokens
from speechlm.models.ngram import BOS, EOS, CharNGram, is_ngram_dir

Prefix = tuple[int, ...]
HISTORY_CACHE = 200_000  # n-gram histories whose scores NGramFusion keeps (~10-20 MB for a 30-character alphabet)


class FusionLM(Protocol):
    def prepare(self, prefixes: Iterable[Prefix]) -> None: ...

    def log_probs(self, prefix: Prefix) -> np.ndarray: ...  # (V_asr,), column 0 = end of sentence

    def reset(self) -> None: ...  # forget the states of the previous utterance


def _asr_chars(asr: Tokenizer, what: str) -> list[str]:
    if not isinstance(asr, CharTokenizer):
        raise SpeechLMError(f"{what} needs a character-level recognizer (tokenizer.kind=char); this one uses {asr.kind} pieces")
    return asr.chars


class NGramFusion:
    def __init__(self, ngram: CharNGram, asr: Tokenizer):
        chars = _asr_chars(asr, "fusion with a character n-gram")
        missing = [c for c in chars if c not in ngram.index]
        if missing:
            raise SpeechLMError(f"the n-gram model never saw the recognizer's characters {''.join(missing)!r}: train it on text that has them")
        self.ngram, self.chars = ngram, chars
        self.columns = np.array([ngram.index[EOS]] + [ngram.index[c] for c in chars])  # recognizer id -> n-gram symbol
        self.by_history: dict[str, np.ndarray] = {}  # the n-gram's answers depend on the history alone: kept across utterances
        self.reset()

    def reset(self) -> None:
        self.cache: dict[Prefix, np.ndarray] = {}
        if len(self.by_history) > HISTORY_CACHE:  # bounded: a long-running server decodes without end
            self.by_history.clear()

    def prepare(self, prefixes: Iterable[Prefix]) -> None:
        context = self.ngram.cfg.order - 1  # the n-gram never looks further back than this
        for p in prefixes:
            if p not in self.cache:
                history = BOS * context + "".join(self.chars[i - 1] for i in p[max(0, len(p) - context) :])
                scores = self.by_history.get(history)
                if scores is None:
                    scores = self.by_history[history] = np.log(self.ngram.next_probs(history)[self.columns])
                self.cache[p] = scores

    def log_probs(self, prefix: Prefix) -> np.ndarray:
        return self.cache[prefix]


def token_map(asr: Tokenizer, lm: Tokenizer) -> np.ndarray:
    """Recognizer id -> LM token id for ids 1..V-1 (entry 0 unused); errors when the vocabularies differ."""
    if isinstance(asr, CharTokenizer) and isinstance(lm, CharTokenizer):
        missing = [c for c in asr.chars if c not in lm._index]
        if missing:
            raise SpeechLMError(f"tokenizer mismatch: the LM has no token for the recognizer's characters {''.join(missing)!r}")
        return np.array([0] + [lm._index[c] for c in asr.chars])
    if isinstance(asr, SentencePieceTokenizer) and isinstance(lm, SentencePieceTokenizer) and asr.proto == lm.proto:
        return np.arange(asr.vocab_size)
    raise SpeechLMError(
        f"tokenizer mismatch: the recognizer uses {asr.kind} tokens and the LM {lm.kind} tokens; fusion needs one LM token "
        "per recognizer token (both character tokenizers, or the same SentencePiece model)"
    )


class NeuralFusion:
    def __init__(self, model: LanguageModel, lm_tokenizer: Tokenizer, special: SpecialTokens, asr: Tokenizer):
        if model.cfg.arch == "mlm":
            raise SpeechLMError("a masked language model cannot score prefixes; use a causal or lstm model for fusion")
        self.model, self.special = model.eval(), special
        self.to_lm = token_map(asr, lm_tokenizer)
        self.columns = torch.from_numpy(self.to_lm.copy())
        self.columns[0] = special.eos
        self.device = next(model.parameters()).device
        self.reset()

    def reset(self) -> None:
        self.cache: dict[Prefix, tuple[np.ndarray, list]] = {}

    def _scores(self, logits: torch.Tensor) -> np.ndarray:
        """``(N, V_lm)`` next-token logits -> ``(N, V_asr)`` log-probabilities (specials other than EOS excluded)."""
        logits = logits.float().cpu().clone()
        logits[:, [0, self.special.bos, self.special.mask]] = float("-inf")
        return logits.log_softmax(-1)[:, self.columns].numpy()

    @torch.no_grad()
    def prepare(self, prefixes: Iterable[Prefix]) -> None:
        todo_set = set()
        for p in prefixes:  # with every ancestor not scored yet: each prefix extends its parent's state
            while p not in self.cache and p not in todo_set:
                todo_set.add(p)
                p = p[:-1]
        todo = sorted(todo_set, key=len)
        if () in todo:
            out = self.model(torch.tensor([[self.special.bos]], device=self.device))
            self.cache[()] = (self._scores(out.logits[:, -1])[0], out.cache)
            todo.remove(())
        limit = self.model.cfg.context - 1
        by_len: dict[int, list[Prefix]] = {}
        for p in todo:
            by_len.setdefault(len(p), []).append(p)
        for n, group in sorted(by_len.items()):
            if n >= limit:  # past the context: read the most recent half-context afresh
                for p in group:
                    ids = [int(self.to_lm[i]) for i in p[-(limit // 2) :]]
                    out = self.model(torch.tensor([ids], device=self.device))
                    self.cache[p] = (self._scores(out.logits[:, -1])[0], [])
                continue
            caches = [self.cache[p[:-1]][1] for p in group]
            tokens = torch.tensor([[int(self.to_lm[p[-1]])] for p in group], device=self.device)  # (N, 1)
            out = self.model(tokens, cache=_stack(caches, self.model.cfg.arch))
            scores = self._scores(out.logits[:, -1])
            for i, p in enumerate(group):
                self.cache[p] = (scores[i], _select(out.cache, i, self.model.cfg.arch))

    def log_probs(self, prefix: Prefix) -> np.ndarray:
        return self.cache[prefix][0]


def _stack(caches: list[list], arch: str) -> list:
    """Per-prefix caches of equal length -> one batched cache (batch is dim 1 of LSTM states, dim 0 of k/v)."""
    dim = 1 if arch == "lstm" else 0
    return [tuple(torch.cat([c[layer][j] for c in caches], dim=dim) for j in range(2)) for layer in range(len(caches[0]))]


def _select(cache: list, i: int, arch: str) -> list:
    if arch == "lstm":
        return [tuple(t[:, i : i + 1] for t in layer) for layer in cache]
    return [tuple(t[i : i + 1] for t in layer) for layer in cache]


def load_fusion_lm(path: str | Path, asr: Tokenizer) -> FusionLM:
    """An n-gram directory (``speechlm ngram``) or a causal/LSTM LM directory (``speechlm pretrain text``)."""
    if is_ngram_dir(path):
        return NGramFusion(CharNGram.load(path), asr)
    from speechlm.train.text import load_lm_dir

    _, model, tokenizer, special = load_lm_dir(path)
    return NeuralFusion(model, tokenizer, special, asr)
