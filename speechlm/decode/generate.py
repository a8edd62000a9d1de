"""Text generation from a causal or LSTM language model: greedy, temperature, top-k and top-p sampling.

The prompt is read in one call (filling the key/value cache), then one token per call.

>>> import torch
>>> from speechlm.models.lm import LanguageModel, LMConfig, special_tokens
>>> sp = special_tokens(10)
>>> lm = LanguageModel(LMConfig(d_model=16, n_layers=1, n_heads=2, context=16), sp.vocab_size).eval()
>>> ids = generate(lm, [3, 4], sp, GenerationOptions(max_new_tokens=5))
>>> len(ids) <= 5 and all(0 < i < sp.bos for i in ids)
True
"""

from __future__ import annotations

import dataclasses

import torch

from speechlm.errors import SpeechLMError
from speechlm.models.lm import LanguageModel, SpecialTokens


MIN_TEMPERATURE = 1e-5  # below it, sampling is greedy: float32 logits / 1e-309 is 0 / 0


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 40  # stop after this many tokens (or at EOS, or at the model's context)
    temperature: float = 0.0  # 0 (or below 1e-5) = greedy; otherwise sample from softmax(logits / temperature)
    top_k: int = 0  # sample only among the k most likely tokens (0 = all)
    top_p: float = 1.0  # sample only from the smallest set of tokens whose probability reaches top_p
    seed: int = 0  # sampling generator seed

    def __post_init__(self):
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.max_new_tokens < 0:
            raise ValueError("generation needs temperature >= 0, 0 < top_p <= 1, top_k >= 0, max_new_tokens >= 0")


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """``(V,)`` logits with everything outside the top-k / nucleus set to -inf."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already reach top_p
        drop = probs.cumsum(-1) - probs >= top_p
        drop[0] = False  # the most likely token always stays (a top_p that rounds to 0 in float32 would drop it)
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


@torch.no_grad()
def generate(model: LanguageModel, prompt: list[int], special: SpecialTokens, opts: GenerationOptions) -> list[int]:
    """Token ids generated after ``BOS prompt`` (EOS and specials excluded)."""
    if model.cfg.arch == "mlm":
        raise SpeechLMError("a masked language model does not generate text; use a causal or lstm model")
    ids = [special.bos, *prompt]
    if len(ids) >= model.cfg.context:
        raise SpeechLMError(f"prompt of {len(prompt)} tokens does not fit the model's context of {model.cfg.context} tokens")
    gen = torch.Generator().manual_seed(opts.seed)
    device = next(model.parameters()).device
    out = model(torch.tensor([ids], device=device))
    new: list[int] = []
    while len(new) < opts.max_new_tokens and len(ids) + len(new) < model.cfg.context:
        logits = out.logits[0, -1].float().cpu()
        logits[special.bos] = logits[special.mask] = logits[0] = float("-inf")  # never padding or specials
        if opts.temperature < MIN_TEMPERATURE:
            nxt = int(logits.argmax())
        else:
            # shift by the max first: a small temperature then sends the others to -inf, not inf - inf = nan
            scaled = (logits - logits.max()) / opts.temperature
            probs = filter_logits(scaled, opts.top_k, opts.top_p).softmax(-1)
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        if nxt == special.eos:
            break
        new.append(nxt)
        out = model(torch.tensor([[nxt]], device=device), cache=out.cache)
    return new
