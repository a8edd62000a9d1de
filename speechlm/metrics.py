"""Recognition metrics: word and character error rates through jiwer."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jiwer

from speechlm.data.tokenizer import normalize_text


@dataclasses.dataclass(frozen=True)
class ErrorRates:
    wer: float  # word errors / reference words
    cer: float  # character errors / reference characters
    words: int  # reference words
    word_errors: int  # substitutions + deletions + insertions
    chars: int
    char_errors: int


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    """Corpus-level WER and CER after :func:`normalize_text` on both sides."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]
    if not keep:
        raise ValueError("every reference is empty: WER is undefined")
    refs, hyps = [refs[i] for i in keep], [hyps[i] for i in keep]
    w = jiwer.process_words(refs, hyps)
    c = jiwer.process_characters(refs, hyps)
    n_words = sum(len(r.split()) for r in refs)
    n_chars = sum(len(r) for r in refs)
    w_err = w.substitutions + w.deletions + w.insertions
    c_err = c.substitutions + c.deletions + c.insertions
    return ErrorRates(w_err / n_words, c_err / n_chars, n_words, w_err, n_chars, c_err)


def utterance_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word errors, reference words) for one utterance."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return len(hyp.split()), 0
    w = jiwer.process_words(ref, hyp)
    return w.substitutions + w.deletions + w.insertions, len(ref.split())
