"""Train, load, predict with and evaluate utterance classifiers: the recipe behind
``speechlm finetune --task classify``.

A model directory holds ``config.json``, ``labels.json`` and either the full weights
(``model.safetensors``) or, for a LoRA/adapter run, only the trained tensors
(``adapter.safetensors``) on top of the pretrained encoder named by ``finetune.init``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax
from safetensors.torch import load_file, save_file

from speechlm.config import ClassifyConfig, format_config, from_dict, save_config
from speechlm.data.audio import trim_silence
from speechlm.data.batching import SpeechDataset, bucket_batches, pad_audio
from speechlm.data.manifest import Utterance, filter_utterances, read_manifest
from speechlm.data.tokenizer import TOKENIZER_FILE
from speechlm.decode.transcribe import MIN_SECONDS
from speechlm.errors import CheckpointError, ManifestError, SpeechLMError
from speechlm.features import SAMPLE_RATE, compute_features
from speechlm.metrics import ClassificationReport, classification_report
from speechlm.models.asr import count_parameters
from speechlm.models.classifier import SpeechClassifier
from speechlm.models.peft import apply_peft, merge_lora, trainable_state
from speechlm.objectives import LossOutput
from speechlm.train.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    latest_checkpoint,
    load_weights,
    read_config_json,
    resolve_model_dir,
    save_model_dir,
    write_atomic_dir,
)
from speechlm.train.finetune import encoder_param_groups, labeled_subset, load_pretrained_encoder
from speechlm.train.loop import TrainResult, is_main_process, train

LABELS_FILE = "labels.json"
ADAPTER_FILE = "adapter.safetensors"


def read_labeled(path: str | Path) -> list[Utterance]:
    """A manifest whose every entry has a ``label``; a missing one is an error naming the line."""
    utts = read_manifest(path)
    missing = [i for i, u in enumerate(utts) if not u.label]
    if missing:
        raise ManifestError(f"{path}: {len(missing)} entries have no 'label' (first: entry {missing[0] + 1}, {utts[missing[0]].audio_filepath})")
    return utts


def build_classifier(cfg: ClassifyConfig, num_classes: int) -> SpeechClassifier:
    model = SpeechClassifier(cfg.features, cfg.spec_augment, cfg.encoder, cfg.head, num_classes)
    return model


def class_loss(model: SpeechClassifier, batch) -> LossOutput:
    out = model(batch.audio, batch.audio_lens)
    labels = batch.tokens[:, 0]
    acc = (out.logits.argmax(-1) == labels).float().mean().item()
    return LossOutput(F.cross_entropy(out.logits.float(), labels), labels.numel(), {"acc": acc})


def train_classifier(cfg: ClassifyConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train on ``cfg.data.train_manifest`` (entries need ``label``); the model goes to ``run_dir/model``."""
    run_dir = Path(run_dir)
    if not cfg.data.train_manifest:
        raise SpeechLMError("data.train_manifest is not set (pass --train-manifest or data.train_manifest=PATH)")
    utts, skipped = filter_utterances(read_labeled(cfg.data.train_manifest), cfg.data.min_duration, cfg.data.max_duration, False)
    if any(skipped.values()):
        print(f"skipped utterances: {skipped}")
    ckpt = latest_checkpoint(run_dir) if resume else None
    labels = json.loads((ckpt / LABELS_FILE).read_text()) if ckpt else sorted({u.label for u in utts})
    if len(labels) < 2:
        raise ManifestError(f"{cfg.data.train_manifest}: a classifier needs at least 2 labels, found {labels}")
    ft = cfg.finetune
    if cfg.peft.method != "none" and not ft.init:
        raise SpeechLMError(f"peft.method={cfg.peft.method} trains a few weights on a frozen pretrained encoder: pass --init DIR")
    if ft.labeled_fraction < 1 or ft.labeled_minutes > 0:
        n_all = len(utts)
        utts = labeled_subset(utts, ft)
        print(f"labeled subset: {len(utts)} of {n_all} utterances")
    counts = {lab: 0 for lab in labels}
    for u in utts:
        counts[u.label] = counts.get(u.label, 0) + 1
    empty = [lab for lab, n in counts.items() if n == 0]
    if empty:
        print(f"warning: no training examples for {empty}; the model will rarely predict them")
    index = {lab: i for i, lab in enumerate(labels)}
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    model = build_classifier(cfg, len(labels))
    print(format_config(cfg))
    if ft.init and ckpt is None:
        print(f"init from {ft.init}: {load_pretrained_encoder(model, cfg)}")
    if cfg.peft.method != "none":
        total = count_parameters(model)
        trainable = apply_peft(model, cfg.peft)
        print(f"{cfg.peft.method}: {trainable / 1e3:.1f} k of {total / 1e6:.2f} M parameters train ({trainable / total:.2%})")
        groups = None
    else:
        groups = encoder_param_groups(model, ft)
    print(
        f"model: {count_parameters(model) / 1e6:.2f} M parameters ({count_parameters(model, trainable_only=True) / 1e6:.3f} M trainable), "
        f"{len(labels)} classes, {len(utts)} utterances"
    )
    save_config(cfg, run_dir / CONFIG_FILE)
    dataset = SpeechDataset(utts, None, cfg.augment, seed=cfg.train.seed, progress=progress, label_ids=[index[u.label] for u in utts],
                            trim_db=cfg.data.trim_db or None)
    short = [i for i, a in enumerate(dataset.durations) if a < MIN_SECONDS]
    if short:
        trimmed = f" once trimmed at {cfg.data.trim_db:g} dB below their peak" if cfg.data.trim_db else ""
        fix = "drop them from the manifest or lower data.trim_db" if trimmed else "raise data.min_duration"
        raise SpeechLMError(f"{len(short)} clips are shorter than {MIN_SECONDS} s{trimmed} (e.g. {utts[short[0]].audio_filepath}); {fix}")
    if model.corpus_norm is not None and ckpt is None:
        clips, frames = estimate_corpus_norm(model, dataset)
        print(f"corpus normalization: mean and variance of {frames} frames from {clips} training clips")

    def save_extras(d: Path) -> None:
        save_config(cfg, d / CONFIG_FILE)
        (d / LABELS_FILE).write_text(json.dumps(labels) + "\n")

    result = train(model, dataset, cfg.train, run_dir, class_loss, save_extras, resume=resume, progress=progress, param_groups=groups)
    if not is_main_process():
        return result
    summary = {"steps": result.steps, "final_loss": result.final_loss, "labels": len(labels), "train_examples": len(utts)}
    if cfg.peft.method != "none":
        save_adapter_dir(run_dir / "model", model, save_extras, summary)
    else:
        save_model_dir(run_dir / "model", model, save_extras, summary)
    return result


CORPUS_NORM_CLIPS = 2000  # training clips, evenly spread, that features.normalize_over=corpus measures


def estimate_corpus_norm(model: SpeechClassifier, dataset: SpeechDataset, batch_size: int = 64) -> tuple[int, int]:
    """Set ``model.corpus_norm`` from the features of (up to :data:`CORPUS_NORM_CLIPS`) clean training clips;
    returns (clips, frames) measured."""
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(len(dataset), CORPUS_NORM_CLIPS)).round().astype(int))
    chunks = [picks[i : i + batch_size] for i in range(0, len(picks), batch_size)]
    feats = (compute_features(*pad_audio([dataset.clean_audio(int(i)) for i in chunk]), model.features) for chunk in chunks)
    return len(picks), model.corpus_norm.estimate(feats)


def save_adapter_dir(target: Path, model: torch.nn.Module, save_extras, summary: dict) -> Path:
    """Only the trained tensors (LoRA/adapters and the head), for a base encoder at ``finetune.init``."""

    def write(d: Path) -> None:
        # the corpus statistics are measured on this run's data, like the trained tensors
        buffers = {n: t for n, t in model.state_dict().items() if n.startswith("corpus_norm.")}
        save_file(trainable_state(model) | buffers, str(d / ADAPTER_FILE))
        save_extras(d)
        (d / "training.json").write_text(json.dumps(summary) + "\n")

    return write_atomic_dir(target, write)


def load_classifier_dir(model_dir: str | Path) -> tuple[ClassifyConfig, SpeechClassifier, list[str]]:
    """(config, model in eval mode, labels) from a classifier model or run directory."""
    d = Path(model_dir)
    if not (d / CONFIG_FILE).is_file() or not (d / LABELS_FILE).is_file():
        d = d / "model"
    if not (d / LABELS_FILE).is_file():
        raise CheckpointError(f"{model_dir}: not a classifier directory (no {LABELS_FILE})")
    data = read_config_json(d)
    cfg = from_dict(ClassifyConfig, data, str(d / CONFIG_FILE))
    labels = json.loads((d / LABELS_FILE).read_text())
    model = build_classifier(cfg, len(labels))
    if (d / ADAPTER_FILE).is_file():
        if not cfg.finetune.init:
            raise CheckpointError(f"{d}: adapter-only checkpoint without finetune.init naming its base encoder")
        try:
            load_pretrained_encoder(model, cfg)
        except (CheckpointError, OSError) as e:
            raise CheckpointError(f"{d}: the base encoder of this adapter checkpoint cannot be loaded ({e})") from None
        apply_peft(model, cfg.peft)
        try:
            state = load_file(str(d / ADAPTER_FILE))
        except Exception as e:  # safetensors' own error types for corrupt files
            raise CheckpointError(f"{d / ADAPTER_FILE}: cannot read ({e})") from None
        missing = set(trainable_state(model)) - set(state)
        unexpected = set(state) - set(model.state_dict())
        if missing or unexpected:
            raise CheckpointError(f"{d / ADAPTER_FILE}: does not match the model (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
        model.load_state_dict(state, strict=False)
    else:
        apply_peft(model, cfg.peft)  # a merged or full directory keeps its adapter modules, if any
        load_weights(model, resolve_model_dir(d))
    return cfg, model.eval(), labels


def merge_adapter_dir(model_dir: str | Path, out_dir: str | Path) -> Path:
    """A standalone directory with full weights: LoRA folded into the encoder's Linear layers
    (``peft.method`` becomes ``none``); bottleneck adapters kept as modules."""
    import dataclasses

    from speechlm.models.peft import PeftConfig

    cfg, model, labels = load_classifier_dir(model_dir)
    if cfg.peft.method == "lora":
        merge_lora(model)
        cfg = dataclasses.replace(cfg, peft=PeftConfig())

    def save_extras(d: Path) -> None:
        save_config(cfg, d / CONFIG_FILE)
        (d / LABELS_FILE).write_text(json.dumps(labels) + "\n")

    return save_model_dir(out_dir, model, save_extras, {"merged_from": str(model_dir)})


def checkpoint_bytes(model_dir: str | Path) -> int:
    d = Path(model_dir)
    d = d if (d / LABELS_FILE).is_file() else d / "model"
    return sum(p.stat().st_size for p in d.iterdir() if p.name in (MODEL_FILE, ADAPTER_FILE))


class Classifier:
    """A loaded classifier: waveforms in, labels and probabilities out."""

    def __init__(self, cfg: ClassifyConfig, model: SpeechClassifier, labels: list[str]):
        self.cfg, self.model, self.labels = cfg, model.eval(), labels

    @classmethod
    def load(cls, model_dir: str | Path) -> "Classifier":
        return cls(*load_classifier_dir(model_dir))

    @torch.inference_mode()
    def probabilities(self, audios: Sequence[np.ndarray], batch_seconds: float = 100.0) -> np.ndarray:
        """``(N, C)`` class probabilities; with ``data.trim_db`` each clip is first trimmed as in training (one that would
        lose everything is kept whole), then clips shorter than :data:`MIN_SECONDS` are padded with silence."""
        if self.cfg.data.trim_db:
            audios = [t if (t := trim_silence(a, self.cfg.data.trim_db)).size else a for a in audios]
        min_len = int(MIN_SECONDS * SAMPLE_RATE)
        audios = [a if a.size >= min_len else np.pad(a, (0, min_len - a.size)) for a in audios]
        out = np.zeros((len(audios), len(self.labels)), np.float32)
        durations = [a.size / SAMPLE_RATE for a in audios]
        for idx in bucket_batches(durations, batch_seconds, 256, seed=0, epoch=0, shuffle=False):
            out[idx] = self.model(*pad_audio([audios[i] for i in idx])).logits.float().softmax(-1).numpy()
        return out

    def predict(self, audios: Sequence[np.ndarray], balance: bool = False, reject_below: float = 0.0,
                reject_label: str = "oos") -> list[tuple[str, float]]:  # fmt: skip
        """Label and probability of each clip; with ``balance``, of the clips taken together as a batch that says
        every label about equally often (:func:`balance_probabilities`). ``reject_label`` where the best label's
        probability is below ``reject_below`` (out-of-scope rejection; the probability is still the best label's)."""
        from speechlm.intent import decide

        probs = self.probabilities(audios)
        if balance:
            probs = balance_probabilities(probs)
        return [(label, float(p.max())) for label, p in zip(decide(probs, self.labels, reject_below, reject_label), probs)]


BALANCE_ITERATIONS = 100


def balance_probabilities(probs: np.ndarray, iterations: int = BALANCE_ITERATIONS) -> np.ndarray:
    """``(N, C)`` class probabilities of N clips rescaled so that, summed over the clips, every class gets N / C of the
    mass, each row still summing to 1 (Sinkhorn-Knopp scaling of the columns). For a batch known to hold every label
    about equally often (a new user reading each word of a list, a balanced test set), a model's systematic confusion on
    a new voice (one word heard as another every time) shows as one class taking too much mass and another too little;
    balancing gives the doubtful clips of the first back to the second. Wrong for a batch whose labels are not balanced."""
    n, c = probs.shape
    if n < c:
        raise ValueError(f"balancing needs at least as many clips as the model has labels ({c}), got {n}")
    q = np.maximum(probs.astype(np.float64), 1e-12)
    for _ in range(iterations):
        q = q / q.sum(0, keepdims=True)  # every class the same total ...
        q = q / q.sum(1, keepdims=True)  # ... and every clip a distribution
    return q.astype(np.float32)


class ClassifierEnsemble(Classifier):
    """Several classifiers of the same labels (other seeds or recipes of one task) as one: the
    mean of their class probabilities. Each member keeps its own features and padding; labels are
    matched by name, so members may list them in any order."""

    def __init__(self, members: Sequence[Classifier], names: Sequence[str]):
        if not members:
            raise ValueError("an ensemble needs at least one classifier")
        self.members, self.labels = list(members), list(members[0].labels)
        for name, m in zip(names[1:], members[1:]):
            if sorted(m.labels) != sorted(self.labels):
                extra, missing = sorted(set(m.labels) - set(self.labels)), sorted(set(self.labels) - set(m.labels))
                raise CheckpointError(f"{name}: its labels differ from {names[0]}'s (only here: {extra[:5]}, missing: {missing[:5]}); "
                                      "an ensemble combines classifiers of the same labels")  # fmt: skip
        self._order = [[m.labels.index(label) for label in self.labels] for m in self.members]

    @classmethod
    def load(cls, model_dirs: Sequence[str | Path]) -> "ClassifierEnsemble":  # type: ignore[override]
        return cls([Classifier.load(d) for d in model_dirs], [str(d) for d in model_dirs])

    def probabilities(self, audios: Sequence[np.ndarray], batch_seconds: float = 100.0) -> np.ndarray:
        return np.mean([m.probabilities(audios, batch_seconds)[:, order] for m, order in zip(self.members, self._order)], axis=0)


class WeightedProduct(ClassifierEnsemble):
    """Classifiers of the same labels as one by a weighted product of their class probabilities:
    ``p(c) ∝ prod_i p_i(c) ** w_i`` (the weights normalized to sum to 1). Unlike the mean of
    :class:`ClassifierEnsemble`, a class one member rules out stays out, so two views that err on
    different clips (an end-to-end model and an ASR -> text pipeline) correct each other; a weak
    member should get a small weight, chosen on held-out clips."""

    def __init__(self, members: Sequence[Classifier], names: Sequence[str], weights: Sequence[float]):
        super().__init__(members, names)
        w = np.asarray(weights, np.float64)
        if len(w) != len(self.members) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"a weighted product needs one weight >= 0 per member, not all 0, got {list(weights)} for {len(self.members)} members")
        self.weights = w / w.sum()

    def probabilities(self, audios: Sequence[np.ndarray], batch_seconds: float = 100.0) -> np.ndarray:
        return self.combine([m.probabilities(audios, batch_seconds) if w > 0 else None for w, m in zip(self.weights, self.members)])

    def combine(self, member_probs: Sequence[np.ndarray | None]) -> np.ndarray:
        """The product of the members' class probabilities computed elsewhere, one ``(N, C)`` array per member in its own
        label order (None for a member of weight 0), in :attr:`labels`' order."""
        used = [(w, p[:, order]) for w, p, order in zip(self.weights, member_probs, self._order) if w > 0]
        return weighted_product([p for _, p in used], [w for w, _ in used]).astype(np.float32)


def weighted_product(probs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``(N, C)`` class probabilities ``∝ prod_i probs[i] ** weights[i]``, each row normalized; a probability of 0 counts
    as 1e-9, so one member alone cannot veto a class outright."""
    logs = sum(w * np.log(np.asarray(p, np.float64) + 1e-9) for p, w in zip(probs, weights))
    return softmax(logs, axis=1)


def check_spoken_intent_flags(options=None, nbest: int = 1, weight: float | None = None, reject_below: float | None = None,
                              speeds: Sequence[float] = ()) -> None:  # fmt: skip
    """The rules of the spoken-intent options, one error each, worded for their flags (``predict``/``evaluate`` and
    ``serve``): ``--pipeline-nbest`` needs beam decoding (``options``) at least that wide, ``--pipeline-weight`` and
    ``--reject-below`` lie in [0, 1], ``--pipeline-speeds`` within :data:`TTA_SPEED_RANGE`."""
    if nbest != 1 and (options is None or not options.lists(nbest)):
        raise SpeechLMError(f"--pipeline-nbest {nbest} reads the beam's N best transcripts: give N >= 1 and a beam at least "
                            f"that wide (--beam {max(nbest, 8)})")  # fmt: skip
    if weight is not None and not 0.0 <= weight <= 1.0:
        raise SpeechLMError(f"--pipeline-weight must be between 0 and 1 (the pipeline's share of the product), got {weight}")
    if reject_below is not None and not 0.0 <= reject_below <= 1.0:
        raise SpeechLMError(f"--reject-below is a probability between 0 and 1 (0 = never reject), got {reject_below}")
    if speeds:
        try:
            check_speeds(speeds)
        except ValueError as e:
            raise SpeechLMError(f"--pipeline-speeds: {e}") from None


class SpokenIntentPipeline(Classifier):
    """ASR -> text intent classifier as a speech classifier: a clip's class probabilities are the intent classifier's
    (:class:`~speechlm.intent.IntentClassifier`) on the recognizer's transcript, or with ``nbest`` > 1 their mean over
    the beam's N best transcripts weighted by each one's probability (:meth:`~speechlm.intent.IntentClassifier.nbest_probabilities`).
    With ``speeds`` (test-time augmentation, as :class:`SpeedAveraged`), the class probabilities are averaged over the
    clip played at each of those speeds, each copy decoded and read on its own.
    Beside an end-to-end intent model in a :class:`WeightedProduct` it is the spoken-intent benchmark's combined system."""

    def __init__(self, recognizer, intent, options=None, nbest: int = 1, speeds: Sequence[float] = ()):
        from speechlm.decode.ctc import DecodingOptions

        options = options or DecodingOptions("greedy")
        if nbest != 1 and not options.lists(nbest):
            raise ValueError(f"an N-best pipeline needs a beam at least N wide, got N = {nbest} with {options.method} decoding "
                             f"(beam {options.beam_size})")  # fmt: skip
        if speeds:
            check_speeds(speeds)
        self.recognizer, self.intent, self.options, self.nbest, self.labels = recognizer, intent, options, nbest, list(intent.labels)
        self.speeds = [float(s) for s in speeds]

    @classmethod
    def load(cls, asr_dir: str | Path, intent_dir: str | Path, lm: str | Path | None = None, options=None,  # type: ignore[override]
             nbest: int = 1, speeds: Sequence[float] = ()) -> "SpokenIntentPipeline":  # fmt: skip
        """The recognizer in ``asr_dir`` (with ``lm`` fused into its beam search) and the intent classifier in ``intent_dir``."""
        from speechlm.decode.transcribe import Recognizer
        from speechlm.intent import IntentClassifier

        return cls(Recognizer.load(asr_dir, lm=lm), IntentClassifier.load(intent_dir), options, nbest, speeds)

    def probabilities(self, audios: Sequence[np.ndarray], batch_seconds: float = 100.0) -> np.ndarray:
        return self.read(audios)[1]

    def read(self, audios: Sequence[np.ndarray]) -> tuple[list[str], np.ndarray]:
        """Each clip's transcript (the N-best list's first with ``nbest`` > 1; of the clip as it is, with ``speeds`` too)
        and its class probabilities."""
        if not self.speeds:
            return self._read(audios)
        readings = played_at(self._read, audios, self.speeds)  # a speed given twice counts twice, as in SpeedAveraged
        texts = readings[self.speeds.index(1.0)][0] if 1.0 in self.speeds else self._read(audios)[0]
        return texts, np.mean([probs for _, probs in readings], axis=0)

    def _read(self, audios: Sequence[np.ndarray]) -> tuple[list[str], np.ndarray]:
        if self.nbest > 1:
            lists = self.recognizer.transcribe_nbest(audios, self.options, self.nbest)
            return [hyps[0][0] for hyps in lists], self.intent.nbest_probabilities(lists).astype(np.float32)
        texts = self.recognizer.transcribe(audios, self.options)
        return texts, self.intent.probabilities(texts).astype(np.float32)


class PhraseClassifier(Classifier):
    """A CTC speech recognizer as a classifier over fixed phrases, one per label: a label's probability is the softmax
    of the phrases' CTC log-likelihoods (:meth:`~speechlm.decode.transcribe.Recognizer.score_phrases`, a uniform prior
    over the phrases); all 0 for a clip too short for every phrase. It joins a :class:`ClassifierEnsemble` beside
    classifiers of the same labels (a keyword classifier and a recognizer adapted to the same words)."""

    def __init__(self, recognizer, phrases: dict[str, str]):
        self.recognizer, self.labels, self.phrases = recognizer, list(phrases), list(phrases.values())

    @classmethod
    def load(cls, model_dir: str | Path, phrases: dict[str, str]) -> "PhraseClassifier":  # type: ignore[override]
        from speechlm.decode.transcribe import Recognizer

        return cls(Recognizer.load(model_dir), phrases)

    def probabilities(self, audios: Sequence[np.ndarray], batch_seconds: float = 100.0) -> np.ndarray:
        scores = self.recognizer.score_phrases(audios, self.phrases)
        with np.errstate(invalid="ignore"):  # a clip too short for every phrase: -inf - -inf, then 0 / 0, then all 0
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
            return np.nan_to_num(shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def is_recognizer_dir(model_dir: str | Path) -> bool:
    """A speech recognizer's model or run directory (it has a tokenizer)."""
    d = Path(model_dir)
    return (d / TOKENIZER_FILE).is_file() or (d / "model" / TOKENIZER_FILE).is_file()


TTA_SPEED_RANGE = (0.5, 2.0)


def played_at(fn, audios: Sequence[np.ndarray], speeds: Sequence[float]) -> list:
    """``fn`` of the clips played at each of ``speeds`` (:func:`speechlm.data.augment.speed_perturb`), one result per speed."""
    from speechlm.data.augment import speed_perturb

    return [fn([speed_perturb(a, s) for a in audios]) for s in speeds]


def check_speeds(speeds: Sequence[float]) -> None:
    """Refuse test-time speeds that are none, or outside :data:`TTA_SPEED_RANGE`."""
    if not speeds or any(not TTA_SPEED_RANGE[0] <= s <= TTA_SPEED_RANGE[1] for s in speeds):
        raise ValueError(f"test-time speeds must be between {TTA_SPEED_RANGE[0]} and {TTA_SPEED_RANGE[1]}, got {list(speeds) or 'none'}")


class SpeedAveraged(Classifier):
    """Test-time augmentation: a classifier's class probabilities averaged over copies of each clip played at
    several speeds (the speed perturbation of training, :func:`speechlm.data.augment.speed_perturb`). A new voice
    whose pitch and formants sit above or below the training voices' is heard once nearer to them."""

    def __init__(self, base: Classifier, speeds: Sequence[float]):
        check_speeds(speeds)
        self.base, self.speeds, self.labels = base, [float(s) for s in speeds], base.labels

    def probabilities(self, audios: Sequence[np.ndarray], batch_seconds: float = 100.0) -> np.ndarray:
        return np.mean(played_at(lambda clips: self.base.probabilities(clips, batch_seconds), audios, self.speeds), axis=0)


def load_classifier(model_dir: str | Path, ensemble: Sequence[str | Path] = (), speeds: Sequence[float] = (),
                    phrases: dict[str, str] | None = None) -> Classifier:
    """The classifier in ``model_dir``, or, with ``ensemble``, its ensemble with those directories; a speech recognizer
    (``model_dir`` included, alone or in the ensemble) classifies as a :class:`PhraseClassifier` over ``phrases``,
    label -> phrase. With ``speeds``, its probabilities averaged over each clip played at those speeds (:class:`SpeedAveraged`)."""

    def member(d: str | Path) -> Classifier:
        if not is_recognizer_dir(d):
            return Classifier.load(d)
        if phrases is None:
            raise CheckpointError(f"{d} is a speech recognizer: it classifies (alone or in an ensemble of classifiers) only with the phrase "
                                  "of each label (--choices FILE: one line per label, 'label<TAB>phrase', or the label alone when it is the phrase)")
        return PhraseClassifier.load(d, phrases)

    dirs = [model_dir, *ensemble]
    clf = ClassifierEnsemble([member(d) for d in dirs], [str(d) for d in dirs]) if ensemble else member(model_dir)
    return SpeedAveraged(clf, speeds) if speeds else clf


def evaluate_classifier(clf: Classifier, utts: Sequence[Utterance], balance: bool = False, reject_below: float = 0.0,
                        reject_label: str = "oos") -> tuple[ClassificationReport, list[dict], float]:  # fmt: skip
    """Report, per-utterance rows and seconds of compute on labeled ``utts``; labels the model
    does not know are an error naming them (they could never be predicted). ``balance``: the
    clips are labeled together, as a batch that holds every label about equally often. With
    ``reject_below`` > 0 the model answers ``reject_label`` below that probability, and clips
    labeled so (out of scope: none of the model's labels) are scored too."""
    from speechlm.data.audio import load_audio

    labels = [*clf.labels, *([reject_label] if reject_below > 0 and reject_label not in clf.labels else [])]
    unknown = sorted({u.label for u in utts} - set(labels))
    if unknown:
        hint = f" (to score out-of-scope clips, reject below a probability: --reject-below T --reject-label {unknown[0]})" if len(unknown) == 1 else ""
        raise ManifestError(f"test labels {unknown} are not among the model's {len(clf.labels)} labels{hint}")
    audios = [load_audio(u.audio_filepath) for u in utts]
    start = time.perf_counter()
    preds = clf.predict(audios, balance, reject_below, reject_label)
    seconds = time.perf_counter() - start
    rows = [{"audio_filepath": u.audio_filepath, "speaker": u.speaker, "label": u.label, "predicted": p, "confidence": c} for u, (p, c) in zip(utts, preds)]
    return classification_report([u.label for u in utts], [p for p, _ in preds], labels), rows, seconds


def pseudo_label(clf: Classifier, utts: Sequence[Utterance], min_confidence: float = 0.9, per_label: int | None = None,
                 balance: bool = False) -> list[Utterance]:
    """Self-training data from unlabeled audio: ``utts`` labeled with ``clf``'s predictions, keeping a clip only
    when its predicted label's probability is at least ``min_confidence``. With ``per_label``, at most that many
    clips of each predicted label, the most confident first, so a label the model over-predicts (a confusion it
    makes on a new speaker or channel) cannot flood the training set. Kept clips come back in input order, with
    ``label`` set (an existing label is replaced: it is the prediction, not the truth, that goes into training).
    ``balance``: the clips are labeled together as a batch that says every label about equally often
    (:func:`balance_probabilities`), and the threshold applies to the balanced probabilities."""
    from speechlm.data.audio import load_audio

    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be between 0 and 1, got {min_confidence}")
    if per_label is not None and per_label < 1:
        raise ValueError(f"per_label must be at least 1, got {per_label}")
    if not utts:
        return []
    preds = clf.predict([load_audio(u.audio_filepath) for u in utts], balance)
    confident = sorted((i for i, (_, conf) in enumerate(preds) if conf >= min_confidence), key=lambda i: -preds[i][1])
    taken: dict[str, int] = {}
    keep = []
    for i in confident:
        label = preds[i][0]
        if per_label is None or taken.get(label, 0) < per_label:
            taken[label] = taken.get(label, 0) + 1
            keep.append(i)
    return [dataclasses.replace(utts[i], label=preds[i][0]) for i in sorted(keep)]


def plot_confusion(report: ClassificationReport, path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(report.labels)
    cm = np.array(report.confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.0, 0.35 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), report.labels, rotation=90, fontsize=8 if n > 12 else 10)
    ax.set_yticks(range(n), report.labels, fontsize=8 if n > 12 else 10)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title or f"accuracy {report.accuracy:.1%}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
