"""Transcription: a model directory plus waveforms in, text out.

>>> rec = Recognizer.load("runs/demo/model")      # doctest: +SKIP
>>> rec.transcribe([load_audio("clip.wav")])      # doctest: +SKIP
['set an alarm for seven thirty']
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from speechlm.data.batching import bucket_batches, pad_audio
from speechlm.data.tokenizer import BLANK_ID, normalize_text, unspellable
from speechlm.decode.ctc import DecodingOptions, decode, decode_nbest, greedy_alignment
from speechlm.errors import SpeechLMError
from speechlm.features import HOP_LENGTH, SAMPLE_RATE
from speechlm.models.encoders import SUBSAMPLING

MAX_CHUNK_SECONDS = 30.0  # longer inputs are cut at quiet points so attention memory stays bounded
MIN_SECONDS = 0.1  # shorter inputs are padded with silence to this length (the encoder's convolutions need frames)


FRAME_SECONDS = SUBSAMPLING * HOP_LENGTH / SAMPLE_RATE  # one encoder output frame: 40 ms


@dataclasses.dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds from the start of the audio (CTC spikes: about one frame, 40 ms, of precision)
    end: float  # seconds


@dataclasses.dataclass(frozen=True)
class Transcript:
    text: str
    words: list[Word]  # greedy (best-path) alignment of the same text


def words_from_alignment(tokens, tokenizer, offset_seconds: float = 0.0) -> list[Word]:
    """Group aligned tokens into words by decoding growing prefixes, so character and
    SentencePiece tokenizers work alike; ``(start, end)`` span the frames of each word's tokens."""
    ids = [a.token for a in tokens]
    words: list[list] = []  # [text, first_frame, last_frame]
    for k, a in enumerate(tokens):
        if not tokenizer.decode([a.token]).strip():
            continue  # a word separator
        current = tokenizer.decode(ids[: k + 1]).split()
        if len(current) > len(words):
            words.append([current[-1], a.first_frame, a.last_frame])
        elif words:
            words[-1][0], words[-1][2] = current[-1], a.last_frame
    return [
        Word(w, round(offset_seconds + first * FRAME_SECONDS, 3), round(offset_seconds + (last + 1) * FRAME_SECONDS, 3))
        for w, first, last in words
    ]


def split_long(audio: np.ndarray, max_seconds: float = MAX_CHUNK_SECONDS) -> list[np.ndarray]:
    """Cut ``audio`` into pieces of at most ``max_seconds``, each cut at the quietest 10 ms
    frame in the last sixth of the piece, so that words are rarely split."""
    max_len = int(max_seconds * SAMPLE_RATE)
    pieces, start = [], 0
    while audio.size - start > max_len:
        window = audio[start + max_len - max_len // 6 : start + max_len]
        frames = window[: window.size // 160 * 160].reshape(-1, 160)
        quietest = int(np.argmin((frames**2).mean(1)))
        cut = start + max_len - max_len // 6 + quietest * 160 + 80
        pieces.append(audio[start:cut])
        start = cut
    pieces.append(audio[start:])
    return pieces


def _merged(hyps: list[tuple[str, float]], n: int) -> list[tuple[str, float]]:
    """``(text, log-probability)`` pairs with each text once, its probabilities summed: the ``n`` best, best first."""
    merged: dict[str, float] = {}
    for text, score in hyps:
        merged[text] = float(np.logaddexp(merged.get(text, -np.inf), score))
    return sorted(merged.items(), key=lambda kv: kv[1], reverse=True)[:n]


class Recognizer:
    def __init__(self, cfg, model: torch.nn.Module, tokenizer, lm=None):
        self.cfg = cfg
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.lm = lm  # a fusion LM (speechlm.decode.lm_fusion), used by beam search

    @classmethod
    def load(cls, model_dir: str | Path, lm: str | Path | None = None) -> "Recognizer":
        """``lm``: an n-gram (``speechlm ngram``) or causal/LSTM LM directory to fuse into beam search."""
        from speechlm.decode.lm_fusion import load_fusion_lm
        from speechlm.train.asr import load_model_dir

        cfg, model, tokenizer = load_model_dir(model_dir)
        return cls(cfg, model, tokenizer, load_fusion_lm(lm, tokenizer) if lm else None)

    def transcribe(
        self, audios: Sequence[np.ndarray], options: DecodingOptions = DecodingOptions(), batch_seconds: float = 200.0
    ) -> list[str]:
        """Waveforms (float32, 16 kHz) -> transcripts, batched by duration, in input order.

        Inputs longer than :data:`MAX_CHUNK_SECONDS` are transcribed in pieces and joined; inputs
        shorter than :data:`MIN_SECONDS` are padded with trailing silence. Beam search fuses the
        recognizer's LM, if it has one; greedy decoding never does.
        """
        return [t.text for t in self._run(audios, options, batch_seconds, with_words=False)]

    def transcribe_words(self, audios: Sequence[np.ndarray], batch_seconds: float = 200.0) -> list[Transcript]:
        """Greedy transcripts with each word's start and end time (seconds)."""
        return self._run(audios, DecodingOptions("greedy"), batch_seconds, with_words=True)

    @torch.inference_mode()
    def score_phrases(self, audios: Sequence[np.ndarray], phrases: Sequence[str], batch_seconds: float = 200.0) -> np.ndarray:
        """Closed-vocabulary recognition: ``(len(audios), len(phrases))`` CTC log-likelihoods log p(phrase | audio),
        summed over every alignment; a clip's answer is its row's argmax (:meth:`choose`).

        For command and keyword lists, where the answer is one of a few known phrases: no decoding
        error can produce a phrase outside the list. ``-inf``: the clip has fewer frames than the
        phrase needs. Inputs shorter than :data:`MIN_SECONDS` are padded with trailing silence.
        """
        targets = self._phrase_ids(phrases)
        min_len = int(MIN_SECONDS * SAMPLE_RATE)
        for n, audio in enumerate(audios):
            if audio.size > MAX_CHUNK_SECONDS * SAMPLE_RATE:
                raise SpeechLMError(f"clip {n + 1} lasts {audio.size / SAMPLE_RATE:.0f} s; phrases are scored on clips up to "
                                    f"{MAX_CHUNK_SECONDS:g} s (transcribe longer audio instead)")
        clips = [np.pad(a, (0, max(0, min_len - a.size))) for a in audios]
        flat = torch.tensor([i for t in targets for i in t])
        target_lens = torch.tensor([len(t) for t in targets])
        scores = np.full((len(clips), len(targets)), -np.inf)
        for idx in bucket_batches([a.size / SAMPLE_RATE for a in clips], batch_seconds, 256, seed=0, epoch=0, shuffle=False):
            res = self.model(*pad_audio([clips[i] for i in idx]))
            log_probs = res.logits.float().log_softmax(-1)
            for b, i in enumerate(idx):
                frames = int(res.lens[b])
                lp = log_probs[b, :frames].unsqueeze(1).expand(frames, len(targets), -1)  # (T, P, V): every phrase against this clip
                nll = F.ctc_loss(lp, flat, torch.full((len(targets),), frames), target_lens, blank=BLANK_ID, reduction="none")
                scores[i] = -nll.double().numpy()
        return scores

    def choose(self, audios: Sequence[np.ndarray], phrases: Sequence[str], batch_seconds: float = 200.0) -> list[tuple[str, float]]:
        """Each clip's most likely phrase of ``phrases`` and its CTC log-likelihood (:meth:`score_phrases`)."""
        scores = self.score_phrases(audios, phrases, batch_seconds)
        return [(phrases[int(row.argmax())], float(row.max())) for row in scores]

    def _phrase_ids(self, phrases: Sequence[str]) -> list[list[int]]:
        """Token ids of each phrase, or a clear error for an empty list, a phrase that normalizes to nothing, a phrase
        twice, or a phrase the tokenizer cannot spell (characters the recognizer never saw in training)."""
        if not phrases:
            raise SpeechLMError("no phrases to choose from: give at least one")
        out, seen = [], {}
        for n, phrase in enumerate(phrases):
            text = normalize_text(phrase)
            if not text:
                raise SpeechLMError(f"phrase {n + 1} ({phrase!r}) is empty once lower-cased and stripped of punctuation")
            if text in seen:
                raise SpeechLMError(f"phrases {seen[text] + 1} and {n + 1} are the same once normalized: {text!r}")
            seen[text] = n
            missing = unspellable(self.tokenizer, text)
            if missing is not None:
                raise SpeechLMError(f"phrase {n + 1} ({phrase!r}) cannot be spelled with this recognizer's vocabulary"
                                    + (f": it never saw {missing!r} in training" if missing else ""))
            out.append(self.tokenizer.encode(text))
        return out

    @torch.inference_mode()
    def transcribe_nbest(
        self, audios: Sequence[np.ndarray], options: DecodingOptions, n: int, batch_seconds: float = 200.0
    ) -> list[list[tuple[str, float]]]:
        """Each waveform's ``n`` best transcripts by beam search (fusing the recognizer's LM, if it has one), best first,
        as ``(text, score)`` pairs; a score is the hypothesis' log-probability under the recognizer (plus its fused LM
        score), so ``softmax(scores)`` approximates the posterior of each text among the list.

        Beam prefixes that read the same (token sequences that differ only in spaces) are one transcript, their
        probabilities summed over the whole beam, so the list holds ``n`` different texts and its first may differ
        from :meth:`transcribe`'s, which is the single best prefix. A clip cut into pieces (longer than
        :data:`MAX_CHUNK_SECONDS`) gets the ``n`` best joins of its pieces' lists, each piece scored on its own.
        """
        if not 1 <= n <= options.beam_size:
            raise SpeechLMError(f"N-best size must be between 1 and the beam size ({options.beam_size}), got {n}")
        pieces, owner, _ = self._pieces(audios)
        lists: list[list[tuple[str, float]]] = [[]] * len(pieces)
        for idx, res in self._forward(pieces, batch_seconds):
            for i, hyps in zip(idx, decode_nbest(res.logits, res.lens, options, options.beam_size, self.lm)):
                lists[i] = _merged([(self.tokenizer.decode(ids), score) for ids, score in hyps], n)
        out: list[list[tuple[str, float]]] = [[("", 0.0)] for _ in audios]
        for clip, hyps in zip(owner, lists):
            out[clip] = _merged([(" ".join(t for t in (text, piece) if t), score + piece_score)
                                 for text, score in out[clip] for piece, piece_score in hyps], n)
        return out

    def _pieces(self, audios: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[int], list[float]]:
        """The pieces the model reads (short clips padded, long ones cut), the clip each belongs to and its offset (s)."""
        pieces, owner, offsets = [], [], []
        min_len = int(MIN_SECONDS * SAMPLE_RATE)
        for n, audio in enumerate(audios):
            if audio.size < min_len:
                audio = np.pad(audio, (0, min_len - audio.size))
            start = 0
            for piece in split_long(audio):
                pieces.append(piece)
                owner.append(n)
                offsets.append(start / SAMPLE_RATE)
                start += piece.size
        return pieces, owner, offsets

    def _forward(self, pieces: list[np.ndarray], batch_seconds: float):
        """Batches of pieces by duration: yields each batch's piece indices and the model's output."""
        for idx in bucket_batches([a.size / SAMPLE_RATE for a in pieces], batch_seconds, 256, seed=0, epoch=0, shuffle=False):
            yield idx, self.model(*pad_audio([pieces[i] for i in idx]))

    @torch.inference_mode()
    def _run(self, audios: Sequence[np.ndarray], options: DecodingOptions, batch_seconds: float, with_words: bool) -> list[Transcript]:
        pieces, owner, offsets = self._pieces(audios)
        results: list[Transcript] = [Transcript("", [])] * len(pieces)
        for idx, res in self._forward(pieces, batch_seconds):
            for b, (i, ids) in enumerate(zip(idx, decode(res.logits, res.lens, options, self.lm if options.method == "beam" else None))):
                words = []
                if with_words:
                    aligned = greedy_alignment(res.logits[b, : int(res.lens[b])].float())
                    words = words_from_alignment(aligned, self.tokenizer, offsets[i])
                results[i] = Transcript(self.tokenizer.decode(ids), words)
        out: list[list[Transcript]] = [[] for _ in audios]
        for n, t in zip(owner, results):
            if t.text:
                out[n].append(t)
        return [Transcript(" ".join(t.text for t in ts), [w for t in ts for w in t.words]) for ts in out]
