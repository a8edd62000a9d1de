"""CTC decoding: greedy (best path) and prefix beam search, optionally with shallow LM fusion.

Both take per-frame log-probabilities of one utterance ``(T, V)`` with blank id 0 and
return token ids with repeats and blanks removed. With a fusion LM
(:mod:`speechlm.decode.lm_fusion`) a prefix is ranked by

    log P_ctc(prefix) + lm_weight * log P_lm(prefix) + lm_bonus * len(prefix)

and the final choice adds the LM's end-of-sentence score.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections import defaultdict

import numpy as np
import torch

from speechlm.data.tokenizer import BLANK_ID
from speechlm.errors import SpeechLMError


@dataclasses.dataclass(frozen=True)
class DecodingOptions:
    method: str = "greedy"  # "greedy" or "beam"
    beam_size: int = 8  # prefixes kept per frame (beam search)
    token_prune: float = 1e-3  # beam search ignores tokens below this probability in a frame
    lm_weight: float = 0.5  # weight of the fusion LM's log-probabilities (when an LM is given)
    lm_bonus: float = 0.0  # added per emitted token with an LM, to offset the LM's preference for short output

    def __post_init__(self):
        if self.method not in ("greedy", "beam"):
            raise ValueError(f"decoding method must be 'greedy' or 'beam', got {self.method!r}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.lm_weight < 0:
            raise ValueError(f"lm_weight must be >= 0, got {self.lm_weight}")

    def lists(self, n: int) -> bool:
        """Whether this decoder can list ``n`` best transcripts: beam search at least ``n`` wide."""
        return self.method == "beam" and 1 <= n <= self.beam_size


def greedy_decode(log_probs: torch.Tensor, lens: torch.Tensor) -> list[list[int]]:
    """``(B, T, V)`` scores and ``(B,)`` lengths -> token ids per utterance (best path collapsed)."""
    best = log_probs.argmax(-1).cpu()  # (B, T)
    out = []
    for b in range(best.shape[0]):
        path = best[b, : int(lens[b])]
        keep = torch.ones_like(path, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        out.append([int(t) for t in path[keep] if t != BLANK_ID])
    return out


@dataclasses.dataclass(frozen=True)
class AlignedToken:
    token: int  # token id (never blank)
    first_frame: int  # first output frame where the best path emits it
    last_frame: int  # last frame of that run


def greedy_alignment(log_probs: torch.Tensor) -> list[AlignedToken]:
    """One utterance's ``(T, V)`` scores -> the best path's tokens with the frames each one spans."""
    best = log_probs.argmax(-1).cpu().tolist()
    out: list[AlignedToken] = []
    prev = BLANK_ID
    for t, tok in enumerate(best):
        if tok != BLANK_ID:
            if tok == prev:
                out[-1] = dataclasses.replace(out[-1], last_frame=t)
            else:
                out.append(AlignedToken(tok, t, t))
        prev = tok
    return out


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def prefix_beam_search(
    log_probs: np.ndarray, beam_size: int = 8, token_prune: float = 1e-3, lm=None, lm_weight: float = 0.0, lm_bonus: float = 0.0
) -> list[int]:
    """CTC prefix beam search over one utterance's ``(T, V)`` log-probabilities: the best prefix's token ids.

    Each prefix keeps two scores: paths ending in blank and paths ending in its last token,
    so that repeated tokens separated by a blank are told apart from a held token. ``lm`` (a
    :class:`~speechlm.decode.lm_fusion.FusionLM`) adds ``lm_weight * log P_lm(token | prefix) +
    lm_bonus`` each time a prefix grows by a token.
    """
    return beam_hypotheses(log_probs, beam_size, token_prune, lm, lm_weight, lm_bonus)[0][0]


def beam_hypotheses(
    log_probs: np.ndarray, beam_size: int = 8, token_prune: float = 1e-3, lm=None, lm_weight: float = 0.0, lm_bonus: float = 0.0
) -> list[tuple[list[int], float]]:
    """:func:`prefix_beam_search`'s final beam, best first: up to ``beam_size`` ``(token ids, score)`` pairs, each score
    the prefix's CTC log-probability (summed over its alignments) plus, with an LM, its fused LM score, bonuses and
    end-of-sentence score: the quantity the search ranks by (an N-best list)."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}  # prefix -> (p_blank, p_token)
    fused: dict[tuple[int, ...], float] = {(): 0.0}  # prefix -> its LM score and bonuses so far
    log_prune = math.log(token_prune) if token_prune > 0 else -math.inf
    if lm is not None:
        lm.reset()
    # each frame's tokens above token_prune (or its best one), found for all frames at once; Python floats and ints
    # inside the loops below, where numpy scalars would cost more than the arithmetic
    frames, tokens = np.nonzero(log_probs >= log_prune)
    bounds = np.searchsorted(frames, np.arange(len(log_probs) + 1)).tolist()
    tokens, best = tokens.tolist(), log_probs.argmax(1).tolist()
    for t, row in enumerate(log_probs.tolist()):
        candidates = tokens[bounds[t] : bounds[t + 1]] or [best[t]]
        if candidates == [BLANK_ID]:  # a blank-only frame: no prefix grows, every one shifts alike, the order stands
            p = row[BLANK_ID]
            beams = {prefix: (_logsumexp(pb, pt) + p, -math.inf) for prefix, (pb, pt) in beams.items()}
            continue
        scored = [(v, row[v]) for v in candidates]
        if lm is not None:
            lm.prepare(beams)
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (pb, pt) in beams.items():
            total = _logsumexp(pb, pt)
            lm_next = lm.log_probs(prefix) if lm is not None else None
            last = prefix[-1] if prefix else None
            for v, p in scored:
                if v == BLANK_ID:
                    e = nxt[prefix]
                    e[0] = _logsumexp(e[0], total + p)
                    continue
                ext = prefix + (v,)
                if ext not in fused:  # the same prefix always has the same parent, so this is fixed
                    fused[ext] = fused[prefix] + (lm_weight * float(lm_next[v]) + lm_bonus if lm is not None else 0.0)
                e = nxt[ext]
                if v == last:
                    e[1] = _logsumexp(e[1], pb + p)  # a repeat needs a blank in between
                    same = nxt[prefix]
                    same[1] = _logsumexp(same[1], pt + p)  # held token: prefix unchanged
                else:
                    e[1] = _logsumexp(e[1], total + p)
        # the best beam_size by score; among equal scores the first reached, as a stable sort would keep them
        ranked = heapq.nlargest(beam_size, [(_logsumexp(v[0], v[1]) + fused[k], -i, k) for i, (k, v) in enumerate(nxt.items())])
        beams = {k: (nxt[k][0], nxt[k][1]) for _, _, k in ranked}
    if lm is not None:  # the sentence has to end here: add the LM's end-of-sentence score
        lm.prepare(beams)
        scored = [(k, _logsumexp(*v) + fused[k] + lm_weight * lm.log_probs(k)[BLANK_ID]) for k, v in beams.items()]
    else:
        scored = [(k, _logsumexp(*v)) for k, v in beams.items()]
    scored.sort(key=lambda kv: kv[1], reverse=True)  # stable: among equal scores the beam's order stands
    return [(list(k), float(score)) for k, score in scored]


def decode_nbest(logits: torch.Tensor, lens: torch.Tensor, options: DecodingOptions, n: int, lm=None) -> list[list[tuple[list[int], float]]]:
    """Batch N-best: ``(B, T, V)`` logits -> per utterance up to ``n`` ``(token ids, score)`` pairs, best first
    (:func:`beam_hypotheses`); needs beam search with ``options.beam_size >= n``."""
    if options.method != "beam":
        raise SpeechLMError("an N-best list comes from beam search (method 'beam'); greedy decoding has one path")
    if not 1 <= n <= options.beam_size:
        raise SpeechLMError(f"N-best size must be between 1 and the beam size ({options.beam_size}), got {n}")
    lp = logits.float().log_softmax(-1).cpu().numpy()
    return [
        beam_hypotheses(lp[b, : int(lens[b])], options.beam_size, options.token_prune, lm, options.lm_weight, options.lm_bonus)[:n]
        for b in range(lp.shape[0])
    ]


def decode(logits: torch.Tensor, lens: torch.Tensor, options: DecodingOptions = DecodingOptions(), lm=None) -> list[list[int]]:
    """Batch entry point: ``(B, T, V)`` logits -> token ids per utterance; ``lm`` fuses a language model (beam only)."""
    log_probs = logits.float().log_softmax(-1)
    if options.method == "greedy":
        if lm is not None:
            raise SpeechLMError("LM fusion needs beam search (method 'beam')")
        return greedy_decode(log_probs, lens)
    lp = log_probs.cpu().numpy()
    return [
        prefix_beam_search(lp[b, : int(lens[b])], options.beam_size, options.token_prune, lm, options.lm_weight, options.lm_bonus)
        for b in range(lp.shape[0])
    ]
