"""Self-supervised speech pretraining from an unlabeled manifest: the recipe behind ``speechlm pretrain speech``."""

from __future__ import annotations

from pathlib import Path

import torch

from speechlm.config import SpeechPretrainConfig, format_config, save_config
from speechlm.data.batching import SpeechDataset
from speechlm.data.manifest import filter_utterances, read_manifest
from speechlm.errors import SpeechLMError
from speechlm.models.asr import count_parameters
from speechlm.models.speech_ssl import SpeechPretrainer, fit_kmeans
from speechlm.objectives.masked_prediction import masked_prediction_loss
from speechlm.train.checkpoint import CONFIG_FILE, latest_checkpoint, load_weights, save_model_dir
from speechlm.train.loop import TrainConfig, TrainResult, is_main_process, train


def build_pretrainer(cfg: SpeechPretrainConfig) -> SpeechPretrainer:
    return SpeechPretrainer(cfg.features, cfg.encoder, cfg.ssl)


def load_unlabeled(cfg: SpeechPretrainConfig, progress: bool = True) -> SpeechDataset:
    """The manifest's audio within the duration bounds, silent recordings skipped (and counted)."""
    if not cfg.data.train_manifest:
        raise SpeechLMError("data.train_manifest is not set (pass --train-manifest or data.train_manifest=PATH)")
    utts = read_manifest(cfg.data.train_manifest)  # transcripts, if any, are ignored
    keep, skipped = filter_utterances(utts, cfg.data.min_duration, cfg.data.max_duration, require_text=False)
    skipped["silent"] = 0
    dataset = SpeechDataset(keep, None, cfg.augment, seed=cfg.train.seed, progress=progress)
    silent = set(dataset.silent())
    if silent:
        skipped["silent"] = len(silent)
        for i in sorted(silent)[:5]:
            print(f"skipping silent audio: {dataset.utts[i].audio_filepath}")
        dataset = dataset.select([i for i in range(len(dataset)) if i not in silent])
    if any(skipped.values()):
        print(f"skipped utterances: {skipped}")
    if len(dataset) == 0:
        raise SpeechLMError(f"{cfg.data.train_manifest}: no usable audio for pretraining (skipped: {skipped})")
    return dataset


def pretrain_speech(cfg: SpeechPretrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> TrainResult:
    """Masked-prediction pretraining on ``cfg.data.train_manifest``; the encoder lands in ``run_dir/model``."""
    run_dir = Path(run_dir)
    dataset = load_unlabeled(cfg, progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    model = build_pretrainer(cfg)
    print(format_config(cfg))
    print(
        f"model: {count_parameters(model.encoder) / 1e6:.2f} M encoder parameters (+ {count_parameters(model.heads) / 1e6:.2f} M "
        f"prediction heads), {len(dataset)} utterances, {dataset.durations.sum() / 3600:.2f} h of audio"
    )
    prepare_targets(model, dataset, run_dir, resume, progress)
    save_config(cfg, run_dir / CONFIG_FILE)

    def loss_fn(model, batch):
        return masked_prediction_loss(model(batch.audio, batch.audio_lens))

    def save_extras(d: Path) -> None:
        save_config(cfg, d / CONFIG_FILE)

    return train_and_save(model, dataset, cfg.train, run_dir, loss_fn, save_extras, resume, progress)


def prepare_targets(model: SpeechPretrainer, dataset: SpeechDataset, run_dir: Path, resume: bool, progress: bool) -> None:
    """k-means targets: centroids from the resumed checkpoint, or fitted on ``dataset`` now (BEST-RQ needs nothing)."""
    if model.ssl.target != "kmeans":
        return
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        load_weights(model, ckpt)  # the centroids are part of the checkpoint
    else:
        err = fit_kmeans(model, dataset, seed=dataset.seed, progress=progress)
        print(f"k-means: {model.ssl.codebook_size} centroids, mean squared distance {err:.3f}")


def train_and_save(model, dataset, cfg: TrainConfig, run_dir: Path, loss_fn, save_extras, resume: bool, progress: bool) -> TrainResult:
    """The training loop, then (on the main process) the final model directory ``run_dir/model``."""
    result = train(model, dataset, cfg, run_dir, loss_fn, save_extras, resume=resume, progress=progress)
    if is_main_process():
        summary = {"steps": result.steps, "final_loss": result.final_loss, "history": result.history[-1:] or None}
        save_model_dir(run_dir / "model", model, save_extras, summary)
    return result
