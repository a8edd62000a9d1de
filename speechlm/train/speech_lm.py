"""Train the joint speech-LM on paired data, and run a trained one.

Each utterance of the manifest answers every configured task it has data for (``transcribe``:
its ``text``; ``intent``: its ``label``); each epoch draws one of them per utterance, so batches
mix tasks. The encoder comes from ``finetune.init`` (any speech model), the LM and its tokenizer
from ``lm_init`` (``speechlm pretrain text``). The LM is frozen, LoRA-tuned or fully trained
(``lm_mode``); the encoder trains unless ``finetune.freeze_encoder_steps=-1``. The saved model
is standalone (LoRA is merged into the LM's weights).

Usage:
    speechlm finetune runs/slm --task speech-lm --init runs/asr --lm runs/lm --train-manifest data/train.jsonl
    speechlm transcribe runs/slm clip.wav          # prompt "transcribe"
    speechlm predict runs/slm clip.wav             # prompt "intent"
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from speechlm.config import SpeechLMConfig, format_config, from_dict, save_config
from speechlm.data.batching import SpeechDataset
from speechlm.data.manifest import Utterance, filter_utterances, read_manifest
from speechlm.data.tokenizer import load_tokenizer
from speechlm.decode.transcribe import MIN_SECONDS
from speechlm.errors import CheckpointError, ManifestError, SpeechLMError
from speechlm.features import FRAMES_PER_SECOND, SAMPLE_RATE
from speechlm.models.asr import count_parameters
from speechlm.models.encoders import SUBSAMPLING
from speechlm.models.lm import special_tokens
from speechlm.models.peft import apply_peft, merge_lora
from speechlm.models.speech_lm import SpeechLM
from speechlm.objectives import LossOutput
from speechlm.train.checkpoint import CONFIG_FILE, latest_checkpoint, load_weights, read_config_json, resolve_model_dir, save_model_dir
from speechlm.train.finetune import config_from_pretrained, encoder_param_groups, load_pretrained_encoder
from speechlm.train.loop import TrainResult, is_main_process, train

INTENT_LABELS_FILE = "intent_labels.json"  # the training labels: answers are mapped back to their spelling


class TaskDataset(SpeechDataset):
    """Utterances with one answer per task; epoch ``e`` picks a task per utterance from ``(seed, e, i)``."""

    def __init__(self, utts: Sequence[Utterance], answers: list[dict[int, list[int]]], augment_cfg, seed: int, progress: bool):
        super().__init__(utts, None, augment_cfg, seed=seed, progress=progress)
        self.answers = answers

    def tokens(self, i: int) -> list[int]:
        tasks = sorted(self.answers[i])
        task = tasks[int(np.random.default_rng([self.seed, self.epoch, i, 7]).integers(len(tasks)))]
        return [task, *self.answers[i][task]]  # the batch carries the task index first


def speech_lm_loss(model: SpeechLM, batch) -> LossOutput:
    out = model(batch.audio, batch.audio_lens, batch.tokens[:, 0], batch.tokens[:, 1:], batch.token_lens - 1)
    return LossOutput(out.loss, out.tokens, {"acc": out.correct / max(out.tokens, 1)})


def build_speech_lm(cfg: SpeechLMConfig, tokenizer) -> SpeechLM:
    prompts = [tokenizer.encode(task) for task in cfg.tasks]
    if not all(prompts):
        raise SpeechLMError(f"the LM's tokenizer cannot write the task names {list(cfg.tasks)}; train the LM on text that has them")
    return SpeechLM(cfg.features, cfg.encoder, cfg.projector, cfg.lm, special_tokens(tokenizer.vocab_size), prompts, cfg.spec_augment)


def _answers(cfg: SpeechLMConfig, utts: Sequence[Utterance], tokenizer) -> list[dict[int, list[int]]]:
    out = []
    for u in utts:
        a = {}
        for t, task in enumerate(cfg.tasks):
            text = u.text if task == "transcribe" else u.label
            ids = tokenizer.encode(text) if text else []
            if ids:
                a[t] = ids
        out.append(a)
    return out


def sequence_length(cfg: SpeechLMConfig, seconds: float, answers: dict[int, list[int]], prompt_lens: list[int]) -> int:
    """LM positions of the longest task sequence: BOS, prompt, speech (one per ``stack`` encoder frames), answer, EOS."""
    speech = math.ceil(seconds * FRAMES_PER_SECOND / SUBSAMPLING / cfg.projector.stack)
    return max(2 + prompt_lens[t] + speech + len(a) for t, a in answers.items())


def train_speech_lm(cfg: SpeechLMConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> TrainResult:
    from speechlm.train.text import load_lm_dir

    run_dir = Path(run_dir)
    if not cfg.data.train_manifest:
        raise SpeechLMError("data.train_manifest is not set (pass --train-manifest or data.train_manifest=PATH)")
    if not cfg.lm_init:
        raise SpeechLMError("lm_init is not set: pass --lm DIR, a causal or LSTM LM from `speechlm pretrain text`")
    lm_cfg, lm_model, tokenizer, _ = load_lm_dir(cfg.lm_init)
    if lm_cfg.lm.arch == "mlm":
        raise SpeechLMError(f"{cfg.lm_init}: a masked LM cannot write answers; pretrain a causal or lstm LM")
    cfg = dataclasses.replace(cfg, lm=lm_cfg.lm)  # the LM's shape is its checkpoint's
    if cfg.finetune.init:
        cfg = config_from_pretrained(cfg, cfg.finetune.init)
    utts, skipped = filter_utterances(read_manifest(cfg.data.train_manifest), cfg.data.min_duration, cfg.data.max_duration, False)
    if any(skipped.values()):
        print(f"skipped utterances: {skipped}")
    answers = _answers(cfg, utts, tokenizer)
    keep = [i for i, a in enumerate(answers) if a]
    if not keep:
        fields = " or ".join("text" if t == "transcribe" else "label" for t in cfg.tasks)
        raise ManifestError(f"{cfg.data.train_manifest}: no utterance has a {fields} for the tasks {list(cfg.tasks)}")
    utts, answers = [utts[i] for i in keep], [answers[i] for i in keep]
    prompt_lens = [len(tokenizer.encode(task)) for task in cfg.tasks]
    fits = [i for i, (u, a) in enumerate(zip(utts, answers)) if cfg.lm.arch == "lstm" or sequence_length(cfg, u.duration, a, prompt_lens) <= cfg.lm.context]
    if len(fits) < len(utts):
        print(f"skipped {len(utts) - len(fits)} utterances whose prompt + speech + answer exceed the LM's context of {cfg.lm.context}")
        if not fits:
            raise SpeechLMError(f"no utterance fits the LM's context of {cfg.lm.context} positions: raise projector.stack or use shorter audio")
        utts, answers = [utts[i] for i in fits], [answers[i] for i in fits]
    per_task = {task: sum(t in a for a in answers) for t, task in enumerate(cfg.tasks)}
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    model = build_speech_lm(cfg, tokenizer)
    print(format_config(cfg))
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is None:
        model.lm.load_state_dict(lm_model.state_dict())
        if cfg.finetune.init:
            print(f"encoder from {cfg.finetune.init}: {len(load_pretrained_encoder(model, cfg).loaded)} tensors")
    total = count_parameters(model)
    if cfg.lm_mode == "frozen":
        model.lm.requires_grad_(False)
    elif cfg.lm_mode == "lora":
        apply_peft(model, dataclasses.replace(cfg.peft, method="lora"), part="lm")
    groups = encoder_param_groups(model, cfg.finetune)
    trainable = count_parameters(model, trainable_only=True)
    print(f"model: {total / 1e6:.2f} M parameters, {trainable / 1e6:.3f} M trainable (LM {cfg.lm_mode}); "
          f"{len(utts)} utterances, answers per task {per_task}")  # fmt: skip
    save_config(cfg, run_dir / CONFIG_FILE)
    dataset = TaskDataset(utts, answers, cfg.augment, cfg.train.seed, progress)
    short = [i for i, d in enumerate(dataset.durations) if d < MIN_SECONDS]
    if short:
        raise SpeechLMError(f"{len(short)} clips are shorter than {MIN_SECONDS} s (e.g. {utts[short[0]].audio_filepath}); raise data.min_duration")

    labels = sorted({u.label for u in utts if u.label})

    def save_extras(d: Path) -> None:
        save_config(cfg, d / CONFIG_FILE)
        tokenizer.save(d)
        (d / INTENT_LABELS_FILE).write_text(json.dumps(labels) + "\n")

    result = train(model, dataset, cfg.train, run_dir, speech_lm_loss, save_extras, resume=resume, progress=progress, param_groups=groups)
    if is_main_process():
        if cfg.lm_mode == "lora":
            merge_lora(model)  # the saved model is a plain one
        summary = {"steps": result.steps, "final_loss": result.final_loss, "trainable_params": trainable, "params": total, "tasks": per_task}
        save_model_dir(run_dir / "model", model, save_extras, summary)
    return result


def is_speech_lm_dir(path: str | Path) -> bool:
    try:
        return "projector" in read_config_json(resolve_model_dir(path))
    except (CheckpointError, OSError):
        return False


class SpeechLMRunner:
    """A trained joint model: transcribe or name the intent of waveforms, selected by prompt."""

    def __init__(self, cfg: SpeechLMConfig, model: SpeechLM, tokenizer, labels: Sequence[str] = ()):
        self.cfg, self.model, self.tokenizer = cfg, model.eval(), tokenizer
        # the LM writes normalized text ("set alarm"); a known label is returned as spelled in training ("set_alarm")
        self.labels = {tokenizer.decode(tokenizer.encode(lab)): lab for lab in labels}

    @classmethod
    def load(cls, model_dir: str | Path) -> "SpeechLMRunner":
        d = resolve_model_dir(model_dir)
        cfg = from_dict(SpeechLMConfig, read_config_json(d), str(d / CONFIG_FILE))
        tokenizer = load_tokenizer(d)
        model = build_speech_lm(cfg, tokenizer)
        load_weights(model, d)
        labels = json.loads((d / INTENT_LABELS_FILE).read_text()) if (d / INTENT_LABELS_FILE).is_file() else []
        return cls(cfg, model, tokenizer, labels)

    def task_index(self, task: str) -> int:
        if task not in self.cfg.tasks:
            raise SpeechLMError(f"unknown task {task!r}: this model was trained for {list(self.cfg.tasks)}")
        return self.cfg.tasks.index(task)

    @torch.inference_mode()
    def answer(self, audios: Sequence[np.ndarray], task: str, beam_size: int = 1, max_new_tokens: int = 200) -> list[str]:
        """Waveforms (float32, 16 kHz) -> the model's answer to ``task`` for each."""
        t = self.task_index(task)
        out = []
        for a in audios:
            if a.size == 0:
                raise SpeechLMError("empty audio: nothing to answer")
            a = np.pad(a, (0, max(0, int(MIN_SECONDS * SAMPLE_RATE) - a.size)))
            speech, lens = self.model.encode_speech(torch.from_numpy(a)[None], torch.tensor([a.size]))
            text = self.tokenizer.decode(self.model.generate(speech[0, : int(lens[0])], t, max_new_tokens, beam_size))
            out.append(self.labels.get(text, text) if task == "intent" else text)
        return out

    def transcribe(self, audios: Sequence[np.ndarray], options=None, batch_seconds: float = 0.0) -> list[str]:
        """The :class:`~speechlm.decode.transcribe.Recognizer` interface: beam size from ``options``."""
        beam = options.beam_size if options is not None and options.method == "beam" else 1
        return self.answer(audios, "transcribe", beam)
