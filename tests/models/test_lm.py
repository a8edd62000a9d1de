"""Language models: causality, KV cache equivalence, bidirectional MLM, tied embeddings, masking."""

import dataclasses

import pytest
import torch

from speechlm.models.lm import LanguageModel, LMConfig, mask_tokens, special_tokens

SP = special_tokens(30)


def lm(arch="causal", **kw) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(LMConfig(arch=arch, d_model=32, n_layers=2, n_heads=4, context=32, dropout=0.0, **kw), SP.vocab_size).eval()


@pytest.mark.parametrize("arch", ["causal", "lstm"])
def test_future_tokens_do_not_change_past_logits(arch):
    model = lm(arch)
    x = torch.randint(1, 30, (1, 10))
    y = x.clone()
    y[0, 6:] = torch.randint(1, 30, (4,))
    a, b = model(x).logits, model(y).logits
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_mlm_attends_both_ways():
    model = lm("mlm")
    x = torch.randint(1, 30, (1, 10))
    y = x.clone()
    y[0, 8] = (x[0, 8] % 29) + 1
    assert not torch.allclose(model(x).logits[:, :5], model(y).logits[:, :5])


@pytest.mark.parametrize("arch", ["causal", "lstm"])
def test_incremental_decoding_with_cache_matches_full_forward(arch):
    model = lm(arch)
    x = torch.randint(1, 30, (2, 12))
    full = model(x).logits
    out = model(x[:, :5])
    steps = [out.logits]
    for t in range(5, 12):
        out = model(x[:, t : t + 1], cache=out.cache)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)


def test_right_padding_does_not_change_valid_positions():
    model = lm("mlm")
    x = torch.randint(1, 30, (1, 6))
    padded = torch.cat([x, torch.zeros(1, 4, dtype=torch.long)], 1)
    torch.testing.assert_close(model(padded, torch.tensor([6])).logits[:, :6], model(x).logits, atol=1e-5, rtol=1e-4)


def test_tied_embeddings_share_one_matrix():
    model = lm()
    assert model.out.weight is model.embed.weight
    model = lm(tie_embeddings=False)
    assert model.out.weight.data_ptr() != model.embed.weight.data_ptr()


def test_mask_tokens_follows_bert_rates():
    torch.manual_seed(0)
    tokens = torch.randint(1, 30, (64, 100))
    lens = torch.full((64,), 100)
    lens[0] = 50
    inputs, targets = mask_tokens(tokens, lens, SP, 0.15)
    chosen = targets != -100
    assert abs(chosen.float().mean().item() - 0.15) < 0.02
    assert not chosen[0, 50:].any()
    assert abs((inputs[chosen] == SP.mask).float().mean().item() - 0.8) < 0.05
    assert torch.equal(targets[chosen], tokens[chosen])


@pytest.mark.parametrize("field,value", [("d_model", 64), ("n_layers", 3), ("n_heads", 2), ("ff_mult", 2), ("tie_embeddings", False), ("arch", "lstm")])
def test_every_lm_field_changes_the_model(field, value):
    base = LMConfig(d_model=32, n_layers=2, n_heads=4)
    x = torch.randint(1, 40, (1, 8))

    def signature(cfg):
        torch.manual_seed(0)
        m = LanguageModel(cfg, 40).eval()
        return [tuple(v.shape) for v in m.state_dict().values()], m(x).logits.sum().item()

    assert signature(base) != signature(dataclasses.replace(base, **{field: value}))
