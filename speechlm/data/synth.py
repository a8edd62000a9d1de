"""Synthesize a speech corpus from text with real TTS engines (espeak-ng, flite, festival).

The voice bank is a fixed list of :class:`Voice` configurations, split into voices for
training and voices held out for testing: no test voice shares a speaker model (flite/festival)
or an accent+variant pair (espeak-ng) with a training voice, so test WER measures
generalization to unseen voices.

Usage:
    speechlm synth data/demo-train --builtin 3000 --split train --voices train
    speechlm synth data/mine --text sentences.txt --voices all --voices-per-sentence 2
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speechlm.data.audio import load_audio, write_audio
from speechlm.data.augment import add_noise, band_limit, speed_perturb
from speechlm.data.manifest import Utterance, write_manifest
from speechlm.errors import SpeechLMError
from speechlm.features import SAMPLE_RATE

ENGINE_COMMANDS = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}
FESTIVAL_DIPHONE_F0 = (105.0, 14.0)  # mean and standard deviation (Hz) of the F0 festival's kal/ked diphone voices aim for
TRIM_DB = 40.0  # engines pad with silence; trimmed, then a short margin is put back
MARGIN_S = 0.1


@dataclasses.dataclass(frozen=True)
class Voice:
    name: str  # unique id, also the manifest's "speaker"
    engine: str  # "espeak-ng", "flite" or "festival"
    voice: str  # engine voice: espeak language/accent, flite voice, festival voice function
    variant: str = ""  # espeak-ng variant (m1, f3, klatt2 ...)
    rate: float = 1.0  # speaking-rate multiplier (espeak words/min = 175 * rate)
    pitch: int = 50  # espeak-ng pitch 0-99; for flite diphone voices the mean F0 is 2.4 * pitch Hz
    split: str = "train"  # "train" or "test": which side of the voice split the voice is on
    # the F0 contour scaled by this factor, for the voices without a pitch setting: flite's statistical (clustergen)
    # voices and festival's diphone voices; 1 leaves the voice's own pitch
    f0_scale: float = 1.0


def _espeak(accents: Sequence[str], variants: Sequence[str], split: str, start: int) -> list[Voice]:
    out = []
    for i, (accent, variant) in enumerate(zip(accents, variants)):
        k = start + i
        rate = (0.8, 0.9, 1.0, 1.1)[k % 4]
        pitch = (35, 45, 55, 65, 40, 60)[k % 6]
        out.append(Voice(f"espeak-{accent}-{variant}-{int(rate * 100)}", "espeak-ng", accent, variant, rate, pitch, split))
    return out


def voice_bank() -> list[Voice]:
    """All voice configurations: 35 for training, 8 held out for testing."""
    accents = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029"]
    variants = ["m1", "m2", "m3", "m5", "m6", "f1", "f2", "f3", "f5", "klatt2", "klatt3", "Andy", "Annie", "michel", "steph", "edward"]
    bank = _espeak(
        [accents[i % len(accents)] for i in range(24)], [variants[(i * 7) % len(variants)] for i in range(24)], "train", 0
    )
    for v in ("kal", "kal16", "awb", "slt"):
        for rate in (1.0, 0.87):
            bank.append(Voice(f"flite-{v}-{int(rate * 100)}", "flite", v, rate=rate, pitch=42 if rate == 1 else 50))
    bank += [Voice(f"festival-kal_diphone-{int(r * 100)}", "festival", "kal_diphone", rate=r) for r in (1.0, 0.87)]
    # the HTS voice ignores Duration_Stretch, so it has one configuration
    bank.append(Voice("festival-cmu_us_slt_arctic_hts-100", "festival", "cmu_us_slt_arctic_hts"))
    # held out: accents and variants never paired (or never used) in training, and two unseen speakers
    bank += _espeak(["en-us-nyc", "en-gb-x-gbcwmd", "en-us", "en-gb"], ["m4", "f4", "m7", "f4"], "test", 1)
    bank += [Voice(f"flite-rms-{int(r * 100)}", "flite", "rms", rate=r, split="test") for r in (1.0, 0.87)]
    bank += [Voice(f"festival-ked_diphone-{int(r * 100)}", "festival", "ked_diphone", rate=r, split="test") for r in (1.0, 0.87)]
    return bank


def available_engines() -> set[str]:
    return {e for e, cmd in ENGINE_COMMANDS.items() if shutil.which(cmd)}


# espeak-ng variants for random voices: every installed human-sounding variant except those the bank's
# held-out voices use (m4, f4, m7), so no random voice shares a held-out accent+variant pair
RANDOM_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029", "en-us-nyc", "en-gb-x-gbcwmd")
RANDOM_VARIANTS = (
    "adam Alex Alicia Andrea Andy Annie antonio aunty belinda benjamin boris caleb david Denis Diogo ed edward edward2 Gene "
    "Gene2 gustave announcer Henrique Hugo iven iven2 iven3 iven4 Jacky john kaukovalta Lee linda marcelo Marco Mario max "
    "Michael michel miguel Mike Mr Nguyen pablo paul pedro quincy rob robert steph steph2 steph3 Tweaky zac anika AnxiousAndy "
    "f1 f2 f3 f5 grandpa klatt klatt2 klatt3 klatt4 klatt5 klatt6 m1 m2 m3 m5 m6 m8 norbert sandro shelby travis victor grandma"
).split()


def random_voices(n: int, seed: int = 0) -> list[Voice]:
    """``n`` espeak-ng training voices drawn at random: accent, variant, speaking rate 0.75-1.25 and pitch 15-85.

    Many voices speaking the same words is the cheapest way to teach a model that the speaker does not matter.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        accent, variant = RANDOM_ACCENTS[rng.integers(len(RANDOM_ACCENTS))], RANDOM_VARIANTS[rng.integers(len(RANDOM_VARIANTS))]
        rate, pitch = round(float(rng.uniform(0.75, 1.25)), 2), int(rng.integers(15, 86))
        out.append(Voice(f"espeak-{accent}-{variant}-{int(rate * 100)}-p{pitch}-r{seed}.{i}", "espeak-ng", accent, variant, rate, pitch))
    return out


# the training speakers of the bank's other engines that random_engine_voices varies: (engine, voice, varies by
# `pitch` (flite's diphone voices) rather than by `f0_scale`). The held-out flite rms and festival ked are not among
# them, nor festival's HTS voice, which ignores both rate and pitch and synthesizes 20 times slower.
ENGINE_VOICES = (
    ("flite", "kal", True), ("flite", "kal16", True), ("flite", "awb", False), ("flite", "slt", False), ("festival", "kal_diphone", False),
)  # fmt: skip


def random_engine_voices(n: int, seed: int = 0) -> list[Voice]:
    """``n`` training voices of the bank's flite and festival speakers (never a held-out one), each at a random
    speaking rate 0.75-1.25 and a random mean pitch 0.75-1.3 times the speaker's own.

    espeak-ng's random voices vary the accent and the voice; these vary the other engines' speakers, whose sound
    (diphone concatenation, statistical vocoders) espeak-ng's formant synthesis never makes.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        engine, name, by_pitch = ENGINE_VOICES[rng.integers(len(ENGINE_VOICES))]
        rate, scale = round(float(rng.uniform(0.75, 1.25)), 2), round(float(rng.uniform(0.75, 1.3)), 2)
        pitch, f0_scale = (round(42 * scale), 1.0) if by_pitch else (50, scale)
        out.append(Voice(f"{engine}-{name}-{int(rate * 100)}-f{int(scale * 100)}-e{seed}.{i}", engine, name, rate=rate, pitch=pitch, f0_scale=f0_scale))
    return out


def select_voices(spec: str, bank: Sequence[Voice] | None = None, seed: int = 0) -> list[Voice]:
    """``"train"``, ``"test"``, ``"all"``, an engine name, ``"random:N"`` (:func:`random_voices`), ``"engines:N"``
    (:func:`random_engine_voices`) or comma-separated voice names; several of these joined by ``+`` are their union."""
    bank = list(bank or voice_bank())
    engines = available_engines()
    chosen: dict[str, Voice] = {}
    for part in spec.split("+"):
        chosen.update((v.name, v) for v in _select(part.strip(), bank, seed))
    usable = [v for v in chosen.values() if v.engine in engines]
    if not usable:
        raise SpeechLMError(
            f"--voices {spec}: none of the engines {sorted({v.engine for v in chosen.values()})} is installed "
            "(run scripts/setup_system.sh)"
        )
    return usable


def _select(spec: str, bank: list[Voice], seed: int) -> list[Voice]:
    if spec in ("train", "test"):
        return [v for v in bank if v.split == spec]
    if spec == "all":
        return bank
    if spec in ENGINE_COMMANDS:
        return [v for v in bank if v.engine == spec]
    for prefix, draw in (("random:", random_voices), ("engines:", random_engine_voices)):
        if spec.startswith(prefix):
            n = spec.removeprefix(prefix)
            if not n.isdigit() or int(n) < 1:
                raise SpeechLMError(f"--voices {spec}: expected {prefix}N with N a positive whole number")
            return draw(int(n), seed)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    by_name = {v.name: v for v in bank}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SpeechLMError(f"--voices: unknown voice(s) {unknown}; run `speechlm synth --list-voices`")
    return [by_name[n] for n in names]


def _engine_command(voice: Voice, text_file: str, out_wav: str) -> list[str]:
    if voice.engine == "espeak-ng":
        v = voice.voice + (f"+{voice.variant}" if voice.variant else "")
        return ["espeak-ng", "-v", v, "-s", str(int(175 * voice.rate)), "-p", str(voice.pitch), "-f", text_file, "-w", out_wav]
    if voice.engine == "flite":
        cmd = ["flite", "-voice", voice.voice, "--setf", f"duration_stretch={1 / voice.rate:.3f}"]
        if voice.voice.startswith("kal"):
            cmd += ["--setf", f"int_f0_target_mean={2.4 * voice.pitch:.0f}"]
        elif voice.f0_scale != 1:
            cmd += ["--setf", f"f0_shift={voice.f0_scale:.3f}"]
        return cmd + ["-f", text_file, "-o", out_wav]
    cmd = ["text2wave", "-eval", f"(voice_{voice.voice})", "-eval", f"(Parameter.set 'Duration_Stretch {1 / voice.rate:.3f})"]
    if voice.f0_scale != 1 and voice.voice.endswith("_diphone"):  # the diphone voices' linear-regression intonation model
        mean, std = FESTIVAL_DIPHONE_F0[0] * voice.f0_scale, FESTIVAL_DIPHONE_F0[1] * voice.f0_scale
        cmd += ["-eval", f"(set! int_lr_params '((target_f0_mean {mean:.0f}) (target_f0_std {std:.0f}) (model_f0_mean 170) (model_f0_std 34)))"]
    return cmd + ["-o", out_wav, text_file]


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak ``text`` with ``voice``; mono float32 at 16 kHz, silence trimmed to a 0.1 s margin."""
    with tempfile.TemporaryDirectory(prefix="speechlm-tts-") as tmp:
        txt, wav = os.path.join(tmp, "in.txt"), os.path.join(tmp, "out.wav")
        Path(txt).write_text(text + "\n")
        proc = subprocess.run(_engine_command(voice, txt, wav), capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not os.path.exists(wav):
            raise SpeechLMError(f"{voice.engine} failed for voice {voice.name}: {proc.stderr.strip()[-300:]}")
        audio = load_audio(wav, trim_db=TRIM_DB)
    margin = np.zeros(int(MARGIN_S * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([margin, audio, margin])


@dataclasses.dataclass(frozen=True)
class SynthJob:
    text: str
    label: str | None
    voice: Voice
    path: str
    seed: int
    speed: float = 1.0  # offline speed perturbation factor
    snr_db: float | None = None  # additive noise at this SNR, None = clean
    max_hz: float | None = None  # band limit (4000 sounds like an 8 kHz recording), None = full band


def _run_job(job: SynthJob) -> Utterance | str:
    try:
        audio = synthesize(job.text, job.voice)
    except (SpeechLMError, subprocess.TimeoutExpired) as e:
        return f"{job.path}: {e}"
    rng = np.random.default_rng(job.seed)
    audio = speed_perturb(audio, job.speed)
    if job.snr_db is not None:
        audio = add_noise(audio, job.snr_db, rng)
    if job.max_hz:  # last, like the recording channel
        audio = band_limit(audio, job.max_hz)
    write_audio(job.path, audio)
    return Utterance(job.path, round(audio.size / SAMPLE_RATE, 3), job.text, job.label, job.voice.name, "en")


def plan_jobs(
    items: Sequence[tuple[str, str | None]],
    voices: Sequence[Voice],
    out_dir: Path,
    seed: int = 0,
    voices_per_sentence: int | None = 1,
    speed_factors: Sequence[float] = (1.0,),
    noise_snr_db: tuple[float, float] | None = None,
    noise_prob: float = 0.0,
    max_hz: float | None = None,
) -> list[SynthJob]:
    """Deterministic job list: each sentence gets ``voices_per_sentence`` distinct voices (None: every voice);
    ``max_hz`` band-limits every clip."""
    if max_hz is not None and not 0 < max_hz < SAMPLE_RATE / 2:
        raise SpeechLMError(f"--max-hz must be between 0 and {SAMPLE_RATE // 2}, got {max_hz:g}")
    rng = np.random.default_rng(seed)
    jobs = []
    k = len(voices) if voices_per_sentence is None else min(voices_per_sentence, len(voices))
    for i, (text, label) in enumerate(items):
        for j in rng.choice(len(voices), size=k, replace=False):
            voice = voices[int(j)]
            speed = float(rng.choice(speed_factors))
            noisy = noise_snr_db is not None and rng.random() < noise_prob
            snr = float(rng.uniform(*noise_snr_db)) if noisy else None
            key = f"{text}|{voice.name}|{speed}|{snr}" + (f"|{max_hz}" if max_hz else "")  # files from before max_hz keep their names
            digest = hashlib.sha1(key.encode()).hexdigest()[:10]
            path = out_dir / "wav" / f"{i:06d}-{voice.name}-{digest}.wav"
            jobs.append(SynthJob(text, label, voice, str(path), int(rng.integers(2**31)), speed, snr, max_hz))
    return jobs


def synthesize_corpus(jobs: Sequence[SynthJob], out_dir: str | Path, num_workers: int | None = None) -> tuple[list[Utterance], list[str]]:
    """Run ``jobs`` in parallel and write ``out_dir/manifest.jsonl``; returns (utterances, failures).

    Files already present from an earlier run with the same plan are reused.
    """
    out_dir = Path(out_dir)
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    num_workers = num_workers or os.cpu_count() or 1
    todo = [j for j in jobs if not os.path.exists(j.path)]
    done = {j.path: j for j in jobs if os.path.exists(j.path)}
    results: dict[str, Utterance] = {}
    failures: list[str] = []
    for path, job in done.items():
        results[path] = Utterance(path, round(sf.info(path).duration, 3), job.text, job.label, job.voice.name, "en")
    if todo:
        with ProcessPoolExecutor(num_workers) as pool:
            for job, res in tqdm(zip(todo, pool.map(_run_job, todo, chunksize=8)), total=len(todo), desc="synthesize", unit="utt"):
                if isinstance(res, str):
                    failures.append(res)
                else:
                    results[job.path] = res
    utts = [results[j.path] for j in jobs if j.path in results]
    write_manifest(out_dir / "manifest.jsonl", utts, relative_to=out_dir)
    return utts, failures


def read_text_items(paths: Iterable[str | Path]) -> list[tuple[str, str | None]]:
    """Lines of text files; a line ``text<TAB>label`` carries a label. Blank lines are skipped."""
    items = []
    for p in paths:
        try:
            lines = Path(p).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise SpeechLMError(f"{p}: cannot read text file ({e.strerror})") from None
        except UnicodeDecodeError:
            raise SpeechLMError(f"{p}: not UTF-8 text") from None
        for line in lines:
            text, _, label = line.partition("\t")
            if text.strip():
                items.append((" ".join(text.split()), label.strip() or None))
    if not items:
        raise SpeechLMError(f"no text lines found in {[str(p) for p in paths]}")
    return items
