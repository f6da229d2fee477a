"""LLM helpers against the real embedded sidecar (llama.cpp + Gemma 3 270M) and a served Bento.

Assertions are on structure and non-empty text, never on wording. The "hung
sidecar" is a TCP server that accepts and never answers: a stand-in for a
stuck Ollama, since nothing real can be made to hang on demand.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import ollama
import pytest

from tests import helpers, records

pytestmark = pytest.mark.slow

TASKS = ("recipe", "nutrition", "origin")
# What each fault test injected and saw, for docs/RELIABILITY.md (written when the session ends).
FAULTS: list[dict] = []
records.record_at_session_end(
    "sidecar_faults",
    "tests/served/test_llm.py",
    lambda: FAULTS
    and (
        FAULTS,
        {
            "timeouts": "connect 1 s, read 3 s in these tests"
            " (TIKKA_LLM_CONNECT_TIMEOUT_S / TIKKA_LLM_READ_TIMEOUT_S; 2 s and 60 s by default)"
        },
    ),
)


def fault(name: str, llm: httpx.Response | str, predict: int | None, seconds: float | None = None) -> None:
    observed = llm if isinstance(llm, str) else f"{llm.status_code} {llm.json()['error']}"
    FAULTS.append(
        {
            "fault injected": name,
            "LLM answer": observed,
            "/predict meanwhile": predict or "",
            "answered in s": round(seconds, 2) if seconds else "",
        }
    )


def post(url: str, path: str, **body) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=120)


def ndjson(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


# --- the sidecar speaks Ollama to the official client -------------------------


def test_official_client_list_show_ps(sidecar):
    client = ollama.Client(host=sidecar.url, timeout=60)
    assert [m.model for m in client.list().models] == ["gemma3:270m"]
    shown = client.show("gemma3:270m")
    assert shown.details.family == "gemma3" and shown.details.quantization_level == "Q4_K_M"
    assert shown.modelinfo["general.architecture"] == "gemma3"
    assert [m.model for m in client.ps().models] == ["gemma3:270m"]


def test_official_client_generate_and_chat(sidecar):
    client = ollama.Client(host=sidecar.url, timeout=120)
    options = {"num_predict": 8, "temperature": 0.2, "seed": 1}
    result = client.generate(model="gemma3:270m", prompt="Guacamole is made of", options=options)
    assert result.done and result.response.strip() and result.eval_count > 0
    assert result.done_reason in ("stop", "length") and result.total_duration > 0

    chunks = list(client.generate(model="gemma3:270m", prompt="Pizza comes from", options=options, stream=True))
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert "".join(c.response for c in chunks).strip()

    messages = [{"role": "user", "content": "Name a fruit."}]
    reply = client.chat(model="gemma3:270m", messages=messages, options=options)
    assert reply.message.role == "assistant" and reply.message.content.strip() and reply.done
    streamed = list(client.chat(model="gemma3:270m", messages=messages, options=options, stream=True))
    assert streamed[-1].done and "".join(c.message.content for c in streamed).strip()


def test_official_client_sees_ollama_errors(sidecar):
    client = ollama.Client(host=sidecar.url, timeout=60)
    with pytest.raises(ollama.ResponseError) as excinfo:
        client.generate(model="llama3:8b", prompt="hi")
    assert excinfo.value.status_code == 404 and "not found" in excinfo.value.error
    loaded = client.generate(model="gemma3:270m", prompt="")
    assert loaded.done and loaded.done_reason == "load"
    assert httpx.get(f"{sidecar.url}/api/version").json()["version"]


# --- through the Bento ----------------------------------------------------------


def test_generate_through_the_bento(llm_bento):
    response = post(llm_bento, "/llm/generate", prompt="Guacamole is made of", max_tokens=12, temperature=0.3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response"].strip() and body["model"] == "gemma3:270m"
    assert body["done"] is True and body["done_reason"] in ("stop", "length")
    assert 0 < body["eval_count"] <= 12 and body["duration_ms"] > 0


def test_streaming_through_the_bento_is_ndjson(llm_bento):
    response = post(llm_bento, "/llm/generate", prompt="Pizza comes from", max_tokens=12, stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    records = ndjson(response)
    tokens, final = records[:-1], records[-1]
    assert len(tokens) >= 2 and all(r["done"] is False and "response" in r for r in tokens)
    assert "".join(r["response"] for r in tokens).strip()
    assert final["done"] is True and final["eval_count"] > 0 and "duration_ms" in final


@pytest.mark.parametrize("task", TASKS)
def test_dish_helper_for_each_task(llm_bento, task):
    response = post(llm_bento, "/llm/dish", dish="huevos_rancheros", task=task, max_tokens=16)
    assert response.status_code == 200, response.text
    text = response.json()["response"]
    assert "Huevos Rancheros" in text  # the begun answer names the dish
    begun = {"recipe": "Ingredients:\n-", "nutrition": "Calories:", "origin": "comes from"}[task]
    assert begun in text and text.split(begun, 1)[1].strip(), "the model continued the answer"


def test_dish_helper_streams_too(llm_bento):
    records = ndjson(post(llm_bento, "/llm/dish", dish="pizza", task="recipe", max_tokens=8, stream=True))
    assert records[0]["response"].startswith("Here is a simple recipe for Pizza")
    assert records[-1]["done"] is True


def test_llm_health_is_healthy(llm_bento, sidecar):
    body = httpx.get(f"{llm_bento}/llm/health", timeout=5).json()
    assert body == {
        "status": "healthy",
        "ollama_url": sidecar.url,
        "available_models": ["gemma3:270m"],
        "configured_model": "gemma3:270m",
    }


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/llm/generate", {"prompt": ""}, "prompt"),
        ("/llm/generate", {"prompt": "   "}, "prompt"),
        ("/llm/generate", {"prompt": "x" * 2001}, "prompt"),
        ("/llm/generate", {"prompt": "hi", "temperature": 2.5}, "temperature"),
        ("/llm/generate", {"prompt": "hi", "temperature": -0.1}, "temperature"),
        ("/llm/generate", {"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ("/llm/generate", {"prompt": "hi", "max_tokens": 1025}, "max_tokens"),  # TIKKA_LLM_MAX_TOKENS
        ("/llm/generate", {}, "prompt"),
        ("/llm/dish", {"dish": "pizza", "task": "dance"}, "task"),
        ("/llm/dish", {"dish": "<script>", "task": "recipe"}, "dish"),
    ],
)
def test_invalid_llm_requests_are_4xx_naming_the_problem(llm_bento, path, body, field):
    response = httpx.post(f"{llm_bento}{path}", json=body, timeout=30)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"] or response.json()["error"] == "invalid_prompt"


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_past_the_context_window_is_a_422(llm_bento, stream):
    """Within the character limit, but more tokens than the model's context (1024 here): was a 502."""
    prompt = "1234567890" * 150  # 1500 characters; Gemma splits digits: 1500 tokens
    assert len(prompt) <= 2000
    response = post(llm_bento, "/llm/generate", prompt=prompt, max_tokens=4, stream=stream)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_prompt" and "context length" in response.json()["detail"]


def test_a_busy_llm_is_a_503_within_the_wait_and_a_dropped_stream_frees_it(sidecar, default_model, tmp_path):
    """One long generation held the LLM for 44 s while short requests queued behind it."""
    env = {"OLLAMA_HOST": sidecar.url, "TIKKA_LLM_QUEUE_WAIT_S": "1"}
    with helpers.served_bento(tmp_path, env) as url:
        with httpx.stream(
            "POST",
            f"{url}/llm/generate",
            timeout=60,
            json={"prompt": "Here is a long story about pizza.", "max_tokens": 300, "stream": True},
        ) as stream:
            lines = stream.iter_lines()
            assert json.loads(next(lines))["done"] is False  # generating: the one slot is taken
            busy, seconds = timed(lambda: post(url, "/llm/generate", prompt="hi", max_tokens=4))
            assert busy.status_code == 503 and busy.json()["error"] == "llm_busy", busy.text
            assert busy.headers["retry-after"] and 1 <= seconds < 5
            fault("busy: the one slot generating, TIKKA_LLM_QUEUE_WAIT_S=1", busy, None, seconds)
        # The client dropped the stream mid-answer: the slot comes back.
        deadline = time.monotonic() + 20
        while (after := post(url, "/llm/generate", prompt="Pizza is", max_tokens=4)).status_code == 503:
            assert time.monotonic() < deadline, "the slot was never released"
        assert after.status_code == 200 and after.json()["eval_count"] >= 1


# --- failures: one Bento whose OLLAMA_HOST port we control ----------------------


@pytest.fixture(scope="module")
def fault_port():
    """The sidecar's address for the fault tests: hung, garbage, missing model and
    restarted servers take it in turn."""
    return helpers.released_port()


@pytest.fixture(scope="module")
def fault_bento(fault_port, default_model, tmp_path_factory):
    env = {
        "OLLAMA_HOST": f"http://127.0.0.1:{fault_port}",
        "TIKKA_LLM_CONNECT_TIMEOUT_S": "1",
        "TIKKA_LLM_READ_TIMEOUT_S": "3",
    }
    with helpers.served_bento(tmp_path_factory.mktemp("fault-bento"), env) as url:
        yield url


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_sidecar_down_gives_503_quickly_and_predict_still_works(fault_bento, photo):
    health, seconds = timed(lambda: httpx.get(f"{fault_bento}/llm/health", timeout=10).json())
    assert health["status"] == "unavailable" and health["available_models"] == [] and seconds < 2
    response, seconds = timed(lambda: post(fault_bento, "/llm/generate", prompt="hi"))
    assert response.status_code == 503 and response.json()["error"] == "llm_unavailable"
    assert "make sidecar" in response.json()["detail"] and seconds < 5
    streamed = post(fault_bento, "/llm/generate", prompt="hi", stream=True)
    assert streamed.status_code == 503
    predicted = httpx.post(
        f"{fault_bento}/predict", files={"image": ("p.jpg", photo("pizza.jpg"), "image/jpeg")}, timeout=60
    )
    assert predicted.status_code == 200
    fault("down: nothing listens on OLLAMA_HOST", response, predicted.status_code, seconds)


def test_hung_sidecar_gives_504_and_predict_stays_fast(fault_bento, fault_port, photo):
    with helpers.HungServer(fault_port) as hung:
        health, seconds = timed(lambda: httpx.get(f"{fault_bento}/llm/health", timeout=10).json())
        assert health["status"] == "unavailable" and seconds < 2.5

        finished: dict[str, float] = {}
        llm_result: dict[str, httpx.Response] = {}

        def call_llm() -> None:
            llm_result["response"] = post(fault_bento, "/llm/generate", prompt="hi")
            finished["llm"] = time.monotonic()

        started = time.monotonic()
        thread = threading.Thread(target=call_llm)
        connected = len(hung.connections)
        thread.start()
        hung.wait_for_connections(connected + 1)  # the LLM call is now waiting on the hung socket
        predicted = httpx.post(
            f"{fault_bento}/predict", files={"image": ("p.jpg", photo("pizza.jpg"), "image/jpeg")}, timeout=60
        )
        finished["predict"] = time.monotonic()
        thread.join(timeout=30)

    assert predicted.status_code == 200
    response = llm_result["response"]
    assert response.status_code == 504 and response.json()["error"] == "llm_timeout"
    assert finished["predict"] < finished["llm"], (
        f"/predict took {finished['predict'] - started:.2f}s while the LLM call hung {finished['llm'] - started:.2f}s"
    )
    fault(
        "slow: accepts and never answers (read timeout 3 s)", response, predicted.status_code, finished["llm"] - started
    )


def test_model_not_pulled_gives_503_naming_the_pull_command(fault_bento, fault_port):
    other = helpers.SidecarProcess(port=fault_port, model_name="llama3.2:1b").start()
    try:
        health = httpx.get(f"{fault_bento}/llm/health", timeout=10).json()
        assert health["status"] == "model_missing" and health["available_models"] == ["llama3.2:1b"]
        response = post(fault_bento, "/llm/generate", prompt="hi")
        assert response.status_code == 503 and response.json()["error"] == "llm_model_missing"
        assert "ollama pull gemma3:270m" in response.json()["detail"]
        fault("the model is not pulled", response, None)
    finally:
        other.stop()


def test_sidecar_killed_then_back_recovers(fault_bento, fault_port):
    sidecar = helpers.SidecarProcess(port=fault_port).start()
    try:
        assert post(fault_bento, "/llm/generate", prompt="Pizza is", max_tokens=4).status_code == 200

        # Killed in the middle of a stream: the stream ends with an error record.
        with httpx.stream(
            "POST",
            f"{fault_bento}/llm/generate",
            timeout=60,
            json={"prompt": "Here is a long story about pizza.", "max_tokens": 400, "stream": True},
        ) as stream:
            lines = stream.iter_lines()
            first = [json.loads(next(lines)) for _ in range(3)]
            sidecar.stop(__import__("signal").SIGKILL)
            rest = [json.loads(line) for line in lines if line.strip()]
        assert all(r["done"] is False for r in first)
        assert rest and rest[-1]["done"] is True and rest[-1]["done_reason"] == "error"
        assert rest[-1]["error"] == "llm_unavailable" and rest[-1]["detail"]
        fault(
            "dies mid-stream (SIGKILL after 3 records)",
            f"200, {len(first) + len(rest) - 1} records, then an error record",
            None,
        )

        down = post(fault_bento, "/llm/generate", prompt="hi")
        assert down.status_code == 503

        sidecar.start()
        back = post(fault_bento, "/llm/generate", prompt="Pizza is", max_tokens=4)
        assert back.status_code == 200 and back.json()["response"].strip()
        fault("restarted after the kill", "200", None)
        assert httpx.get(f"{fault_bento}/llm/health", timeout=5).json()["status"] == "healthy"
    finally:
        sidecar.stop()


@pytest.mark.parametrize("mode", ["invalid-json", "html-error", "wrong-content-type"])
def test_a_sidecar_answering_garbage_is_a_502_and_predict_is_unaffected(fault_bento, fault_port, photo, mode):
    with helpers.GarbageOllama(fault_port, mode):
        health, seconds = timed(lambda: httpx.get(f"{fault_bento}/llm/health", timeout=10).json())
        assert health["status"] == "unavailable" and seconds < 2.5
        for stream in (False, True):
            response = post(fault_bento, "/llm/generate", prompt="hi", max_tokens=4, stream=stream)
            assert response.status_code == 502, (stream, response.text)
            assert response.json()["error"] == "llm_error" and response.json()["detail"]
        predicted = httpx.post(
            f"{fault_bento}/predict", files={"image": ("p.jpg", photo("pizza.jpg"), "image/jpeg")}, timeout=60
        )
        assert predicted.status_code == 200
        fault(f"garbage: {mode} (plain and streamed)", response, predicted.status_code)


def test_garbage_in_the_middle_of_a_stream_ends_it_with_an_error_record(fault_bento, fault_port):
    with helpers.GarbageOllama(fault_port, "garbage-mid-stream"):
        response = post(fault_bento, "/llm/generate", prompt="hi", max_tokens=8, stream=True)
    assert response.status_code == 200
    records = ndjson(response)
    assert [r["response"] for r in records[:2]] == ["Pizza", "Pizza"]
    assert records[-1]["done"] is True and records[-1]["error"] == "llm_error" and records[-1]["detail"], records[-1]
    fault("garbage in the middle of a stream", f"200, {len(records) - 1} records, then an error record", None)
