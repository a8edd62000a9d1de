"""The HTTP server: every endpoint, bad input as 4xx JSON, API keys, limits, overload (429), timeouts."""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from speechlm.data.audio import decode_audio, encode_wav
from speechlm.decode.transcribe import Transcript
from speechlm.serve.app import ServeConfig, create_app
from speechlm.serve.assistant import Assistant, ReplyError, read_replies

from conftest import tone_utterance

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def assistant(tiny_asr_dir, intent_dir, tiny_lm_dir) -> Assistant:
    return Assistant.load(tiny_asr_dir, intent_dir, tiny_lm_dir)


@pytest.fixture(scope="module")
def client(assistant):
    with TestClient(create_app(assistant)) as c:
        yield c


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return tone_utterance("abc de", np.random.default_rng(1))


def assert_json_error(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and "Traceback" not in body["error"]
    for w in words:
        assert w in body["error"], body["error"]


def test_probes_info_metrics_and_schema(client, assistant):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and set(ready["workers"]) == {"asr", "understand", "text", "tts", "classify", "answer", "choose"}
    info = client.get("/v1/info").json()
    assert info["auth_required"] is False and info["capabilities"]["intent"] and info["capabilities"]["generate"]
    assert info["intents"] == assistant.intent.labels
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/transcribe", "/v1/intent", "/v1/generate", "/v1/synthesize", "/v1/assistant"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/transcribe"]["post"]["requestBody"]["content"]
    client.get("/health")
    metrics = client.get("/metrics").text
    assert 'speechlm_requests_total{route="/health",status="200"}' in metrics
    assert 'speechlm_queue_depth{worker="asr"} 0.0' in metrics and "speechlm_request_seconds_bucket" in metrics


def test_transcribe_multipart_and_raw_body_match_the_recognizer(client, assistant, clip):
    expected = assistant.recognizer.transcribe([decode_audio(encode_wav(clip), "x")])[0]
    wav = encode_wav(clip)
    r = client.post("/v1/transcribe", files={"file": ("clip.wav", wav, "audio/wav")})
    assert r.status_code == 200 and r.json()["text"] == expected
    assert r.json()["duration_s"] == pytest.approx(clip.size / 16000, abs=1e-3)
    raw = client.post("/v1/transcribe", content=wav, headers={"content-type": "audio/wav"})
    assert raw.json()["text"] == expected
    beam = client.post("/v1/transcribe?beam=4", content=wav, headers={"content-type": "application/octet-stream"})
    assert beam.status_code == 200 and isinstance(beam.json()["text"], str) and beam.json()["words"] is None
    timed = client.post("/v1/transcribe?timestamps=true", content=wav, headers={"content-type": "audio/wav"}).json()
    assert timed["text"] == expected and " ".join(w["word"] for w in timed["words"]) == expected
    assert all(0 <= w["start"] < w["end"] <= timed["duration_s"] + 0.1 for w in timed["words"])
    assert_json_error(client.post("/v1/transcribe?timestamps=true&beam=4", content=wav, headers={"content-type": "audio/wav"}), 422, "beam=1")


def test_other_formats_rates_and_channels_are_read(client, assistant, clip):
    """FLAC, 8 kHz stereo: decoded, mixed down and resampled like `speechlm prepare` does."""
    buf = io.BytesIO()
    stereo = np.stack([clip[::2], clip[::2]], 1)  # 8 kHz
    sf.write(buf, stereo, 8000, format="FLAC")
    r = client.post("/v1/transcribe", files={"file": ("clip.flac", buf.getvalue(), "audio/flac")})
    assert r.status_code == 200 and r.json()["duration_s"] == pytest.approx(clip[::2].size / 8000, abs=1e-3)


def test_bad_audio_input_is_a_named_4xx(client, clip):
    wav = encode_wav(clip)
    assert_json_error(client.post("/v1/transcribe", content=b"", headers={"content-type": "audio/wav"}), 400, "empty body")
    assert_json_error(client.post("/v1/transcribe", files={"file": ("notes.txt", b"hello " * 50, "text/plain")}), 400, "notes.txt", "not a readable audio file")
    assert_json_error(client.post("/v1/transcribe", content=wav[:30], headers={"content-type": "audio/wav"}), 400, "not a readable")
    # a WAV cut mid-data is decoded as far as it goes
    assert client.post("/v1/transcribe", content=wav[: len(wav) // 2], headers={"content-type": "audio/wav"}).status_code == 200
    assert_json_error(client.post("/v1/transcribe", content=wav, headers={"content-type": "text/plain"}), 415, "text/plain")
    assert_json_error(client.post("/v1/transcribe", content=wav), 415, "(none)")
    assert_json_error(client.post("/v1/transcribe", files={"audio": ("clip.wav", wav, "audio/wav")}), 400, "'file'")
    assert_json_error(client.post("/v1/transcribe", data={"file": "not a file"}), 415, "urlencoded")
    assert_json_error(client.post("/v1/transcribe", files={"file": (None, "a text field, not a file")}), 400, "'file'")
    assert_json_error(
        client.post("/v1/transcribe", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}), 400
    )
    assert_json_error(client.post("/v1/transcribe?beam=0", content=wav, headers={"content-type": "audio/wav"}), 422, "beam")
    buf = io.BytesIO()
    sf.write(buf, np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT", format="WAV")
    assert_json_error(client.post("/v1/transcribe", content=buf.getvalue(), headers={"content-type": "audio/wav"}), 400, "NaN")
    tiny = client.post("/v1/transcribe", content=encode_wav(np.full(40, 0.1)), headers={"content-type": "audio/wav"})
    assert tiny.status_code == 200  # 2.5 ms: padded to the encoder's shortest input


def test_size_limits(assistant, clip):
    with TestClient(create_app(assistant, ServeConfig(max_upload_mb=0.05, max_audio_seconds=1.0, max_text_chars=20))) as c:
        big = encode_wav(np.zeros(16000 * 3, np.float32))  # 96 KB > 50 KB
        assert_json_error(c.post("/v1/transcribe", content=big, headers={"content-type": "audio/wav"}), 413, "limit")

        def chunks():  # no Content-Length: the streamed body is counted
            for i in range(0, len(big), 8192):
                yield big[i : i + 8192]

        assert_json_error(c.post("/v1/transcribe", content=chunks(), headers={"content-type": "audio/wav"}), 413, "limit")
        big_json = b'{"text": "' + b"a" * 60_000 + b'"}'
        streamed = (big_json[i : i + 8192] for i in range(0, len(big_json), 8192))
        assert_json_error(c.post("/v1/intent", content=streamed, headers={"content-type": "application/json"}), 413, "limit")
        long = encode_wav(np.zeros(int(16000 * 1.5), np.float32))  # 48 KB, but 1.5 s > 1 s
        assert_json_error(c.post("/v1/transcribe", content=long, headers={"content-type": "audio/wav"}), 413, "1.5 s")
        assert_json_error(c.post("/v1/intent", json={"text": "x" * 21}), 413, "20 character")


def test_intent_generate_and_json_errors(client, assistant):
    r = client.post("/v1/intent", json={"text": "set an alarm for seven thirty"})
    assert r.status_code == 200 and r.json()["intent"] == "set_alarm"
    assert sum(r.json()["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    g = client.post("/v1/generate", json={"prompt": "set an", "max_new_tokens": 5})
    assert g.status_code == 200 and isinstance(g.json()["text"], str)
    same = client.post("/v1/generate", json={"prompt": "set an", "max_new_tokens": 5, "temperature": 1.0, "seed": 3})
    assert same.json() == client.post("/v1/generate", json={"prompt": "set an", "max_new_tokens": 5, "temperature": 1.0, "seed": 3}).json()
    assert_json_error(client.post("/v1/intent", json={"text": "hi", "lang": "en"}), 422, "lang")
    assert_json_error(client.post("/v1/intent", json={}), 422, "text")
    assert_json_error(client.post("/v1/intent", content=b'{"text": ', headers={"content-type": "application/json"}), 422)
    assert_json_error(client.post("/v1/intent", content=b"[1, 2]", headers={"content-type": "application/json"}), 422)
    assert_json_error(client.post("/v1/generate", json={"prompt": "a", "temperature": -1}), 422, "temperature")
    assert_json_error(client.post("/v1/generate", content=b'{"prompt": "a", "top_p": NaN}', headers={"content-type": "application/json"}), 422, "top_p")
    # the tiny LM's context is 32 tokens: a longer prompt is the user's error, not a crash
    assert_json_error(client.post("/v1/generate", json={"prompt": "set an alarm " * 20}), 400, "context")
    assert_json_error(client.get("/v1/nothing-here"), 404)
    assert_json_error(client.get("/v1/intent"), 405)


def test_choose_answers_with_the_most_likely_phrase_and_scores_every_one(client, assistant, clip):
    wav, wav_type = encode_wav(clip), {"content-type": "audio/wav"}
    phrases = ["abc de", "a", "hg", "ab" * 40]  # the last needs more frames than the clip has
    r = client.post("/v1/choose", params={"choice": phrases}, content=wav, headers=wav_type)
    assert r.status_code == 200, r.text
    body = r.json()
    want = assistant.recognizer.score_phrases([decode_audio(wav, "clip")], phrases)[0]
    assert list(body["scores"]) == [phrases[i] for i in np.argsort(-want, kind="stable")]  # best first
    assert body["text"] == phrases[int(want.argmax())] and body["log_prob"] == pytest.approx(want.max(), rel=1e-5)
    assert body["scores"]["ab" * 40] is None and all(v is not None for k, v in body["scores"].items() if k != "ab" * 40)
    assert client.get("/v1/info").json()["capabilities"]["choose"] is True
    assert_json_error(client.post("/v1/choose", content=wav, headers=wav_type), 422, "choice")
    assert_json_error(client.post("/v1/choose", params={"choice": ["ab", "xyz"]}, content=wav, headers=wav_type), 400, "phrase 2", "'xyz'")
    assert_json_error(client.post("/v1/choose", params={"choice": ["ab", "AB"]}, content=wav, headers=wav_type), 400, "the same")
    assert_json_error(client.post("/v1/choose", params={"choice": ["a"] * 257}, content=wav, headers=wav_type), 422, "at most 256")
    assert_json_error(client.post("/v1/choose", params={"choice": ["ab" * 40]}, content=wav, headers=wav_type), 400, "too short")


def test_missing_models_answer_501(tiny_asr_dir, clip):
    with TestClient(create_app(Assistant.load(tiny_asr_dir))) as c:
        assert_json_error(c.post("/v1/intent", json={"text": "hello"}), 501, "--intent-model")
        assert_json_error(c.post("/v1/generate", json={"prompt": "hello"}), 501, "--lm")
        assert_json_error(c.post("/v1/classify", content=encode_wav(clip), headers={"content-type": "audio/wav"}), 501, "--classifier")
        assert_json_error(c.post("/v1/answer", content=encode_wav(clip), headers={"content-type": "audio/wav"}), 501, "--speech-lm")
        r = c.post("/v1/assistant?speak=false", content=encode_wav(clip), headers={"content-type": "audio/wav"})
        assert r.status_code == 200 and r.json()["intent"] is None and r.json()["reply"]


def test_a_joint_speech_lm_transcribes_answers_continues_text_and_runs_the_assistant(tiny_speech_lm_dir, clip):
    from speechlm.train.speech_lm import SpeechLMRunner

    runner = SpeechLMRunner.load(tiny_speech_lm_dir)
    wav, wav_type = encode_wav(clip), {"content-type": "audio/wav"}
    audio = decode_audio(wav, "clip")
    text, intent = runner.transcribe([audio])[0], runner.answer([audio], "intent")[0]
    with TestClient(create_app(Assistant.load(tiny_speech_lm_dir))) as c:
        info = c.get("/v1/info").json()
        assert info["speech_tasks"] == ["transcribe", "intent"] and info["capabilities"]["answer"] and info["capabilities"]["generate"]
        assert c.post("/v1/transcribe", content=wav, headers=wav_type).json()["text"] == text
        r = c.post("/v1/answer?task=intent", files={"file": ("clip.wav", wav, "audio/wav")})
        assert r.status_code == 200 and r.json()["task"] == "intent" and r.json()["answer"] == intent
        assert c.post("/v1/answer", content=wav, headers=wav_type).json()["answer"] == text  # task defaults to transcribe
        assert_json_error(c.post("/v1/answer?task=weather", content=wav, headers=wav_type), 422, "'weather'", "transcribe")
        assert_json_error(c.post("/v1/transcribe?timestamps=true", content=wav, headers=wav_type), 422, "joint speech-LM")
        assert_json_error(c.post("/v1/choose?choice=ab", content=wav, headers=wav_type), 422, "CTC recognizer")
        assert info["capabilities"]["choose"] is False
        r = c.post("/v1/generate", json={"prompt": "ab", "max_new_tokens": 4})
        assert r.status_code == 200 and isinstance(r.json()["text"], str)
        turn = c.post("/v1/assistant?speak=false", content=wav, headers=wav_type).json()
        assert turn["transcript"] == text and turn["intent"] == intent and turn["confidence"] is None and "intent" in turn["timings_ms"]


def test_a_joint_speech_lm_beside_a_ctc_recognizer(tiny_asr_dir, tiny_speech_lm_dir, clip):
    from speechlm.errors import SpeechLMError

    a = Assistant.load(tiny_asr_dir, speech_lm_dir=tiny_speech_lm_dir)
    wav_type = {"content-type": "audio/wav"}
    with TestClient(create_app(a)) as c:
        assert c.post("/v1/answer?task=intent", content=encode_wav(clip), headers=wav_type).status_code == 200
        assert c.post("/v1/transcribe?timestamps=true", content=encode_wav(clip), headers=wav_type).json()["words"] is not None
        assert c.get("/v1/info").json()["capabilities"]["generate"] is False  # only a joint model_dir lends its LM
    with pytest.raises(SpeechLMError, match="joint speech-LM already"):
        Assistant.load(tiny_speech_lm_dir, speech_lm_dir=tiny_speech_lm_dir)


@needs_espeak
def test_synthesize_and_the_assistant_turn(client, assistant, clip):
    r = client.post("/v1/synthesize", json={"text": "hello there"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    audio = decode_audio(r.content, "reply")
    assert audio.size > 0.3 * 16000 and np.abs(audio).max() > 0.05
    assert_json_error(client.post("/v1/synthesize", json={"text": "hi", "voice": "nobody"}), 400, "nobody")
    voices = client.get("/v1/voices").json()
    assert any(v["name"] == assistant.voice for v in voices)
    turn = client.post("/v1/assistant", files={"file": ("clip.wav", encode_wav(clip), "audio/wav")}).json()
    assert turn["transcript"] == assistant.recognizer.transcribe([decode_audio(encode_wav(clip), "x")])[0]
    assert turn["reply"] and decode_audio(base64.b64decode(turn["reply_audio"]), "reply").size > 0
    assert {"read", "understand", "reply", "speak"} <= set(turn["timings_ms"])


def test_reply_templates(assistant, tmp_path):
    import datetime

    now = datetime.datetime(2026, 11, 23, 9, 5)
    assert assistant.reply("what time is it", "get_time_date", now) == "It is 9:05 on Monday, November 23."
    assert assistant.reply("", "general") == "Sorry, I did not hear anything."
    custom = tmp_path / "replies.json"
    custom.write_text('{"set_alarm": "Alarm noted ({transcript}).", "*": "Hmm: {transcript}"}')
    replies = read_replies(custom)
    assert replies["set_alarm"] == "Alarm noted ({transcript})." and replies["*"] == "Hmm: {transcript}"
    custom.write_text('{"set_alarm": "{secret}"}')
    with pytest.raises(ReplyError, match="secret"):
        read_replies(custom)
    custom.write_text('{"set_alarm": "{transcript.__class__}"}')
    with pytest.raises(ReplyError, match="unknown placeholder"):
        read_replies(custom)
    custom.write_text("[1]")
    with pytest.raises(ReplyError, match="JSON object"):
        read_replies(custom)


def test_api_key_guards_compute_endpoints_only(assistant, clip):
    with TestClient(create_app(assistant, ServeConfig(api_key="s3cret"))) as c:
        assert_json_error(c.post("/v1/intent", json={"text": "hi"}), 401, "API key")
        assert_json_error(c.post("/v1/intent", json={"text": "hi"}, headers={"X-API-Key": "wrong"}), 401)
        assert_json_error(c.post("/v1/transcribe", content=encode_wav(clip), headers={"content-type": "audio/wav"}), 401)
        assert c.post("/v1/intent", json={"text": "hi"}, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.post("/v1/intent", json={"text": "hi"}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/v1/info").json()["auth_required"] is True
        assert c.get("/").status_code == 200


def test_cors_is_closed_unless_an_origin_is_allowed(assistant):
    with TestClient(create_app(assistant)) as c:
        r = c.get("/v1/info", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    with TestClient(create_app(assistant, ServeConfig(cors_origins=("https://app.example",)))) as c:
        assert c.get("/v1/info", headers={"Origin": "https://app.example"}).headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-origin" not in c.get("/v1/info", headers={"Origin": "https://evil.example"}).headers


def test_page_and_static_files_are_served_without_path_escapes(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="record"' in page.text and 'id="audio-file"' in page.text and 'role="alert"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "/v1/assistant" in client.get("/static/app.js").text
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py"):
        assert client.get(path).status_code == 404


def test_unexpected_errors_are_500_without_a_trace(assistant, clip, monkeypatch):
    def boom(*args):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(assistant, "transcribe", boom)
    with TestClient(create_app(assistant), raise_server_exceptions=False) as c:
        r = c.post("/v1/transcribe", content=encode_wav(clip), headers={"content-type": "audio/wav"})
        assert_json_error(r, 500, "internal server error")
        assert "secret" not in r.text


class SlowAssistant:
    """Stands in for the recognizer: each batch takes ``delay`` seconds and records its size."""

    def __init__(self, base: Assistant, delay: float):
        self.base, self.delay, self.batches = base, delay, []

    def __call__(self, audios, beams, timestamps):
        self.batches.append(len(audios))
        time.sleep(self.delay)
        return [Transcript("ok", [])] * len(audios)


async def _burst(app, n: int, body: bytes) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as c:
        return await asyncio.gather(
            *[c.post("/v1/transcribe", content=body, headers={"content-type": "audio/wav"}) for _ in range(n)]
        )


def test_overload_answers_429_with_retry_after_and_batches_what_it_accepts(assistant, clip, monkeypatch):
    slow = SlowAssistant(assistant, 0.3)
    monkeypatch.setattr(assistant, "transcribe", slow)
    app = create_app(assistant, ServeConfig(max_batch=2, queue_size=3))
    try:
        responses = asyncio.run(_burst(app, 12, encode_wav(clip)))
    finally:
        for w in app.state.workers.values():
            w.close()
    codes = sorted(r.status_code for r in responses)
    ok, over = codes.count(200), codes.count(429)
    assert ok + over == 12 and 3 <= ok <= 5 and over >= 7, codes  # capacity: 2 running + 3 waiting
    rejected = next(r for r in responses if r.status_code == 429)
    assert int(rejected.headers["Retry-After"]) >= 1 and "capacity" in rejected.json()["error"]
    assert max(slow.batches) == 2  # waiting requests were computed together


def test_timeout_is_504_and_the_worker_recovers(assistant, clip, monkeypatch):
    slow = SlowAssistant(assistant, 0.5)
    monkeypatch.setattr(assistant, "transcribe", slow)
    with TestClient(create_app(assistant, ServeConfig(timeout_s=0.1))) as c:
        assert_json_error(c.post("/v1/transcribe", content=encode_wav(clip), headers={"content-type": "audio/wav"}), 504, "0.1 s")
        slow.delay = 0.0
        time.sleep(0.6)
        assert c.post("/v1/transcribe", content=encode_wav(clip), headers={"content-type": "audio/wav"}).status_code == 200


def test_batch_worker_orders_results_and_isolates_failures():
    from speechlm.serve.workers import BatchWorker, Overloaded

    gate = threading.Event()
    seen = []

    def fn(items):
        gate.wait(5)
        seen.append(list(items))
        return [ValueError(f"bad {i}") if i == 3 else i * 10 for i in items]

    worker = BatchWorker("test", fn, max_batch=4, queue_size=4)

    async def main():
        tasks = [asyncio.create_task(worker.submit(0))]
        await asyncio.sleep(0.05)  # item 0 is running (blocked)
        worker.check_capacity()  # room for more
        tasks += [asyncio.create_task(worker.submit(i)) for i in range(1, 5)]
        await asyncio.sleep(0.05)  # 1-4 wait: the queue is full
        with pytest.raises(Overloaded):
            await worker.submit(99)
        with pytest.raises(Overloaded):
            worker.check_capacity()
        gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    worker.close()
    assert results[:3] == [0, 10, 20] and isinstance(results[3], ValueError) and results[4] == 40
    assert seen == [[0], [1, 2, 3, 4]]
    assert worker.depth == 0


def test_classify_endpoint_serves_a_speech_classifier(tiny_asr_dir, tiny_classifier_dir, pitch_corpus):
    from speechlm.data.audio import load_audio

    _, utts = pitch_corpus
    a = Assistant.load(tiny_asr_dir, classifier_dir=tiny_classifier_dir)
    with TestClient(create_app(a)) as c:
        assert c.get("/v1/info").json()["capabilities"]["classify"] is True
        r = c.post("/v1/classify", files={"file": ("c.wav", encode_wav(load_audio(utts[0].audio_filepath)), "audio/wav")}).json()
        assert r["label"] in ("high", "low", "mid") and sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert r["scores"][r["label"]] == r["confidence"] == max(r["scores"].values())
        assert_json_error(c.post("/v1/classify", content=b"junk", headers={"content-type": "audio/wav"}), 400, "not a readable")
    # the classifier as an ensemble, each clip also played at other speeds: the probabilities that `speechlm evaluate` averages
    from speechlm.train.classify import load_classifier

    clip = load_audio(utts[1].audio_filepath)
    a = Assistant.load(tiny_asr_dir, classifier_dir=tiny_classifier_dir, classifier_ensemble=[tiny_classifier_dir], classifier_speeds=[0.9, 1.1])
    with TestClient(create_app(a)) as c:
        r = c.post("/v1/classify", files={"file": ("c.wav", encode_wav(clip), "audio/wav")}).json()
    expected = load_classifier(tiny_classifier_dir, speeds=[0.9, 1.1]).probabilities([clip])[0]
    assert r["scores"] == pytest.approx(dict(zip(a.classifier.labels, map(float, expected))), abs=1e-3)
    # a CTC recognizer in the ensemble, scoring the phrase of each label (serve --classifier-choices)
    phrases = {"high": "ab", "low": "cd", "mid": "ef"}
    a = Assistant.load(tiny_asr_dir, classifier_dir=tiny_classifier_dir, classifier_ensemble=[tiny_asr_dir], classifier_phrases=phrases)
    with TestClient(create_app(a)) as c:
        r = c.post("/v1/classify", files={"file": ("c.wav", encode_wav(clip), "audio/wav")}).json()
    expected = load_classifier(tiny_classifier_dir, [tiny_asr_dir], phrases=phrases).probabilities([clip])[0]
    assert r["scores"] == pytest.approx(dict(zip(a.classifier.labels, map(float, expected))), abs=1e-3)
    assert expected != pytest.approx(load_classifier(tiny_classifier_dir).probabilities([clip])[0], abs=1e-3)  # the recognizer counted


def test_the_assistant_decodes_with_the_servers_beam_and_lm_and_names_the_intent_both_ways(tiny_asr_dir, tiny_classifier_dir, pitch_corpus,
                                                                                          tmp_path, capsys):  # fmt: skip
    """serve --beam --asr-lm --pipeline-nbest --pipeline-weight: the assistant's transcript and intent are those of
    `speechlm predict --pipeline`, the speech classifier times the intent model on the N best transcripts."""
    from speechlm.cli import main
    from speechlm.data.audio import load_audio
    from speechlm.decode.ctc import DecodingOptions
    from speechlm.errors import SpeechLMError
    from speechlm.decode.transcribe import Recognizer
    from speechlm.intent import IntentClassifier
    from speechlm.train.classify import Classifier, SpeedAveraged, SpokenIntentPipeline, WeightedProduct

    _, utts = pitch_corpus
    intent = IntentClassifier.train(["ab ab", "ab", "cd cd", "cd", "ef ef", "ef"], ["high", "high", "low", "low", "mid", "mid"])
    intent_dir = intent.save(tmp_path / "intent")
    (tmp_path / "text.txt").write_text("ab ab\ncd ef\n")
    assert main(["ngram", str(tmp_path / "ngram"), "--text", str(tmp_path / "text.txt"), "--recognizer", str(tiny_asr_dir), "--order", "3"]) == 0
    opts = DecodingOptions("beam", beam_size=4, lm_weight=0.3, lm_bonus=4.0)  # a bonus that makes the tiny model write
    a = Assistant.load(tiny_asr_dir, intent_dir, classifier_dir=tiny_classifier_dir, decoding=opts, asr_lm=tmp_path / "ngram",
                       pipeline_nbest=3, pipeline_weight=0.25)  # fmt: skip
    rec = Recognizer.load(tiny_asr_dir, lm=tmp_path / "ngram")
    product = WeightedProduct([Classifier.load(tiny_classifier_dir), SpokenIntentPipeline(rec, intent, opts, 3)], ["clf", "pipe"], [0.75, 0.25])
    clips = [load_audio(u.audio_filepath) for u in utts[:4]]
    expected = product.probabilities(clips)
    assert not np.allclose(expected, SpokenIntentPipeline(rec, intent, opts, 3).probabilities(clips)[:, [intent.labels.index(x) for x in product.labels]], atol=1e-3)
    with TestClient(create_app(a)) as c:
        info = c.get("/v1/info").json()
        assert info["decoding"] == {"beam": 4, "lm": True} and info["assistant_intent"] == {"nbest": 3, "classifier_weight": 0.75, "speeds": []}
        for clip, want, nbest in zip(clips, expected, rec.transcribe_nbest(clips, opts, 3)):
            wav = encode_wav(clip)
            turn = c.post("/v1/assistant?speak=false", files={"file": ("c.wav", wav, "audio/wav")}).json()
            assert turn["transcript"] == nbest[0][0] and "understand" in turn["timings_ms"]
            assert turn["transcript"] and turn["reply"]
            assert turn["intent"] == product.labels[int(want.argmax())] and turn["confidence"] == pytest.approx(float(want.max()), abs=1e-4)
            text = c.post("/v1/transcribe", content=wav, headers={"content-type": "audio/wav"}).json()["text"]  # the server's decoder
            assert text == rec.transcribe([clip], opts)[0]
            assert c.post("/v1/transcribe?beam=1", content=wav, headers={"content-type": "audio/wav"}).json()["text"] == rec.transcribe([clip])[0]
    # --pipeline-speeds (and --classifier-tta-speeds): the product of the benchmark's system with speeds; the transcript is the clip's own
    speeds = (0.6, 1.0, 1.6)
    fast = Assistant.load(tiny_asr_dir, intent_dir, classifier_dir=tiny_classifier_dir, classifier_speeds=speeds, decoding=opts,
                          asr_lm=tmp_path / "ngram", pipeline_nbest=3, pipeline_weight=0.25, pipeline_speeds=speeds)  # fmt: skip
    with_speeds = WeightedProduct([SpeedAveraged(Classifier.load(tiny_classifier_dir), speeds), SpeedAveraged(SpokenIntentPipeline(rec, intent, opts, 3), speeds)],
                                  ["clf", "pipe"], [0.75, 0.25]).probabilities(clips)  # fmt: skip
    assert not np.allclose(with_speeds, expected, atol=1e-3)
    for (text, pred), want, nbest in zip(fast.understand(clips), with_speeds, rec.transcribe_nbest(clips, opts, 3)):
        assert text == nbest[0][0] and pred.intent == product.labels[int(want.argmax())] and pred.confidence == pytest.approx(float(want.max()), abs=1e-4)
    with TestClient(create_app(fast)) as c:
        assert c.get("/v1/info").json()["assistant_intent"]["speeds"] == list(speeds)
    for kwargs, message in ((dict(pipeline_speeds=(3.0,)), "--pipeline-speeds: test-time speeds must be between 0.5 and 2.0"),
                            (dict(pipeline_speeds=(0.9, 1.1), intent_dir=None), "give an intent model")):  # fmt: skip
        with pytest.raises(SpeechLMError, match=message):
            Assistant.load(tiny_asr_dir, **{"intent_dir": intent_dir, **kwargs})
    greedy = Assistant.load(tiny_asr_dir, intent_dir)  # the tiny model writes nothing for these clips greedily: no words, no intent
    assert greedy.understand(clips) == [("", None)] * len(clips)

    # every wrong combination is a one-line error, from the library and from the command line
    for kwargs, message in ((dict(pipeline_weight=0.5), "give it with --classifier"),
                            (dict(classifier_dir=tiny_classifier_dir, pipeline_weight=2.0), "between 0 and 1"),
                            (dict(pipeline_nbest=3), "a beam at least that wide"),
                            (dict(classifier_dir=tiny_classifier_dir, pipeline_weight=0.5, intent_dir=None), "give an intent model")):  # fmt: skip
        with pytest.raises(SpeechLMError, match=message):
            Assistant.load(tiny_asr_dir, **{"intent_dir": intent_dir, **kwargs})
    with pytest.raises(SpeechLMError, match="between 0 and 1"):
        Assistant.load(tiny_asr_dir, intent_dir, reject_below=2.0)
    with pytest.raises(SpeechLMError, match="give an intent model"):
        Assistant.load(tiny_asr_dir, reject_below=0.5)
    # serve --reject-below: the intent model's reject label below that probability, for the assistant and /v1/intent
    strict = Assistant.load(tiny_asr_dir, intent_dir, decoding=opts, asr_lm=tmp_path / "ngram", reject_below=1.0)
    assert [pred.intent for _, pred in strict.understand(clips)] == ["oos"] * len(clips)
    with TestClient(create_app(strict)) as c:
        assert c.post("/v1/intent", json={"text": "ab ab"}).json()["intent"] == "oos"
    other = IntentClassifier.train(["ab", "cd"], ["up", "down"]).save(tmp_path / "other")
    with pytest.raises(SpeechLMError, match="labels differ"):
        Assistant.load(tiny_asr_dir, other, classifier_dir=tiny_classifier_dir, pipeline_weight=0.5)
    assert main(["serve", str(tiny_asr_dir), "--intent-model", str(intent_dir), "--pipeline-nbest", "3", "--beam", "2"]) == 2
    assert "a beam at least that wide" in capsys.readouterr().err
    assert main(["serve", str(tiny_asr_dir), "--asr-lm", str(tmp_path / "ngram"), "--asr-lm-weight", "-1"]) == 2
    assert "--asr-lm-weight" in capsys.readouterr().err
