"""Frozen config dataclasses: load from YAML/JSON, apply ``key=value`` overrides, save.

Config files hold values only; objects are built in Python by builder functions.
Every component owns one frozen dataclass (``FeatureConfig`` in ``features.py``,
``EncoderConfig`` in ``models/encoders.py`` ...); this module composes them into the
experiment config saved with every checkpoint.

>>> cfg = load_config(ASRConfig, overrides=["encoder.d_model=96", "train.lr=2e-3"])
>>> cfg.encoder.d_model, cfg.train.lr
(96, 0.002)
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from speechlm.data.augment import AugmentConfig
from speechlm.data.tokenizer import TokenizerConfig
from speechlm.features import FeatureConfig, SpecAugmentConfig, utterance_norm_only
from speechlm.models.classifier import HeadConfig
from speechlm.models.encoders import EncoderConfig
from speechlm.models.joint_pretrain import JointConfig
from speechlm.models.lm import LMConfig
from speechlm.models.peft import PeftConfig
from speechlm.models.speech_lm import ProjectorConfig
from speechlm.models.speech_ssl import SSLConfig
from speechlm.train.loop import TrainConfig

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown field or holds a value of the wrong type."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    train_manifest: str = ""  # JSON Lines manifest used for training
    valid_manifest: str = ""  # optional manifest evaluated during training ("" = none)
    min_duration: float = 0.2  # seconds; shorter utterances are skipped (and counted)
    max_duration: float = 20.0  # seconds; longer utterances are skipped (and counted)


@dataclasses.dataclass(frozen=True)
class ClassifyDataConfig(DataConfig):
    # strip each clip's leading and trailing audio quieter than this many dB below its loudest frame, in training
    # and in every prediction (0 = keep the clips as they are). One-word clips framed with more or less silence
    # than the training clips otherwise look like other words: mean/variance normalization averages over the silence
    trim_db: float = 0.0

    def __post_init__(self):
        if self.trim_db < 0:
            raise ValueError(f"data.trim_db must be >= 0 (0 = no trimming), got {self.trim_db}")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    init: str = ""  # pretrained model directory whose encoder initializes this model ("" = from scratch)
    labeled_fraction: float = 1.0  # train on this fraction of the labeled utterances (a deterministic subset)
    labeled_minutes: float = 0.0  # or on this many minutes of labeled audio (0 = use labeled_fraction)
    subset_seed: int = 0  # which subset; smaller subsets are prefixes of larger ones with the same seed
    freeze_encoder_steps: int = 0  # encoder learning rate is 0 for this many steps; -1 = frozen throughout
    layer_decay: float = 1.0  # encoder block i of L trains at lr * layer_decay ** (L - i); 1 = uniform

    def __post_init__(self):
        if not 0 < self.labeled_fraction <= 1:
            raise ValueError(f"finetune.labeled_fraction must be in (0, 1], got {self.labeled_fraction}")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"finetune.layer_decay must be in (0, 1], got {self.layer_decay}")


@dataclasses.dataclass(frozen=True)
class RecognizerFinetuneConfig(FinetuneConfig):
    # init is a speech recognizer: keep its tokenizer and output layer too, not only its encoder, so that it is
    # adapted (to new speakers, words, rooms) rather than relearning its alphabet; every training text must be
    # spelled with its vocabulary
    init_head: bool = False


@dataclasses.dataclass(frozen=True)
class ASRConfig:
    """Everything needed to rebuild and retrain a CTC speech recognizer."""

    data: DataConfig = DataConfig()
    features: FeatureConfig = FeatureConfig()
    spec_augment: SpecAugmentConfig = SpecAugmentConfig()
    augment: AugmentConfig = AugmentConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    encoder: EncoderConfig = EncoderConfig()
    finetune: RecognizerFinetuneConfig = RecognizerFinetuneConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        utterance_norm_only(self.features, "recognizer")


@dataclasses.dataclass(frozen=True)
class ClassifyConfig:
    """An utterance classifier (keywords, digits, spoken intent): encoder + pooling head, labels from
    the manifest's ``label`` field."""

    data: ClassifyDataConfig = ClassifyDataConfig(min_duration=0.05)
    features: FeatureConfig = FeatureConfig()
    spec_augment: SpecAugmentConfig = SpecAugmentConfig()
    augment: AugmentConfig = AugmentConfig()
    encoder: EncoderConfig = EncoderConfig()
    head: HeadConfig = HeadConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    peft: PeftConfig = PeftConfig()
    train: TrainConfig = TrainConfig(max_steps=600, lr=1e-3, warmup_steps=60, batch_seconds=30.0)


@dataclasses.dataclass(frozen=True)
class SpeechPretrainConfig:
    """Self-supervised speech pretraining: an encoder learns from unlabeled audio (transcripts ignored)."""

    data: DataConfig = DataConfig(max_duration=30.0)
    features: FeatureConfig = FeatureConfig()
    augment: AugmentConfig = AugmentConfig()  # speed and noise perturbation of the unlabeled audio
    encoder: EncoderConfig = EncoderConfig()
    ssl: SSLConfig = SSLConfig()
    train: TrainConfig = TrainConfig(lr=1e-3, warmup_steps=300)

    def __post_init__(self):
        utterance_norm_only(self.features, "pretrained speech encoder")


def to_dict(cfg: Any) -> dict:
    """Nested plain-dict view of a config dataclass (tuples become lists for JSON)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(hint, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build ``cls`` from a nested dict; unknown keys and wrong types raise ``ConfigError``."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known fields: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"encoder.d_model=96"`` -> (["encoder", "d_model"], 96); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. train.lr=1e-3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads 1e-3 as a string; numbers written that way are meant as floats
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: typing.Iterable[str]) -> dict:
    data = json.loads(json.dumps(data))
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            if k not in node:
                raise ConfigError(f"override {text!r}: unknown field {k!r}; known: {sorted(node)}")
            if not isinstance(node[k], dict):
                raise ConfigError(f"override {text!r}: {k!r} is not a config section")
            node = node[k]
        if keys[-1] not in node:
            raise ConfigError(f"override {text!r}: unknown field {keys[-1]!r}; known: {sorted(node)}")
        node[keys[-1]] = value
    return data


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: typing.Iterable[str] = (), base: T | None = None
) -> T:
    """Defaults (or ``base``), then the file at ``path``, then ``key=value`` overrides."""
    data = to_dict(base if base is not None else cls())
    if path is not None:
        file_data = read_config_file(path)
        data = _merge(data, file_data, str(path))
    data = apply_overrides(data, overrides)
    return from_dict(cls, data, str(path) if path else "config")


def _merge(base: dict, update: dict, where: str) -> dict:
    out = dict(base)
    for k, v in update.items():
        if k not in base:
            raise ConfigError(f"{where}: unknown field {k!r}; known fields: {sorted(base)}")
        out[k] = _merge(base[k], v, f"{where}.{k}") if isinstance(base[k], dict) and isinstance(v, dict) else v
    return out


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def format_config(cfg: Any) -> str:
    """Indented YAML of the config, for printing at the start of a run."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None).rstrip()


@dataclasses.dataclass(frozen=True)
class TextDataConfig:
    train_files: tuple[str, ...] = ()  # UTF-8 text files, one sentence or paragraph per line
    valid_files: tuple[str, ...] = ()  # held-out text for perplexity (default: valid_fraction of the lines)
    valid_fraction: float = 0.02  # lines held out when valid_files is empty
    builtin_sentences: int = 6000  # without train_files: this many built-in generator sentences (training split)


@dataclasses.dataclass(frozen=True)
class TextClassifyDataConfig:
    train_file: str = ""  # CSV/TSV with a header naming 'text' and 'label' columns, or JSON Lines with "text" and "label" (or "intent")
    valid_file: str = ""  # optional held-out file in the same format, scored after training


@dataclasses.dataclass(frozen=True)
class TextClassifyConfig:
    """A text classifier: a pretrained (``finetune.init``) or fresh language model + pooling head."""

    data: TextClassifyDataConfig = TextClassifyDataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig(kind="unigram", vocab_size=512)  # from scratch only; a pretrained LM brings its own
    lm: LMConfig = LMConfig(arch="mlm")  # from scratch only; a pretrained LM brings its own
    head: HeadConfig = HeadConfig(pooling="mean")
    finetune: FinetuneConfig = FinetuneConfig()
    peft: PeftConfig = PeftConfig()
    train: TrainConfig = TrainConfig(max_steps=600, lr=5e-4, warmup_steps=60, max_batch_size=64)


@dataclasses.dataclass(frozen=True)
class SpeechLMConfig:
    """The joint model: a pretrained speech encoder (``finetune.init``) -> projector -> a pretrained
    causal LM (``lm_init``) that answers a task prompt; paired data from ``data.train_manifest``."""

    data: DataConfig = DataConfig()
    features: FeatureConfig = FeatureConfig()  # from the encoder checkpoint
    spec_augment: SpecAugmentConfig = SpecAugmentConfig()
    augment: AugmentConfig = AugmentConfig()
    encoder: EncoderConfig = EncoderConfig()  # from the encoder checkpoint
    projector: ProjectorConfig = ProjectorConfig()
    lm: LMConfig = LMConfig()  # from the LM checkpoint
    lm_init: str = ""  # causal/LSTM LM directory (speechlm pretrain text) the model starts from ("" = a fresh LM)
    tasks: tuple[str, ...] = ("transcribe", "intent")  # prompts trained: transcribe (answer = text), intent (answer = label)
    lm_mode: str = "lora"  # "frozen", "lora" (peft settings below) or "full"
    finetune: FinetuneConfig = FinetuneConfig()  # encoder init and freezing (freeze_encoder_steps=-1 = frozen)
    peft: PeftConfig = PeftConfig(method="lora", rank=8)  # LoRA on the LM when lm_mode="lora"
    train: TrainConfig = TrainConfig(max_steps=1000, lr=1e-3, warmup_steps=100, batch_seconds=60.0)

    def __post_init__(self):
        utterance_norm_only(self.features, "speech-text model")
        if self.lm_mode not in ("frozen", "lora", "full"):
            raise ValueError(f"lm_mode must be 'frozen', 'lora' or 'full', got {self.lm_mode!r}")
        unknown = [t for t in self.tasks if t not in SPEECH_LM_TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {SPEECH_LM_TASKS}, got {list(self.tasks)}")


SPEECH_LM_TASKS = ("transcribe", "intent")


@dataclasses.dataclass(frozen=True)
class TextPretrainConfig:
    """A text language model (causal, masked or LSTM) trained on plain text."""

    data: TextDataConfig = TextDataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig(kind="unigram", vocab_size=512)
    lm: LMConfig = LMConfig()
    train: TrainConfig = TrainConfig(lr=1e-3, warmup_steps=200, max_batch_size=32, max_steps=2000)


@dataclasses.dataclass(frozen=True)
class JointPretrainConfig:
    """Joint speech-text pretraining: masked prediction on all audio, CTC on a paired subset, masked LM on text."""

    data: DataConfig = DataConfig(max_duration=30.0)  # train_manifest: all its audio is unlabeled speech; transcripts of a subset are paired
    text: TextDataConfig = TextDataConfig()  # unpaired text (files or built-in generator sentences)
    features: FeatureConfig = FeatureConfig()
    augment: AugmentConfig = AugmentConfig()
    encoder: EncoderConfig = EncoderConfig()
    ssl: SSLConfig = SSLConfig()
    joint: JointConfig = JointConfig()
    train: TrainConfig = TrainConfig(lr=1e-3, warmup_steps=300)

    def __post_init__(self):
        utterance_norm_only(self.features, "joint speech-text pretraining")
