"""The joint speech-language model: speech encoder -> projector -> causal language model.

The LM reads ``BOS, prompt, speech`` and writes the answer, where the prompt is the task's name
in the LM's own tokens (``transcribe``, ``intent``) and the speech is the encoder's output with
``stack`` neighbouring frames concatenated and mapped by an MLP into the LM's embedding space
(the SLAM-ASR recipe). Training is teacher-forced cross-entropy on the answer and its EOS only.

>>> import torch
>>> from speechlm.features import FeatureConfig
>>> from speechlm.models.encoders import EncoderConfig
>>> from speechlm.models.lm import LMConfig, special_tokens
>>> sp = special_tokens(12)
>>> m = SpeechLM(FeatureConfig(), EncoderConfig(d_model=32, n_layers=1, n_heads=2), ProjectorConfig(stack=2),
...              LMConfig(d_model=16, n_layers=1, n_heads=2, context=64), sp, [[3, 4], [5]]).eval()
>>> out = m(torch.zeros(2, 16000), torch.tensor([16000, 8000]), torch.tensor([0, 1]), torch.tensor([[6, 7], [8, 0]]), torch.tensor([2, 1]))
>>> out.loss.ndim, out.tokens
(0, 5)
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from speechlm.errors import SpeechLMError
from speechlm.features import FeatureConfig, SpecAugment, SpecAugmentConfig, compute_features
from speechlm.models.encoders import EncoderConfig, build_encoder
from speechlm.models.lm import LanguageModel, LMConfig, SpecialTokens

IGNORE = -100


@dataclasses.dataclass(frozen=True)
class ProjectorConfig:
    stack: int = 4  # encoder frames concatenated into one LM position (the length adapter's downsampling)
    hidden: int = 0  # MLP hidden width (0 = the LM's width)

    def __post_init__(self):
        if self.stack < 1 or self.hidden < 0:
            raise ValueError(f"projector.stack must be >= 1 and projector.hidden >= 0, got {self.stack}, {self.hidden}")


class Projector(nn.Module):
    """``(B, T, D_enc)`` encoder frames -> ``(B, ceil(T / stack), D_lm)``: frame stacking, then a 2-layer MLP."""

    def __init__(self, cfg: ProjectorConfig, enc_dim: int, lm_dim: int):
        super().__init__()
        self.stack = cfg.stack
        hidden = cfg.hidden or lm_dim
        self.mlp = nn.Sequential(nn.Linear(enc_dim * cfg.stack, hidden), nn.GELU(), nn.Linear(hidden, lm_dim))

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, D = x.shape
        pad = (-T) % self.stack
        x = F.pad(x, (0, 0, 0, pad)).reshape(B, (T + pad) // self.stack, D * self.stack)  # (B, S, stack * D)
        return self.mlp(x), torch.div(x_lens + self.stack - 1, self.stack, rounding_mode="floor")


@dataclasses.dataclass
class SpeechLMOutput:
    loss: torch.Tensor  # mean cross-entropy over answer tokens (EOS included)
    tokens: int  # answer tokens scored
    correct: int  # of which the argmax was right


class SpeechLM(nn.Module):
    def __init__(
        self, features: FeatureConfig, encoder: EncoderConfig, projector: ProjectorConfig, lm: LMConfig, special: SpecialTokens,
        prompts: list[list[int]], spec_augment: SpecAugmentConfig = SpecAugmentConfig(),
    ):  # fmt: skip
        super().__init__()
        if lm.arch == "mlm":
            raise SpeechLMError("the joint model writes text left to right: its LM must be causal or lstm, not mlm")
        self.features, self.special, self.prompts = features, special, [list(p) for p in prompts]
        self.spec_augment = SpecAugment(spec_augment, spectral=features.spectral)
        self.encoder = build_encoder(encoder, features.dim)
        self.projector = Projector(projector, encoder.d_model, lm.d_model)
        self.lm = LanguageModel(lm, special.vocab_size)

    def encode_speech(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """audio ``(B, N)`` samples at 16 kHz -> speech embeddings ``(B, S, D_lm)`` and their lengths ``(B,)``."""
        with torch.no_grad(), torch.autocast(audio.device.type, enabled=False):
            feats, feat_lens = compute_features(audio.float(), audio_lens, self.features)  # (B, T, D)
            feats = self.spec_augment(feats, feat_lens)
        enc = self.encoder(feats, feat_lens)
        return self.projector(enc.x, enc.x_lens)

    def prefix(self, speech: torch.Tensor, task: int) -> torch.Tensor:
        """One utterance's ``(S, D)`` speech embeddings -> the LM input ``BOS prompt speech`` ``(1 + P + S, D)``."""
        ids = torch.tensor([self.special.bos, *self.prompts[task]], device=speech.device)
        return torch.cat([self.lm.embed(ids), speech.to(self.lm.embed.weight.dtype)])

    def forward(
        self, audio: torch.Tensor, audio_lens: torch.Tensor, tasks: torch.Tensor, answers: torch.Tensor, answer_lens: torch.Tensor
    ) -> SpeechLMOutput:
        """tasks ``(B,)`` prompt indices; answers ``(B, L)`` token ids (right-padded), answer_lens ``(B,)``."""
        speech, s_lens = self.encode_speech(audio, audio_lens)
        rows, labels = [], []
        for b in range(audio.shape[0]):
            pre = self.prefix(speech[b, : int(s_lens[b])], int(tasks[b]))
            ans = answers[b, : int(answer_lens[b])]
            rows.append(torch.cat([pre, self.lm.embed(ans)]))  # the last answer token is input to predict EOS
            target = torch.full((rows[-1].shape[0],), IGNORE, dtype=torch.long, device=audio.device)
            target[pre.shape[0] - 1 :] = torch.cat([ans, ans.new_tensor([self.special.eos])])  # position i predicts token i + 1
            labels.append(target)
        lens = torch.tensor([r.shape[0] for r in rows], device=audio.device)
        x = nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (B, L, D)
        y = nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=IGNORE)  # (B, L)
        logits = self.lm(y.clamp(min=0), lens, embeds=x).logits.float()
        loss = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE)
        scored = y != IGNORE
        return SpeechLMOutput(loss, int(scored.sum()), int(((logits.argmax(-1) == y) & scored).sum()))

    @torch.no_grad()
    def generate(self, speech: torch.Tensor, task: int, max_new_tokens: int = 200, beam_size: int = 1) -> list[int]:
        """Answer token ids for one utterance's speech embeddings ``(S, D)`` (EOS excluded), greedy or beam search,
        reusing the LM's key/value (or LSTM) cache."""
        x = self.prefix(speech, task)[None]  # (1, L, D)
        room = self.lm.cfg.context - x.shape[1]
        if room < 1 and self.lm.cfg.arch != "lstm":
            raise SpeechLMError(
                f"prompt and speech take {x.shape[1]} positions, the LM's context is {self.lm.cfg.context}: shorten the audio "
                f"(about {self.lm.cfg.context * self.projector.stack * 0.04:.0f} s fit with the default encoder) or raise projector.stack"
            )
        limit = max_new_tokens if self.lm.cfg.arch == "lstm" else min(max_new_tokens, room)
        out = self.lm(x.new_zeros(1, x.shape[1], dtype=torch.long), embeds=x)
        banned = [0, self.special.bos, self.special.mask]
        beams = [([], 0.0)]  # (tokens, summed log-probability)
        logp = _next_log_probs(out.logits[:, -1], banned)  # (beams, V)
        cache, finished = out.cache, []
        for _ in range(limit):
            V = logp.shape[-1]
            totals = torch.tensor([s for _, s in beams])[:, None] + logp.cpu()  # (beams, V)
            # 2 x beam candidates, so that beam_size hypotheses live on however many end here; an
            # ending counts when it ranks among the best beam_size (greedy: when EOS is the argmax)
            best = totals.flatten().topk(min(2 * beam_size, totals.numel()))
            keep = []
            for rank, (score, flat) in enumerate(zip(best.values.tolist(), best.indices.tolist())):
                src, tok = divmod(flat, V)
                if tok == self.special.eos:
                    if rank < beam_size:
                        finished.append((beams[src][0], score))
                elif len(keep) < beam_size:
                    keep.append((src, tok, score))
            finished = sorted(finished, key=_normalized, reverse=True)[:beam_size]
            if not keep or len(finished) >= beam_size and (
                beam_size == 1 or max(_normalized((beams[src][0] + [tok], s)) for src, tok, s in keep) < _normalized(finished[-1])
            ):
                break  # greedy ends at its EOS; a beam when no live hypothesis outscores the worst kept ending
            beams = [(beams[src][0] + [tok], score) for src, tok, score in keep]
            rows = torch.tensor([src for src, _, _ in keep], device=x.device)
            tokens = torch.tensor([[tok] for _, tok, _ in keep], device=x.device)
            out = self.lm(tokens, cache=_reorder(cache, rows, self.lm.cfg.arch))
            cache, logp = out.cache, _next_log_probs(out.logits[:, -1], banned)
        return max(finished or beams, key=_normalized)[0]


def _normalized(hyp: tuple[list[int], float]) -> float:
    """Summed log-probability over sqrt(length + 1): the raw sum favours short answers."""
    return hyp[1] / math.sqrt(len(hyp[0]) + 1)


def _next_log_probs(logits: torch.Tensor, banned: list[int]) -> torch.Tensor:
    logits = logits.float().clone()
    logits[:, banned] = float("-inf")
    return logits.log_softmax(-1)


def _reorder(cache: list, rows: torch.Tensor, arch: str) -> list:
    """Pick cache rows (the surviving beams' parents): batch is dim 1 of LSTM states, dim 0 of k/v."""
    dim = 1 if arch == "lstm" else 0
    return [tuple(t.index_select(dim, rows) for t in layer) for layer in cache]
