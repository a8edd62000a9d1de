import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from speechlm.decode.ctc import DecodingOptions, beam_hypotheses, decode, decode_nbest, greedy_decode, prefix_beam_search
from speechlm.errors import SpeechLMError
from speechlm.objectives.ctc import ctc_loss


def collapse(path):
    out = []
    prev = None
    for t in path:
        if t != prev and t != 0:
            out.append(t)
        prev = t
    return tuple(out)


def brute_force_scores(log_probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """Every label sequence's log-probability, summed over its alignment paths (exponential: tiny inputs only)."""
    T, V = log_probs.shape
    scores: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        lp = sum(log_probs[t, s] for t, s in enumerate(path))
        key = collapse(path)
        scores[key] = np.logaddexp(scores.get(key, -math.inf), lp)
    return scores


def brute_force_best(log_probs: np.ndarray) -> tuple[tuple[int, ...], float]:
    """Most probable label sequence by summing every alignment path."""
    scores = brute_force_scores(log_probs)
    best = max(scores, key=scores.get)
    return best, scores[best]


@pytest.mark.parametrize("seed", range(8))
def test_prefix_beam_search_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    T, V = 6, 3
    log_probs = torch.log_softmax(torch.tensor(rng.normal(size=(T, V)) * 2), -1).numpy()
    best, _ = brute_force_best(log_probs)
    # a beam as wide as the number of possible prefixes is exact
    assert tuple(prefix_beam_search(log_probs, beam_size=200, token_prune=0.0)) == best


@pytest.mark.parametrize("seed", range(4))
def test_beam_hypotheses_are_the_exact_n_best_with_their_log_probabilities(seed):
    rng = np.random.default_rng(seed)
    log_probs = torch.log_softmax(torch.tensor(rng.normal(size=(6, 3)) * 2), -1).numpy()
    exact = sorted(brute_force_scores(log_probs).items(), key=lambda kv: kv[1], reverse=True)[:5]
    hyps = beam_hypotheses(log_probs, beam_size=200, token_prune=0.0)
    assert [tuple(ids) for ids, _ in hyps[:5]] == [k for k, _ in exact]
    assert [s for _, s in hyps[:5]] == pytest.approx([s for _, s in exact])
    assert hyps[0][0] == prefix_beam_search(log_probs, beam_size=200, token_prune=0.0)
    narrow = beam_hypotheses(log_probs, beam_size=3)
    assert len(narrow) <= 3 and [s for _, s in narrow] == sorted((s for _, s in narrow), reverse=True)


@pytest.mark.parametrize("seed", range(4))
def test_blank_only_frames_keep_the_n_best_exact(seed):
    """Frames where pruning leaves only the blank take a shortcut; the N best must still be the exact ones over the
    paths pruning keeps (tokens below token_prune never extend a prefix)."""
    rng = np.random.default_rng(seed)
    log_probs = torch.log_softmax(torch.tensor(rng.normal(size=(7, 3)) * 2), -1).numpy()
    log_probs[1::2] = np.log([0.98, 0.01, 0.01])  # every other frame: blank only, once tokens below 0.05 are pruned
    kept = np.where(log_probs >= math.log(0.05), log_probs, -math.inf)
    kept[np.arange(7), log_probs.argmax(1)] = log_probs.max(1)  # the beam always keeps a frame's best token
    exact = sorted(brute_force_scores(kept).items(), key=lambda kv: kv[1], reverse=True)[:5]
    hyps = beam_hypotheses(log_probs, beam_size=200, token_prune=0.05)
    assert [tuple(ids) for ids, _ in hyps[:5]] == [k for k, _ in exact]
    assert [s for _, s in hyps[:5]] == pytest.approx([s for _, s in exact])


def test_decode_nbest_needs_a_beam_at_least_as_wide():
    torch.manual_seed(0)
    logits, lens = torch.randn(2, 12, 5), torch.tensor([12, 7])
    lists = decode_nbest(logits, lens, DecodingOptions("beam", beam_size=4), 3)
    assert [len(x) <= 3 for x in lists] == [True, True]
    assert [x[0][0] for x in lists] == decode(logits, lens, DecodingOptions("beam", beam_size=4))
    with pytest.raises(SpeechLMError, match="beam search"):
        decode_nbest(logits, lens, DecodingOptions("greedy"), 2)
    with pytest.raises(SpeechLMError, match="between 1 and the beam size"):
        decode_nbest(logits, lens, DecodingOptions("beam", beam_size=4), 5)


def test_greedy_collapses_repeats_and_blanks():
    ids = torch.tensor([[0, 1, 1, 0, 1, 2, 2, 0, 0]])
    lp = F.one_hot(ids, 3).float().log()
    assert greedy_decode(lp, torch.tensor([9])) == [[1, 1, 2]]
    assert greedy_decode(lp, torch.tensor([3])) == [[1]]


def test_beam_and_greedy_agree_on_peaked_input():
    torch.manual_seed(0)
    logits = torch.randn(2, 20, 6) * 8
    lens = torch.tensor([20, 12])
    assert decode(logits, lens, DecodingOptions("beam", beam_size=4)) == decode(logits, lens)


def test_ctc_loss_matches_torch_mean():
    torch.manual_seed(0)
    logits = torch.randn(3, 30, 7)
    lens = torch.tensor([30, 25, 18])
    targets = torch.randint(1, 7, (3, 8))
    tlens = torch.tensor([8, 5, 3])
    ours = ctc_loss(logits, lens, targets, tlens)
    ref = F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), targets, lens, tlens, reduction="sum") / tlens.sum()
    torch.testing.assert_close(ours.loss, ref)
    assert ours.num_tokens == 16


def test_decoding_options_validate():
    with pytest.raises(ValueError, match="greedy"):
        DecodingOptions(method="viterbi")
