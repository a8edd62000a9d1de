import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from speechlm.decode.ctc import DecodingOptions, decode, greedy_decode, prefix_beam_search
from speechlm.objectives.ctc import ctc_loss


def collapse(path):
    out = []
    prev = None
    for t in path:
        if t != prev and t != 0:
            out.append(t)
        prev = t
    return tuple(out)


def brute_force_best(log_probs: np.ndarray) -> tuple[tuple[int, ...], float]:
    """Most probable label sequence by summing every alignment path (exponential: tiny inputs only)."""
    T, V = log_probs.shape
    scores: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        lp = sum(log_probs[t, s] for t, s in enumerate(path))
        key = collapse(path)
        scores[key] = np.logaddexp(scores.get(key, -math.inf), lp)
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
