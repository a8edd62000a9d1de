"""Joint speech-text pretraining on the tone corpus: every objective learns, the shared blocks are shared, fine-tuning loads it."""

import dataclasses

import pytest
import torch

from conftest import tiny_asr_config
from speechlm.config import JointPretrainConfig, load_config
from speechlm.errors import SpeechLMError
from speechlm.features import FeatureConfig
from speechlm.models.encoders import tiny
from speechlm.models.joint_pretrain import JointConfig, JointPretrainer
from speechlm.models.speech_ssl import SSLConfig
from speechlm.train.asr import train_asr
from speechlm.train.finetune import config_from_pretrained, labeled_subset
from speechlm.train.joint_pretrain import load_joint_data, pretrain_joint

TINY = ["encoder.d_model=48", "encoder.n_layers=3", "encoder.n_heads=2", "encoder.conv_kernel=7",
        "train.precision=fp32", "train.batch_seconds=8", "train.warmup_steps=4", "train.lr=3e-3", "train.log_every=5",
        "ssl.codebook_size=32", "joint.shared_layers=2", "joint.text_batch_size=8", "train.num_workers=0"]  # fmt: skip


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("".join(f"{w} {v} {w}{v}\n" for w in ("ab", "ca", "bd", "dc") for v in ("a", "cc", "db")))
    return path


def tiny_joint_config(manifest, text_file, *extra):
    return load_config(JointPretrainConfig, overrides=[f"data.train_manifest={manifest}", f'text.train_files=["{text_file}"]', *TINY, *extra])


@pytest.fixture(scope="module")
def joint_run(tone_corpus, text_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("joint") / "run"
    cfg = tiny_joint_config(tone_corpus, text_file, "train.max_steps=40", "joint.paired_fraction=0.5")
    return run, pretrain_joint(cfg, run, progress=False)


def test_every_objective_learns(joint_run):
    _, result = joint_run
    first, last = result.history[0], result.history[-1]
    # measured (first and last 5-step means of 40): ctc 2.84 -> 1.90, mlm 2.25 -> 1.52, masked prediction 3.55 -> 3.46
    assert last["ctc_loss"] < 0.75 * first["ctc_loss"]
    assert last["mlm_loss"] < first["mlm_loss"] - 0.1
    assert last["mp_loss"] < first["mp_loss"]


def test_paired_subset_is_the_finetuning_subset(tone_corpus, text_file):
    from speechlm.config import FinetuneConfig
    from speechlm.data.manifest import read_manifest

    cfg = tiny_joint_config(tone_corpus, text_file, "joint.paired_fraction=0.25", "joint.paired_seed=3")
    dataset, tokenizer = load_joint_data(cfg, progress=False)
    expected = labeled_subset(read_manifest(tone_corpus), FinetuneConfig(labeled_fraction=0.25, subset_seed=3))
    assert [u.audio_filepath for u in dataset.paired.utts] == [u.audio_filepath for u in expected]
    assert len(dataset.speech) == 24  # every utterance is unlabeled speech as well
    batches = dataset.make_batches(cfg.train, 0)
    kinds = {k for b in batches for k, _ in b}
    assert kinds == {"speech", "paired", "text"} and all(any(k == "paired" for k, _ in b) for b in batches)
    batch = dataset.collate(batches[0])
    assert batch.paired is not None and batch.text is not None and int(batch.text.lens.min()) > 0  # masked by the loss (mask_tokens)
    assert dataset.paired.tokens(0) == tokenizer.encode(dataset.paired.utts[0].text)


def test_text_goes_through_the_shared_blocks_only():
    torch.manual_seed(0)
    model = JointPretrainer(FeatureConfig(), tiny(), SSLConfig(codebook_size=16), JointConfig(shared_layers=2), vocab_size=10).eval()
    tokens, lens = torch.randint(1, 10, (2, 7)), torch.tensor([7, 4])
    before = model.encode_text(tokens, lens)
    with torch.no_grad():
        model.encoder.blocks[0].ff1[1].weight.add_(1.0)  # a speech-only block
    assert torch.equal(model.encode_text(tokens, lens), before)
    with torch.no_grad():
        model.encoder.blocks[-1].ff1[1].weight.add_(1.0)  # a shared block
    assert not torch.allclose(model.encode_text(tokens, lens), before)
    # padding does not leak into valid positions
    longer = torch.cat([tokens, torch.randint(1, 10, (2, 3))], 1)
    assert torch.allclose(model.encode_text(longer, lens)[1, :4], model.encode_text(tokens, lens)[1, :4], atol=1e-5)
    with pytest.raises(ValueError, match="shared_layers"):
        JointPretrainer(FeatureConfig(), tiny(), SSLConfig(), JointConfig(shared_layers=9), vocab_size=10)
    with pytest.raises(ValueError, match="block encoder"):
        JointPretrainer(FeatureConfig(), tiny("lstm"), SSLConfig(), JointConfig(shared_layers=1), vocab_size=10)


def test_finetuning_starts_from_the_joint_encoder(joint_run, tone_corpus, tmp_path):
    run, _ = joint_run
    cfg = config_from_pretrained(tiny_asr_config(tone_corpus, max_steps=2), run)
    cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, dropout=0.0))
    result = train_asr(cfg, tmp_path / "asr", progress=False)
    assert result.steps == 2
    from safetensors.torch import load_file

    pre = load_file(str(run / "model" / "model.safetensors"))
    assert "text_embed.weight" in pre and "token_head.1.weight" in pre
    assert any(k.startswith("encoder.blocks.2.") for k in pre)


def test_bad_input_is_named(tone_corpus, text_file, tmp_path):
    from speechlm.data.manifest import read_manifest, write_manifest

    untranscribed = tmp_path / "m.jsonl"
    write_manifest(untranscribed, [dataclasses.replace(u, text="") for u in read_manifest(tone_corpus)])
    with pytest.raises(SpeechLMError, match="no utterance has a transcript"):
        load_joint_data(tiny_joint_config(untranscribed, text_file), progress=False)
    with pytest.raises(SpeechLMError, match=r"joint.shared_layers \(5\) exceeds encoder.n_layers \(3\)"):
        pretrain_joint(tiny_joint_config(tone_corpus, text_file, "joint.shared_layers=5"), tmp_path / "deep", progress=False)
    empty = tmp_path / "empty.txt"
    empty.write_text("!!!\n...\n")
    with pytest.raises(SpeechLMError, match="text"):
        load_joint_data(tiny_joint_config(tone_corpus, empty), progress=False)
