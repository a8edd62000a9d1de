"""Text classification on a language model: from scratch and from a pretrained LM, LoRA on the LM,
CSV and JSON Lines label files, clear errors."""

from __future__ import annotations

import csv
import json

import pytest

from speechlm.config import TextClassifyConfig, load_config
from speechlm.data import sentences
from speechlm.errors import ManifestError
from speechlm.intent import read_labeled_text
from speechlm.train.classify import ADAPTER_FILE
from speechlm.train.text_classify import TextClassifierModel, train_text_classifier


@pytest.fixture(scope="module")
def intent_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("textcls")
    train, test = sentences.split(sentences.generate(1500, seed=4))
    with open(root / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([(s.text, s.intent) for s in train[:600]])
    (root / "test.jsonl").write_text("".join(json.dumps({"text": s.text, "intent": s.intent}) + "\n" for s in test[:100]))
    return root / "train.csv", root / "test.jsonl"


def cfg(train_file, *extra) -> TextClassifyConfig:
    return load_config(TextClassifyConfig, overrides=[
        f"data.train_file={train_file}", "lm.d_model=48", "lm.n_layers=2", "lm.n_heads=4", "lm.context=48", "tokenizer.vocab_size=300",
        "head.hidden=0", "train.max_steps=60", "train.warmup_steps=5", "train.lr=3e-3", "train.max_batch_size=32", "train.precision=fp32",
        "train.log_every=20", *extra,
    ])  # fmt: skip


def test_from_scratch_learns_intents_from_csv(intent_files, tmp_path):
    train_file, test_file = intent_files
    train_text_classifier(cfg(train_file), tmp_path / "run", progress=False)
    model = TextClassifierModel.load(tmp_path / "run")
    texts, truth = read_labeled_text([test_file])
    report = model.evaluate(texts, truth)
    print(f"accuracy {report.accuracy:.3f}")
    assert report.accuracy > 0.6  # measured 0.98 after 60 steps; 10 intents, chance 0.1
    assert len(model.labels) == 10 and model.predict(["set an alarm for six"])[0][0] == "set_alarm"
    probs = model.probabilities(texts[:5], batch_size=2)  # three batches, the last one short
    assert probs.shape == (5, 10) and abs(probs.sum(1) - 1).max() < 1e-5
    assert [model.labels[k] for k in probs.argmax(1)] == [lab for lab, _ in model.predict(texts[:5])]


def test_lora_on_a_pretrained_lm_saves_only_its_weights(intent_files, tiny_lm_dir, tmp_path):
    train_file, test_file = intent_files
    c = cfg(train_file, f"finetune.init={tiny_lm_dir}", "peft.method=lora", "peft.rank=4", "train.max_steps=20")
    train_text_classifier(c, tmp_path / "lora", progress=False)
    d = tmp_path / "lora" / "model"
    assert (d / ADAPTER_FILE).is_file() and not (d / "model.safetensors").exists()
    saved = json.loads((d / "config.json").read_text())
    assert saved["lm"]["context"] == 32 and saved["finetune"]["init"] == str(tiny_lm_dir)  # the pretrained LM's config
    a = TextClassifierModel.load(tmp_path / "lora").predict(["play some jazz", "what time is it"])
    b = TextClassifierModel.load(tmp_path / "lora").predict(["play some jazz", "what time is it"])
    assert a == b and all(lab in TextClassifierModel.load(tmp_path / "lora").labels for lab, _ in a)


def test_label_file_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,category\nhello,greet\n")
    with pytest.raises(ManifestError, match="must name a 'text' and a 'label' column"):
        read_labeled_text([bad])
    bad.write_text("text,label\nhello,greet\nbye,\n")
    with pytest.raises(ManifestError, match=r"bad.csv:3: missing 'label'"):
        read_labeled_text([bad])
    one = tmp_path / "one.jsonl"
    one.write_text('{"text": "hi", "label": "a"}\n{"text": "yo", "label": "a"}\n')
    with pytest.raises(ManifestError, match="at least 2 labels"):
        train_text_classifier(cfg(one), tmp_path / "x", progress=False)
    two = tmp_path / "two.jsonl"
    two.write_text('{"text": "hi", "label": "a"}\n{"text": "yo", "label": "b"}\n')
    with pytest.raises(ValueError, match="layer_weights"):
        train_text_classifier(cfg(two, "head.layer_weights=true"), tmp_path / "y", progress=False)
