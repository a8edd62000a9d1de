"""Metrics: word and character error rates (jiwer); accuracy, macro precision/recall/F1 and
confusion matrices for classification (scikit-learn)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jiwer

from speechlm.data.tokenizer import normalize_text


@dataclasses.dataclass(frozen=True)
class ErrorRates:
    wer: float  # word errors / reference words
    cer: float  # character errors / reference characters
    words: int  # reference words
    word_errors: int  # substitutions + deletions + insertions
    chars: int
    char_errors: int


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    """Corpus-level WER and CER after :func:`normalize_text` on both sides."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]
    if not keep:
        raise ValueError("every reference is empty: WER is undefined")
    refs, hyps = [refs[i] for i in keep], [hyps[i] for i in keep]
    w = jiwer.process_words(refs, hyps)
    c = jiwer.process_characters(refs, hyps)
    n_words = sum(len(r.split()) for r in refs)
    n_chars = sum(len(r) for r in refs)
    w_err = w.substitutions + w.deletions + w.insertions
    c_err = c.substitutions + c.deletions + c.insertions
    return ErrorRates(w_err / n_words, c_err / n_chars, n_words, w_err, n_chars, c_err)


def utterance_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word errors, reference words) for one utterance."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return len(hyp.split()), 0
    w = jiwer.process_words(ref, hyp)
    return w.substitutions + w.deletions + w.insertions, len(ref.split())


@dataclasses.dataclass(frozen=True)
class ClassificationReport:
    labels: list[str]  # class names, the order of ``confusion``'s rows and columns
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]  # label -> precision, recall, f1, support
    confusion: list[list[int]]  # [true][predicted] counts

    def summary(self) -> dict:
        scores = {k: getattr(self, k) for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1")}
        return scores | {"examples": int(sum(map(sum, self.confusion)))}

    def scope(self, out_label: str = "oos") -> dict:
        """With an out-of-scope label: accuracy over the examples of the other labels (``in_scope_accuracy``, None
        without any) and the out-of-scope label's recall (``oos_recall``, None without such examples)."""
        inside = [i for i, lab in enumerate(self.labels) if lab != out_label]
        n_in = sum(self.per_class[self.labels[i]]["support"] for i in inside)
        out = self.per_class.get(out_label, {})
        return {"in_scope_accuracy": sum(self.confusion[i][i] for i in inside) / n_in if n_in else None, "in_scope_examples": n_in,
                "oos_recall": out["recall"] if out.get("support") else None, "oos_examples": out.get("support", 0)}


def classification_report(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> ClassificationReport:
    """Accuracy, macro averages over ``labels`` (classes absent from ``truth`` count as 0 recall
    only if predicted), per-class figures and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predictions")
    if not truth:
        raise ValueError("no examples to score")
    labels = list(labels)
    p, r, f, n = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0)
    present = n > 0  # macro averages over the classes the test set contains
    per_class = {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(n[i])} for i, lab in enumerate(labels)}
    acc = sum(t == q for t, q in zip(truth, predicted)) / len(truth)
    cm = confusion_matrix(truth, predicted, labels=labels).tolist()
    return ClassificationReport(labels, acc, float(p[present].mean()), float(r[present].mean()), float(f[present].mean()), per_class, cm)
