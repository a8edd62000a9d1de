"""Datasets, duration-bucketed batching and collation for speech with transcripts.

Batches are lists of utterance indices whose padded audio stays within a budget of seconds.
The batch order of epoch ``e`` depends only on ``(seed, e)`` and augmentation draws only on
``(seed, e, index)``, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from speechlm.data.audio import load_audio
from speechlm.data.augment import AugmentConfig, augment
from speechlm.data.manifest import Utterance
from speechlm.data.text import pad_tokens
from speechlm.data.tokenizer import Tokenizer
from speechlm.features import SAMPLE_RATE


@dataclasses.dataclass
class Batch:
    audio: torch.Tensor  # (B, N) float samples, zero-padded
    audio_lens: torch.Tensor  # (B,) samples
    tokens: torch.Tensor  # (B, L) token ids, zero-padded
    token_lens: torch.Tensor  # (B,)
    indices: list[int]  # dataset indices of the rows

    @property
    def amount(self) -> float:
        """Audio seconds in the batch (padding excluded): the training loop's throughput unit."""
        return float(self.audio_lens.sum()) / SAMPLE_RATE

    def to(self, device: torch.device | str) -> "Batch":
        return dataclasses.replace(
            self,
            audio=self.audio.to(device),
            audio_lens=self.audio_lens.to(device),
            tokens=self.tokens.to(device),
            token_lens=self.token_lens.to(device),
        )


class SpeechDataset:
    """Utterances with token ids; audio is read once and kept in memory as int16."""

    unit = "audio_seconds"

    def __init__(
        self,
        utts: Sequence[Utterance],
        tokenizer: Tokenizer | None = None,
        augment_cfg: AugmentConfig | None = None,
        seed: int = 0,
        progress: bool = True,
        label_ids: Sequence[int] | None = None,
        trim_db: float | None = None,
    ):
        """label_ids: one class id per utterance; a batch then carries them as ``tokens[:, 0]``.
        trim_db: strip each clip's leading and trailing audio this many dB below its peak as it is read."""
        self.utts = list(utts)
        self.tokenizer = tokenizer
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.epoch = 0
        self._audio = [
            (load_audio(u.audio_filepath, trim_db=trim_db) * 32767).astype(np.int16)
            for u in tqdm(self.utts, desc="load audio", unit="utt", disable=not progress, leave=False)
        ]
        if label_ids is not None:
            self._tokens = [[int(c)] for c in label_ids]
        else:
            self._tokens = [tokenizer.encode(u.text) if tokenizer else [] for u in self.utts]

    def __len__(self) -> int:
        return len(self.utts)

    def select(self, keep: Sequence[int]) -> "SpeechDataset":
        """The utterances ``keep`` (in that order) as a new dataset sharing the loaded audio."""
        sub = copy.copy(self)
        sub.utts = [self.utts[i] for i in keep]
        sub._audio = [self._audio[i] for i in keep]
        sub._tokens = [self._tokens[i] for i in keep]
        return sub

    def with_tokens(self, tokenizer: Tokenizer) -> "SpeechDataset":
        """The same utterances and loaded audio, carrying ``tokenizer``'s ids of their transcripts."""
        sub = copy.copy(self)
        sub.tokenizer = tokenizer
        sub._tokens = [tokenizer.encode(u.text) if u.text else [] for u in self.utts]
        return sub

    def silent(self, threshold: float = 1e-4) -> list[int]:
        """Indices of utterances whose RMS is below ``threshold`` (digital silence, blank recordings)."""
        return [i for i, a in enumerate(self._audio) if a.size == 0 or np.sqrt(np.mean((a / 32767.0) ** 2)) < threshold]

    @property
    def durations(self) -> np.ndarray:
        return np.array([a.size / SAMPLE_RATE for a in self._audio])

    def make_batches(self, cfg, epoch: int) -> list[list[int]]:
        """The batches of ``epoch`` under a :class:`~speechlm.train.loop.TrainConfig`."""
        return bucket_batches(self.durations, cfg.batch_seconds, cfg.max_batch_size, cfg.seed, epoch)

    def clean_audio(self, i: int) -> np.ndarray:
        """Float samples of utterance ``i`` as read, without augmentation."""
        return self._audio[i].astype(np.float32) / 32767

    def audio(self, i: int) -> np.ndarray:
        audio = self.clean_audio(i)
        if self.augment_cfg is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            audio = augment(audio, self.augment_cfg, rng)
        return audio

    def tokens(self, i: int) -> list[int]:
        """Token ids of utterance ``i`` as this epoch's batch carries them."""
        return self._tokens[i]

    def collate(self, indices: Sequence[int]) -> Batch:
        audio, audio_lens = pad_audio([self.audio(i) for i in indices])
        tokens, token_lens = pad_tokens([self.tokens(i) for i in indices])
        return Batch(audio, audio_lens, tokens, token_lens, list(indices))


def pad_audio(audios: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Float waveforms -> ``(B, N)`` zero-padded batch and ``(B,)`` lengths in samples."""
    lens = torch.tensor([a.size for a in audios])
    batch = torch.zeros(len(audios), int(lens.max()))
    for b, a in enumerate(audios):
        batch[b, : a.size] = torch.from_numpy(a)
    return batch, lens


def bucket_batches(
    durations: Sequence[float], batch_seconds: float, max_batch_size: int, seed: int, epoch: int, shuffle: bool = True
) -> list[list[int]]:
    """Group utterances of similar duration so that ``max_duration * batch_size <= batch_seconds``.

    Sorting by duration with a little random jitter keeps padding low while letting batch
    composition change between epochs.
    """
    durations = np.asarray(durations, dtype=np.float64)
    rng = np.random.default_rng([seed, epoch])
    keys = durations * (1 + (rng.uniform(-0.1, 0.1, durations.size) if shuffle else 0))
    order = np.argsort(keys, kind="stable")
    batches, current, longest = [], [], 0.0
    for i in order:
        d = durations[i]
        if current and (max(longest, d) * (len(current) + 1) > batch_seconds or len(current) >= max_batch_size):
            batches.append(current)
            current, longest = [], 0.0
        current.append(int(i))
        longest = max(longest, d)
    if current:
        batches.append(current)
    if shuffle:
        rng.shuffle(batches)
    return batches
