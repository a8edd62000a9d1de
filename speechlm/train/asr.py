"""Train a CTC speech recognizer from a manifest: the recipe behind ``speechlm train``."""

from __future__ import annotations

from pathlib import Path

import torch

from speechlm.config import ASRConfig, format_config, from_dict, save_config
from speechlm.data.batching import SpeechDataset
from speechlm.data.manifest import filter_utterances, read_manifest
from speechlm.data.tokenizer import load_tokenizer, train_tokenizer
from speechlm.errors import CheckpointError, SpeechLMError
from speechlm.models.asr import SpeechRecognizer, count_parameters
from speechlm.objectives.ctc import ctc_loss
from speechlm.train.checkpoint import (
    CONFIG_FILE,
    latest_checkpoint,
    load_weights,
    read_config_json,
    resolve_model_dir,
    save_model_dir,
)
from speechlm.train.finetune import ENCODER_PREFIX, encoder_param_groups, labeled_subset, load_pretrained_encoder, recognizer_tokenizer
from speechlm.train.loop import TrainResult, is_main_process, train


def build_model(cfg: ASRConfig, vocab_size: int) -> SpeechRecognizer:
    return SpeechRecognizer(cfg.features, cfg.spec_augment, cfg.encoder, vocab_size)


def train_asr(cfg: ASRConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train on ``cfg.data.train_manifest``; the final model directory is ``run_dir/model``."""
    run_dir = Path(run_dir)
    if not cfg.data.train_manifest:
        raise SpeechLMError("data.train_manifest is not set (pass --train-manifest or data.train_manifest=PATH)")
    utts = read_manifest(cfg.data.train_manifest, require_text=True)
    utts, skipped = filter_utterances(utts, cfg.data.min_duration, cfg.data.max_duration, require_text=True)
    if any(skipped.values()):
        print(f"skipped utterances: {skipped}")
    if not utts:
        raise SpeechLMError(f"{cfg.data.train_manifest}: no usable utterances (skipped: {skipped})")
    ft = cfg.finetune
    if ft.labeled_fraction < 1 or ft.labeled_minutes > 0:
        n_all, minutes_all = len(utts), sum(u.duration for u in utts) / 60
        utts = labeled_subset(utts, ft)
        print(f"labeled subset: {len(utts)} of {n_all} utterances, {sum(u.duration for u in utts) / 60:.1f} of {minutes_all:.1f} minutes")
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        tokenizer = load_tokenizer(ckpt)  # the vocabulary must not change under a resumed model
    elif ft.init_head:
        tokenizer, cfg = recognizer_tokenizer(cfg, utts, cfg.data.train_manifest)  # the recognizer's own vocabulary, adapted
    else:
        tokenizer = train_tokenizer(cfg.tokenizer, [u.text for u in utts])
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, tokenizer.vocab_size)
    print(format_config(cfg))
    if ft.init and ckpt is None:
        print(f"init from {ft.init}: {load_pretrained_encoder(model, cfg, (ENCODER_PREFIX, 'head.') if ft.init_head else (ENCODER_PREFIX,))}")
    groups = encoder_param_groups(model, ft)
    print(
        f"model: {count_parameters(model) / 1e6:.2f} M parameters ({count_parameters(model, trainable_only=True) / 1e6:.2f} M trainable), "
        f"vocabulary {tokenizer.vocab_size}, {len(utts)} utterances"
    )
    save_config(cfg, run_dir / CONFIG_FILE)
    dataset = SpeechDataset(utts, tokenizer, cfg.augment, seed=cfg.train.seed, progress=progress)
    print(f"training audio: {dataset.durations.sum() / 3600:.2f} h")

    def loss_fn(model, batch):
        out = model(batch.audio, batch.audio_lens)
        return ctc_loss(out.logits, out.lens, batch.tokens, batch.token_lens)

    def save_extras(d: Path) -> None:
        save_config(cfg, d / CONFIG_FILE)
        tokenizer.save(d)

    result = train(model, dataset, cfg.train, run_dir, loss_fn, save_extras, resume=resume, progress=progress, param_groups=groups)
    if not is_main_process():
        return result

    save_model_dir(run_dir / "model", model, save_extras, {"steps": result.steps, "final_loss": result.final_loss})
    return result


def load_model_dir(model_dir: str | Path):
    """(config, model in eval mode, tokenizer) from a model directory or a run directory."""
    d = resolve_model_dir(model_dir)
    data = read_config_json(d)
    if "tokenizer" not in data:
        raise CheckpointError(f"{model_dir}: not a speech recognizer (its config has no tokenizer; a pretrained encoder is fine-tuned with `speechlm finetune --init`)")
    cfg = from_dict(ASRConfig, data, str(d / CONFIG_FILE))
    tokenizer = load_tokenizer(d)
    model = build_model(cfg, tokenizer.vocab_size)
    load_weights(model, d)
    model.eval()
    return cfg, model, tokenizer
