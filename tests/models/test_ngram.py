"""Character n-gram: Witten-Bell probabilities against a direct recursive formula, persistence, errors."""

import math
from collections import Counter

import numpy as np
import pytest

from speechlm.errors import CheckpointError, SpeechLMError
from speechlm.models.ngram import BOS, EOS, CharNGram, NGramConfig

TEXTS = ["the cat sat", "the hat", "a cat ate the mat", "that"]


def reference_prob(texts, order, history, c, symbols):
    """Interpolated Witten-Bell written out from its definition, one symbol at a time."""
    follow = {}
    for t in texts:
        s = BOS * (order - 1) + t + EOS
        for i in range(order - 1, len(s)):
            for k in range(order):
                follow.setdefault(s[i - k : i], Counter())[s[i]] += 1

    def p(h):
        if h == "" and "" not in follow:
            return 1 / len(symbols)
        lower = 1 / len(symbols) if h == "" else p(h[1:])
        if h not in follow:
            return lower
        f = follow[h]
        total, types = sum(f.values()), len(f)
        base = p(h[1:]) if h else 1 / len(symbols)
        return (f[c] + types * base) / (total + types)

    h = history[-(order - 1) :] if order > 1 else ""
    return p(h)


@pytest.mark.parametrize("order", [1, 2, 4])
def test_probabilities_match_the_witten_bell_formula_and_sum_to_one(order):
    lm = CharNGram.train(TEXTS, NGramConfig(order=order))
    for history in [BOS * 3, BOS * 3 + "th", BOS * 3 + "the c", BOS * 3 + "zzz", BOS * 3 + "a cat"]:
        p = lm.next_probs(history)
        assert p.sum() == pytest.approx(1.0)
        for i, c in enumerate(lm.symbols):
            assert p[i] == pytest.approx(reference_prob(TEXTS, order, history, c, lm.symbols)), (history, c)


def test_an_alphabet_adds_unseen_characters_with_only_the_smoothing_share():
    lm = CharNGram.train(TEXTS, NGramConfig(order=3), alphabet=["q", "a", "é"])
    assert "q" in lm.index and "é" in lm.index and lm.symbols.count("a") == 1 and lm.symbols[-1] == EOS
    for history in [BOS * 2, BOS * 2 + "th", BOS * 2 + "zz"]:
        p = lm.next_probs(history)
        assert p.sum() == pytest.approx(1.0)
        for i, c in enumerate(lm.symbols):
            assert p[i] == pytest.approx(reference_prob(TEXTS, 3, history, c, lm.symbols)), (history, c)
        assert 0 < p[lm.index["q"]] < p[lm.index["t"]]
    with pytest.raises(SpeechLMError, match="never occurs"):
        CharNGram.train(TEXTS, NGramConfig(order=3)).log_prob("a qat")
    assert math.isfinite(lm.log_prob("a qat")[0])


def test_longer_context_predicts_in_domain_text_better():
    texts = ["set an alarm for seven thirty", "set a timer for ten minutes", "play some jazz music"] * 5
    scores = {}
    for order in (1, 3, 6):
        lm = CharNGram.train(texts, NGramConfig(order=order))
        lp, n = lm.log_prob("set an alarm for ten minutes")
        scores[order] = math.exp(-lp / n)
    assert scores[6] < scores[3] < scores[1]


def test_save_load_round_trip_and_errors(tmp_path):
    lm = CharNGram.train(TEXTS, NGramConfig(order=3))
    lm.save(tmp_path / "ng")
    back = CharNGram.load(tmp_path / "ng")
    assert back.symbols == lm.symbols and back.cfg == lm.cfg
    np.testing.assert_allclose(back.next_probs(BOS * 2 + "the"), lm.next_probs(BOS * 2 + "the"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "ngram.json.gz").write_bytes(b"not gzip")
    with pytest.raises(CheckpointError, match="not a readable n-gram"):
        CharNGram.load(tmp_path / "bad")
    with pytest.raises(SpeechLMError, match="empty text"):
        CharNGram.train(["", "  ,. "])
    with pytest.raises(SpeechLMError, match="never occurs"):
        lm.log_prob("xyz")
