"""Fine-tuning from a pretrained encoder: labeled subsets, weight transfer, frozen and layer-wise learning rates.

``speechlm train`` and ``speechlm finetune`` run the same CTC recipe; these pieces make the
difference between "from scratch" and "from a pretrained encoder" one config section
(:class:`~speechlm.config.FinetuneConfig`), so both sides of a comparison share everything else.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from speechlm.config import ASRConfig, ConfigError, FinetuneConfig, from_dict
from speechlm.data.manifest import Utterance
from speechlm.data.tokenizer import Tokenizer, TokenizerConfig, load_tokenizer, unspellable
from speechlm.errors import CheckpointError, SpeechLMError
from speechlm.features import FeatureConfig
from speechlm.models.encoders import EncoderConfig
from speechlm.train.checkpoint import CONFIG_FILE, read_config_json, read_weights, resolve_model_dir
from speechlm.train.loop import ParamGroup

ENCODER_PREFIX = "encoder."
# fields that change parameter shapes or meaning; dropout may differ between pretraining and fine-tuning
_SHAPE_FIELDS = ("arch", "d_model", "n_layers", "n_heads", "ff_mult", "conv_kernel", "subsampling_channels")


def labeled_subset(utts: list[Utterance], cfg: FinetuneConfig) -> list[Utterance]:
    """A deterministic subset: a ``subset_seed`` permutation, cut at a fraction or a number of minutes.

    With the same seed, a smaller subset is a prefix of a larger one, so label-efficiency
    curves add labels rather than swap them.
    """
    order = np.random.default_rng(cfg.subset_seed).permutation(len(utts))
    if cfg.labeled_minutes > 0:
        durations = np.array([utts[i].duration for i in order])
        n = int(np.searchsorted(np.cumsum(durations), cfg.labeled_minutes * 60) + 1)
    else:
        n = math.ceil(cfg.labeled_fraction * len(utts))
    return [utts[i] for i in sorted(order[: max(1, min(n, len(utts)))])]


@dataclasses.dataclass(frozen=True)
class PretrainedEncoder:
    directory: Path
    encoder: EncoderConfig
    features: FeatureConfig
    weights: dict  # name -> tensor, every tensor in the checkpoint


def read_pretrained(path: str | Path) -> PretrainedEncoder:
    """The encoder and feature configs and the weights of a pretrained (or fine-tuned) speech model."""
    d = resolve_model_dir(path)
    data = read_config_json(d)
    if "encoder" not in data or "features" not in data:
        raise CheckpointError(f"{path}: not a speech model (its {CONFIG_FILE} has no encoder/features section)")
    where = str(d / CONFIG_FILE)
    encoder = from_dict(EncoderConfig, data["encoder"], f"{where}.encoder")
    features = from_dict(FeatureConfig, data["features"], f"{where}.features")
    return PretrainedEncoder(d, encoder, features, read_weights(d))


def config_from_pretrained(cfg: ASRConfig, init: str | Path) -> ASRConfig:
    """``cfg`` with the encoder and features of the pretrained model at ``init`` (dropout kept from ``cfg``)."""
    pre = read_pretrained(init)
    encoder = dataclasses.replace(pre.encoder, dropout=cfg.encoder.dropout)
    return dataclasses.replace(cfg, encoder=encoder, features=pre.features, finetune=dataclasses.replace(cfg.finetune, init=str(init)))


@dataclasses.dataclass
class LoadReport:
    loaded: list[str]  # tensors copied from the checkpoint
    new: list[str]  # tensors of the model the checkpoint does not provide (freshly initialised)
    ignored: list[str]  # tensors of the checkpoint the model does not use

    def __str__(self) -> str:
        def names(xs: list[str]) -> str:
            return ", ".join(xs[:6]) + (f" ... (+{len(xs) - 6})" if len(xs) > 6 else "") if xs else "none"

        return f"loaded {len(self.loaded)} tensors; newly initialised: {names(self.new)}; ignored: {names(self.ignored)}"


def load_pretrained_encoder(model: torch.nn.Module, cfg: ASRConfig, prefixes: tuple[str, ...] = (ENCODER_PREFIX,)) -> LoadReport:
    """Copy ``encoder.*`` (and whatever else ``prefixes`` name) from ``cfg.finetune.init`` into ``model``;
    everything else stays as initialised."""
    pre = read_pretrained(cfg.finetune.init)
    mismatch = [f for f in _SHAPE_FIELDS if getattr(pre.encoder, f) != getattr(cfg.encoder, f)]
    if mismatch:
        theirs = ", ".join(f"{f}={getattr(pre.encoder, f)}" for f in mismatch)
        ours = ", ".join(f"{f}={getattr(cfg.encoder, f)}" for f in mismatch)
        raise CheckpointError(f"{cfg.finetune.init}: pretrained encoder has {theirs}, this model has {ours}")
    if pre.features != cfg.features:
        raise CheckpointError(f"{cfg.finetune.init}: pretrained on features {pre.features}, this model uses {cfg.features}")
    own = model.state_dict()
    loaded, ignored = [], []
    for name, tensor in pre.weights.items():
        if not name.startswith(prefixes) or name not in own:
            ignored.append(name)
            continue
        if own[name].shape != tensor.shape:
            raise CheckpointError(f"{cfg.finetune.init}: {name} has shape {tuple(tensor.shape)}, the model expects {tuple(own[name].shape)}")
        own[name] = tensor
        loaded.append(name)
    if not loaded:
        raise CheckpointError(f"{cfg.finetune.init}: no encoder weights found in {pre.directory}")
    model.load_state_dict(own)
    return LoadReport(loaded, [n for n in own if n not in set(loaded)], ignored)


def recognizer_tokenizer(cfg: ASRConfig, utts: list[Utterance], manifest: str) -> tuple[Tokenizer, ASRConfig]:
    """``finetune.init_head``: the tokenizer of the recognizer at ``cfg.finetune.init`` and ``cfg`` with its tokenizer
    section, after checking that it spells every transcript in ``utts`` (from ``manifest``)."""
    init = cfg.finetune.init
    if not init:
        raise ConfigError("finetune.init_head=true needs finetune.init: the speech recognizer to adapt (--init)")
    d = resolve_model_dir(init)
    data = read_config_json(d)
    if "tokenizer" not in data:
        raise CheckpointError(f"{init}: finetune.init_head needs a speech recognizer, and this model has no tokenizer "
                              "(a pretrained encoder: leave init_head off and a new output layer is trained)")
    tokenizer = load_tokenizer(d)
    for u in utts:
        missing = unspellable(tokenizer, u.text)
        if missing is not None:
            raise SpeechLMError(f"{manifest}: the transcript of {u.audio_filepath} ({u.text!r}) cannot be spelled with the vocabulary of {init}"
                                + (f": it never saw {missing!r}" if missing else "") + "; without finetune.init_head a new vocabulary is learned")
    return tokenizer, dataclasses.replace(cfg, tokenizer=from_dict(TokenizerConfig, data["tokenizer"], str(d / CONFIG_FILE) + ".tokenizer"))


def encoder_param_groups(model: torch.nn.Module, cfg: FinetuneConfig) -> list[ParamGroup]:
    """Layer-wise lr decay and freezing for ``model.encoder``; every other module trains at the full rate.

    Block i (0-based, of L) gets ``layer_decay ** (L - i)``, the subsampling front end
    ``layer_decay ** (L + 1)``, the encoder's final norm 1. With ``freeze_encoder_steps == -1``
    the encoder is frozen (no gradients at all).
    """
    encoder = model.encoder
    if cfg.freeze_encoder_steps < 0:
        for p in encoder.parameters():
            p.requires_grad_(False)
    freeze = max(cfg.freeze_encoder_steps, 0)
    layers = getattr(encoder, "blocks", None) or getattr(encoder, "layers")
    L = len(layers)
    groups = [ParamGroup(list(encoder.subsampling.parameters()), cfg.layer_decay ** (L + 1), freeze)]
    groups += [ParamGroup(list(blk.parameters()), cfg.layer_decay ** (L - i), freeze) for i, blk in enumerate(layers)]
    in_groups = {id(p) for g in groups for p in g.params}
    groups.append(ParamGroup([p for p in encoder.parameters() if id(p) not in in_groups], 1.0, freeze))
    groups.append(ParamGroup([p for n, p in model.named_parameters() if not n.startswith(ENCODER_PREFIX)]))
    return groups
