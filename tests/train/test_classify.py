"""Utterance classifiers: pooling heads, training, LoRA and adapters (adapter-only checkpoints,
merging), evaluation reports, bad labels; real recordings from ../shared/data when present."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from speechlm.config import ClassifyConfig, load_config
from speechlm.data.manifest import Utterance, write_manifest
from speechlm.errors import CheckpointError, ManifestError, SpeechLMError
from speechlm.features import FeatureConfig, SpecAugmentConfig
from speechlm.models.classifier import HeadConfig, SpeechClassifier
from speechlm.models.encoders import EncoderConfig
from speechlm.train.classify import ADAPTER_FILE, Classifier, ClassifierEnsemble, checkpoint_bytes, evaluate_classifier, merge_adapter_dir, pseudo_label, train_classifier
from speechlm.train.checkpoint import MODEL_FILE

from conftest import PITCH, SHARED_DATA

def tiny_cfg(manifest, *extra) -> ClassifyConfig:
    return load_config(ClassifyConfig, overrides=[
        f"data.train_manifest={manifest}", "encoder.d_model=48", "encoder.n_layers=2", "encoder.n_heads=2", "encoder.conv_kernel=7",
        "head.hidden=32", "train.precision=fp32", "train.batch_seconds=8", "train.warmup_steps=4", "train.lr=3e-3",
        "train.log_every=10", "train.max_steps=40", *extra,
    ])  # fmt: skip


@pytest.fixture(scope="module")
def trained(pitch_corpus, tmp_path_factory):
    manifest, _ = pitch_corpus
    run = tmp_path_factory.mktemp("clf") / "full"
    result = train_classifier(tiny_cfg(manifest), run, progress=False)
    return run, result


def test_every_head_field_changes_the_output():
    torch.manual_seed(0)
    audio, lens = torch.randn(2, 8000), torch.tensor([8000, 5000])
    enc = EncoderConfig(d_model=32, n_layers=2, n_heads=2, conv_kernel=3, dropout=0.0)

    def run(head):
        torch.manual_seed(0)
        m = SpeechClassifier(FeatureConfig(), SpecAugmentConfig(), enc, head, 4).eval()
        if m.head.layer_logits is not None:
            torch.nn.init.normal_(m.head.layer_logits)  # uniform weights would equal the mean of the layers
        return m(audio, lens).logits

    base = run(HeadConfig(dropout=0.0))
    for change in (dict(pooling="mean"), dict(layer_weights=True), dict(hidden=0), dict(hidden=64)):
        assert not torch.allclose(base, run(HeadConfig(dropout=0.0, **change))), change


def test_mfcc_classifiers_warp_their_bands_in_training_only():
    torch.manual_seed(0)
    audio, lens = torch.randn(2, 8000), torch.tensor([8000, 5000])
    enc = EncoderConfig(d_model=32, n_layers=2, n_heads=2, conv_kernel=3, dropout=0.0)
    still = SpecAugmentConfig(freq_masks=0, time_masks=0, warp=0.0)
    m = SpeechClassifier(FeatureConfig(kind="mfcc", n_mfcc=13), dataclasses.replace(still, mfcc_warp=0.2), enc, HeadConfig(dropout=0.0), 3)
    head_only = [n for n, mod in m.named_modules() if isinstance(mod, torch.nn.Dropout) and mod.p > 0]
    assert not head_only  # nothing else in the model is random in training mode
    evaluated = m.eval()(audio, lens).logits
    assert torch.equal(m(audio, lens).logits, evaluated)
    assert not torch.allclose(m.train()(audio, lens).logits, evaluated, atol=1e-4)
    m.spec_augment.cfg = still  # without the band warp, training mode gives the same output
    assert torch.allclose(m(audio, lens).logits, evaluated, atol=1e-5)


def test_padding_does_not_change_a_clip_s_prediction():
    torch.manual_seed(0)
    enc = EncoderConfig(d_model=32, n_layers=2, n_heads=2, conv_kernel=3, dropout=0.0)
    for pooling in ("mean", "attentive"):
        m = SpeechClassifier(FeatureConfig(), SpecAugmentConfig(), enc, HeadConfig(pooling=pooling, dropout=0.0), 3).eval()
        clip = torch.randn(1, 6000)
        alone = m(clip, torch.tensor([6000])).logits
        padded = m(torch.cat([clip, torch.zeros(1, 4000)], 1).repeat(2, 1), torch.tensor([6000, 10000])).logits[:1]
        assert torch.allclose(alone, padded, atol=1e-4)


def test_training_learns_and_evaluation_reports(trained, pitch_corpus, tmp_path):
    run, result = trained
    _, utts = pitch_corpus
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    clf = Classifier.load(run)
    assert clf.labels == sorted(PITCH)
    report, rows, _ = evaluate_classifier(clf, utts)
    assert report.accuracy >= 0.7  # measured: 0.81 after 40 steps (chance 0.33)
    assert np.array(report.confusion).sum() == 36 and np.trace(report.confusion) == round(report.accuracy * 36)
    assert set(report.per_class) == set(PITCH) and all(r["support"] == 12 for r in report.per_class.values())
    assert rows[0]["label"] in PITCH and 0 < rows[0]["confidence"] <= 1
    short = clf.predict([np.zeros(100, np.float32)])  # 6 ms: padded, not an error
    assert short[0][0] in PITCH
    with pytest.raises(ManifestError, match="'gigantic'.*--reject-below T --reject-label gigantic"):
        evaluate_classifier(clf, [Utterance(utts[0].audio_filepath, 0.5, "", label="gigantic")])
    # out-of-scope rejection: below the threshold the answer is the reject label, and clips labeled so are scored
    from speechlm.data.audio import load_audio

    audios = [load_audio(u.audio_filepath) for u in utts]
    probs = clf.probabilities(audios)
    threshold = float(np.median(probs.max(1)))
    rejected = clf.predict(audios, reject_below=threshold, reject_label="none")
    assert [lab for lab, _ in rejected] == [clf.labels[k] if p[k] >= threshold else "none" for k, p in zip(probs.argmax(1), probs)]
    assert {lab for lab, _ in rejected} > {"none"} and all(c == pytest.approx(float(p.max())) for (_, c), p in zip(rejected, probs))
    mixed = [*utts[:30], *(dataclasses.replace(u, label="none") for u in utts[30:])]
    report, _, _ = evaluate_classifier(clf, mixed, reject_below=threshold, reject_label="none")
    truth, preds = [u.label for u in mixed], [lab for lab, _ in rejected]
    assert report.labels == [*clf.labels, "none"] and report.accuracy == pytest.approx(np.mean([t == q for t, q in zip(truth, preds)]))
    assert report.scope("none")["oos_recall"] == pytest.approx(np.mean([q == "none" for q in preds[30:]]))


def test_lora_and_adapters_train_few_weights_save_them_alone_and_merge(trained, pitch_corpus, tmp_path):
    manifest, utts = pitch_corpus
    base, _ = trained
    from speechlm.data.audio import load_audio

    audios = [load_audio(u.audio_filepath) for u in utts[:6]]
    full_bytes = checkpoint_bytes(base)
    for method in ("lora", "adapter"):
        from speechlm.train.finetune import config_from_pretrained

        cfg = config_from_pretrained(tiny_cfg(manifest, f"peft.method={method}", "peft.rank=4", "train.max_steps=15"), base / "model")
        run = tmp_path / method
        train_classifier(cfg, run, progress=False)
        assert (run / "model" / ADAPTER_FILE).is_file() and not (run / "model" / MODEL_FILE).exists()
        assert checkpoint_bytes(run) < full_bytes / 3  # head + low-rank weights only
        clf = Classifier.load(run)
        # the frozen encoder weights are the pretrained ones
        pre = Classifier.load(base)
        w = "encoder.subsampling.conv1.weight"
        assert torch.equal(clf.model.state_dict()[w], pre.model.state_dict()[w])
        probs = clf.probabilities(audios)
        merged = merge_adapter_dir(run, tmp_path / f"{method}_merged")
        standalone = Classifier.load(merged)
        assert np.allclose(standalone.probabilities(audios), probs, atol=1e-5)
        cfg_merged = json.loads((merged / "config.json").read_text())
        assert cfg_merged["peft"]["method"] == ("none" if method == "lora" else "adapter")
        if method == "lora":
            assert not any("lora" in n for n in standalone.model.state_dict())


def test_an_ensemble_averages_its_members_by_label_name(trained, pitch_corpus, tmp_path):
    manifest, utts = pitch_corpus
    base, _ = trained
    other = tmp_path / "seed1"
    train_classifier(tiny_cfg(manifest, "train.seed=1", "train.max_steps=15"), other, progress=False)
    from speechlm.data.audio import load_audio

    audios = [load_audio(u.audio_filepath) for u in utts[::6]]
    a, b = Classifier.load(base), Classifier.load(other)
    pa, pb = a.probabilities(audios), b.probabilities(audios)
    assert not np.allclose(pa, pb, atol=1e-3)  # two different models
    mean = ClassifierEnsemble.load([base, other]).probabilities(audios)
    assert np.allclose(mean, (pa + pb) / 2, atol=1e-6) and np.allclose(mean.sum(1), 1, atol=1e-5)
    # a member that lists its labels in another order is matched by name, not by column
    last = b.model.head.mlp[-1]
    with torch.no_grad():
        last.weight.copy_(last.weight.flip(0))
        last.bias.copy_(last.bias.flip(0))
    b.labels = b.labels[::-1]
    assert np.allclose(b.probabilities(audios), pb[:, ::-1], atol=1e-6)
    assert np.allclose(ClassifierEnsemble([a, b], ["a", "b"]).probabilities(audios), mean, atol=1e-6)
    b.labels = ["high", "loud", "mid"]
    with pytest.raises(CheckpointError, match=r"b: its labels differ from a's \(only here: \['loud'\], missing: \['low'\]"):
        ClassifierEnsemble([a, b], ["a", "b"])


def test_test_time_speeds_average_the_clip_played_at_each_speed(trained, pitch_corpus, tmp_path):
    from speechlm.data.audio import load_audio
    from speechlm.data.augment import speed_perturb
    from speechlm.train.classify import SpeedAveraged, load_classifier

    _, utts = pitch_corpus
    audios = [load_audio(u.audio_filepath) for u in utts[::4]]
    clf = Classifier.load(trained[0])
    plain = clf.probabilities(audios)
    assert np.allclose(SpeedAveraged(clf, [1.0]).probabilities(audios), plain, atol=1e-6)
    each = [clf.probabilities([speed_perturb(a, s) for a in audios]) for s in (0.9, 1.1)]
    assert not np.allclose(each[0], each[1], atol=1e-3)  # a pitch classifier hears the speed
    tta = load_classifier(trained[0], speeds=[0.9, 1.1])
    assert tta.labels == clf.labels and np.allclose(tta.probabilities(audios), (each[0] + each[1]) / 2, atol=1e-6)
    both = load_classifier(trained[0], [trained[0]], speeds=[0.9, 1.1])  # composes with an ensemble (of one model twice)
    assert np.allclose(both.probabilities(audios), tta.probabilities(audios), atol=1e-6)
    report, rows, _ = evaluate_classifier(tta, utts, balance=True)
    assert len(rows) == len(utts) and 0 <= report.accuracy <= 1
    for bad in ([], [0.3], [1.0, 2.5]):
        with pytest.raises(ValueError, match="test-time speeds must be between 0.5 and 2.0"):
            SpeedAveraged(clf, bad)


def test_pseudo_labels_keep_confident_predictions_capped_per_label(trained, pitch_corpus):
    _, utts = pitch_corpus
    run, _ = trained
    clf = Classifier.load(run)
    from speechlm.data.audio import load_audio

    probs = clf.probabilities([load_audio(u.audio_filepath) for u in utts])
    predicted, conf = [clf.labels[i] for i in probs.argmax(1)], probs.max(1)
    everything = pseudo_label(clf, utts, min_confidence=0.0)
    assert [u.audio_filepath for u in everything] == [u.audio_filepath for u in utts]  # input order, nothing dropped
    assert [u.label for u in everything] == predicted  # the prediction replaces the manifest's label
    assert np.mean([u.label == t.label for u, t in zip(everything, utts)]) >= 0.7  # the trained model is mostly right
    cut = float(np.median(conf))
    confident = pseudo_label(clf, utts, min_confidence=cut)
    assert {u.audio_filepath for u in confident} == {u.audio_filepath for u, c in zip(utts, conf) if c >= cut}
    capped = pseudo_label(clf, utts, min_confidence=0.0, per_label=2)
    for label in set(predicted):
        mine = sorted((c for p, c in zip(predicted, conf) if p == label), reverse=True)
        kept = sorted((c for u, p, c in zip(utts, predicted, conf) if p == label and u.audio_filepath in {k.audio_filepath for k in capped}), reverse=True)
        assert kept == mine[:2]  # the two most confident of each predicted label
    assert pseudo_label(clf, [], 0.5) == []
    with pytest.raises(ValueError, match="min_confidence"):
        pseudo_label(clf, utts, min_confidence=1.5)
    with pytest.raises(ValueError, match="per_label"):
        pseudo_label(clf, utts, per_label=0)


def test_balancing_gives_each_label_an_equal_share_and_undoes_a_systematic_confusion(trained, pitch_corpus):
    from speechlm.train.classify import balance_probabilities

    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 20)  # a batch saying each of 3 labels 20 times
    probs = np.full((60, 3), 0.05)
    probs[truth == 0, 0] = 0.9
    probs[truth == 1, 0] = 0.55  # a new voice's label 1 sounds like label 0 to the model ...
    probs[truth == 1, 1] = 0.40  # ... though less surely than label 0 itself
    probs[truth == 2, 2] = 0.9
    probs = probs + rng.uniform(0, 0.02, probs.shape)
    probs /= probs.sum(1, keepdims=True)
    assert (probs.argmax(1) == truth).mean() < 0.7
    balanced = balance_probabilities(probs)
    assert np.allclose(balanced.sum(1), 1, atol=1e-5) and np.allclose(balanced.sum(0), 20, atol=0.05)
    assert (balanced.argmax(1) == truth).all()
    with pytest.raises(ValueError, match="at least as many clips as the model has labels"):
        balance_probabilities(probs[:2])
    _, utts = pitch_corpus  # 12 clips of each of the 3 labels: balanced pseudo-labels are about as many of each
    clf = Classifier.load(trained[0])
    kept = pseudo_label(clf, utts, min_confidence=0.0, balance=True)
    assert len(kept) == 36 and all(11 <= n <= 13 for n in np.unique([u.label for u in kept], return_counts=True)[1])
    report, _, _ = evaluate_classifier(clf, utts, balance=True)
    assert report.accuracy >= evaluate_classifier(clf, utts)[0].accuracy - 1e-9


def test_corpus_normalization_is_measured_on_the_training_clips_and_saved(pitch_corpus, tmp_path):
    manifest, utts = pitch_corpus
    from speechlm.config import ASRConfig, ConfigError
    from speechlm.data.audio import load_audio
    from speechlm.features import compute_features

    run = tmp_path / "corpus"
    train_classifier(tiny_cfg(manifest, "features.kind=mfcc", "features.n_mfcc=13", "features.normalize_over=corpus", "train.max_steps=10"), run, progress=False)
    clf = Classifier.load(run)
    norm = clf.model.corpus_norm
    audios = [load_audio(u.audio_filepath) for u in utts]
    feats = torch.cat([compute_features(torch.from_numpy(a)[None], None, clf.cfg.features)[0][0] for a in audios])
    assert torch.allclose(norm.mean, feats.mean(0), atol=1e-2 * feats.std(0).max())  # all 36 clips, clean, were measured
    assert torch.allclose(norm.std, feats.std(0), rtol=0.02)
    assert float(norm.std[0]) > 5  # MFCC c0 in dB: far from unit scale before normalization
    assert clf.predict(audios[:2])[0][0] in PITCH
    lora = tmp_path / "corpus_lora"  # an adapter-only checkpoint keeps the statistics it was trained with
    from speechlm.train.finetune import config_from_pretrained

    train_classifier(config_from_pretrained(tiny_cfg(manifest, "peft.method=lora", "train.max_steps=3"), run / "model"), lora, progress=False)
    assert torch.allclose(Classifier.load(lora).model.corpus_norm.mean, norm.mean, atol=1e-3 * float(norm.std.max()))
    with pytest.raises(ConfigError, match="for speech classifiers"):
        load_config(ASRConfig, overrides=["features.normalize_over=corpus"])


def test_trimmed_classifiers_train_and_predict_without_the_clips_silence(pitch_corpus, tmp_path):
    import dataclasses

    from speechlm.config import ConfigError
    from speechlm.data.audio import load_audio, trim_silence, write_audio
    from speechlm.data.batching import SpeechDataset

    _, utts = pitch_corpus
    padded = []  # the same tones framed by 0.5 s of silence on each side
    for i, u in enumerate(utts):
        write_audio(tmp_path / f"p{i}.wav", np.pad(load_audio(u.audio_filepath), 8000))
        padded.append(dataclasses.replace(u, audio_filepath=str(tmp_path / f"p{i}.wav"), duration=u.duration + 1.0))
    write_manifest(tmp_path / "padded.jsonl", padded)
    dataset = SpeechDataset(padded[:4], trim_db=30, progress=False)
    assert np.allclose(dataset.durations, [u.duration for u in utts[:4]], atol=0.05)  # what the model trains on
    run = tmp_path / "trim"
    train_classifier(tiny_cfg(tmp_path / "padded.jsonl", "data.trim_db=30", "train.max_steps=5"), run, progress=False)
    clf = Classifier.load(run)
    assert clf.cfg.data.trim_db == 30  # saved with the model: every prediction trims as training did
    audio = load_audio(padded[0].audio_filepath)
    assert np.allclose(clf.probabilities([audio]), clf.probabilities([trim_silence(audio, 30)]))
    untrimmed = Classifier(dataclasses.replace(clf.cfg, data=dataclasses.replace(clf.cfg.data, trim_db=0.0)), clf.model, clf.labels)
    assert not np.allclose(clf.probabilities([audio]), untrimmed.probabilities([audio]), atol=1e-4)
    assert clf.predict([np.zeros(16000, np.float32)])[0][0] in PITCH  # digital silence is kept whole, not an error
    with pytest.raises(ConfigError, match="data.trim_db must be >= 0"):
        load_config(ClassifyConfig, overrides=["data.trim_db=-5"])
    blip = np.zeros(8000, np.float32)  # 0.5 s long, but 20 ms of sound: too short to train on once trimmed
    blip[4000:4320] = 0.5 * np.sin(np.arange(320) / 3)
    write_audio(tmp_path / "blip.wav", blip)
    write_manifest(tmp_path / "blip.jsonl", [*padded, dataclasses.replace(padded[0], audio_filepath=str(tmp_path / "blip.wav"), duration=0.5)])
    with pytest.raises(SpeechLMError, match=r"1 clips are shorter than 0.1 s once trimmed at 30 dB .*blip.wav.*lower data.trim_db"):
        train_classifier(tiny_cfg(tmp_path / "blip.jsonl", "data.trim_db=30"), tmp_path / "blip", progress=False)


def test_a_recognizer_s_encoder_and_front_end_start_a_classifier(tiny_asr_dir, pitch_corpus, tmp_path):
    """`finetune --task classify --init RECOGNIZER`: the CTC model's encoder weights and features carry over, its output
    layer is left behind, the pooling head starts fresh; the classifier then trains and saves the recognizer's front end."""
    from speechlm.train.classify import build_classifier
    from speechlm.train.finetune import config_from_pretrained, load_pretrained_encoder, read_pretrained

    manifest, _ = pitch_corpus
    pre = read_pretrained(tiny_asr_dir)
    cfg = config_from_pretrained(tiny_cfg(manifest, "features.kind=mfcc", "train.max_steps=2"), tiny_asr_dir)
    assert cfg.features == pre.features and cfg.features.kind != "mfcc"  # the recognizer's front end, not the override
    model = build_classifier(cfg, num_classes=2)
    report = load_pretrained_encoder(model, cfg)
    own = model.state_dict()
    assert report.loaded and all(name.startswith("encoder.") and torch.equal(own[name], pre.weights[name]) for name in report.loaded)
    assert report.new and all(name.startswith("head.") for name in report.new)
    assert report.ignored and not any(name.startswith("encoder.") for name in report.ignored)  # the CTC output layer
    train_classifier(cfg, tmp_path / "from_asr", progress=False)
    assert Classifier.load(tmp_path / "from_asr").cfg.features == pre.features


def test_bad_labels_and_setups_are_clear_errors(pitch_corpus, tmp_path):
    manifest, utts = pitch_corpus
    unlabeled = tmp_path / "unlabeled.jsonl"
    write_manifest(unlabeled, [Utterance(u.audio_filepath, u.duration, "", None) for u in utts[:4]] + utts[4:6])
    with pytest.raises(ManifestError, match="4 entries have no 'label'"):
        train_classifier(tiny_cfg(unlabeled), tmp_path / "a", progress=False)
    one = tmp_path / "one.jsonl"
    write_manifest(one, [u for u in utts if u.label == "low"])
    with pytest.raises(ManifestError, match="at least 2 labels"):
        train_classifier(tiny_cfg(one), tmp_path / "b", progress=False)
    with pytest.raises(SpeechLMError, match="--init"):
        train_classifier(tiny_cfg(manifest, "peft.method=lora"), tmp_path / "c", progress=False)


def test_lora_targets_and_lstm_adapters_are_checked():
    from speechlm.models.encoders import build_encoder
    from speechlm.models.peft import PeftConfig, apply_peft

    holder = torch.nn.Module()
    holder.encoder = build_encoder(EncoderConfig(d_model=32, n_layers=2, n_heads=2, conv_kernel=3), 80)
    with pytest.raises(SpeechLMError, match="attn.qkv"):
        apply_peft(holder, PeftConfig(method="lora", targets=("nonexistent",)))
    holder.encoder = build_encoder(EncoderConfig(d_model=32, n_layers=2, n_heads=2, conv_kernel=3), 80)
    n = apply_peft(holder, PeftConfig(method="lora", rank=2, targets=("attn.qkv",)))
    assert n == 2 * (2 * 32 + 2 * 96)  # two layers of A (2x32) and B (96x2)
    lstm = torch.nn.Module()
    lstm.encoder = build_encoder(EncoderConfig(arch="lstm", d_model=32, n_layers=2), 80)
    with pytest.raises(SpeechLMError, match="an LSTM has none"):
        apply_peft(lstm, PeftConfig(method="adapter"))


@pytest.mark.skipif(not (SHARED_DATA / "fsdd").is_dir(), reason="shared FSDD data not present")
def test_real_8khz_digits_train_and_predict(tmp_path):
    from speechlm.data.audio import audio_duration, load_audio

    rows = [line.split("\t") for line in (SHARED_DATA / "fsdd" / "manifest.tsv").read_text().splitlines()[1:]]
    chosen = [r for digit in ("0", "1") for r in rows if r[1] == digit and r[2] == "jackson"][:10]
    chosen += [r for r in rows if r[1] == "1" and r[2] == "jackson"][:10]
    utts = [Utterance(str(SHARED_DATA / "fsdd" / r[0]), audio_duration(SHARED_DATA / "fsdd" / r[0]), "", r[1], r[2]) for r in chosen]
    write_manifest(tmp_path / "fsdd.jsonl", utts)
    train_classifier(tiny_cfg(tmp_path / "fsdd.jsonl", "train.max_steps=5"), tmp_path / "run", progress=False)
    assert {u.label for u in utts} == {"0", "1"} and load_audio(utts[0].audio_filepath).size > 0  # 8 kHz read at 16 kHz
    preds = Classifier.load(tmp_path / "run").predict([load_audio(u.audio_filepath) for u in utts[:3]])
    assert all(p in ("0", "1") for p, _ in preds)


def test_a_recognizer_joins_an_ensemble_over_the_phrase_of_each_label(tiny_classifier_dir, tiny_asr_dir, pitch_corpus, tmp_path, capsys):
    from speechlm.cli import main
    from speechlm.data.audio import load_audio
    from speechlm.decode.transcribe import Recognizer
    from speechlm.train.classify import PhraseClassifier, SpeedAveraged, load_classifier

    manifest, utts = pitch_corpus
    audios = [load_audio(u.audio_filepath) for u in utts[:6]]
    phrases = {"high": "ab", "low": "cd", "mid": "ef"}  # tone letters: what the recognizer can spell
    scores = Recognizer.load(tiny_asr_dir).score_phrases(audios, list(phrases.values()))
    probs = PhraseClassifier.load(tiny_asr_dir, phrases).probabilities(audios)
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and (probs.argmax(1) == scores.argmax(1)).all()
    assert np.allclose(probs, np.exp(scores - scores.max(1, keepdims=True)) / np.exp(scores - scores.max(1, keepdims=True)).sum(1, keepdims=True), atol=1e-5)
    short = [np.random.default_rng(0).standard_normal(800).astype(np.float32) * 0.1]  # 50 ms: too short for 40 letters
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all zeros, quietly
        assert not PhraseClassifier.load(tiny_asr_dir, {"high": "ab" * 20, "low": "cd" * 20}).probabilities(short).any()
    both = load_classifier(tiny_classifier_dir, [tiny_asr_dir], phrases=phrases).probabilities(audios)
    assert np.allclose(both, (Classifier.load(tiny_classifier_dir).probabilities(audios) + probs) / 2, atol=1e-5)
    # recognizers alone, the first one included, each over the same phrases
    assert np.allclose(load_classifier(tiny_asr_dir, [tiny_asr_dir], phrases=phrases).probabilities(audios), probs, atol=1e-5)
    # a recognizer alone: the same classifier, and with speeds the same as wrapping it by hand
    assert np.allclose(load_classifier(tiny_asr_dir, phrases=phrases).probabilities(audios), probs, atol=1e-5)
    assert np.allclose(load_classifier(tiny_asr_dir, speeds=[0.9, 1.1], phrases=phrases).probabilities(audios),
                       SpeedAveraged(PhraseClassifier.load(tiny_asr_dir, phrases), [0.9, 1.1]).probabilities(audios), atol=1e-5)
    for where in ((tiny_classifier_dir, [tiny_asr_dir]), (tiny_asr_dir, [])):
        with pytest.raises(CheckpointError, match="is a speech recognizer.*--choices"):
            load_classifier(*where)
    with pytest.raises(CheckpointError, match="labels differ"):
        load_classifier(tiny_classifier_dir, [tiny_asr_dir], phrases={"high": "ab", "low": "cd"})
    # the command line: a file of "label<TAB>phrase" lines
    (tmp_path / "phrases.txt").write_text("high\tab\nlow\tcd\nmid\tef\n")
    assert main(["evaluate", str(tiny_classifier_dir), str(manifest), "--ensemble", str(tiny_asr_dir), "--choices", str(tmp_path / "phrases.txt")]) == 0
    assert "accuracy" in capsys.readouterr().out
    (tmp_path / "twice.txt").write_text("high\tab\nhigh\tcd\n")
    assert main(["predict", str(tiny_classifier_dir), utts[0].audio_filepath, "--ensemble", str(tiny_asr_dir), "--choices", str(tmp_path / "twice.txt")]) == 2
    assert "line 2 gives label 'high' a second phrase" in capsys.readouterr().err
    assert main(["predict", str(tiny_classifier_dir), utts[0].audio_filepath, "--choices", str(tmp_path / "phrases.txt")]) == 2
    assert "none is there" in capsys.readouterr().err


def test_a_spoken_intent_pipeline_and_its_weighted_product_with_a_classifier(tiny_classifier_dir, tiny_asr_dir, pitch_corpus, tmp_path, capsys):
    from speechlm.cli import main
    from speechlm.data.audio import load_audio
    from speechlm.decode.ctc import DecodingOptions
    from speechlm.decode.transcribe import Recognizer
    from speechlm.intent import IntentClassifier
    from speechlm.train.classify import SpeedAveraged, SpokenIntentPipeline, WeightedProduct

    manifest, utts = pitch_corpus
    audios = [load_audio(u.audio_filepath) for u in utts[:8]]
    # an intent classifier of the pitch labels over the tone letters the tiny recognizer writes
    intent = IntentClassifier.train(["ab ab", "ab", "cd cd", "cd", "ef ef", "ef"], ["high", "high", "low", "low", "mid", "mid"])
    intent_dir = intent.save(tmp_path / "intent")
    rec = Recognizer.load(tiny_asr_dir)
    pipe = SpokenIntentPipeline(rec, intent)
    assert pipe.labels == intent.labels
    assert np.allclose(pipe.probabilities(audios), intent.probabilities(rec.transcribe(audios)), atol=1e-6)
    beam = DecodingOptions("beam", beam_size=4)
    nbest = SpokenIntentPipeline.load(tiny_asr_dir, intent_dir, options=beam, nbest=3).probabilities(audios)
    assert np.allclose(nbest, intent.nbest_probabilities(rec.transcribe_nbest(audios, beam, 3)), atol=1e-6)
    for options, n in ((None, 3), (beam, 5), (beam, 0)):
        with pytest.raises(ValueError, match="needs a beam at least N wide"):
            SpokenIntentPipeline(rec, intent, options, n)

    # the product: p ∝ p_clf^(1-w) * p_pipe^w, members matched by label name
    clf = Classifier.load(tiny_classifier_dir)
    p_clf, p_pipe = clf.probabilities(audios), pipe.probabilities(audios)[:, [intent.labels.index(lab) for lab in clf.labels]]
    assert not np.allclose(p_clf, p_pipe, atol=1e-2)
    expected = np.exp(0.75 * np.log(p_clf + 1e-9) + 0.25 * np.log(p_pipe + 1e-9))
    product = WeightedProduct([clf, pipe], ["clf", "pipe"], [3, 1])  # weights normalized
    assert product.labels == clf.labels and np.allclose(product.probabilities(audios), expected / expected.sum(1, keepdims=True), atol=1e-5)
    assert np.allclose(WeightedProduct([clf, pipe], ["clf", "pipe"], [1, 0]).probabilities(audios), p_clf, atol=1e-5)
    for bad in ([-1, 2], [0, 0], [1], [float("nan"), 1]):
        with pytest.raises(ValueError, match="one weight >= 0 per member"):
            WeightedProduct([clf, pipe], ["clf", "pipe"], bad)
    other = IntentClassifier.train(["ab", "cd"], ["high", "low"])
    with pytest.raises(CheckpointError, match="pipe: its labels differ from clf's"):
        WeightedProduct([clf, SpokenIntentPipeline(rec, other)], ["clf", "pipe"], [1, 1])

    # the command line: predict and evaluate with --pipeline ASR INTENT, and its errors
    assert main(["predict", str(tiny_classifier_dir), utts[0].audio_filepath, "--pipeline", str(tiny_asr_dir), str(intent_dir),
                 "--pipeline-weight", "0.25", "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    w = WeightedProduct([clf, pipe], ["clf", "pipe"], [0.75, 0.25]).predict(audios[:1])[0]
    assert out["label"] == w[0] and out["confidence"] == pytest.approx(w[1], abs=1e-4)
    assert main(["evaluate", str(tiny_classifier_dir), str(manifest), "--pipeline", str(tiny_asr_dir), str(intent_dir), "--beam", "4",
                 "--pipeline-nbest", "3"]) == 0  # fmt: skip
    assert "accuracy" in capsys.readouterr().out
    # --tta-speeds with --pipeline: each member averages over the speeds (the pipeline decoding each speed), then the product
    speeds, read3 = (0.6, 1.0, 1.6), SpokenIntentPipeline(rec, intent, beam, 3)  # (greedy transcribes every clip empty at any speed)
    both = WeightedProduct([SpeedAveraged(clf, speeds), SpeedAveraged(read3, speeds)], ["clf", "pipe"], [0.75, 0.25]).probabilities(audios)
    half = WeightedProduct([SpeedAveraged(clf, speeds), read3], ["clf", "pipe"], [0.75, 0.25]).probabilities(audios)
    i = int(np.abs(both - half).max(1).argmax())
    assert not np.allclose(both[i], half[i], atol=1e-3)  # the pipeline's speeds make a difference on clip i
    assert main(["predict", str(tiny_classifier_dir), utts[i].audio_filepath, "--pipeline", str(tiny_asr_dir), str(intent_dir), "--beam", "4",
                 "--pipeline-nbest", "3", "--pipeline-weight", "0.25", "--tta-speeds", *map(str, speeds), "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["label"] == clf.labels[both[i].argmax()] and out["confidence"] == pytest.approx(both[i].max(), abs=1e-4)
    for extra, message in ((["--beam", "4"], "--beam: for the ASR -> intent pipeline"),
                           (["--pipeline", str(tiny_asr_dir), str(intent_dir), "--pipeline-nbest", "3"], "a beam at least that wide"),
                           (["--pipeline", str(tiny_asr_dir), str(intent_dir), "--pipeline-weight", "2"], "between 0 and 1"),
                           (["--pipeline", str(intent_dir), str(tiny_asr_dir)], "not a speech recognizer"),
                           (["--pipeline", str(tiny_asr_dir), str(tiny_classifier_dir)], "not an intent classifier")):  # fmt: skip
        assert main(["predict", str(tiny_classifier_dir), utts[0].audio_filepath, *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["evaluate", str(tiny_asr_dir), str(manifest), "--pipeline", str(tiny_asr_dir), str(intent_dir)]) == 2
    assert "the model directory holds a recognizer" in capsys.readouterr().err

    # the product rejecting out-of-scope clips: predict answers the reject label, evaluate scores clips labeled so
    mixed = tmp_path / "mixed.jsonl"
    write_manifest(mixed, [*utts[:6], *(dataclasses.replace(u, label="elsewhere") for u in utts[6:9])])
    product_flags = ["--pipeline", str(tiny_asr_dir), str(intent_dir), "--pipeline-weight", "0.25"]
    assert main(["predict", str(tiny_classifier_dir), utts[0].audio_filepath, *product_flags, "--reject-below", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == "oos"  # no probability reaches 1
    assert main(["evaluate", str(tiny_classifier_dir), str(mixed), *product_flags, "--reject-below", "0.5", "--reject-label", "elsewhere"]) == 0
    printed = capsys.readouterr().out
    assert "rejecting below 0.5: in-scope accuracy" in printed and "'elsewhere' recall" in printed and "(3 utterances)" in printed
    assert main(["evaluate", str(tiny_classifier_dir), str(mixed)]) == 2
    assert "--reject-below T --reject-label elsewhere" in capsys.readouterr().err
    for model, extra, message in ((tiny_classifier_dir, ["--reject-below", "2"], "between 0 and 1"),
                                  (tiny_classifier_dir, ["--reject-label", "elsewhere"], "which is not given"),
                                  (tiny_asr_dir, ["--reject-below", "0.5"], "--reject-below applies to speech classifiers")):  # fmt: skip
        assert main(["evaluate", str(model), str(manifest), *extra]) == 2
        assert message in capsys.readouterr().err


def test_an_ngram_knows_a_recognizer_s_characters_to_fuse_with_it(tiny_asr_dir, tmp_path, capsys):
    from speechlm.cli import main
    from speechlm.decode.transcribe import Recognizer

    (tmp_path / "text.txt").write_text("ab ab\n")  # not every letter the recognizer writes
    assert main(["ngram", str(tmp_path / "bare"), "--text", str(tmp_path / "text.txt")]) == 0
    with pytest.raises(SpeechLMError, match="never saw the recognizer's characters"):
        Recognizer.load(tiny_asr_dir, lm=tmp_path / "bare")
    assert main(["ngram", str(tmp_path / "full"), "--text", str(tmp_path / "text.txt"), "--recognizer", str(tiny_asr_dir)]) == 0
    assert Recognizer.load(tiny_asr_dir, lm=tmp_path / "full").lm is not None
    assert main(["ngram", str(tmp_path / "x"), "--text", str(tmp_path / "text.txt"), "--recognizer", str(tmp_path)]) == 2
    assert "not a speech recognizer" in capsys.readouterr().err
