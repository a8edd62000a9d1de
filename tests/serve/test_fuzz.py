"""Fuzz the API from its own OpenAPI schema (schemathesis, bounded): no input may produce a 5xx,
and every response must match the status codes, content types and bodies the schema declares.

Schema-valid requests may still be refused: random bytes are valid "binary" but not audio, and a
long prompt can exceed the LM's context, so schemathesis' positive-data-acceptance check is off.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from speechlm.serve.app import ServeConfig, create_app
from speechlm.serve.assistant import Assistant

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev extra (make test installs it)")
from schemathesis.checks import positive_data_acceptance  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

# per operation and mode: bounded and derandomized so the suite stays fast and reproducible;
# SPEECHLM_FUZZ_EXAMPLES=500 runs a longer, randomized search
EXAMPLES = int(os.environ.get("SPEECHLM_FUZZ_EXAMPLES", "20"))
RANDOM = "SPEECHLM_FUZZ_EXAMPLES" in os.environ
# every model is loaded, so none of these may answer 501
ENDPOINTS = {"/v1/transcribe", "/v1/intent", "/v1/generate", "/v1/synthesize", "/v1/assistant", "/v1/classify", "/v1/answer"}


@pytest.fixture(scope="module")
def api_schema(tiny_asr_dir, intent_dir, tiny_lm_dir, tiny_classifier_dir, tiny_speech_lm_dir):
    assistant = Assistant.load(tiny_asr_dir, intent_dir, tiny_lm_dir, classifier_dir=tiny_classifier_dir, speech_lm_dir=tiny_speech_lm_dir)
    app = create_app(assistant, ServeConfig(api_key="fuzz-key", timeout_s=10))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    for w in app.state.workers.values():
        w.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_never_fails_and_matches_its_schema(api_schema, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= ENDPOINTS
    fuzzed = set()
    for op in operations:

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=not RANDOM)
        def check(case):
            headers = {"X-API-Key": "fuzz-key"} if case.path.startswith("/v1/") else {}
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
            fuzzed.add(op.path)

        try:
            check()
        except Unsatisfiable:  # nothing in a GET without parameters can be made invalid
            assert mode == GenerationMode.NEGATIVE and op.method.upper() == "GET", op.label
    assert ENDPOINTS <= fuzzed
