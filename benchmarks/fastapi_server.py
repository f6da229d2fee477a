"""The plain FastAPI + uvicorn server that the Bento is measured against (not part of the product).

``BENCH_PIPELINE=stock`` is the architecture this project replaces: per
request, a full decode, the checkpoint's own processor and a torch forward
pass. ``BENCH_PIPELINE=lean`` is the strongest simple alternative a user could
write: the same server with the Bento's input path (draft decode, uint8
geometry) and runtime (the exported graph on the runtime the Bento would choose), one image per call.

    BENCH_MODEL_PATH=<store path> BENCH_PIPELINE=lean uvicorn benchmarks.fastapi_server:app --port 8001
"""

from __future__ import annotations

import io
import os
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, UploadFile
from PIL import Image

from tikka.model.checkpoint import Checkpoint
from tikka.model.imaging import decode_upload
from tikka.model.runtime import load_classifier, top_k_labels

MODEL_PATH = os.environ["BENCH_MODEL_PATH"]
PIPELINE = os.environ.get("BENCH_PIPELINE", "stock")

app = FastAPI()


if PIPELINE == "stock":
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    processor = AutoImageProcessor.from_pretrained(MODEL_PATH)
    model = AutoModelForImageClassification.from_pretrained(MODEL_PATH).eval()
    labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]

    def classify(data: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        inputs = processor(images=image, return_tensors="pt")
        with torch.inference_mode():
            return model(**inputs).logits.softmax(-1)[0].numpy()

else:
    spec = Checkpoint.read(MODEL_PATH).input_spec
    # As the Bento chooses (TIKKA_RUNTIME=auto), at the precision it is pinned to, if any.
    classifier = load_classifier(MODEL_PATH, "auto", precision=os.environ.get("TIKKA_PRECISION", "auto"))
    labels = classifier.labels

    def classify(data: bytes) -> np.ndarray:
        image = decode_upload(data, max_pixels=40_000_000, draft_size=spec.draft_size)
        return classifier.predict_proba(spec.preprocess(image)[None])[0]


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


@app.post("/predict")
def predict(image: Annotated[UploadFile, File()]) -> dict:
    # A sync endpoint: FastAPI runs it in its thread pool, as the replaced server did.
    probabilities = classify(image.file.read())
    return {"predictions": top_k_labels(probabilities, labels, 5), "filename": image.filename, "model": PIPELINE}
