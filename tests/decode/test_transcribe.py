import numpy as np
import pytest
import torch

from speechlm.decode.transcribe import Recognizer, split_long
from speechlm.errors import SpeechLMError
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


@pytest.fixture(scope="module")
def tone_asr_60(tone_corpus, tmp_path_factory):
    """A recognizer trained for 60 steps on the tone corpus: it emits a word per spoken word."""
    run = tmp_path_factory.mktemp("asr60")
    train_asr(tiny_asr_config(tone_corpus, max_steps=60), run, progress=False)
    return run


def test_word_times_of_long_audio_carry_the_piece_offsets(tone_corpus, tone_asr_60):
    from speechlm.data.manifest import read_manifest
    from speechlm.data.audio import load_audio

    rec = Recognizer.load(tone_asr_60)
    clip = load_audio(read_manifest(tone_corpus)[0].audio_filepath)
    long = np.concatenate([clip, np.zeros(int(40 * SAMPLE_RATE), np.float32), clip])  # cut into two pieces
    t = rec.transcribe_words([long])[0]
    assert t.text == rec.transcribe([long])[0]
    assert " ".join(w.word for w in t.words) == t.text
    assert all(a.start <= b.start for a, b in zip(t.words, t.words[1:]))
    assert t.words[0].start < clip.size / SAMPLE_RATE and t.words[-1].start > 40  # the second copy's times are offset


class _FixedScores(torch.nn.Module):
    """A stand-in recognizer network: the same frame scores for every clip, one frame per 1000 samples."""

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.scores = scores

    def forward(self, audio, lens):
        from speechlm.models.asr import CTCOutput

        frames = torch.clamp(lens // 1000, max=self.scores.shape[0])
        return CTCOutput(self.scores[: int(frames.max())].expand(len(lens), -1, -1), frames)


def _brute_force_log_likelihood(log_probs: torch.Tensor, ids: list[int]) -> float:
    """log p(ids) by summing every frame path that collapses (repeats merged, blanks dropped) to ``ids``."""
    import itertools

    total = 0.0
    for path in itertools.product(range(log_probs.shape[1]), repeat=log_probs.shape[0]):
        merged = [t for k, t in enumerate(path) if t != 0 and (k == 0 or path[k - 1] != t)]
        if merged == ids:
            total += float(torch.exp(sum(log_probs[k, t] for k, t in enumerate(path))))
    return float(np.log(total)) if total else -np.inf


def test_phrase_scores_sum_every_alignment_and_the_best_phrase_is_chosen():
    from speechlm.data.tokenizer import CharTokenizer

    tok = CharTokenizer.train(["ab ba"])  # ids: ' '=1, a=2, b=3
    scores = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    scores[:, 2] += torch.tensor([3.0, 3.0, 0.0, 0.0, 0.0])  # "a" early, then "b": the clip says "ab"
    scores[:, 3] += torch.tensor([0.0, 0.0, 0.0, 3.0, 3.0])
    rec = Recognizer(None, _FixedScores(scores), tok)
    phrases = ["ab", "ba", "b", "ab ba ab"]
    got = rec.score_phrases([np.zeros(5000, np.float32)], phrases)
    log_probs = scores.log_softmax(-1)
    want = [_brute_force_log_likelihood(log_probs, tok.encode(p)) for p in phrases]
    np.testing.assert_allclose(got[0, :3], want[:3], rtol=1e-5)
    assert got[0, 3] == -np.inf  # 8 characters (with repeats' blanks) cannot fit in 5 frames
    assert rec.choose([np.zeros(5000, np.float32)], phrases) == [("ab", got[0, 0])]
    # a clip of 3 frames is scored on its own frames only
    short = rec.score_phrases([np.zeros(3000, np.float32), np.zeros(5000, np.float32)], ["ab"])
    assert short[1, 0] == got[0, 0] and np.isclose(short[0, 0], _brute_force_log_likelihood(log_probs[:3], tok.encode("ab")), rtol=1e-5)
    assert not np.isclose(short[0, 0], got[0, 0])


def test_bad_phrase_lists_are_clear_errors():
    from speechlm.data.tokenizer import CharTokenizer
    from speechlm.errors import SpeechLMError

    rec = Recognizer(None, _FixedScores(torch.zeros(5, 4)), CharTokenizer.train(["ab ba"]))
    clip = [np.zeros(5000, np.float32)]
    for phrases, message in (([], "no phrases"), (["ab", "?!"], "phrase 2 ('?!') is empty"), (["ab", "AB."], "phrases 1 and 2 are the same"),
                             (["ab", "cab"], "never saw 'c'")):
        with pytest.raises(SpeechLMError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
            rec.score_phrases(clip, phrases)
    with pytest.raises(SpeechLMError, match="clip 1 lasts 31 s"):
        rec.score_phrases([np.zeros(31 * SAMPLE_RATE, np.float32)], ["ab"])


def test_transcribe_with_choices_answers_from_the_list(tone_corpus, tone_asr_60, tmp_path, capsys):
    import json

    from speechlm.cli import main
    from speechlm.data.audio import load_audio
    from speechlm.data.manifest import read_manifest

    utts = read_manifest(tone_corpus)[:6]
    (tmp_path / "choices.txt").write_text("\n".join(u.text for u in utts) + "\n\n")
    rec = Recognizer.load(tone_asr_60)

    scores = rec.score_phrases([load_audio(u.audio_filepath) for u in utts], [u.text for u in utts])
    assert np.mean(scores.argmax(1) == np.arange(6)) >= 0.5  # 60 steps: most clips' own transcript scores best
    assert main(["transcribe", str(tone_asr_60), *(u.audio_filepath for u in utts[:2]), "--choices", str(tmp_path / "choices.txt"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == [utts[int(k)].text for k in scores[:2].argmax(1)]
    assert [r["log_prob"] for r in rows] == [round(float(s), 3) for s in scores[:2].max(1)]
    assert main(["transcribe", str(tone_asr_60), utts[0].audio_filepath, "--choices", str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err
    assert "--choices" in err and "missing.txt: no such file" in err and "Traceback" not in err
    (tmp_path / "odd.txt").write_text(utts[0].text + "\nzz9\n")  # a character the tone recognizer never saw
    assert main(["transcribe", str(tone_asr_60), utts[0].audio_filepath, "--choices", str(tmp_path / "odd.txt")]) == 2
    assert "phrase 2 ('zz9') cannot be spelled" in capsys.readouterr().err


def test_nbest_transcripts_start_with_the_beam_transcript(tone_corpus, tone_asr_60, capsys):
    import json

    from speechlm.cli import main
    from speechlm.data.audio import load_audio
    from speechlm.data.manifest import read_manifest
    from speechlm.decode.ctc import DecodingOptions

    utts = read_manifest(tone_corpus)[:4]
    audios = [load_audio(u.audio_filepath) for u in utts]
    rec = Recognizer.load(tone_asr_60)
    beam = DecodingOptions("beam", beam_size=6)
    lists = rec.transcribe_nbest(audios, beam, 4)
    # the best prefix's text is on the list (4 other texts cannot all outweigh it from 5 other prefixes)
    assert all(best in [t for t, _ in hyps] for best, hyps in zip(rec.transcribe(audios, beam), lists))
    for hyps in lists:
        texts, scores = zip(*hyps)
        assert 1 <= len(hyps) <= 4 and len(set(texts)) == len(texts)
        assert list(scores) == sorted(scores, reverse=True) and all(s < 0 for s in scores)
    with pytest.raises(SpeechLMError, match="between 1 and the beam size"):
        rec.transcribe_nbest(audios, beam, 7)
    # a clip cut into two pieces: the joins of the pieces' lists, each score the sum of its pieces'
    long = np.concatenate([audios[0], np.zeros(int(40 * SAMPLE_RATE), np.float32), audios[1]])
    joined = rec.transcribe_nbest([long], beam, 4)[0]
    pieces, _, _ = rec._pieces([long])
    assert len(pieces) == 2 and len(joined) <= 4
    assert joined[0][1] == pytest.approx(sum(h[0][1] for h in rec.transcribe_nbest(pieces, beam, 1)))

    assert main(["transcribe", str(tone_asr_60), utts[0].audio_filepath, "--nbest", "3", "--beam", "6", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["text"] == lists[0][0][0] and [h["text"] for h in row["nbest"]] == [t for t, _ in lists[0][:3]]
    assert [h["score"] for h in row["nbest"]] == [round(s, 3) for _, s in lists[0][:3]]
    assert main(["transcribe", str(tone_asr_60), utts[0].audio_filepath, "--nbest", "3"]) == 2
    err = capsys.readouterr().err
    assert "--nbest 3 needs a beam" in err and "Traceback" not in err
    assert main(["transcribe", str(tone_asr_60), utts[0].audio_filepath, "--nbest", "0"]) == 2
    assert "--nbest must be >= 1" in capsys.readouterr().err


def test_evaluate_with_choices_scores_the_recognizer_as_a_classifier(tone_corpus, tone_asr_60, tmp_path, capsys):
    import json

    from speechlm.cli import main
    from speechlm.data.audio import load_audio
    from speechlm.data.manifest import read_manifest, write_manifest

    utts = read_manifest(tone_corpus)[:6]
    write_manifest(tmp_path / "six.jsonl", utts)
    phrases = [u.text for u in utts]
    (tmp_path / "choices.txt").write_text("\n".join(p.upper() for p in phrases) + "\n")  # compared once normalized
    scores = Recognizer.load(tone_asr_60).score_phrases([load_audio(u.audio_filepath) for u in utts], phrases)
    right = np.mean(scores.argmax(1) == np.arange(6))
    assert main(["evaluate", str(tone_asr_60), str(tmp_path / "six.jsonl"), "--choices", str(tmp_path / "choices.txt"), "--out", str(tmp_path / "ev.json")]) == 0
    assert f"accuracy {right:.2%}" in capsys.readouterr().out
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["summary"]["examples"] == 6 and (tmp_path / "ev" / "confusion.png").is_file()
    assert [r["predicted"] for r in report["utterances"]] == [phrases[int(k)] for k in scores.argmax(1)]
    # a transcript that is none of the phrases is named, not scored as an error
    (tmp_path / "five.txt").write_text("\n".join(phrases[:5]) + "\n")
    assert main(["evaluate", str(tone_asr_60), str(tmp_path / "six.jsonl"), "--choices", str(tmp_path / "five.txt")]) == 2
    err = capsys.readouterr().err
    assert "1 transcript(s) are none of the --choices phrases" in err and utts[5].audio_filepath in err and "Traceback" not in err
