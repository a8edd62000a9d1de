"""Parameter-efficient fine-tuning of a speech encoder: LoRA (through ``peft``) or bottleneck adapters.

Both freeze every encoder weight and add a few trainable ones; the task head always trains.
Only the trainable tensors need saving (:func:`trainable_state`); LoRA can be merged back into
plain linear layers for inference (:func:`merge_lora`), adapters cannot (they are non-linear).

>>> import torch
>>> from speechlm.models.encoders import build_encoder, EncoderConfig
>>> enc = build_encoder(EncoderConfig(d_model=32, n_layers=2, n_heads=2, conv_kernel=3), 80)
>>> holder = torch.nn.Module(); holder.encoder = enc
>>> n = apply_peft(holder, PeftConfig(method="lora", rank=4))
>>> n == sum(p.numel() for p in holder.parameters() if p.requires_grad)
True
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from speechlm.errors import SpeechLMError

METHODS = ("none", "lora", "adapter")


@dataclasses.dataclass(frozen=True)
class PeftConfig:
    method: str = "none"  # "none" (train weights as finetune says), "lora" or "adapter" (encoder frozen)
    rank: int = 8  # LoRA rank, or the adapter's bottleneck width
    alpha: float = 16.0  # LoRA: the update B A x is scaled by alpha / rank
    dropout: float = 0.0  # LoRA: dropout on the input of the low-rank path
    targets: tuple[str, ...] = ()  # LoRA: encoder Linear names or name suffixes (e.g. "attn.qkv"); () = all in the blocks

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"peft.method must be one of {METHODS}, got {self.method!r}")
        if self.rank < 1:
            raise ValueError(f"peft.rank must be >= 1, got {self.rank}")


class Adapter(nn.Module):
    """Residual bottleneck (Houlsby et al., 2019): x + W_up gelu(W_down LN(x)); W_up starts at zero,
    so an untrained adapter is the identity."""

    def __init__(self, d_model: int, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.down = nn.Linear(d_model, width)
        self.up = nn.Linear(width, d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.nn.functional.gelu(self.down(self.norm(x))))


class AdaptedBlock(nn.Module):
    """A block followed by an adapter, with the block's own signature: an encoder block's
    ``(x, mask) -> x`` or a language-model block's ``(x, mask, cache) -> (x, cache)``."""

    def __init__(self, block: nn.Module, d_model: int, width: int):
        super().__init__()
        self.block = block
        self.adapter = Adapter(d_model, width)

    def forward(self, *args):
        out = self.block(*args)
        if isinstance(out, tuple):
            return (self.adapter(out[0]), *out[1:])
        return self.adapter(out)


def _lora_targets(encoder: nn.Module, cfg: PeftConfig) -> list[str]:
    linears = [n for n, m in encoder.named_modules() if isinstance(m, nn.Linear) and n.startswith("blocks.")]
    if not linears:
        raise SpeechLMError("LoRA needs Linear layers in Transformer/Conformer/CNN blocks; an LSTM has none")
    if not cfg.targets:
        return linears
    chosen = [n for n in linears if any(n == t or n.endswith("." + t) for t in cfg.targets)]
    unknown = [t for t in cfg.targets if not any(n == t or n.endswith("." + t) for n in linears)]
    if unknown:
        suffixes = sorted({n.split(".", 2)[-1] for n in linears})
        raise SpeechLMError(f"peft.targets {unknown} match no encoder Linear layer; choose among {suffixes}")
    return chosen


def apply_peft(model: nn.Module, cfg: PeftConfig, part: str = "encoder") -> int:
    """Freeze ``model.<part>`` (the speech encoder, or ``"lm"`` for a text classifier) and add LoRA
    or adapters to it, in place; returns the number of trainable parameters of the whole model
    afterwards. ``method="none"`` changes nothing."""
    if cfg.method == "none":
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    encoder = getattr(model, part)
    for p in encoder.parameters():
        p.requires_grad_(False)
    if cfg.method == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=_lora_targets(encoder, cfg))
        inject_adapter_in_model(lora, encoder)  # adds lora_A / lora_B (trainable) beside each frozen Linear
    else:
        blocks = getattr(encoder, "blocks", None)
        if blocks is None:
            raise SpeechLMError("adapters go after Transformer/Conformer/CNN blocks; an LSTM has none")
        d_model = encoder.cfg.d_model
        for i, blk in enumerate(blocks):
            blocks[i] = AdaptedBlock(blk, d_model, cfg.rank)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a parameter-efficient checkpoint must keep: everything that trains."""
    keep = {n for n, p in model.named_parameters() if p.requires_grad}
    return {n: t.detach().clone() for n, t in model.state_dict().items() if n in keep}


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA update into its base Linear and drop the LoRA modules; returns how many
    layers were merged. The merged model computes the same function with plain weights."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
            merged += 1
    if not merged:
        raise SpeechLMError("the model has no LoRA layers to merge")
    return merged
