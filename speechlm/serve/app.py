"""The HTTP server: versioned JSON endpoints, the web page, health, readiness and Prometheus metrics.

Models load once (:class:`~speechlm.serve.assistant.Assistant`); inference runs on model worker
threads with bounded queues (:mod:`speechlm.serve.workers`), so a burst beyond capacity gets
429 + Retry-After at once. Every error is a JSON object ``{"error": "..."}`` naming the problem;
stack traces go to the server log only.

Usage:
    speechlm serve runs/demo --intent-model runs/intent --port 8000
    curl -F file=@clip.wav http://127.0.0.1:8000/v1/transcribe
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hmac
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from speechlm.data.audio import decode_audio, encode_wav
from speechlm.data.synth import available_engines, voice_bank
from speechlm.decode.generate import GenerationOptions
from speechlm.errors import AudioError, SpeechLMError
from speechlm.features import SAMPLE_RATE
from speechlm.serve.assistant import Assistant
from speechlm.serve.workers import BatchWorker, Overloaded

log = logging.getLogger("speechlm.serve")
STATIC = Path(__file__).parent / "static"
API_KEY_HEADER = "X-API-Key"
AUDIO_TYPES = ("audio/*", "application/octet-stream", "multipart/form-data")
MAX_CHOICES = 256  # phrases one /v1/choose request may score


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    api_key: str = ""  # when set, every /v1 compute endpoint needs it (X-API-Key or Authorization: Bearer)
    max_upload_mb: float = 10.0  # request bodies above this are refused with 413
    max_audio_seconds: float = 120.0  # decoded audio longer than this is refused with 413
    max_text_chars: int = 1000  # longest text accepted by intent, generate and synthesize
    timeout_s: float = 30.0  # a request still waiting for its result after this gets 504
    max_batch: int = 8  # transcriptions run together in one forward pass
    queue_size: int = 16  # requests waiting per model worker; beyond it: 429
    cors_origins: tuple[str, ...] = ()  # origins allowed to call the API from a browser (none: same origin only)

    def __post_init__(self):
        if self.max_upload_mb <= 0 or self.timeout_s <= 0 or self.max_audio_seconds <= 0:
            raise ValueError("max_upload_mb, max_audio_seconds and timeout_s must be positive")


class ApiError(HTTPException):
    """A 4xx/5xx answer with a message. An HTTPException, so FastAPI passes it through unchanged
    even from inside its own body parsing (where the upload limit is enforced)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(status, message, headers)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ErrorBody(StrictModel):
    error: str = Field(description="what was wrong, naming the field, file or limit")


class IntentRequest(StrictModel):
    text: str = Field(min_length=1, max_length=100_000, description="an utterance's text")


class ClassifyResponse(StrictModel):
    label: str
    confidence: float
    scores: dict[str, float]


class IntentResponse(StrictModel):
    intent: str
    confidence: float
    scores: dict[str, float]


class GenerateRequest(StrictModel):
    prompt: str = Field("", max_length=100_000, description="text to continue")
    max_new_tokens: int = Field(40, ge=0, le=512)
    temperature: float = Field(0.0, ge=0.0, le=10.0, description="0 = greedy")
    top_k: int = Field(0, ge=0, le=100_000)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class GenerateResponse(StrictModel):
    text: str


class SynthesizeRequest(StrictModel):
    text: str = Field(min_length=1, max_length=100_000)
    voice: str | None = Field(None, description="a name from GET /v1/voices; default: the server's voice")


class WordTiming(StrictModel):
    word: str
    start: float = Field(description="seconds from the start of the audio")
    end: float


class TranscribeResponse(StrictModel):
    text: str
    words: list[WordTiming] | None = Field(None, description="word times, when asked for with timestamps=true")
    duration_s: float = Field(description="audio duration in seconds")
    processing_ms: float


class ChooseResponse(StrictModel):
    text: str = Field(description="the most likely of the given phrases")
    log_prob: float = Field(description="its CTC log-likelihood")
    scores: dict[str, float | None] = Field(description="every phrase's log-likelihood, best first (null: the clip is too short to say it)")
    duration_s: float
    processing_ms: float


class AnswerResponse(StrictModel):
    task: str
    answer: str = Field(description="the joint speech-LM's text for the task prompt (a transcript, an intent label)")
    duration_s: float = Field(description="audio duration in seconds")
    processing_ms: float


class AssistantResponse(StrictModel):
    transcript: str
    intent: str | None = Field(description="null when the server has no intent model")
    confidence: float | None = Field(description="the intent's probability (with --pipeline-weight, of the product with the speech classifier); null for a joint speech-LM's answer")
    reply: str
    reply_audio: str | None = Field(description="the reply as a base64 16 kHz 16-bit WAV; null when not spoken")
    timings_ms: dict[str, float]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": why}
    for code, why in {
        400: "unreadable input", 401: "missing or wrong API key", 413: "body or audio too large",
        415: "unsupported content type", 422: "invalid field", 429: "over capacity (see Retry-After)",
        501: "the model for this endpoint is not loaded", 504: "timed out",
    }.items()
}  # fmt: skip
AUDIO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "audio/wav": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class BodyLimit:
    """ASGI middleware: refuse request bodies above ``max_bytes`` (declared or streamed) with 413."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = error_response(413, f"request body exceeds the {self.max_bytes / 2**20:g} MB limit")
            return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise ApiError(413, f"request body exceeds the {self.max_bytes / 2**20:g} MB limit")
            return message

        return await self.app(scope, limited, send)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(assistant: Assistant, cfg: ServeConfig = ServeConfig()) -> FastAPI:
    registry = CollectorRegistry()
    requests_total = Counter("speechlm_requests", "HTTP requests by route and status", ["route", "status"], registry=registry)
    latency = Histogram(
        "speechlm_request_seconds", "request latency by route", ["route"], registry=registry,
        buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    )  # fmt: skip
    queue_depth = Gauge("speechlm_queue_depth", "requests waiting or running per model worker", ["worker"], registry=registry)

    def run_each(fn):
        def batch(items):
            out = []
            for item in items:
                try:
                    out.append(fn(item))
                except SpeechLMError as e:  # this request's own problem, not the batch's
                    out.append(e)
            return out

        return batch

    def torch_threads() -> None:
        # a new thread runs torch ops on an OpenMP team of its own; without this it is not sized
        # like the main thread's and a 5 s clip took 1.5x as long (measured: 56 vs 37 ms)
        torch.set_num_threads(torch.get_num_threads())

    workers = {
        "asr": BatchWorker("asr", lambda items: assistant.transcribe(*zip(*items)), cfg.max_batch, cfg.queue_size, torch_threads),
        "understand": BatchWorker("understand", assistant.understand, cfg.max_batch, cfg.queue_size, torch_threads),
        "text": BatchWorker("text", run_each(lambda thunk: thunk()), cfg.max_batch, cfg.queue_size, torch_threads),
        "tts": BatchWorker("tts", run_each(lambda args: assistant.speak(*args)), 1, cfg.queue_size),
        "classify": BatchWorker("classify", assistant.classify_audio, cfg.max_batch, cfg.queue_size, torch_threads),
        "answer": BatchWorker("answer", run_each(lambda item: assistant.answer(*item)), cfg.max_batch, cfg.queue_size, torch_threads),
        "choose": BatchWorker("choose", run_each(lambda item: assistant.choose(*item)), cfg.max_batch, cfg.queue_size, torch_threads),
    }  # fmt: skip
    for name, w in workers.items():
        queue_depth.labels(name).set_function(lambda w=w: w.depth)

    @asynccontextmanager
    async def lifespan(app):
        yield
        for w in workers.values():
            w.close()

    app = FastAPI(
        title="speechlm", version="1", lifespan=lifespan,
        description="Speech recognition, intent, text generation, speech synthesis and a voice assistant.",
    )  # fmt: skip
    app.state.workers = workers
    if cfg.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_middleware(BodyLimit, max_bytes=int(cfg.max_upload_mb * 2**20))

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        latency.labels(name).observe(time.perf_counter() - start)
        requests_total.labels(name, str(response.status_code)).inc()
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; media-src 'self' blob: data:; img-src 'self' data:; frame-ancestors 'none'"
        )
        return response

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException is a subclass
    async def _http_error(request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        return error_response(422, _describe_validation(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error (logged on the server)")

    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="needed when the server has an API key")

    def require_key(request: Request, key: str | None = Depends(key_header)) -> None:
        if not cfg.api_key:
            return
        auth = request.headers.get("authorization", "")
        given = key or (auth[7:] if auth.lower().startswith("bearer ") else "")
        if not hmac.compare_digest(given.encode(), cfg.api_key.encode()):
            raise ApiError(401, f"missing or wrong API key (send it as {API_KEY_HEADER} or Authorization: Bearer)", {"WWW-Authenticate": "Bearer"})

    async def run(worker: str, item: Any) -> Any:
        try:
            result = await asyncio.wait_for(workers[worker].submit(item), cfg.timeout_s)
        except Overloaded as e:
            raise ApiError(429, str(e), {"Retry-After": str(e.retry_after)}) from None
        except asyncio.TimeoutError:
            raise ApiError(504, f"no result within {cfg.timeout_s:g} s") from None
        if isinstance(result, SpeechLMError):
            raise ApiError(400, str(result))
        return result

    async def read_audio(request: Request, worker: str = "asr") -> tuple[Any, str]:
        try:
            workers[worker].check_capacity()  # refuse before reading and decoding the upload
        except Overloaded as e:
            raise ApiError(429, str(e), {"Retry-After": str(e.retry_after)}) from None
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            try:
                form = await request.form(max_files=1, max_fields=8)
            except ApiError:
                raise
            except Exception as e:  # python-multipart's parse errors, too many files or fields
                raise ApiError(400, f"malformed multipart body ({e})") from None
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "multipart body needs the audio as a file field named 'file'")
            data, name = await upload.read(), upload.filename or "upload"
        elif ctype.startswith("audio/") or ctype == "application/octet-stream":
            data, name = await request.body(), "request body"
        else:
            raise ApiError(415, f"content type {ctype or '(none)'!r} is not audio; send one of {', '.join(AUDIO_TYPES)}")
        try:
            audio = await asyncio.to_thread(decode_audio, data, name)
        except AudioError as e:
            raise ApiError(400, str(e)) from None
        if audio.size > cfg.max_audio_seconds * SAMPLE_RATE:
            raise ApiError(413, f"{name}: {audio.size / SAMPLE_RATE:.1f} s of audio exceeds the {cfg.max_audio_seconds:g} s limit")
        return audio, name

    def check_text(text: str, field: str) -> str:
        if len(text) > cfg.max_text_chars:
            raise ApiError(413, f"{field}: {len(text)} characters exceed the {cfg.max_text_chars} character limit")
        return text

    def speak_b64(wav) -> str:
        return base64.b64encode(encode_wav(wav)).decode()

    # -- pages and probes -------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health", summary="liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="readiness: models loaded and workers running", responses={503: ERRORS[429] | {"description": "not ready"}})
    async def ready():
        alive = {name: w._thread.is_alive() for name, w in workers.items()}
        if not all(alive.values()):
            return error_response(503, f"worker(s) not running: {[n for n, ok in alive.items() if not ok]}")
        return {"status": "ready", "workers": {n: {"depth": w.depth, "capacity": w.capacity} for n, w in workers.items()}}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/info", summary="what this server can do and its limits")
    async def info() -> dict[str, Any]:
        return {
            "version": 1,
            "auth_required": bool(cfg.api_key),
            "capabilities": {
                "transcribe": True, "intent": assistant.intent is not None, "generate": assistant.lm is not None,
                "synthesize": assistant.can_speak, "assistant": True, "classify": assistant.classifier is not None,
                "answer": bool(assistant.speech_tasks), "choose": assistant.has_alignment,
            },
            "speech_tasks": assistant.speech_tasks,
            "decoding": {"beam": assistant.beam, "lm": assistant.has_alignment and assistant.recognizer.lm is not None},
            "assistant_intent": {"nbest": assistant.pipeline_nbest, "classifier_weight": None if assistant.pipeline_weight is None
                                 else round(1 - assistant.pipeline_weight, 6), "speeds": list(assistant.pipeline_speeds)},
            "intents": assistant.intent.labels if assistant.intent else [],
            "voice": assistant.voice,
            "limits": {"max_upload_mb": cfg.max_upload_mb, "max_audio_seconds": cfg.max_audio_seconds, "max_text_chars": cfg.max_text_chars},
        }  # fmt: skip

    @app.get("/v1/voices", summary="voices the synthesize endpoint accepts")
    async def voices() -> list[dict[str, str]]:
        engines = available_engines()
        return [{"name": v.name, "engine": v.engine} for v in voice_bank() if v.engine in engines]

    # -- compute endpoints --------------------------------------------------------------------
    v1 = dict(dependencies=[Depends(require_key)], responses=ERRORS)

    @app.post("/v1/transcribe", summary="speech to text", openapi_extra=AUDIO_BODY, **v1)
    async def transcribe(
        request: Request,
        beam: int | None = Query(None, ge=1, le=64, description="beam size; 1 = greedy; default: the server's (--beam), greedy with timestamps"),
        timestamps: bool = Query(False, description="also return each word's start and end (greedy decoding only)"),
    ) -> TranscribeResponse:
        start = time.perf_counter()
        if beam is None:
            beam = 1 if timestamps else assistant.beam
        if timestamps and beam > 1:
            raise ApiError(422, "timestamps: word times come from the greedy alignment; use beam=1")
        if timestamps and not assistant.has_alignment:
            raise ApiError(422, "timestamps: word times come from a CTC alignment; this server's recognizer is a joint speech-LM")
        audio, _ = await read_audio(request)
        result = await run("asr", (audio, beam, timestamps))
        return TranscribeResponse(
            text=result.text, words=[WordTiming(**dataclasses.asdict(w)) for w in result.words] if timestamps else None,
            duration_s=audio.size / SAMPLE_RATE, processing_ms=1000 * (time.perf_counter() - start),
        )  # fmt: skip

    @app.post("/v1/choose", summary="which of the given phrases a clip says (closed vocabulary: commands, keywords)", openapi_extra=AUDIO_BODY, **v1)
    async def choose(
        request: Request,
        choice: list[str] = Query(..., description="a phrase the clip may say; repeat the parameter for each (at most 256)"),
    ) -> ChooseResponse:
        start = time.perf_counter()
        if not assistant.has_alignment:
            raise ApiError(422, "choose: phrases are scored with a CTC recognizer; this server's recognizer is a joint speech-LM")
        if len(choice) > MAX_CHOICES:
            raise ApiError(422, f"choice: {len(choice)} phrases given, at most {MAX_CHOICES}")
        phrases = [check_text(c, "choice") for c in choice]
        audio, _ = await read_audio(request, "choose")
        scores = await run("choose", (audio, phrases))
        best = next(iter(scores))
        return ChooseResponse(text=best, log_prob=scores[best], scores=scores, duration_s=audio.size / SAMPLE_RATE,
                              processing_ms=1000 * (time.perf_counter() - start))

    @app.post("/v1/classify", summary="the class of an audio clip (keyword, digit, spoken intent)", openapi_extra=AUDIO_BODY, **v1)
    async def classify(request: Request) -> ClassifyResponse:
        if assistant.classifier is None:
            raise ApiError(501, "no speech classifier is loaded (start the server with --classifier DIR)")
        audio, _ = await read_audio(request, "classify")
        scores = await run("classify", audio)
        best = max(scores, key=scores.get)
        return ClassifyResponse(label=best, confidence=scores[best], scores=scores)

    @app.post("/v1/answer", summary="the joint speech-LM's answer to a task prompt about an audio clip", openapi_extra=AUDIO_BODY, **v1)
    async def answer(
        request: Request, task: str = Query("transcribe", max_length=64, description="a prompt the model was trained for (GET /v1/info: speech_tasks)")
    ) -> AnswerResponse:
        start = time.perf_counter()
        if assistant.speech_lm is None:
            raise ApiError(501, "no joint speech-LM is loaded (serve one, or start the server with --speech-lm DIR)")
        if task not in assistant.speech_tasks:
            raise ApiError(422, f"task: unknown task {task!r}; this model answers {assistant.speech_tasks}")
        audio, _ = await read_audio(request, "answer")
        text = await run("answer", (audio, task))
        return AnswerResponse(task=task, answer=text, duration_s=audio.size / SAMPLE_RATE, processing_ms=1000 * (time.perf_counter() - start))

    @app.post("/v1/intent", summary="the intent of a text", **v1)
    async def intent(req: IntentRequest) -> IntentResponse:
        if assistant.intent is None:
            raise ApiError(501, "no intent model is loaded (start the server with --intent-model DIR)")
        check_text(req.text, "text")
        pred = await run("text", lambda: assistant.classify([req.text])[0])
        return IntentResponse(intent=pred.intent, confidence=pred.confidence, scores=pred.scores)

    @app.post("/v1/generate", summary="continue a text with the language model", **v1)
    async def generate(req: GenerateRequest) -> GenerateResponse:
        if assistant.lm is None:
            raise ApiError(501, "no language model is loaded (start the server with --lm DIR)")
        check_text(req.prompt, "prompt")
        opts = GenerationOptions(req.max_new_tokens, req.temperature, req.top_k, req.top_p, req.seed)
        return GenerateResponse(text=await run("text", lambda: assistant.continue_text(req.prompt, opts)))

    @app.post(
        "/v1/synthesize", summary="text to speech (WAV)", response_class=Response,
        responses={**ERRORS, 200: {"content": {"audio/wav": {}}, "description": "16 kHz 16-bit mono WAV"}},
        dependencies=[Depends(require_key)],
    )  # fmt: skip
    async def synthesize(req: SynthesizeRequest) -> Response:
        if not assistant.can_speak:
            raise ApiError(501, "no speech synthesis engine is installed on the server")
        check_text(req.text, "text")
        wav = await run("tts", (req.text, req.voice))
        return Response(encode_wav(wav), media_type="audio/wav")

    @app.post("/v1/assistant", summary="speech in: transcript, intent, reply and the reply spoken", openapi_extra=AUDIO_BODY, **v1)
    async def assistant_turn(
        request: Request, speak: bool = Query(True, description="also return the reply as audio")
    ) -> AssistantResponse:
        timings: dict[str, float] = {}
        tick = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal tick
            now = time.perf_counter()
            timings[name] = round(1000 * (now - tick), 1)
            tick = now

        audio, _ = await read_audio(request)
        lap("read")
        pred, intent = None, None
        if assistant.intent is not None:  # transcript and intent in one pass (N-best lists, the product with --classifier)
            transcript, pred = await run("understand", audio)
            intent = pred.intent if pred else None
            lap("understand")
        else:
            transcript = (await run("asr", (audio, assistant.beam, False))).text
            lap("transcribe")
            if "intent" in assistant.speech_tasks:  # the joint model names the intent from the speech itself
                intent = await run("answer", (audio, "intent"))
                lap("intent")
        reply = await run("text", lambda: assistant.reply(transcript, intent))
        lap("reply")
        audio_b64 = None
        if speak and assistant.can_speak:
            audio_b64 = speak_b64(await run("tts", (reply, None)))
            lap("speak")
        return AssistantResponse(
            transcript=transcript, intent=intent, confidence=pred.confidence if pred else None,
            reply=reply, reply_audio=audio_b64, timings_ms=timings,
        )  # fmt: skip

    return app
