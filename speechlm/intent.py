"""Text intent classification: hashed character (and optionally word) n-grams + multinomial
logistic regression.

A small, fast classifier for the assistant's pipeline (ASR transcript -> intent). Character
n-grams inside word boundaries tolerate the spelling errors of an imperfect recognizer better
than whole words. Word n-grams (``word_ngram_max``) add the phrases ("play the", "how much")
that character n-grams cannot span: they help on clean text and hurt on a weak recognizer's
transcripts (the demo's: 91.0 vs 94.3 %), so they are off by default. The hashing vectorizers
are stateless, so a saved model is its config plus two arrays (``coef``, ``intercept``) in
safetensors: no pickled objects are ever loaded.

Usage:
    speechlm intent train runs/intent --data data/demo/train/manifest.jsonl
    speechlm intent predict runs/intent "wake me up at seven"

>>> clf = IntentClassifier.train(["set an alarm", "what's the weather"] * 4, ["alarm", "weather"] * 4)
>>> clf.predict(["set the alarm"])[0].intent
'alarm'
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from safetensors.numpy import load_file, save_file
from scipy.sparse import hstack
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression

from speechlm.data.tokenizer import normalize_text
from speechlm.errors import CheckpointError, ManifestError
from speechlm.train.checkpoint import CONFIG_FILE, read_config_json, resolve_model_dir, write_atomic_dir

WEIGHTS_FILE = "intent.safetensors"


@dataclasses.dataclass(frozen=True)
class IntentConfig:
    ngram_min: int = 2  # shortest character n-gram (within word boundaries)
    ngram_max: int = 4  # longest character n-gram
    word_ngram_max: int = 0  # longest word n-gram, hashed into its own num_features buckets (0 = characters only)
    num_features: int = 2**16  # hashed buckets per analyzer; the weights are (classes, dim) floats
    c: float = 10.0  # inverse L2 regularization strength of the logistic regression
    max_iter: int = 500  # solver iterations
    # answer reject_label instead of the best intent when that intent's probability is below reject_below (0 = never):
    # out-of-scope rejection for a set with no "other" class, or a stricter one for a set with one (CLINC150's "oos")
    reject_below: float = 0.0
    reject_label: str = "oos"

    def __post_init__(self):
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(f"intent n-gram range must satisfy 1 <= ngram_min <= ngram_max, got {self.ngram_min}-{self.ngram_max}")
        if self.word_ngram_max < 0:
            raise ValueError(f"intent word_ngram_max must be >= 0, got {self.word_ngram_max}")
        if not 0.0 <= self.reject_below < 1.0:
            raise ValueError(f"intent reject_below must be in [0, 1), got {self.reject_below}")
        if not self.reject_label.strip():
            raise ValueError("intent reject_label must be a non-empty label")

    @property
    def dim(self) -> int:
        """Length of a text's feature vector: character buckets, then word buckets."""
        return self.num_features * (2 if self.word_ngram_max else 1)


@dataclasses.dataclass(frozen=True)
class IntentPrediction:
    intent: str  # most probable label
    confidence: float  # its probability
    scores: dict[str, float]  # probability of every label


def read_labeled_text(paths: Sequence[str | Path]) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` from JSON Lines files whose rows hold ``text`` and ``label`` (or
    ``intent``), such as the manifests ``speechlm synth`` writes, or from CSV/TSV files with a
    header naming ``text`` and ``label`` columns; a bad row names file and line."""
    texts, labels = [], []
    for path in paths:
        path = Path(path)
        try:
            content = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ManifestError(f"{path}: cannot read ({e.strerror})") from None
        except UnicodeDecodeError:
            raise ManifestError(f"{path}: not UTF-8 text; expected JSON Lines or CSV with 'text' and 'label'") from None
        for where, text, label in _labeled_rows(path, content):
            if not isinstance(text, str) or not normalize_text(text):
                raise ManifestError(f"{where}: missing or empty 'text'")
            if not isinstance(label, str) or not label.strip():
                raise ManifestError(f"{where}: missing 'label' (or 'intent')")
            texts.append(text)
            labels.append(label.strip())
    if not texts:
        raise ManifestError(f"{', '.join(map(str, paths))}: no labeled rows")
    return texts, labels


def _labeled_rows(path: Path, content: str):
    """``(where, text, label)`` per row of a JSON Lines or CSV/TSV file."""
    if path.suffix.lower() in (".csv", ".tsv"):
        import csv

        reader = csv.DictReader(content.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        label_col = columns.get("label") or columns.get("intent")
        if "text" not in columns or label_col is None:
            raise ManifestError(f"{path}: the header must name a 'text' and a 'label' column, got {reader.fieldnames}")
        for n, row in enumerate(reader, 2):
            yield f"{path}:{n}", row.get(columns["text"]), row.get(label_col)
        return
    for n, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{path}:{n}: expected a JSON object per line")
        yield f"{path}:{n}", row.get("text"), row.get("label", row.get("intent"))


def decide(probs: np.ndarray, labels: Sequence[str], reject_below: float = 0.0, reject_label: str = "oos") -> list[str]:
    """Each row's most probable label of ``(N, len(labels))`` ``probs``, or ``reject_label`` where that label's
    probability is below ``reject_below``: the classifier's answer with out-of-scope rejection."""
    best = probs.argmax(1)
    return [labels[k] if probs[n, k] >= reject_below else reject_label for n, k in enumerate(best)]


class IntentClassifier:
    def __init__(self, cfg: IntentConfig, labels: Sequence[str], coef: np.ndarray, intercept: np.ndarray):
        self.cfg = cfg
        self.labels = list(labels)
        self.coef = coef  # (C, F) float32
        self.intercept = intercept  # (C,) float32
        hashing = dict(n_features=cfg.num_features, alternate_sign=False, norm="l2", lowercase=False)
        self.vectorizers = [HashingVectorizer(analyzer="char_wb", ngram_range=(cfg.ngram_min, cfg.ngram_max), **hashing)]
        if cfg.word_ngram_max:
            self.vectorizers.append(HashingVectorizer(analyzer="word", ngram_range=(1, cfg.word_ngram_max), token_pattern=r"\S+", **hashing))

    def features(self, texts: Sequence[str]):
        """``(N, cfg.dim)`` sparse features of the normalized texts."""
        normalized = [normalize_text(t) for t in texts]
        return hstack([v.transform(normalized) for v in self.vectorizers]).tocsr()

    @classmethod
    def train(cls, texts: Sequence[str], labels: Sequence[str], cfg: IntentConfig = IntentConfig()) -> "IntentClassifier":
        names = sorted(set(labels))
        if len(names) < 2:
            raise ManifestError(f"intent training needs at least 2 labels, got {names}")
        clf = cls(cfg, names, np.zeros((len(names), cfg.dim), np.float32), np.zeros(len(names), np.float32))
        x = clf.features(texts)
        y = np.array([names.index(lab) for lab in labels])
        lr = LogisticRegression(C=cfg.c, max_iter=cfg.max_iter).fit(x, y)
        if len(names) == 2:  # sklearn keeps one row for two classes: logit(class 1) = w.x + b
            clf.coef = np.concatenate([-lr.coef_ / 2, lr.coef_ / 2]).astype(np.float32)
            clf.intercept = np.concatenate([-lr.intercept_ / 2, lr.intercept_ / 2]).astype(np.float32)
        else:
            clf.coef, clf.intercept = lr.coef_.astype(np.float32), lr.intercept_.astype(np.float32)
        return clf

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, len(self.labels))`` class probabilities of ``texts``."""
        if not len(texts):  # the vectorizers cannot transform an empty batch
            return np.zeros((0, len(self.labels)), np.float32)
        logits = np.asarray(self.features(texts) @ self.coef.T) + self.intercept
        probs = np.exp(logits - logits.max(1, keepdims=True))
        return probs / probs.sum(1, keepdims=True)

    def nbest_probabilities(self, nbest: Sequence[Sequence[tuple[str, float]]], scale: float = 1.0) -> np.ndarray:
        """``(N, len(self.labels))`` class probabilities of N recognizer outputs, each an N-best list of ``(text, score)``
        (:meth:`~speechlm.decode.transcribe.Recognizer.transcribe_nbest`): the mean of each hypothesis' class probabilities
        weighted by ``softmax(scale * scores)`` over its list, i.e. the intent's probability with the transcript
        marginalized over the list. ``scale`` 1 takes the scores as log-probabilities; 0 weighs every hypothesis alike."""
        if scale < 0:
            raise ValueError(f"N-best scale must be >= 0, got {scale}")
        empty = next((n for n, hyps in enumerate(nbest) if not hyps), None)
        if empty is not None:
            raise ValueError(f"N-best list {empty + 1} is empty")
        if not len(nbest):
            return np.zeros((0, len(self.labels)))
        probs = self.probabilities([text for hyps in nbest for text, _ in hyps])  # every hypothesis in one batch
        starts = np.cumsum([0] + [len(hyps) for hyps in nbest[:-1]])
        scores = scale * np.array([score for hyps in nbest for _, score in hyps], np.float64)
        weights = np.exp(scores - np.repeat(np.maximum.reduceat(scores, starts), [len(h) for h in nbest]))
        weights /= np.repeat(np.add.reduceat(weights, starts), [len(h) for h in nbest])
        return np.add.reduceat(weights[:, None] * probs, starts, axis=0)

    def predict(self, texts: Sequence[str], reject_below: float | None = None) -> list[IntentPrediction]:
        """The best intent of each text, or ``cfg.reject_label`` where its probability is below ``reject_below``
        (default: the model's ``cfg.reject_below``); ``confidence`` is the best intent's probability either way."""
        return self.predictions(self.probabilities(texts), reject_below)

    def predictions(self, probs: np.ndarray, reject_below: float | None = None) -> list[IntentPrediction]:
        """:meth:`predict`'s answers from ``(N, len(self.labels))`` class probabilities got another way (an N-best list's,
        or the product with a speech classifier's), with this model's out-of-scope rejection."""
        threshold = self.cfg.reject_below if reject_below is None else reject_below
        names = decide(probs, self.labels, threshold, self.cfg.reject_label)
        return [IntentPrediction(name, float(p.max()), {lab: float(v) for lab, v in zip(self.labels, p)}) for name, p in zip(names, probs)]

    def save(self, target: str | Path, summary: dict | None = None) -> Path:
        def write(d: Path) -> None:
            # safetensors writes the raw buffer: a Fortran-ordered array (sklearn's coef_) must be made C-ordered
            arrays = {"coef": np.ascontiguousarray(self.coef), "intercept": np.ascontiguousarray(self.intercept)}
            save_file(arrays, str(d / WEIGHTS_FILE))
            config = {"kind": "intent", "intent": dataclasses.asdict(self.cfg), "labels": self.labels, **(summary or {})}
            (d / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")

        return write_atomic_dir(target, write)

    @classmethod
    def load(cls, model_dir: str | Path) -> "IntentClassifier":
        d = Path(model_dir)
        if not (d / CONFIG_FILE).is_file():
            d = resolve_model_dir(model_dir)
        data = read_config_json(d)
        if data.get("kind") != "intent":
            raise CheckpointError(f"{model_dir}: not an intent classifier (train one with `speechlm intent train`)")
        try:
            cfg = IntentConfig(**data["intent"])
            weights = load_file(str(d / WEIGHTS_FILE))
            coef, intercept = weights["coef"], weights["intercept"]
        except (KeyError, TypeError, ValueError, OSError) as e:
            raise CheckpointError(f"{d}: incomplete or corrupt intent classifier ({e})") from None
        labels = data.get("labels")
        if not isinstance(labels, list) or coef.shape != (len(labels), cfg.dim) or intercept.shape != (len(labels),):
            raise CheckpointError(f"{d}: weights do not match the {len(labels or [])} labels in {CONFIG_FILE}")
        return cls(cfg, labels, coef, intercept)
