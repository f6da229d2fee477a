"""TikkaMasalAI: upload a photo of a dish, see what it is, where the model looked, how to cook it.

Run: `streamlit run frontend/app.py` (or `make stack` for the whole local stack).
"""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import streamlit as st
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `streamlit run` adds only frontend/

from frontend.backend import Backend, BackendError  # noqa: E402
from frontend.config import api_url  # noqa: E402
from frontend.uploads import PreparedUpload, UnreadableImage, content_hash, prepare_upload  # noqa: E402
from tikka.model.formats import EXTENSIONS, accepted_names  # noqa: E402

TASKS = {"Recipe": "recipe", "Nutrition": "nutrition", "Origin": "origin"}


def humanize(label: str) -> str:
    return " ".join(word.capitalize() for word in label.replace("-", "_").split("_") if word)


# Caches are keyed by the upload's content hash (the bytes are passed with a
# leading underscore, which Streamlit leaves out of the key), so reruns neither
# re-encode nor re-send the same photo. Failures raise and are never cached.
@st.cache_data(show_spinner=False, max_entries=16)
def prepared(sha256: str, _data: bytes) -> PreparedUpload:
    return prepare_upload(_data)


@st.cache_data(show_spinner=False, max_entries=64, ttl=3600)
def prediction(base_url: str, sha256: str, filename: str, _jpeg: bytes) -> dict:
    return Backend(base_url).predict(filename, _jpeg)


@st.cache_data(show_spinner=False, max_entries=32, ttl=3600)
def explanation(base_url: str, sha256: str, filename: str, _jpeg: bytes) -> dict:
    return Backend(base_url).explain(filename, _jpeg)


@st.cache_data(show_spinner=False, ttl=5)
def status(base_url: str) -> tuple[bool | None, dict | None]:
    backend = Backend(base_url)
    return backend.ready(), backend.llm_health()


def sidebar(base_url: str) -> None:
    ready, llm = status(base_url)
    st.sidebar.header("Service")
    if ready is None:
        st.sidebar.error("Classifier: not reachable")
    elif ready:
        st.sidebar.success("Classifier: ready")
    else:
        st.sidebar.warning("Classifier: starting (not ready yet)")
    if llm is None:
        st.sidebar.error("Cooking assistant: unknown (service not reachable)")
    elif llm["status"] == "healthy":
        st.sidebar.success(f"Cooking assistant: healthy ({llm['configured_model']})")
    elif llm["status"] == "model_missing":
        st.sidebar.warning(f"Cooking assistant: model {llm['configured_model']} is not pulled")
    else:
        st.sidebar.error("Cooking assistant: unavailable")
    st.sidebar.caption(f"Backend: {base_url}")
    if st.sidebar.button("Refresh status"):
        status.clear()


def show_prediction(result: dict) -> str:
    predictions: dict[str, float] = result["predictions"]
    top_label, top_probability = next(iter(predictions.items()))
    st.markdown(f"## {humanize(top_label)}")
    st.caption(f"{top_probability:.1%} sure · model `{result['model']}`")
    for label, probability in predictions.items():
        st.progress(min(max(probability, 0.0), 1.0), text=f"{humanize(label)} · {probability:.1%}")
    return top_label


def show_explanation(upload: PreparedUpload, base_url: str, filename: str) -> None:
    if st.session_state.get("explained") != upload.sha256:
        if st.button("Show where the model looked", key="explain"):
            st.session_state["explained"] = upload.sha256
            st.rerun()
        return
    with st.spinner("Computing the heatmap..."):
        result = explanation(base_url, upload.sha256, filename, upload.data)
    heatmap = Image.open(io.BytesIO(base64.b64decode(result["heatmap"]))).convert("RGB")
    photo = Image.open(io.BytesIO(upload.data)).convert("RGB").resize(heatmap.size)
    opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key="opacity")
    st.image(Image.blend(photo, heatmap, opacity), width="stretch")
    method = "Attention rollout" if result["method"] == "attention-rollout" else "Grad-CAM"
    details = f"{method} · grid {result['grid_size']}"
    if result["num_heads"]:
        details += f" · {result['num_layers']} layers x {result['num_heads']} heads"
    st.caption(details)


def ask_the_llm(base_url: str, dish: str) -> None:
    st.subheader(f"Cook {humanize(dish)}")
    choice = st.radio("What would you like to know?", list(TASKS), horizontal=True, key="task")
    question = st.text_area(
        "Or ask your own question (leave empty to use the choice above)", key="question", max_chars=2000
    )
    if st.button("Ask", key="ask", type="primary"):
        backend = Backend(base_url)
        pieces = (
            backend.stream_prompt(question.strip()) if question.strip() else backend.stream_dish(dish, TASKS[choice])
        )
        try:
            st.write_stream(pieces)
        except BackendError as exc:
            st.error(str(exc))


def main() -> None:
    st.set_page_config(page_title="TikkaMasalAI", page_icon="🍛", layout="wide")
    base_url = api_url()
    sidebar(base_url)
    st.title("TikkaMasalAI")
    st.write("Upload a photo of a dish: see what it is, where the model looked, and how to cook it.")

    uploaded = st.file_uploader(
        "Photo of a dish",
        type=list(EXTENSIONS),
        key="photo",
        help=f"Accepted: {accepted_names()} (iPhone and Android photos included).",
    )
    if uploaded is None:
        return
    data = uploaded.getvalue()
    try:
        upload = prepared(content_hash(data), data)
    except UnreadableImage as exc:
        st.error(f"{uploaded.name}: {exc}")
        return

    left, right = st.columns([1, 1])
    with left:
        st.image(upload.data, caption=uploaded.name, width="stretch")
        st.caption(
            f"Sent: {upload.width}x{upload.height} JPEG, {upload.size / 1024:.0f} KB"
            f" (original {upload.original_size / 1024:.0f} KB)"
        )
    with right:
        try:
            with st.spinner("Classifying..."):
                result = prediction(base_url, upload.sha256, uploaded.name, upload.data)
            dish = show_prediction(result)
            show_explanation(upload, base_url, uploaded.name)
        except BackendError as exc:
            st.error(str(exc))
            return
    ask_the_llm(base_url, dish)


try:
    main()
except Exception:  # the last line of defence: a message, never a traceback
    st.error("Something went wrong on this page. Please reload it; if it persists, check the service.")
