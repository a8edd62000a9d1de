import pytest
import torch

from speechlm.decode.generate import GenerationOptions, filter_logits, generate
from speechlm.errors import SpeechLMError
from speechlm.models.lm import LanguageModel, LMConfig, special_tokens

SP = special_tokens(20)


def model(arch="causal") -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(LMConfig(arch=arch, d_model=32, n_layers=1, n_heads=2, context=16), SP.vocab_size).eval()


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.isfinite(filter_logits(logits, 2, 1.0)).tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, 0, 0.7)).tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, 0, 0.5)).tolist() == [True, False, False, False]
    assert torch.isfinite(filter_logits(logits, 0, 0.81)).tolist() == [True, True, True, False]
    assert torch.isfinite(filter_logits(logits, 0, 5e-324)).tolist() == [True, False, False, False]  # 0 in float32


def test_greedy_is_the_argmax_path_and_sampling_is_seeded():
    m = model()
    ids = generate(m, [3, 4], SP, GenerationOptions(max_new_tokens=4))
    seq = [SP.bos, 3, 4]
    for i in ids:  # each greedy token is the argmax of a full forward over the sequence so far
        logits = m(torch.tensor([seq])).logits[0, -1]
        logits[[0, SP.bos, SP.mask]] = float("-inf")
        assert int(logits.argmax()) == i
        seq.append(i)
    a = generate(m, [3], SP, GenerationOptions(max_new_tokens=8, temperature=1.0, seed=5))
    b = generate(m, [3], SP, GenerationOptions(max_new_tokens=8, temperature=1.0, seed=5))
    assert a == b


def test_generation_stops_at_the_context():
    ids = generate(model(), [3] * 10, SP, GenerationOptions(max_new_tokens=100, temperature=1.0))
    assert len(ids) <= 16 - 11


def test_bad_requests_are_clear_errors():
    with pytest.raises(SpeechLMError, match="context"):
        generate(model(), [3] * 20, SP, GenerationOptions())
    with pytest.raises(SpeechLMError, match="masked language model"):
        generate(model("mlm"), [3], SP, GenerationOptions())
    with pytest.raises(ValueError):
        GenerationOptions(top_p=0)


@pytest.mark.parametrize("temperature", [2.2e-309, 1e-30, 1e-8, 1e-4, 1e4])
def test_extreme_temperatures_sample_valid_tokens(temperature):
    """Found by fuzzing the server: logits / 1e-30 overflowed to inf, and a float32 0 / 2.2e-309
    is NaN, so softmax gave NaN."""
    m = model()
    greedy = generate(m, [3, 4], SP, GenerationOptions(max_new_tokens=4))
    ids = generate(m, [3, 4], SP, GenerationOptions(max_new_tokens=4, temperature=temperature, top_k=3, top_p=0.5))
    assert all(0 < i < SP.bos for i in ids)
    if temperature < 1e-6:
        assert ids == greedy  # a vanishing temperature is greedy decoding
