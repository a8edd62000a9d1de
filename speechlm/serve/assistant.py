"""The voice assistant pipeline, independent of HTTP: speech -> transcript -> intent -> reply -> speech.

Every stage is a model loaded once; the server calls these methods from its worker threads.

>>> a = Assistant.load("runs/demo/model", intent_dir="runs/intent")   # doctest: +SKIP
>>> a.reply("what time is it", "get_time_date")                       # doctest: +SKIP
'It is 9:41 on Monday, November 23.'
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import string
from pathlib import Path
from typing import Sequence

import numpy as np

from speechlm.data.synth import Voice, available_engines, synthesize, voice_bank
from speechlm.decode.ctc import DecodingOptions
from speechlm.decode.generate import GenerationOptions, generate
from speechlm.decode.transcribe import Recognizer, Transcript
from speechlm.errors import SpeechLMError
from speechlm.features import SAMPLE_RATE
from speechlm.intent import IntentClassifier, IntentPrediction

DEFAULT_VOICE = "espeak-en-us-steph-100"
PLACEHOLDERS = ("transcript", "intent", "time", "date")  # what a reply template may use
FALLBACK_REPLY = "You said: {transcript}."
DEFAULT_REPLIES = {
    "set_alarm": "Okay, I would set an alarm for you: {transcript}.",
    "set_timer": "Okay, I would start a timer: {transcript}.",
    "get_weather": "I cannot look outside yet, but you asked about the weather.",
    "play_music": "I would play that for you now.",
    "control_lights": "Okay, the lights.",
    "send_message": "I would send that message.",
    "get_time_date": "It is {time} on {date}.",
    "calculate": "I heard a calculation: {transcript}.",
    "reminder": "I will remind you.",
    "general": FALLBACK_REPLY,
}


class ReplyError(SpeechLMError):
    """A reply-template file is unreadable or a template uses an unknown placeholder."""


def check_template(template: str, where: str) -> str:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ReplyError(f"{where}: malformed template {template!r} ({e})") from None
    unknown = [f for f in fields if f not in PLACEHOLDERS]
    if unknown:
        raise ReplyError(f"{where}: unknown placeholder(s) {unknown} in {template!r}; allowed: {list(PLACEHOLDERS)}")
    return template


def read_replies(path: str | Path | None) -> dict[str, str]:
    """Reply templates by intent: the defaults, updated from a JSON object file ``{intent: template}``.
    The key ``"*"`` replaces the fallback used for intents without a template."""
    replies = dict(DEFAULT_REPLIES, **{"*": FALLBACK_REPLY})
    if path is None:
        return replies
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReplyError(f"{path}: cannot read reply templates ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ReplyError(f"{path}: expected a JSON object mapping intent names to template strings")
    replies.update({k: check_template(v, f"{path}: {k!r}") for k, v in data.items()})
    return replies


def find_voice(name: str) -> Voice:
    by_name = {v.name: v for v in voice_bank() if v.engine in available_engines()}
    if name not in by_name:
        raise SpeechLMError(f"unknown or unavailable voice {name!r}; GET /v1/voices lists them")
    return by_name[name]


@dataclasses.dataclass
class Assistant:
    recognizer: Recognizer
    intent: IntentClassifier | None = None
    lm: tuple | None = None  # (config, model, tokenizer, special tokens) of a causal/LSTM LM
    voice: str = DEFAULT_VOICE  # default synthesis voice
    replies: dict[str, str] = dataclasses.field(default_factory=lambda: read_replies(None))
    reply_source: str = "templates"  # "templates" or "lm" (continue the transcript with the LM)
    classifier: object | None = None  # a speech classifier (speechlm.train.classify.Classifier): keywords, digits, spoken intent
    speech_lm: object | None = None  # the joint speech-LM (speechlm.train.speech_lm.SpeechLMRunner) when it is the recognizer
    decoding: DecodingOptions = dataclasses.field(default_factory=lambda: DecodingOptions("greedy"))  # the assistant's; /v1/transcribe's default
    pipeline_nbest: int = 1  # the intent model reads this many best transcripts (needs beam decoding at least as wide)
    pipeline_weight: float | None = None  # set: the intent is speech classifier x (transcript -> intent), this the latter's share
    reject_below: float | None = None  # the intent model's reject label below this probability (None: the model's own threshold)
    pipeline_speeds: tuple[float, ...] = ()  # the intent of the transcripts averaged over each clip played at these speeds

    def __post_init__(self):
        if self.reply_source not in ("templates", "lm"):
            raise SpeechLMError(f"reply source must be 'templates' or 'lm', got {self.reply_source!r}")
        if self.reply_source == "lm" and self.lm is None:
            raise SpeechLMError("replies from the LM need a language model (--lm DIR)")
        if self.can_speak:
            find_voice(self.voice)
        self.pipeline, self.product = self._spoken_intent()

    def _spoken_intent(self):
        """The transcript -> intent pipeline the assistant runs (None without an intent model), and its product with the
        speech classifier when ``pipeline_weight`` is set (else None)."""
        from speechlm.errors import CheckpointError
        from speechlm.train.classify import SpokenIntentPipeline, WeightedProduct, check_spoken_intent_flags

        check_spoken_intent_flags(reject_below=self.reject_below, speeds=self.pipeline_speeds)
        if (self.pipeline_nbest != 1 or self.pipeline_weight is not None or self.reject_below is not None or self.pipeline_speeds) and self.intent is None:
            raise SpeechLMError("--pipeline-nbest, --pipeline-weight, --pipeline-speeds and --reject-below shape the intent of the assistant's "
                                "transcripts: give an intent model (--intent-model DIR)")  # fmt: skip
        if self.pipeline_nbest != 1 and not self.has_alignment:
            raise SpeechLMError("--pipeline-nbest: N-best lists come from CTC beam search; this server's recognizer is a joint speech-LM")
        if self.intent is None:
            return None, None
        check_spoken_intent_flags(self.decoding, self.pipeline_nbest)
        pipeline = SpokenIntentPipeline(self.recognizer, self.intent, self.decoding, self.pipeline_nbest, self.pipeline_speeds)
        if self.pipeline_weight is None:
            return pipeline, None
        if self.classifier is None:
            raise SpeechLMError("--pipeline-weight W combines the intent of the transcripts with a speech classifier's: give it with --classifier DIR")
        check_spoken_intent_flags(weight=self.pipeline_weight)
        try:
            product = WeightedProduct([pipeline, self.classifier], ["the intent model", "the speech classifier"],
                                      [self.pipeline_weight, 1 - self.pipeline_weight])  # fmt: skip
        except CheckpointError as e:
            raise SpeechLMError(f"--pipeline-weight: {e}") from None
        return pipeline, product

    @classmethod
    def load(
        cls, asr_dir: str | Path, intent_dir: str | Path | None = None, lm_dir: str | Path | None = None,
        voice: str = DEFAULT_VOICE, replies: str | Path | None = None, reply_source: str = "templates",
        classifier_dir: str | Path | None = None, speech_lm_dir: str | Path | None = None,
        classifier_ensemble: Sequence[str | Path] = (), classifier_speeds: Sequence[float] = (),
        classifier_phrases: dict[str, str] | None = None, decoding: DecodingOptions | None = None, asr_lm: str | Path | None = None,
        pipeline_nbest: int = 1, pipeline_weight: float | None = None, reject_below: float | None = None,
        pipeline_speeds: Sequence[float] = (),
    ) -> "Assistant":  # fmt: skip
        """``asr_dir``: a CTC recognizer, or a joint speech-LM that then also answers ``/v1/answer``
        and continues text (unless ``lm_dir`` names another LM); ``speech_lm_dir``: a joint model
        beside a CTC recognizer. ``classifier_ensemble`` and ``classifier_speeds``: the speech
        classifier averaged with these others, over each clip played at these speeds (``load_classifier``); a CTC
        recognizer among the others scores ``classifier_phrases`` (label -> phrase). ``decoding``: how the CTC recognizer
        transcribes for the assistant (and ``/v1/transcribe`` by default), with ``asr_lm`` (an n-gram or causal LM
        directory) fused into its beam search; ``pipeline_nbest``, ``pipeline_weight``, ``reject_below`` and ``pipeline_speeds``:
        see the fields."""
        from speechlm.train.classify import load_classifier
        from speechlm.train.speech_lm import SpeechLMRunner, is_speech_lm_dir
        from speechlm.train.text import load_lm_dir

        joint = is_speech_lm_dir(asr_dir)
        if joint and speech_lm_dir:
            raise SpeechLMError(f"{asr_dir} is a joint speech-LM already; give a CTC recognizer beside --speech-lm")
        speech_lm = SpeechLMRunner.load(asr_dir if joint else speech_lm_dir) if joint or speech_lm_dir else None
        lm = load_lm_dir(lm_dir) if lm_dir else None
        if joint and asr_lm:
            raise SpeechLMError(f"{asr_lm}: an LM fused into CTC beam search; {asr_dir} is a joint speech-LM")
        if joint and lm is None:  # the joint model's LM continues text too
            lm = (speech_lm.cfg, speech_lm.model.lm, speech_lm.tokenizer, speech_lm.model.special)
        return cls(
            speech_lm if joint else Recognizer.load(asr_dir, lm=asr_lm),
            IntentClassifier.load(intent_dir) if intent_dir else None,
            lm,
            voice,
            read_replies(replies),
            reply_source,
            load_classifier(classifier_dir, classifier_ensemble, classifier_speeds, classifier_phrases) if classifier_dir else None,
            speech_lm,
            decoding or DecodingOptions("greedy"),
            pipeline_nbest,
            pipeline_weight,
            reject_below,
            tuple(pipeline_speeds),
        )  # fmt: skip

    @property
    def can_speak(self) -> bool:
        return bool(available_engines())

    def transcribe(self, audios: Sequence[np.ndarray], beams: Sequence[int], timestamps: Sequence[bool] | None = None) -> list[Transcript]:
        """Waveforms with each one's beam size (1 = greedy) and whether it wants word times ->
        transcripts (``words`` empty unless asked for; times come from the greedy alignment)."""
        timestamps = timestamps or [False] * len(audios)
        out: list[Transcript] = [Transcript("", [])] * len(audios)
        for beam, words in sorted(set(zip(beams, timestamps))):
            idx = [i for i, key in enumerate(zip(beams, timestamps)) if key == (beam, words)]
            chosen = [audios[i] for i in idx]
            if words and not self.has_alignment:
                raise SpeechLMError("word timestamps come from a CTC alignment; this server's recognizer is a joint speech-LM")
            if words:
                results = self.recognizer.transcribe_words(chosen)
            else:
                opts = dataclasses.replace(self.decoding, method="beam" if beam > 1 else "greedy", beam_size=max(1, beam))
                results = [Transcript(t, []) for t in self.recognizer.transcribe(chosen, opts)]
            for i, t in zip(idx, results):
                out[i] = t
        return out

    @property
    def beam(self) -> int:
        """The beam size of the assistant's decoding (1: greedy)."""
        return self.decoding.beam_size if self.decoding.method == "beam" else 1

    def understand(self, audios: Sequence[np.ndarray]) -> list[tuple[str, IntentPrediction | None]]:
        """Each waveform's transcript and intent, as the assistant hears it: the transcript by :attr:`decoding`; the intent
        model reads it (or the :attr:`pipeline_nbest` best transcripts), times the speech classifier with
        :attr:`pipeline_weight`; no intent for an empty transcript."""
        if self.pipeline is None:
            raise SpeechLMError("no intent model is loaded")
        texts, probs = self.pipeline.read(audios)
        if self.product is not None:
            probs = self.product.combine([probs, self.classifier.probabilities(audios) if self.pipeline_weight < 1 else None])
        return [(text, pred if text.strip() else None) for text, pred in zip(texts, self.intent.predictions(probs, self.reject_below))]

    def classify_audio(self, audios: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """Class probabilities of each waveform from the speech classifier."""
        if self.classifier is None:
            raise SpeechLMError("no speech classifier is loaded")
        probs = self.classifier.probabilities(audios)
        return [dict(zip(self.classifier.labels, map(float, p))) for p in probs]

    def choose(self, audio: np.ndarray, phrases: Sequence[str]) -> dict[str, float | None]:
        """Each phrase's CTC log-likelihood for the clip (None: the clip is too short to say it), best first."""
        if not self.has_alignment:
            raise SpeechLMError("phrases are scored with a CTC recognizer; this server's recognizer is a joint speech-LM")
        scores = self.recognizer.score_phrases([audio], phrases)[0]
        if not np.isfinite(scores).any():
            raise SpeechLMError(f"the clip ({audio.size / SAMPLE_RATE:.2f} s) is too short to say any of the phrases")
        order = np.argsort(-scores, kind="stable")
        return {phrases[i]: float(scores[i]) if np.isfinite(scores[i]) else None for i in order}

    @property
    def has_alignment(self) -> bool:
        """Whether the recognizer gives word times (CTC does; a joint speech-LM writes text without an alignment)."""
        return isinstance(self.recognizer, Recognizer)

    @property
    def speech_tasks(self) -> list[str]:
        """The prompts the joint speech-LM answers (``transcribe``, ``intent``); empty without one."""
        return list(self.speech_lm.cfg.tasks) if self.speech_lm is not None else []

    def answer(self, audio: np.ndarray, task: str) -> str:
        """The joint speech-LM's answer to ``task`` about one waveform."""
        if self.speech_lm is None:
            raise SpeechLMError("no joint speech-LM is loaded")
        return self.speech_lm.answer([audio], task)[0]

    def classify(self, texts: Sequence[str]) -> list[IntentPrediction]:
        if self.intent is None:
            raise SpeechLMError("no intent model is loaded")
        return self.intent.predict(texts, self.reject_below)

    def continue_text(self, prompt: str, opts: GenerationOptions) -> str:
        if self.lm is None:
            raise SpeechLMError("no language model is loaded")
        _, model, tokenizer, special = self.lm
        return tokenizer.decode(generate(model, tokenizer.encode(prompt), special, opts))

    def reply(self, transcript: str, intent: str | None, now: datetime.datetime | None = None) -> str:
        if self.reply_source == "lm":
            return self.continue_text(transcript, GenerationOptions(max_new_tokens=30)) or FALLBACK_REPLY.format(transcript=transcript)
        if not transcript.strip():
            return "Sorry, I did not hear anything."
        now = now or datetime.datetime.now()
        template = self.replies.get(intent or "", self.replies["*"])
        return template.format(
            transcript=transcript, intent=intent or "unknown",
            time=f"{now.hour}:{now.minute:02d}", date=f"{now:%A}, {now:%B} {now.day}",
        )  # fmt: skip

    def speak(self, text: str, voice: str | None = None) -> np.ndarray:
        """Text -> float32 samples at 16 kHz with a bank voice (espeak-ng, flite or festival)."""
        return synthesize(text, find_voice(voice or self.voice))
