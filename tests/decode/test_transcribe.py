import numpy as np

from speechlm.decode.transcribe import Recognizer, split_long
from speechlm.features import SAMPLE_RATE
from speechlm.train.asr import train_asr

from conftest import tiny_asr_config


def test_split_long_cuts_at_silence_and_keeps_every_sample():
    rng = np.random.default_rng(0)
    tone = lambda s: (0.3 * np.sin(np.arange(int(s * SAMPLE_RATE)) * 0.1)).astype(np.float32)  # noqa: E731
    quiet = (1e-4 * rng.standard_normal(int(0.3 * SAMPLE_RATE))).astype(np.float32)
    audio = np.concatenate([tone(8.5), quiet, tone(6.0)])
    pieces = split_long(audio, max_seconds=10.0)
    assert [p.size for p in pieces] and sum(p.size for p in pieces) == audio.size
    assert all(p.size <= 10 * SAMPLE_RATE for p in pieces)
    cut = pieces[0].size
    assert 8.5 * SAMPLE_RATE <= cut <= 8.8 * SAMPLE_RATE  # inside the quiet stretch
    assert split_long(audio[:1000], 10.0)[0].size == 1000


def test_long_input_is_transcribed_in_pieces(tone_corpus, tmp_path):
    train_asr(tiny_asr_config(tone_corpus, max_steps=1), tmp_path / "run", progress=False)
    rec = Recognizer.load(tmp_path / "run")
    long = np.zeros(int(75 * SAMPLE_RATE), dtype=np.float32)
    out = rec.transcribe([long, np.zeros(SAMPLE_RATE, dtype=np.float32)])
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_clips_shorter_than_the_receptive_field_are_padded(tone_corpus, tmp_path):
    train_asr(tiny_asr_config(tone_corpus, max_steps=1), tmp_path / "run", progress=False)
    rec = Recognizer.load(tmp_path / "run")
    out = rec.transcribe([np.zeros(n, dtype=np.float32) + 0.01 for n in (1, 50, 400)])
    assert len(out) == 3 and all(isinstance(t, str) for t in out)


def test_word_times_follow_the_greedy_alignment():
    import torch

    from speechlm.data.tokenizer import CharTokenizer
    from speechlm.decode.ctc import greedy_alignment
    from speechlm.decode.transcribe import FRAME_SECONDS, words_from_alignment

    tok = CharTokenizer.train(["ab ba"])  # ids: ' '=1, a=2, b=3
    path = [0, 2, 2, 0, 3, 0, 0, 1, 0, 3, 3, 3, 0, 2, 0]  # "ab" at frames 1-4, "ba" at frames 9-13
    scores = torch.nn.functional.one_hot(torch.tensor(path), 4).float()
    aligned = greedy_alignment(scores)
    assert [(a.token, a.first_frame, a.last_frame) for a in aligned] == [(2, 1, 2), (3, 4, 4), (1, 7, 7), (3, 9, 11), (2, 13, 13)]
    words = words_from_alignment(aligned, tok, offset_seconds=1.0)
    assert [w.word for w in words] == ["ab", "ba"]
    assert words[0].start == 1.0 + 1 * FRAME_SECONDS and words[0].end == 1.0 + 5 * FRAME_SECONDS
    assert words[1].start == round(1.0 + 9 * FRAME_SECONDS, 3) and words[1].end == round(1.0 + 14 * FRAME_SECONDS, 3)


def test_word_times_of_long_audio_carry_the_piece_offsets(tone_corpus, tmp_path):
    from speechlm.data.manifest import read_manifest
    from speechlm.data.audio import load_audio

    train_asr(tiny_asr_config(tone_corpus, max_steps=60), tmp_path / "run", progress=False)
    rec = Recognizer.load(tmp_path / "run")
    clip = load_audio(read_manifest(tone_corpus)[0].audio_filepath)  # 60 steps: the model emits a word per copy
    long = np.concatenate([clip, np.zeros(int(40 * SAMPLE_RATE), np.float32), clip])  # cut into two pieces
    t = rec.transcribe_words([long])[0]
    assert t.text == rec.transcribe([long])[0]
    assert " ".join(w.word for w in t.words) == t.text
    assert all(a.start <= b.start for a, b in zip(t.words, t.words[1:]))
    assert t.words[0].start < clip.size / SAMPLE_RATE and t.words[-1].start > 40  # the second copy's times are offset
