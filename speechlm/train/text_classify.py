"""Text classification on a language model (the BERT-classifier recipe): ``speechlm finetune
--task text-classify``. Labels come from a CSV/TSV or JSON Lines file the user supplies.

From a pretrained LM (``finetune.init``, a ``speechlm pretrain text`` directory) the tokenizer
and LM config are the pretrained ones; from scratch a SentencePiece tokenizer is trained on the
training texts. Sequences are ``BOS ids EOS``, cut to the LM's context.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from speechlm.config import TextClassifyConfig, format_config, from_dict, save_config
from speechlm.data.text import pad_tokens
from speechlm.data.tokenizer import load_tokenizer, train_tokenizer
from speechlm.errors import CheckpointError, ManifestError, SpeechLMError
from speechlm.intent import read_labeled_text
from speechlm.metrics import ClassificationReport, classification_report
from speechlm.models.asr import count_parameters
from speechlm.models.classifier import TextClassifier
from speechlm.models.lm import special_tokens
from speechlm.models.peft import apply_peft, trainable_state
from speechlm.objectives import LossOutput
from speechlm.train.checkpoint import CONFIG_FILE, load_weights, read_config_json, resolve_model_dir, save_model_dir, write_atomic_dir
from speechlm.train.classify import ADAPTER_FILE, LABELS_FILE
from speechlm.train.loop import TrainResult, is_main_process, train


@dataclasses.dataclass
class LabeledTextBatch:
    tokens: torch.Tensor  # (B, L) ids, zero-padded on the right
    lens: torch.Tensor  # (B,)
    labels: torch.Tensor  # (B,) class ids

    @property
    def amount(self) -> float:
        return float(self.lens.sum())

    def to(self, device) -> "LabeledTextBatch":
        return LabeledTextBatch(self.tokens.to(device), self.lens.to(device), self.labels.to(device))


class LabeledTextDataset:
    """Token sequences with a class id each; batches of ``max_batch_size`` sequences, reshuffled per epoch."""

    unit = "tokens"

    def __init__(self, sequences: Sequence[list[int]], labels: Sequence[int], seed: int = 0):
        self.sequences, self.labels, self.seed, self.epoch = list(sequences), list(labels), seed, 0

    def __len__(self) -> int:
        return len(self.sequences)

    def make_batches(self, cfg, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.sequences))
        return [order[i : i + cfg.max_batch_size].tolist() for i in range(0, len(order), cfg.max_batch_size)]

    def collate(self, indices: Sequence[int]) -> LabeledTextBatch:
        return LabeledTextBatch(*pad_tokens([self.sequences[i] for i in indices]), torch.tensor([self.labels[i] for i in indices]))


def encode_texts(texts: Sequence[str], tokenizer, special, context: int) -> list[list[int]]:
    return [[special.bos, *tokenizer.encode(t)[: context - 2], special.eos] for t in texts]


def text_loss(model: TextClassifier, batch: LabeledTextBatch) -> LossOutput:
    logits = model(batch.tokens, batch.lens).logits.float()
    acc = (logits.argmax(-1) == batch.labels).float().mean().item()
    return LossOutput(F.cross_entropy(logits, batch.labels), batch.labels.numel(), {"acc": acc})


def train_text_classifier(cfg: TextClassifyConfig, run_dir: str | Path, progress: bool = True) -> TrainResult:
    from speechlm.train.text import load_lm_dir

    run_dir = Path(run_dir)
    if not cfg.data.train_file:
        raise SpeechLMError("data.train_file is not set (pass --train-file FILE: CSV or JSON Lines with text and label)")
    texts, names = read_labeled_text([cfg.data.train_file])
    labels = sorted(set(names))
    if len(labels) < 2:
        raise ManifestError(f"{cfg.data.train_file}: a classifier needs at least 2 labels, found {labels}")
    if cfg.peft.method != "none" and not cfg.finetune.init:
        raise SpeechLMError(f"peft.method={cfg.peft.method} trains a few weights on a frozen pretrained LM: pass --init DIR")
    torch.manual_seed(cfg.train.seed)
    if cfg.finetune.init:
        pre_cfg, pre_model, tokenizer, _ = load_lm_dir(cfg.finetune.init)
        cfg = dataclasses.replace(cfg, lm=dataclasses.replace(pre_cfg.lm, dropout=cfg.lm.dropout), tokenizer=pre_cfg.tokenizer)
    else:
        tokenizer = train_tokenizer(cfg.tokenizer, texts)
    special = special_tokens(tokenizer.vocab_size)
    model = TextClassifier(cfg.lm, special.vocab_size, cfg.head, len(labels))
    if cfg.finetune.init:
        model.lm.load_state_dict(pre_model.state_dict())
        print(f"init from {cfg.finetune.init}: loaded {len(pre_model.state_dict())} LM tensors; the head is new")
    print(format_config(cfg))
    if cfg.peft.method != "none":
        total = count_parameters(model)
        trainable = apply_peft(model, cfg.peft, part="lm")
        print(f"{cfg.peft.method}: {trainable / 1e3:.1f} k of {total / 1e6:.2f} M parameters train ({trainable / total:.2%})")
    print(f"model: {count_parameters(model) / 1e6:.2f} M parameters ({cfg.lm.arch}), {len(labels)} classes, {len(texts)} texts")
    index = {lab: i for i, lab in enumerate(labels)}
    dataset = LabeledTextDataset(encode_texts(texts, tokenizer, special, cfg.lm.context), [index[n] for n in names], cfg.train.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG_FILE)

    def save_extras(d: Path) -> None:
        save_config(cfg, d / CONFIG_FILE)
        tokenizer.save(d)
        (d / LABELS_FILE).write_text(json.dumps(labels) + "\n")

    result = train(model, dataset, cfg.train, run_dir, text_loss, save_extras, progress=progress)
    if not is_main_process():
        return result
    summary = {"steps": result.steps, "final_loss": result.final_loss, "labels": len(labels), "train_examples": len(texts)}
    if cfg.peft.method != "none":

        def write(d: Path) -> None:
            save_file(trainable_state(model), str(d / ADAPTER_FILE))
            save_extras(d)
            (d / "training.json").write_text(json.dumps(summary) + "\n")

        write_atomic_dir(run_dir / "model", write)
    else:
        save_model_dir(run_dir / "model", model, save_extras, summary)
    return result


class TextClassifierModel:
    """A loaded text classifier: texts in, labels and probabilities out."""

    def __init__(self, cfg: TextClassifyConfig, model: TextClassifier, tokenizer, labels: list[str]):
        self.cfg, self.model, self.tokenizer, self.labels = cfg, model.eval(), tokenizer, labels
        self.special = special_tokens(tokenizer.vocab_size)

    @classmethod
    def load(cls, model_dir: str | Path) -> "TextClassifierModel":
        from speechlm.train.text import load_lm_dir

        d = Path(model_dir)
        if not (d / LABELS_FILE).is_file():
            d = d / "model"
        data = read_config_json(d) if (d / CONFIG_FILE).is_file() else {}
        if "lm" not in data or not (d / LABELS_FILE).is_file():
            raise CheckpointError(f"{model_dir}: not a text classifier directory (speechlm finetune --task text-classify)")
        cfg = from_dict(TextClassifyConfig, data, str(d / CONFIG_FILE))
        tokenizer = load_tokenizer(d)
        labels = json.loads((d / LABELS_FILE).read_text())
        model = TextClassifier(cfg.lm, special_tokens(tokenizer.vocab_size).vocab_size, cfg.head, len(labels))
        if (d / ADAPTER_FILE).is_file():
            _, pre_model, _, _ = load_lm_dir(cfg.finetune.init)
            model.lm.load_state_dict(pre_model.state_dict())
            apply_peft(model, cfg.peft, part="lm")
            model.load_state_dict(load_file(str(d / ADAPTER_FILE)), strict=False)
        else:
            load_weights(model, resolve_model_dir(d))
        return cls(cfg, model, tokenizer, labels)

    @torch.inference_mode()
    def probabilities(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """``(N, len(self.labels))`` class probabilities of ``texts``."""
        seqs = encode_texts(texts, self.tokenizer, self.special, self.cfg.lm.context)
        out = []
        for i in range(0, len(seqs), batch_size):
            tokens, lens = pad_tokens(seqs[i : i + batch_size])
            out.append(self.model(tokens, lens).logits.float().softmax(-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def predict(self, texts: Sequence[str], batch_size: int = 128) -> list[tuple[str, float]]:
        return [(self.labels[int(p.argmax())], float(p.max())) for p in self.probabilities(texts, batch_size)]

    def evaluate(self, texts: Sequence[str], truth: Sequence[str]) -> ClassificationReport:
        unknown = sorted(set(truth) - set(self.labels))
        if unknown:
            raise ManifestError(f"test labels {unknown} are not among the model's {len(self.labels)} labels")
        return classification_report(list(truth), [p for p, _ in self.predict(texts)], self.labels)
