"""Text language-model pretraining: the recipe behind ``speechlm pretrain text``."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from speechlm.config import TextDataConfig, TextPretrainConfig, format_config, from_dict, save_config
from speechlm.data import sentences
from speechlm.data.text import TextDataset, read_text_lines, split_lines, token_stream
from speechlm.data.tokenizer import load_tokenizer, train_tokenizer
from speechlm.errors import CheckpointError, SpeechLMError
from speechlm.evaluate import PerplexityResult, perplexity
from speechlm.models.asr import count_parameters
from speechlm.models.lm import LanguageModel, SpecialTokens, special_tokens
from speechlm.objectives.language_model import masked_lm_loss, next_token_loss
from speechlm.train.checkpoint import (
    CONFIG_FILE,
    latest_checkpoint,
    load_weights,
    read_config_json,
    resolve_model_dir,
    save_model_dir,
)
from speechlm.train.loop import TrainResult, is_main_process, train


def corpus_lines(d: TextDataConfig) -> tuple[list[str], list[str]]:
    """(train, valid) lines from the configured files or the built-in sentence generator."""
    if d.train_files:
        lines = read_text_lines(d.train_files)
    elif d.builtin_sentences > 0:
        train, _ = sentences.split(sentences.generate(max(d.builtin_sentences * 2, 2000), seed=0))
        lines = [s.text for s in train[: d.builtin_sentences]]
        print(f"training text: {len(lines)} built-in generator sentences (pass --text FILE... for your own)")
    else:
        raise SpeechLMError("no training text: pass --text FILE... (data.train_files) or --builtin N (data.builtin_sentences)")
    if d.valid_files:
        return lines, read_text_lines(d.valid_files)
    return split_lines(lines, d.valid_fraction)


def evaluate_lm(model: LanguageModel, stream, special: SpecialTokens) -> PerplexityResult:
    """Sliding-window perplexity (causal, LSTM) or masked-token perplexity at a fixed mask draw (MLM)."""
    model.eval()
    if model.cfg.arch != "mlm":
        return perplexity(model, stream, model.cfg.context)
    ds = TextDataset(stream, model.cfg.context)
    total, count = 0.0, 0
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        for i in range(0, len(ds), 16):
            b = ds.collate(range(i, min(i + 16, len(ds))))
            out = masked_lm_loss(model, b.tokens, b.lens, special)
            total += float(out.loss) * out.num_tokens
            count += out.num_tokens
    mean = total / max(count, 1)
    return PerplexityResult(math.exp(mean), mean, count)


def pretrain_text(cfg: TextPretrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``cfg.lm`` on the configured text; the model lands in ``run_dir/model`` with its held-out perplexity."""
    run_dir = Path(run_dir)
    train_lines, valid_lines = corpus_lines(cfg.data)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = latest_checkpoint(run_dir) if resume else None
    tokenizer = load_tokenizer(ckpt) if ckpt is not None else train_tokenizer(cfg.tokenizer, train_lines)
    special = special_tokens(tokenizer.vocab_size)
    seq_len = cfg.lm.context + (0 if cfg.lm.arch == "mlm" else 1)
    dataset = TextDataset(token_stream(train_lines, tokenizer.encode, special.bos, special.eos), seq_len, seed=cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = LanguageModel(cfg.lm, special.vocab_size)
    print(format_config(cfg))
    print(
        f"model: {count_parameters(model) / 1e6:.2f} M parameters ({cfg.lm.arch}), vocabulary {special.vocab_size}, "
        f"{len(train_lines)} lines = {len(dataset.stream)} tokens in {len(dataset)} sequences; {len(valid_lines)} held-out lines"
    )
    save_config(cfg, run_dir / CONFIG_FILE)

    def loss_fn(model, batch):
        if cfg.lm.arch == "mlm":
            return masked_lm_loss(model, batch.tokens, batch.lens, special)
        return next_token_loss(model, batch.tokens, batch.lens)

    def save_extras(d: Path) -> None:
        save_config(cfg, d / CONFIG_FILE)
        tokenizer.save(d)

    result = train(model, dataset, cfg.train, run_dir, loss_fn, save_extras, resume=resume, progress=progress)
    if not is_main_process():
        return result
    summary = {"steps": result.steps, "final_loss": result.final_loss, "tokens_per_second": result.throughput}
    if valid_lines:
        ev = evaluate_lm(model, token_stream(valid_lines, tokenizer.encode, special.bos, special.eos), special)
        summary.update(valid_perplexity=ev.perplexity, valid_tokens=ev.tokens)
        print(f"held-out perplexity {ev.perplexity:.2f} over {ev.tokens} tokens")

    save_model_dir(run_dir / "model", model, save_extras, summary)
    return result


def load_lm_dir(model_dir: str | Path):
    """(config, model in eval mode, tokenizer, special tokens) from a text model or run directory."""
    d = resolve_model_dir(model_dir)
    data = read_config_json(d)
    if "lm" not in data:
        raise CheckpointError(f"{model_dir}: not a language model directory (its {CONFIG_FILE} has no lm section)")
    cfg = from_dict(TextPretrainConfig, data, str(d / CONFIG_FILE))
    tokenizer = load_tokenizer(d)
    special = special_tokens(tokenizer.vocab_size)
    model = LanguageModel(cfg.lm, special.vocab_size)
    load_weights(model, d)
    model.eval()
    return cfg, model, tokenizer, special
