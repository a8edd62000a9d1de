"""Joint speech-text pretraining: the recipe behind ``speechlm pretrain joint``.

Every step trains on three batches at once: unlabeled audio (masked prediction), a few
transcribed utterances (CTC) and unpaired sentences (masked LM through the shared blocks); see
:mod:`speechlm.models.joint_pretrain`. The paired utterances are a deterministic subset of the
manifest's transcribed ones, drawn exactly as fine-tuning draws ``finetune.labeled_fraction``
with ``finetune.subset_seed``, so a label-efficiency point can pretrain and fine-tune on the same
labels. The encoder lands in ``run_dir/model`` and fine-tunes with ``speechlm finetune --init``.

Usage:
    speechlm pretrain joint runs/joint --train-manifest data/demo/train/manifest.jsonl --builtin 20000 joint.paired_fraction=0.1
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from speechlm.config import FinetuneConfig, JointPretrainConfig, format_config, save_config
from speechlm.data.batching import Batch, SpeechDataset
from speechlm.data.manifest import filter_utterances, read_manifest
from speechlm.data.text import TextBatch, pad_tokens
from speechlm.data.tokenizer import CharTokenizer
from speechlm.errors import SpeechLMError
from speechlm.models.asr import count_parameters
from speechlm.models.joint_pretrain import JointConfig, JointOutput, JointPretrainer
from speechlm.models.lm import mask_tokens
from speechlm.objectives import LossOutput
from speechlm.objectives.ctc import ctc_loss
from speechlm.objectives.language_model import masked_token_loss
from speechlm.objectives.masked_prediction import masked_prediction_loss
from speechlm.train.checkpoint import CONFIG_FILE
from speechlm.train.finetune import labeled_subset
from speechlm.train.loop import TrainResult
from speechlm.train.pretrain import load_unlabeled, prepare_targets, train_and_save
from speechlm.train.text import corpus_lines


@dataclasses.dataclass
class JointBatch:
    speech: Batch  # unlabeled audio for masked prediction
    paired: Batch | None  # transcribed audio for CTC
    text: TextBatch | None  # unpaired sentences (masked by the loss)

    @property
    def amount(self) -> float:
        """Audio seconds (unlabeled + paired): the training loop's throughput unit."""
        return self.speech.amount + (self.paired.amount if self.paired is not None else 0.0)

    def to(self, device: torch.device | str) -> "JointBatch":
        return JointBatch(
            self.speech.to(device),
            self.paired.to(device) if self.paired is not None else None,
            self.text.to(device) if self.text is not None else None,
        )


class JointDataset:
    """Unlabeled utterances set the epoch; paired batches and sentences cycle alongside them.

    A batch is a list of ``(source, index)`` items, sources ``speech``, ``paired`` and ``text``,
    so the training loop's per-rank slicing under torchrun gives every rank a share of each.
    """

    unit = "audio_seconds"

    def __init__(self, speech: SpeechDataset, paired: SpeechDataset, texts: Sequence[list[int]], joint: JointConfig, seed: int):
        self.speech, self.paired, self.texts = speech, paired, [t for t in texts if t]
        self.joint, self.seed = joint, seed
        self._epoch = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    @epoch.setter
    def epoch(self, value: int) -> None:  # augmentation draws depend on it
        self._epoch = self.speech.epoch = self.paired.epoch = value

    def __len__(self) -> int:
        return len(self.speech)

    def make_batches(self, cfg, epoch: int) -> list[list[tuple[str, int]]]:
        unlabeled = self.speech.make_batches(cfg, epoch)
        n = len(unlabeled)
        paired: list[list[int]] = []
        if self.joint.ctc_weight > 0:
            paired_cfg = dataclasses.replace(cfg, batch_seconds=cfg.batch_seconds * self.joint.paired_batch_share)
            cycle = 0
            while len(paired) < n:  # the paired subset is small: several passes per unlabeled epoch
                paired += self.paired.make_batches(paired_cfg, epoch * 1000 + cycle)
                cycle += 1
        text: list[list[int]] = []
        if self.joint.mlm_weight > 0:
            bs = self.joint.text_batch_size
            rng = np.random.default_rng([self.seed, epoch])
            order = np.concatenate([rng.permutation(len(self.texts)) for _ in range(-(-n * bs // len(self.texts)))])
            text = [order[i * bs : (i + 1) * bs].tolist() for i in range(n)]
        return [
            [("speech", i) for i in unlabeled[k]]
            + [("paired", i) for i in (paired[k] if paired else [])]
            + [("text", i) for i in (text[k] if text else [])]
            for k in range(n)
        ]

    def collate(self, items: Sequence[tuple[str, int]]) -> JointBatch:
        pick = {"speech": [], "paired": [], "text": []}
        for source, i in items:
            pick[source].append(i)
        text = None
        if pick["text"]:
            text = TextBatch(*pad_tokens([self.texts[i] for i in pick["text"]]))
        return JointBatch(
            self.speech.collate(pick["speech"]),
            self.paired.collate(pick["paired"]) if pick["paired"] else None,
            text,
        )


def joint_loss(out: JointOutput, batch: JointBatch, text_targets: torch.Tensor | None, joint: JointConfig) -> LossOutput:
    """masked prediction + ctc_weight * CTC (paired) + mlm_weight * masked LM (text, ``text_targets`` -100 where not
    masked); each term logged."""
    mp = masked_prediction_loss(out.speech)
    loss = mp.loss
    metrics = {"masked_acc": mp.metrics["masked_acc"], "mp_loss": mp.loss.item()}
    if out.ctc is not None:
        ctc = ctc_loss(out.ctc.logits, out.ctc.lens, batch.paired.tokens, batch.paired.token_lens)
        loss = loss + joint.ctc_weight * ctc.loss
        metrics["ctc_loss"] = ctc.loss.item()
    if out.text_logits is not None:
        mlm = masked_token_loss(out.text_logits, text_targets)
        loss = loss + joint.mlm_weight * mlm.loss
        metrics["mlm_loss"] = mlm.loss.item()
        metrics["mlm_acc"] = mlm.metrics["masked_acc"]
    return LossOutput(loss, mp.num_tokens, metrics)


def load_joint_data(cfg: JointPretrainConfig, progress: bool = True) -> tuple[JointDataset, CharTokenizer]:
    """All audio (unlabeled), the paired subset with its transcripts, and the unpaired sentences as character ids."""
    speech = load_unlabeled(cfg, progress)
    transcribed, _ = filter_utterances(read_manifest(cfg.data.train_manifest), cfg.data.min_duration, cfg.data.max_duration, require_text=True)
    transcribed = [u for u in transcribed if u.text and u.text.strip()]
    if cfg.joint.ctc_weight > 0 and not transcribed:
        raise SpeechLMError(f"{cfg.data.train_manifest}: no utterance has a transcript ('text'), so there is no paired data for CTC (set joint.ctc_weight=0 to pretrain without it)")
    paired_utts = labeled_subset(transcribed, FinetuneConfig(labeled_fraction=cfg.joint.paired_fraction, subset_seed=cfg.joint.paired_seed)) if transcribed else []
    lines = corpus_lines(cfg.text)[0] if cfg.joint.mlm_weight > 0 else []
    tokenizer = CharTokenizer.train([u.text for u in paired_utts] + lines)
    if tokenizer.vocab_size < 3:
        raise SpeechLMError("joint pretraining found no characters in the paired transcripts or the text")
    loaded = {u.audio_filepath: i for i, u in enumerate(speech.utts)}  # the paired audio is already in memory (silent clips are not)
    paired = speech.select([loaded[u.audio_filepath] for u in paired_utts if u.audio_filepath in loaded]).with_tokens(tokenizer)
    paired.seed = cfg.train.seed + 1  # its own augmentation draws
    texts = [tokenizer.encode(line) for line in lines]
    if cfg.joint.mlm_weight > 0 and not any(texts):
        raise SpeechLMError("joint pretraining: the text has no usable characters (joint.mlm_weight=0 pretrains without text)")
    return JointDataset(speech, paired, texts, cfg.joint, cfg.train.seed), tokenizer


def pretrain_joint(cfg: JointPretrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> TrainResult:
    """Joint pretraining on ``cfg.data.train_manifest`` and ``cfg.text``; the encoder lands in ``run_dir/model``."""
    run_dir = Path(run_dir)
    dataset, tokenizer = load_joint_data(cfg, progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    try:
        model = JointPretrainer(cfg.features, cfg.encoder, cfg.ssl, cfg.joint, tokenizer.vocab_size)
    except ValueError as e:  # an encoder the text cannot share (architecture, depth)
        raise SpeechLMError(str(e)) from None
    print(format_config(cfg))
    print(
        f"model: {count_parameters(model.encoder) / 1e6:.2f} M encoder parameters ({cfg.joint.shared_layers} of "
        f"{cfg.encoder.n_layers} blocks shared with text), {len(dataset)} utterances "
        f"({dataset.speech.durations.sum() / 3600:.2f} h) unlabeled, {len(dataset.paired)} paired "
        f"({dataset.paired.durations.sum() / 60:.1f} min), {len(dataset.texts)} sentences of text"
    )
    prepare_targets(model, dataset.speech, run_dir, resume, progress)

    special = model.special

    def loss_fn(model, batch: JointBatch) -> LossOutput:
        p, t = batch.paired, batch.text
        # masked on the training process, like the text MLM recipe: the draws follow the loop's checkpointed RNG
        inputs, targets = mask_tokens(t.tokens, t.lens, special, cfg.joint.text_mask_prob) if t is not None else (None, None)
        out = model(
            batch.speech.audio, batch.speech.audio_lens,
            p.audio if p is not None else None, p.audio_lens if p is not None else None,
            inputs, t.lens if t is not None else None,
        )  # fmt: skip
        return joint_loss(out, batch, targets, cfg.joint)

    def save_extras(d: Path) -> None:
        save_config(cfg, d / CONFIG_FILE)
        tokenizer.save(d)

    save_config(cfg, run_dir / CONFIG_FILE)
    return train_and_save(model, dataset, cfg.train, run_dir, loss_fn, save_extras, resume, progress)
