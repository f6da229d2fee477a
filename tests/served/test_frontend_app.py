"""The Streamlit app under streamlit.testing's AppTest, against a really served Bento and sidecar."""

from __future__ import annotations

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from tests import helpers

pytestmark = pytest.mark.slow

APP = str(helpers.ROOT / "frontend" / "app.py")


def run_app(monkeypatch, api_url: str, timeout: float = 120) -> AppTest:
    monkeypatch.setenv("TIKKA_API_URL", api_url)
    app = AppTest.from_file(APP, default_timeout=timeout)
    app.run()
    return app


def texts(app: AppTest) -> str:
    parts = [m.value for m in app.markdown] + [c.value for c in app.caption]
    parts += [e.value for e in app.error] + [s.value for s in app.success] + [w.value for w in app.warning]
    return "\n".join(str(p) for p in parts)


def requests_served(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics").text
    count = "bentoml_service_request_total"
    return (
        helpers.metric_value(text, count, endpoint="/v1/predict", service_name="tikka"),
        helpers.metric_value(text, count, endpoint="/v1/predict/explain", service_name="tikka"),
    )


def upload(app: AppTest, name: str, content_type: str = "image/jpeg") -> AppTest:
    data = (helpers.ROOT / "tests" / "data" / name).read_bytes()
    app.file_uploader(key="photo").set_value((name, data, content_type))
    return app.run()


def test_upload_predict_explain_and_ask(monkeypatch, llm_bento):
    app = run_app(monkeypatch, llm_bento)
    assert not app.exception
    assert "Classifier: ready" in texts(app) and "Cooking assistant: healthy" in texts(app)

    upload(app, "pizza.jpg")
    assert not app.exception and not app.error
    page = texts(app)
    assert "## Pizza" in page
    assert "model `food-classifier:" in page
    assert "Sent: 640x400 JPEG" in page

    app.button(key="explain").click().run()
    assert not app.exception and not app.error
    assert "Grad-CAM · grid 7x7" in texts(app)
    assert app.slider(key="opacity").value == 0.5

    # Reruns (here: moving the slider) re-send nothing: both calls are cached by content hash.
    sent_before = requests_served(llm_bento)
    assert min(sent_before) >= 1
    app.slider(key="opacity").set_value(0.8).run()
    assert not app.exception and "Grad-CAM · grid 7x7" in texts(app)
    assert requests_served(llm_bento) == sent_before

    app.radio(key="task").set_value("Recipe")
    app.button(key="ask").click().run()
    assert not app.exception and not app.error
    assert "Here is a simple recipe for Pizza" in texts(app)


def test_free_question_goes_to_generate(monkeypatch, llm_bento):
    app = run_app(monkeypatch, llm_bento)
    upload(app, "guacamole.jpg")
    assert "## Guacamole" in texts(app)
    app.text_area(key="question").set_value("Guacamole is best served with")
    app.button(key="ask").click().run()
    assert not app.exception and not app.error
    answer = texts(app).split("Guacamole is best served with")[-1]
    assert answer.strip()


def test_backend_url_never_comes_from_query_parameters(monkeypatch, llm_bento):
    monkeypatch.setenv("TIKKA_API_URL", llm_bento)
    app = AppTest.from_file(APP, default_timeout=120)
    app.query_params["api_url"] = "http://127.0.0.1:9"
    app.query_params["backend"] = "http://127.0.0.1:9"
    app.run()
    upload(app, "hamburger.jpg")
    assert not app.error and "## Cheeseburger" in texts(app)
    assert f"Backend: {llm_bento}" in texts(app)


def test_backend_down_gives_a_message_and_a_usable_page(monkeypatch):
    with helpers.closed_port() as port:
        app = run_app(monkeypatch, f"http://127.0.0.1:{port}")
        assert not app.exception
        assert "Classifier: not reachable" in texts(app)
        upload(app, "pizza.jpg")
        assert not app.exception
        assert any("not reachable" in e.value for e in app.error)
        assert app.file_uploader(key="photo") is not None  # the page still works


def test_rejected_upload_shows_the_detail(monkeypatch, llm_bento):
    app = run_app(monkeypatch, llm_bento)
    app.file_uploader(key="photo").set_value(("broken.jpg", b"not really a jpeg", "image/jpeg"))
    app.run()
    assert not app.exception
    assert any("could not be read as an image" in e.value for e in app.error)


def test_llm_unavailable_is_a_message(monkeypatch, default_model, tmp_path_factory):
    with (
        helpers.closed_port() as port,
        helpers.served_bento(
            tmp_path_factory.mktemp("no-llm"),
            {"OLLAMA_HOST": f"http://127.0.0.1:{port}", "TIKKA_LLM_CONNECT_TIMEOUT_S": "1"},
        ) as url,
    ):
        app = run_app(monkeypatch, url)
        assert "Cooking assistant: unavailable" in texts(app)
        upload(app, "pizza.jpg")
        assert "## Pizza" in texts(app)
        app.button(key="ask").click().run()
        assert not app.exception
        errors = [e.value for e in app.error]
        assert any("unavailable right now" in e for e in errors), errors
