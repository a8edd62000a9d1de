"""Shallow LM fusion in CTC prefix beam search: exactness, incremental LM states, tokenizer checks."""

import itertools
import math

import numpy as np
import pytest
import torch

from speechlm.data.tokenizer import CharTokenizer, SentencePieceTokenizer, TokenizerConfig
from speechlm.decode.ctc import DecodingOptions, decode, prefix_beam_search
from speechlm.decode.lm_fusion import NeuralFusion, NGramFusion, load_fusion_lm
from speechlm.errors import SpeechLMError
from speechlm.models.lm import LanguageModel, LMConfig, special_tokens
from speechlm.models.ngram import BOS, EOS, CharNGram, NGramConfig

from .test_ctc import collapse

ASR = CharTokenizer(["a", "b"])  # ids: 0 blank, 1 'a', 2 'b'


def brute_force_fused(log_probs, lm, weight, bonus):
    """argmax over label sequences of log P_ctc(y) + weight * log P_lm(y + end) + bonus * |y|."""
    T, V = log_probs.shape
    ctc: dict[tuple, float] = {}
    for path in itertools.product(range(V), repeat=T):
        key = collapse(path)
        ctc[key] = np.logaddexp(ctc.get(key, -math.inf), sum(log_probs[t, s] for t, s in enumerate(path)))

    def lm_score(y):
        lm.prepare([y[:i] for i in range(len(y) + 1)])
        return sum(lm.log_probs(y[:i])[y[i]] for i in range(len(y))) + lm.log_probs(y)[0]

    return max(ctc, key=lambda y: ctc[y] + weight * lm_score(y) + bonus * len(y))


@pytest.mark.parametrize("seed", range(6))
def test_fused_beam_search_is_exact_with_a_wide_beam(seed):
    rng = np.random.default_rng(seed)
    log_probs = torch.log_softmax(torch.tensor(rng.normal(size=(5, 3)) * 1.5), -1).numpy()
    lm = NGramFusion(CharNGram.train(["ab", "abb", "ba", "aab"], NGramConfig(order=2)), ASR)
    for weight, bonus in [(0.0, 0.0), (1.0, 0.0), (2.0, 0.5)]:
        got = tuple(prefix_beam_search(log_probs, beam_size=500, token_prune=0.0, lm=lm, lm_weight=weight, lm_bonus=bonus))
        assert got == brute_force_fused(log_probs, lm, weight, bonus), (weight, bonus)


def test_lm_turns_an_ambiguous_frame_into_the_likely_spelling():
    asr = CharTokenizer(["a", "c", "e", "t"])
    # "c ? t" where the middle frame slightly prefers 'e' over 'a'
    frames = np.full((3, 5), -8.0)
    frames[0, 2] = frames[2, 4] = 0.0
    frames[1, 3], frames[1, 1] = math.log(0.55), math.log(0.45)
    lm = NGramFusion(CharNGram.train(["cat"] * 20 + ["act", "tea"], NGramConfig(order=3)), asr)
    plain = decode(torch.tensor(frames)[None], torch.tensor([3]), DecodingOptions("beam", beam_size=4))[0]
    fused = decode(torch.tensor(frames)[None], torch.tensor([3]), DecodingOptions("beam", beam_size=4, lm_weight=1.0), lm=lm)[0]
    assert asr.decode(plain) == "cet" and asr.decode(fused) == "cat"
    with pytest.raises(SpeechLMError, match="beam search"):
        decode(torch.tensor(frames)[None], torch.tensor([3]), DecodingOptions("greedy"), lm=lm)


def lm_and_tokenizer(arch, context=32):
    tok = CharTokenizer.train(["a b c"])
    sp = special_tokens(tok.vocab_size)
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(arch=arch, d_model=16, n_layers=2, n_heads=2, context=context, dropout=0.0), sp.vocab_size).eval()
    return model, tok, sp


@pytest.mark.parametrize("arch", ["causal", "lstm"])
def test_batched_incremental_states_match_a_full_forward(arch):
    model, tok, sp = lm_and_tokenizer(arch)
    asr = CharTokenizer(["c", "a", " "])  # different ids from the LM's: the fusion maps them
    fusion = NeuralFusion(model, tok, sp, asr)
    prefixes = [(), (1,), (2,), (1, 2), (1, 3, 2), (2, 2, 1, 3)]
    fusion.prepare(prefixes[-2:])  # ancestors are filled in on the way
    fusion.prepare(prefixes)
    for p in prefixes:
        ids = [sp.bos] + [tok._index[asr.chars[i - 1]] for i in p]
        logits = model(torch.tensor([ids])).logits[0, -1].detach().clone()
        logits[[0, sp.bos, sp.mask]] = float("-inf")
        want = logits.log_softmax(-1)[[sp.eos] + [tok._index[c] for c in asr.chars]].numpy()
        np.testing.assert_allclose(fusion.log_probs(p), want, atol=1e-5)


def test_ngram_fusion_scores_every_prefix_length_as_the_ngram_does():
    """Prefixes shorter than, as long as and longer than the n-gram's history all get the n-gram's
    next-character probabilities after the whole prefix (column 0: the end of the sentence)."""
    ngram = CharNGram.train(["abba", "aab", "babab", "bb"], NGramConfig(order=4))
    fusion = NGramFusion(ngram, ASR)
    text = "abbabaab"
    ids = tuple(ASR.encode(text))
    fusion.prepare([ids[:n] for n in range(len(ids) + 1)])
    for n in range(len(ids) + 1):
        want = np.log(ngram.next_probs(BOS * 3 + text[:n])[[ngram.index[c] for c in (EOS, "a", "b")]])
        assert np.allclose(fusion.log_probs(ids[:n]), want), n


def test_prefixes_past_the_context_are_scored_from_a_recent_window():
    model, tok, sp = lm_and_tokenizer("causal", context=8)
    fusion = NeuralFusion(model, tok, sp, CharTokenizer(["a", "b"]))
    long = tuple([1, 2] * 6)
    fusion.prepare([long])
    assert fusion.log_probs(long).shape == (3,) and np.isfinite(fusion.log_probs(long)).all()


def test_mismatched_tokenizers_and_masked_lms_are_refused(tmp_path):
    model, tok, sp = lm_and_tokenizer("causal")
    with pytest.raises(SpeechLMError, match="characters 'z'"):
        NeuralFusion(model, tok, sp, CharTokenizer(["a", "z"]))
    pieces = SentencePieceTokenizer.train(["a b c a b"] * 20, TokenizerConfig("unigram", 8))
    with pytest.raises(SpeechLMError, match="tokenizer mismatch"):
        NeuralFusion(model, tok, sp, pieces)
    with pytest.raises(SpeechLMError, match="character-level recognizer"):
        NGramFusion(CharNGram.train(["a b"]), pieces)
    with pytest.raises(SpeechLMError, match="never saw"):
        NGramFusion(CharNGram.train(["a b"]), CharTokenizer(["a", "q"]))
    fusion = NGramFusion(CharNGram.train(["a b"], alphabet=["a", "q"]), CharTokenizer(["a", "q"]))  # "q" declared, never seen
    fusion.prepare([()])
    assert np.isfinite(fusion.log_probs(())).all()
    mlm = LanguageModel(LMConfig(arch="mlm", d_model=16, n_layers=1, n_heads=2, context=16), sp.vocab_size)
    with pytest.raises(SpeechLMError, match="masked language model"):
        NeuralFusion(mlm, tok, sp, CharTokenizer(["a"]))
    CharNGram.train(["a b"], NGramConfig(order=2)).save(tmp_path / "ng")
    assert isinstance(load_fusion_lm(tmp_path / "ng", CharTokenizer(["a", "b", " "])), NGramFusion)
