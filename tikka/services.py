"""The BentoML services: a public Gateway that depends on a batched Classifier.

This is the "disaggregated" shape of BentoML's CLIP example. Under
``bentoml serve`` each service is its own process: the gateway validates,
decodes and preprocesses uploads in parallel (async endpoints, work in threads),
then hands ready tensors to the classifier, whose batchable method runs one
forward pass per adaptive batch. Bad input is answered in the gateway and never
reaches a batch, where one failing request fails every request batched with it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import anyio
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from starlette.responses import Response, StreamingResponse

from tikka import metrics
from tikka.bentoml_patches import (
    answer_outer_errors,
    authenticate_dependency,
    bound_endpoint_labels,
    cap_batching_wait,
    connect_per_call_over_tcp,
    retire_dependency_sessions_gently,
)
from tikka.bulk.runner import BulkLimits, ProgressBoard, run_task
from tikka.errors import (
    ClassifierBusy,
    ClassifierTimeout,
    ClassifierUnavailable,
    ExplanationUnavailable,
    InvalidPrompt,
    ServiceError,
)
from tikka.http.api import ENTRY_SERVICE, api_app
from tikka.http.errors import outer_error, render
from tikka.http.internal import GatewayOnly, bearer
from tikka.http.openapi import public_openapi
from tikka.http.overload import CostlyDecodes, DecodeMemory, LivePriority
from tikka.http.routes import API_PREFIX, VERSIONED_PATHS
from tikka.http.schemas import (
    DishRequest,
    ExplanationResponse,
    GenerateRequest,
    PredictionResponse,
    RawExplanation,
)
from tikka.http.stack import HTTPStack
from tikka.http.upload_guard import ArchiveUpload, ImageUpload
from tikka.llm.client import GenerateResponse, LLMClient, Task, complete, dish_prompt, stream_ndjson
from tikka.model.checkpoint import Checkpoint
from tikka.model.cpu import cpu_label
from tikka.model.explain import render_overlay
from tikka.model.imaging import decode_upload, decoding_cost
from tikka.model.runtime import load_classifier, top_k_labels
from tikka.settings import get_settings

# BentoML's logging configuration shows its own INFO lines, and only WARNING and up from
# other packages: the project's INFO lines (the model loaded, its runtime and threads) too.
logging.getLogger("tikka").setLevel(logging.INFO)
logger = logging.getLogger(__name__)
T = TypeVar("T")
# What BentoML reads from the class declarations below (the model, the request timeout,
# adaptive batching) it needs before any instance exists, so those few settings are read
# here, at import. Everything else is read when a service instance or an app is built
# (self.settings, tikka/http/stack.py), so a test can run any configuration in-process.
declared = get_settings()
# BentoML's own routes on the entry service, besides the APIs and the mounted app.
BENTOML_ROUTES = ("/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/schema.json")
answer_outer_errors(outer_error)
retire_dependency_sessions_gently()
connect_per_call_over_tcp()


@bentoml.service(
    name="classifier",
    workers=1,
    # Two threads: an explanation must not hold up the batch loop; the runtime
    # itself uses every core inside each call.
    threads=2,
    traffic={"timeout": declared.request_timeout_s},
    # Internal calls only: the gateway's access log already has a line per request.
    logging={"access": {"enabled": False}},
    # The gateway's connection pool to this service is renewed every max_age seconds; the
    # old pool closes once its calls are done (bentoml_patches.retire_dependency_sessions_gently).
    # Deployed apart, each call has its own connection (connect_per_call_over_tcp).
    runner_connection={"max_requests": 2**31 - 1, "max_age": declared.classifier_connection_max_age_s},
)
class Classifier:
    model_ref = bentoml.models.BentoModel(declared.model_tag)

    def __init__(self) -> None:
        self.ready = False
        self.settings = settings = get_settings()
        cap_batching_wait(settings.max_batch_wait_ms)
        metrics.report_resident_memory("Classifier")
        self.model = load_classifier(
            self.model_ref.path, settings.runtime, settings.device, settings.inference_threads, settings.precision
        )
        with metrics.INFERENCE_SECONDS.labels(method="warmup").time():
            self.model.warm_up()
        self.runtime_info = {
            "runtime": self.model.runtime,
            "device": str(self.model.device),
            "chosen": "measured" if self.model.timings else "configured",
            "candidates_ms": {name: round(s * 1000, 2) for name, s in (self.model.timings or {}).items()},
            "cpu": cpu_label(),
        }
        metrics.RUNTIME_INFO.labels(self.model.runtime, str(self.model.device), self.runtime_info["chosen"]).set(1)
        for name, seconds in (self.model.timings or {}).items():
            metrics.RUNTIME_CANDIDATE_SECONDS.labels(name).set(seconds)
        self.ready = True

    def __is_ready__(self) -> bool:
        return self.ready

    @bentoml.api(
        batchable=declared.adaptive_batching,
        batch_dim=0,
        max_batch_size=declared.max_batch_size,
        max_latency_ms=declared.max_latency_ms,
    )
    def classify(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 resized and cropped photos -> (N, num_classes) probabilities.

        uint8 pixels are a quarter of the float32 bytes between the processes;
        the normalisation runs once per batch, inside the model's graph.
        """
        with metrics.INFERENCE_SECONDS.labels(method="classify").time():
            return self.model.predict_proba(pixels)

    @bentoml.api
    def runtime(self) -> dict[str, Any]:
        """What runs the model, and each candidate's start-up timing (for the gateway's /)."""
        return self.runtime_info

    @bentoml.api
    def explain(self, pixels: np.ndarray) -> RawExplanation:
        """(1, H, W, 3) uint8 photo -> heatmap on the model's own grid."""
        with metrics.INFERENCE_SECONDS.labels(method="explain").time():
            result = self.model.explain(pixels)
        return RawExplanation(
            heatmap=result.heatmap.tolist(),
            class_index=result.class_index,
            confidence=result.confidence,
            method=result.method,
            num_layers=result.num_layers,
            num_heads=result.num_heads,
        )


@bentoml.service(
    name=ENTRY_SERVICE,
    # No traffic.max_concurrency: tikka/http/overload.py sheds load, in the service's error shape.
    traffic={"timeout": declared.request_timeout_s},
)
@bentoml.asgi_app(api_app, path="/")
class Gateway:
    # API functions return a JSONResponse for rejected uploads; BentoML sends
    # Response objects as they are, so the annotations name only the success body.
    # TIKKA_ONE_PROCESS declares no dependency, so `bentoml serve` starts no classifier worker;
    # the classifier is built here, as BentoML builds a dependency it has no address for
    # (Dependency.get), and is called the same way.
    classifier = (
        functools.cached_property(lambda self: Classifier()) if declared.one_process else bentoml.depends(Classifier)
    )
    model_ref = bentoml.models.BentoModel(declared.model_tag)

    def __init__(self) -> None:
        self.settings = settings = get_settings()
        if settings.require_auth and not settings.api_keys:
            raise RuntimeError("TIKKA_REQUIRE_AUTH is set and TIKKA_API_KEYS is empty: not starting an open API")
        self.llm = LLMClient(settings)
        checkpoint = Checkpoint.read(self.model_ref.path)
        self.input_spec = checkpoint.input_spec
        self.labels = checkpoint.labels
        self.explain_method = checkpoint.explain_method
        self.model_tag = str(self.model_ref.tag)
        self.decode_limiter = anyio.CapacityLimiter(settings.decode_threads)
        self.decode_memory = DecodeMemory(settings.decode_memory_bytes, settings.decode_memory_wait_s)
        self.costly_decodes = CostlyDecodes(
            settings.costly_decodes, settings.costly_decode_pixels, settings.decode_memory_wait_s
        )
        self.live_priority = LivePriority(settings.bulk_live_quiet_ms / 1000, settings.bulk_max_wait_s)
        self.bulk_slots = anyio.Semaphore(settings.bulk_tasks)
        self.bulk_progress = ProgressBoard()
        if settings.one_process:
            logger.info("one process: the classifier is loaded here, with no adaptive batching")
            self.classifier  # noqa: B018  the model loads at start-up, not on the first request
        elif settings.internal_token:
            authenticate_dependency(self.classifier, bearer(settings.internal_token))
        api_app.state.model_tag = self.model_tag
        api_app.state.git_sha = settings.git_sha
        api_app.state.llm = self.llm
        api_app.state.classifier_runtime = self._classifier_runtime
        api_app.state.bulk_progress = self.bulk_progress
        metrics.BUILD_INFO.labels(git_sha=settings.git_sha, model_tag=self.model_tag).set(1)
        metrics.START_TIME.set(time.time())
        metrics.report_resident_memory("Gateway")
        if not settings.api_keys:
            logger.warning(
                "access control is off: TIKKA_API_KEYS is empty, so anyone who reaches this port"
                " can use the API (fine on a laptop; set keys and TIKKA_REQUIRE_AUTH in production)"
            )
        api_app.state.openapi = public_openapi(Gateway.openapi_spec.asdict())
        bound_endpoint_labels(
            frozenset(
                {api.route for api in Gateway.apis.values()}
                | {route.path for route in api_app.routes}
                | {API_PREFIX + path for path in VERSIONED_PATHS}
                | set(BENTOML_ROUTES)
            ),
            ("/static_content/",),
        )

    async def __is_ready__(self) -> bool:
        """Ready while the classifier answers its own /readyz: the process beside this one
        under `bentoml serve`. Deployed apart, readiness is the pod's own
        (TIKKA_READINESS_CHECKS_CLASSIFIER=false in docker/k8s/gateway.yaml).
        BentoML's own dependency probe raised on a refused connection (a 500 from
        /readyz), so it is off in configuration.yaml and done here."""
        # In-process (Gateway.to_asgi()) the classifier is a plain object, with no probe.
        probe = getattr(self.classifier, "is_ready", None)
        if probe is None or not self.settings.readiness_checks_classifier:
            return True
        try:
            return await probe(timeout=self.settings.readiness_timeout_s)
        except Exception:  # refused, reset, unresolvable: not ready, whatever the cause
            return False

    async def _classifier_runtime(self) -> dict[str, Any] | None:
        """The classifier's runtime, for the banner; None while it cannot say."""
        try:
            return await call_classifier(lambda: self.classifier.to_async.runtime(), self.settings.readiness_timeout_s)
        except ServiceError:
            return None

    async def _decode(self, image: ImageUpload):
        """Validate, decode, resize and crop, in worker threads (CPU-bound): first the header's
        cost, then the pixels once that cost fits in the decode memory budget and, for a
        costly image, once it is its turn; the decode itself stops at its CPU budget."""
        draft = self.input_spec.draft_size if self.settings.jpeg_draft_decode else None
        limits = {"max_pixels": self.settings.max_image_pixels, "draft_size": draft}
        cost = await anyio.to_thread.run_sync(lambda: decoding_cost(image.data, **limits), limiter=self.decode_limiter)
        async with self.decode_memory.hold(cost.memory_bytes), self.costly_decodes.turn(cost.pixel_passes):
            return await anyio.to_thread.run_sync(
                lambda: self._decode_bytes(image.data, limits, cost.opened), limiter=self.decode_limiter
            )

    def _decode_bytes(self, data: bytes, limits: dict, opened):
        with metrics.DECODE_SECONDS.time():
            decoded = decode_upload(data, **limits, opened=opened, cpu_budget_s=self.settings.decode_cpu_s)
        return decoded, self.input_spec.preprocess(decoded)

    async def _classify(self, image: ImageUpload) -> dict[str, float]:
        """The top-k dishes of one upload, or the ServiceError that says why not."""
        _, pixels = await self._decode(image)
        probabilities = await call_classifier(
            lambda: self.classifier.to_async.classify(pixels[None]), self.settings.request_timeout_s
        )
        predictions = top_k_labels(probabilities[0], self.labels, self.settings.top_k)
        metrics.PREDICTIONS.labels(label=next(iter(predictions))).inc()
        return predictions

    @bentoml.api(route="/predict")
    async def predict(self, image: ImageUpload, ctx: bentoml.Context) -> PredictionResponse:
        """Classify a food photo: the top-5 dishes with probabilities."""
        try:
            with self.live_priority.live():
                predictions = await self._classify(image)
        except ServiceError as exc:
            return reject(ctx, exc)
        return PredictionResponse(predictions=predictions, filename=image.filename, model=self.model_tag)

    @bentoml.task(route="/bulk_classify")
    async def bulk_classify(
        self, ctx: bentoml.Context, archive: ArchiveUpload | None = None, source: str | None = None
    ) -> str:
        """Classify every image of a zip or tar (`archive`) or under `gs://bucket/prefix` (`source`):
        JSON Lines, one row per image (a failed image is a row with `error`). Bulk images run in
        the gaps of live /predict traffic."""
        progress = self.bulk_progress.start(
            getattr(ctx.request.state, "task_id", None), archive.filename if archive is not None else str(source)
        )

        async def row(name: str, data: bytes) -> dict[str, Any]:
            upload = ImageUpload(name)
            upload.data, upload.filename = data, name
            return {"predictions": await self._classify(upload), "model": self.model_tag}

        try:
            async with self.bulk_slots:
                progress.state = "running"
                rows = await run_task(
                    archive.data if archive is not None else None,
                    source,
                    BulkLimits.of(self.settings),
                    row,
                    progress,
                    self.live_priority.gap,
                )
        except ServiceError as exc:
            progress.state = "failed"
            return reject(ctx, exc)
        return Response(rows, media_type="application/x-ndjson")

    @bentoml.api(route="/predict/explain")
    async def explain(self, image: ImageUpload, ctx: bentoml.Context) -> ExplanationResponse:
        """Where the model looked: Grad-CAM for CNNs, attention rollout for transformers."""
        try:
            if self.explain_method is None:
                raise ExplanationUnavailable(
                    f"{self.model_tag} is neither a timm CNN nor a supported vision transformer"
                    " (ViT, DeiT, SigLIP); /predict still works"
                )
            with self.live_priority.live():
                decoded, pixels = await self._decode(image)
                raw = await call_classifier(
                    lambda: self.classifier.to_async.explain(pixels[None]), self.settings.request_timeout_s
                )
        except ServiceError as exc:
            return reject(ctx, exc)
        heatmap = np.asarray(raw.heatmap, dtype=np.float32)
        box = self.input_spec.view_box(*decoded.size)
        overlay = await anyio.to_thread.run_sync(render_overlay, decoded, heatmap, box)
        return ExplanationResponse(
            predicted_class=self.labels[raw.class_index],
            confidence=round(raw.confidence, 3),
            attention_map=base64.b64encode(overlay.blended_png).decode("ascii"),
            heatmap=base64.b64encode(overlay.heatmap_png).decode("ascii"),
            num_layers=raw.num_layers,
            num_heads=raw.num_heads,
            grid_size=f"{heatmap.shape[0]}x{heatmap.shape[1]}",
            filename=image.filename,
            method=raw.method,
            model=self.model_tag,
        )

    @bentoml.api(route="/llm/generate", input_spec=GenerateRequest)
    async def llm_generate(
        self, prompt: str, temperature: float, max_tokens: int, stream: bool, ctx: bentoml.Context
    ) -> GenerateResponse:
        """Generate text with the LLM sidecar (Ollama). `stream: true` streams NDJSON."""
        if not prompt.strip():
            return reject(ctx, InvalidPrompt("the prompt is empty"))
        return await run_generation(self.llm, ctx, prompt, "", temperature, max_tokens, stream, "generate")

    @bentoml.api(route="/llm/dish", input_spec=DishRequest)
    async def llm_dish(
        self,
        dish: str,
        task: Task,
        temperature: float,
        max_tokens: int,
        stream: bool,
        ctx: bentoml.Context,
    ) -> GenerateResponse:
        """A recipe, nutrition facts or the origin of a dish, from a completion-style template."""
        prompt, answer_start = dish_prompt(dish, task)
        return await run_generation(self.llm, ctx, prompt, answer_start, temperature, max_tokens, stream, task)


async def run_generation(llm, ctx, prompt, answer_start, temperature, max_tokens, stream, task):
    """Async all the way to the sidecar: an LLM that is slow or down never holds a
    worker thread, so /predict keeps its speed."""
    try:
        if not stream:
            return await complete(llm, prompt, answer_start, temperature, max_tokens, task)
        lines = await stream_ndjson(llm, prompt, answer_start, temperature, max_tokens, task)
    except ServiceError as exc:
        return reject(ctx, exc)
    return StreamingResponse(lines, media_type="application/x-ndjson")


async def call_classifier(call: Callable[[], Awaitable[T]], timeout_s: int) -> T:
    """A call to the classifier, its failures named, sent once more after a connection error.

    Deployed apart, a scale-in or a rollout closes pooled connections under the calls on
    them; a call is a pure function of its pixels, so sending it again, on a new
    connection to whichever classifier answers, is safe."""
    async with classifier_errors(timeout_s):
        try:
            return await call()
        except aiohttp.ClientConnectionError:
            metrics.CLASSIFIER_RETRIES.inc()
            return await call()


@contextlib.asynccontextmanager
async def classifier_errors(timeout_s: int):
    """Name the classifier's overload and timeout answers instead of a generic 5xx."""
    try:
        yield
    except aiohttp.ClientConnectionError:
        # Split deployments (docker/k8s): the classifier's pods are gone or restarting.
        raise ClassifierUnavailable("the classifier cannot be reached; retry shortly") from None
    except BentoMLException as exc:
        status = exc.error_code.value
        if status == 401:
            raise ClassifierUnavailable(
                "the classifier refused this gateway: set the same TIKKA_INTERNAL_TOKEN on both"
            ) from None
        if status in (429, 503):
            raise ClassifierBusy(
                "the classifier is at capacity (adaptive batching latency budget); retry shortly"
            ) from None
        if status in (408, 504):
            raise ClassifierTimeout(f"the classifier did not answer within {timeout_s} s") from None
        raise


def reject(ctx: bentoml.Context, exc: ServiceError):
    """An API function's error, rendered there: BentoML answers anything an API function
    raises with a logged 500. With a Context parameter BentoML copies
    ctx.response.status_code and metadata onto whatever the API returns, so both are set."""
    ctx.response.status_code = exc.status_code
    ctx.response.metadata.update(exc.headers)
    return render(exc)


# Served apart, the classifier is an open port that unpickles what it is sent: it
# answers the gateway only (tikka/http/internal.py).
Classifier.add_asgi_middleware(GatewayOnly)
Gateway.add_asgi_middleware(HTTPStack)
