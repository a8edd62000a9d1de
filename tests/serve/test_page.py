"""The web page in a real headless browser: Playwright driving Debian's chromium against a live server.

Upload a synthesized clip and read the transcript, intent and reply the page shows; record from
Chromium's fake microphone; show server errors; ask for the API key when the server needs one.

SPEECHLM_SCREENSHOT=docs/assistant_page.png SPEECHLM_PAGE_MODELS=runs/demo/model,runs/demo/intent,runs/demo/ngram \\
    .venv/bin/python -m pytest tests/serve/test_page.py   # the README's screenshot, with the demo's models
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from speechlm.data.audio import load_audio, write_audio
from speechlm.decode.ctc import DecodingOptions
from speechlm.serve.app import ServeConfig, create_app
from speechlm.serve.assistant import Assistant

from conftest import tone_utterance

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]  # fmt: skip

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - dev extra not installed
    sync_playwright = None

pytestmark = pytest.mark.skipif(
    sync_playwright is None or CHROMIUM is None,
    reason="needs the playwright package and a chromium binary (make test installs both: scripts/setup_system.sh)",
)


@contextlib.contextmanager
def live_server(app):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def page_assistant(tiny_asr_dir, intent_dir) -> Assistant:
    models = os.environ.get("SPEECHLM_PAGE_MODELS")
    if models:  # recognizer,intent[,n-gram fused as `make demo` prints it]
        asr, intent, *lm = models.split(",")
        decoding = DecodingOptions("beam", beam_size=8, lm_weight=0.6, lm_bonus=2.0) if lm else None
        return Assistant.load(asr, intent, decoding=decoding, asr_lm=lm[0] if lm else None)
    return Assistant.load(tiny_asr_dir, intent_dir)


@pytest.fixture(scope="module")
def spoken_clip(tmp_path_factory) -> Path:
    """A synthesized command (espeak-ng), or a tone clip where no TTS engine is installed."""
    path = tmp_path_factory.mktemp("page") / "command.wav"
    if shutil.which("espeak-ng"):
        from speechlm.data.synth import synthesize, voice_bank

        voice = next(v for v in voice_bank() if v.split == "test" and v.engine == "espeak-ng")
        write_audio(path, synthesize("set an alarm for seven thirty", voice))
    else:
        write_audio(path, tone_utterance("abc de", np.random.default_rng(0)))
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def test_upload_shows_the_transcript_intent_and_reply(browser, page_assistant, spoken_clip, tmp_path):
    expected = page_assistant.recognizer.transcribe([load_audio(spoken_clip)], page_assistant.decoding)[0]
    expected_intent = page_assistant.classify([expected])[0].intent if expected else None
    with live_server(create_app(page_assistant)) as url:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        expect(page.locator("#status")).to_contain_text("Ready: transcribe")
        expect(page.locator("#key-row")).to_be_hidden()
        page.set_input_files("#audio-file", str(spoken_clip))
        page.click("#send")
        expect(page.locator("#timing")).to_contain_text("Answered in", timeout=30_000)
        assert page.locator("#transcript").inner_text() == (expected or "(nothing recognised)")
        if expected_intent:
            expect(page.locator("#intent")).to_contain_text(expected_intent)
        assert page.locator("#reply").inner_text().strip()
        if page_assistant.can_speak:
            expect(page.locator("#reply-audio")).to_be_visible()
            assert page.locator("#reply-audio").get_attribute("src").startswith("data:audio/wav;base64,")
        expect(page.locator("#error")).to_be_hidden()
        shot = Path(os.environ.get("SPEECHLM_SCREENSHOT") or tmp_path / "page.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000 and not errors, errors


def test_recording_from_the_microphone_and_error_messages(browser, page_assistant, tmp_path):
    with live_server(create_app(page_assistant)) as url:
        context = browser.new_context(permissions=["microphone"])
        page = context.new_page()
        page.goto(url + "/")
        expect(page.locator("#status")).to_contain_text("Ready")
        page.click("#record")  # Chromium's fake microphone plays a beep
        expect(page.locator("#record")).to_have_attribute("aria-pressed", "true")
        page.wait_for_timeout(1200)
        page.click("#record")
        expect(page.locator("#timing")).to_contain_text("Answered in", timeout=30_000)
        expect(page.locator("#error")).to_be_hidden()
        assert page.locator("#reply").inner_text().strip()

        notes = tmp_path / "notes.txt"
        notes.write_text("this is not audio\n" * 20)
        page.set_input_files("#audio-file", str(notes))
        page.click("#send")
        expect(page.locator("#error")).to_contain_text("notes.txt: not a readable audio file")
        context.close()


def test_the_page_asks_for_the_api_key(browser, page_assistant, spoken_clip):
    with live_server(create_app(page_assistant, ServeConfig(api_key="letmein"))) as url:
        page = browser.new_page()
        page.goto(url + "/")
        expect(page.locator("#key-row")).to_be_visible()
        page.set_input_files("#audio-file", str(spoken_clip))
        page.click("#send")
        expect(page.locator("#error")).to_contain_text("API key")
        page.fill("#api-key", "letmein")
        page.click("#send")
        expect(page.locator("#timing")).to_contain_text("Answered in", timeout=30_000)
        expect(page.locator("#error")).to_be_hidden()
