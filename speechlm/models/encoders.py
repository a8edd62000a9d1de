"""Speech encoders: Conformer (default), Transformer, BiLSTM and CNN, behind one config.

Every encoder maps ``(x, x_lens)`` features ``(B, T, D_in)`` to an :class:`EncoderOutput` with
``(B, T', d_model)`` frames at 1/4 of the input frame rate (convolutional subsampling), and
the valid lengths ``T'`` per utterance.

>>> import torch
>>> enc = build_encoder(tiny(), input_dim=80)
>>> out = enc(torch.randn(2, 100, 80), torch.tensor([100, 60]))
>>> tuple(out.x.shape), out.x_lens.tolist()
((2, 24, 96), [24, 14])
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

ARCHS = ("conformer", "transformer", "lstm", "cnn")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    arch: str = "conformer"  # "conformer", "transformer", "lstm" (bidirectional) or "cnn"
    d_model: int = 144  # width of every layer (BiLSTM: both directions together)
    n_layers: int = 10  # blocks (BiLSTM: stacked layers)
    n_heads: int = 4  # attention heads (conformer, transformer)
    ff_mult: int = 4  # feed-forward hidden size = ff_mult * d_model (conformer, transformer, cnn)
    conv_kernel: int = 15  # depthwise convolution kernel, in subsampled frames (conformer, cnn)
    dropout: float = 0.1  # dropout on residual branches
    subsampling_channels: int = 0  # channels between the two subsampling convolutions; 0 = d_model

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"encoder.arch must be one of {ARCHS}, got {self.arch!r}")
        if self.arch in ("conformer", "transformer") and self.d_model % self.n_heads:
            raise ValueError(f"encoder.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"encoder.conv_kernel must be odd, got {self.conv_kernel}")


def tiny(arch: str = "conformer") -> EncoderConfig:
    """~1 M parameters (conformer): tests and quick experiments."""
    return EncoderConfig(arch=arch, d_model=96, n_layers=4, n_heads=4, conv_kernel=15)


def small(arch: str = "conformer") -> EncoderConfig:
    """~5 M parameters (conformer): the default, trains in minutes on a laptop CPU."""
    return EncoderConfig(arch=arch, d_model=144, n_layers=10, n_heads=4, conv_kernel=15)


def base(arch: str = "conformer") -> EncoderConfig:
    """~20 M parameters (conformer): for a GPU or a long CPU run."""
    return EncoderConfig(arch=arch, d_model=256, n_layers=12, n_heads=4, conv_kernel=31)


PRESETS = {"tiny": tiny, "small": small, "base": base}


@dataclasses.dataclass
class EncoderOutput:
    x: torch.Tensor  # (B, T', d_model) encoded frames
    x_lens: torch.Tensor  # (B,) valid frames
    hidden_states: tuple[torch.Tensor, ...]  # output of each block, (B, T', d_model) each


def padding_mask(lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, max_len)`` bool, True on valid frames."""
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


SUBSAMPLING = 4  # every encoder emits one frame per 4 feature frames (40 ms)


class ConvSubsampling(nn.Module):
    """Two stride-2 convolutions over time (kernel 3): :data:`SUBSAMPLING` x fewer frames.

    1-D convolutions over the feature axis cost a few percent of the encoder on a CPU, where
    the 2-D (time x frequency) variant costs more than all the blocks together.
    """

    def __init__(self, input_dim: int, d_model: int, channels: int):
        super().__init__()
        self.conv1 = nn.Conv1d(input_dim, channels, 3, stride=2)
        self.conv2 = nn.Conv1d(channels, d_model, 3, stride=2)

    @staticmethod
    def output_lengths(lens: torch.Tensor) -> torch.Tensor:
        return ((lens - 1) // 2 - 1) // 2

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.silu(self.conv1(x.transpose(1, 2)))  # (B, C, T/2)
        x = F.silu(self.conv2(x)).transpose(1, 2)  # (B, T/4, d_model)
        return x, self.output_lengths(x_lens).clamp(min=0)


def rotary(x: torch.Tensor, offset: int = 0, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (Su et al., 2021) of ``(B, H, T, Dh)`` queries or keys at positions ``offset + t``."""
    T, Dh = x.shape[-2], x.shape[-1]
    inv = base ** (-torch.arange(0, Dh, 2, device=x.device, dtype=torch.float32) / Dh)
    pos = torch.arange(offset, offset + T, device=x.device, dtype=torch.float32)
    ang = pos[:, None] * inv[None, :]  # (T, Dh/2)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class SelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)  # (B, H, T, Dh) each
        # no dropout on attention weights: its (B, H, T, T) masks cost more than they help here
        y = F.scaled_dot_product_attention(rotary(q), rotary(k), v, attn_mask=mask[:, None, None, :])
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Sequential):
    def __init__(self, cfg: EncoderConfig):
        super().__init__(
            nn.LayerNorm(cfg.d_model),
            nn.Linear(cfg.d_model, cfg.ff_mult * cfg.d_model),
            nn.SiLU(),
            nn.Linear(cfg.ff_mult * cfg.d_model, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )


class ConvModule(nn.Module):
    """Pointwise GLU -> depthwise conv -> norm -> SiLU -> pointwise (Gulati et al., 2020).

    LayerNorm replaces the paper's BatchNorm so that padding never leaks into statistics.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d = cfg.d_model
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Linear(d, 2 * d)
        self.dw = nn.Conv1d(d, d, cfg.conv_kernel, padding=cfg.conv_kernel // 2, groups=d)
        self.dw_norm = nn.LayerNorm(d)
        self.pw2 = nn.Linear(d, d)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pw1(self.norm(x)), dim=-1) * mask.unsqueeze(-1)  # zero padding before the conv
        y = self.dw(y.transpose(1, 2)).transpose(1, 2)  # (B, T, D)
        return self.dropout(self.pw2(F.silu(self.dw_norm(y))))


class ConformerBlock(nn.Module):
    """x + FF/2, + MHSA, + Conv, + FF/2, then LayerNorm."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.ff1, self.ff2 = FeedForward(cfg), FeedForward(cfg)
        self.attn_norm = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.conv = ConvModule(cfg)
        self.out_norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.dropout(self.attn(self.attn_norm(x), mask))
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        return self.out_norm(x)


class TransformerBlock(nn.Module):
    """Pre-norm: x + MHSA(LN(x)), then + FF(LN(x))."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ff = FeedForward(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), mask))
        return x + self.ff(x)


class ConvBlock(nn.Module):
    """ConvNeXt-style 1-D block: x + PW(SiLU(PW(DWConv(LN(x)))))."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d = cfg.d_model
        self.norm = nn.LayerNorm(d)
        self.dw = nn.Conv1d(d, d, cfg.conv_kernel, padding=cfg.conv_kernel // 2, groups=d)
        self.ff = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, cfg.ff_mult * d), nn.SiLU(), nn.Linear(cfg.ff_mult * d, d), nn.Dropout(cfg.dropout)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.norm(x) * mask.unsqueeze(-1)
        y = self.dw(y.transpose(1, 2)).transpose(1, 2)  # (B, T, D)
        return x + self.ff(y)


class BlockEncoder(nn.Module):
    """Subsampling followed by a stack of residual blocks that take ``(x, mask)``."""

    def __init__(self, cfg: EncoderConfig, input_dim: int, block: type[nn.Module]):
        super().__init__()
        self.cfg = cfg
        self.subsampling = ConvSubsampling(input_dim, cfg.d_model, cfg.subsampling_channels or cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model) if block is not ConformerBlock else nn.Identity()

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> EncoderOutput:
        x, x_lens = self.subsampling(x, x_lens)
        mask = padding_mask(x_lens, x.shape[1])
        x = self.dropout(x)
        hidden = []
        for blk in self.blocks:
            x = blk(x, mask)
            hidden.append(x)
        x = self.norm(x) * mask.unsqueeze(-1)
        return EncoderOutput(x, x_lens, tuple(hidden))


class LSTMEncoder(nn.Module):
    """Subsampling followed by stacked bidirectional LSTMs on packed sequences."""

    def __init__(self, cfg: EncoderConfig, input_dim: int):
        super().__init__()
        self.cfg = cfg
        self.subsampling = ConvSubsampling(input_dim, cfg.d_model, cfg.subsampling_channels or cfg.d_model)
        self.layers = nn.ModuleList(
            nn.LSTM(cfg.d_model, cfg.d_model // 2, batch_first=True, bidirectional=True) for _ in range(cfg.n_layers)
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> EncoderOutput:
        x, x_lens = self.subsampling(x, x_lens)
        T = x.shape[1]
        hidden = []
        for lstm in self.layers:
            packed = nn.utils.rnn.pack_padded_sequence(
                self.dropout(x), x_lens.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
            )
            y, _ = lstm(packed)
            y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=T)
            x = y if x.shape[-1] != y.shape[-1] else x + y
            hidden.append(x)
        x = self.norm(x) * padding_mask(x_lens, T).unsqueeze(-1)
        return EncoderOutput(x, x_lens, tuple(hidden))


def build_encoder(cfg: EncoderConfig, input_dim: int) -> nn.Module:
    """The encoder ``cfg.arch`` names, reading ``input_dim`` features per frame."""
    if cfg.arch == "conformer":
        return BlockEncoder(cfg, input_dim, ConformerBlock)
    if cfg.arch == "transformer":
        return BlockEncoder(cfg, input_dim, TransformerBlock)
    if cfg.arch == "cnn":
        return BlockEncoder(cfg, input_dim, ConvBlock)
    return LSTMEncoder(cfg, input_dim)
