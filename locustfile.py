"""Load test users for TikkaMasalAI: photo classification, explanations and LLM helpers.

    make load HOST=http://127.0.0.1:3000               # headless, the default mix
    locust -f locustfile.py --host http://127.0.0.1:3000  # the web UI on :8089

The mix follows how the front end is used: every photo is classified, about
one in five gets a heatmap, and one in ten asks the LLM about the dish. The
photos (benchmarks/photos.py) are the sample photos at 400 px to 4000 px, as
web and phone uploads come. ``--think-time 0`` makes each user a closed loop
(what benchmarks/bench.py uses to find a server's capacity).
"""

from __future__ import annotations

import itertools
import random
import sys
from pathlib import Path

from locust import HttpUser, between, constant, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.photos import ensure_photos  # noqa: E402

PHOTOS = [(path.name, path.read_bytes()) for path in ensure_photos()]
SAMPLE_NAMES = {"pizza.jpg", "guacamole.jpg", "hamburger.jpg"}
DISHES = ["pizza", "guacamole", "cheeseburger", "hot_pot", "burrito"]
TASKS = ["recipe", "nutrition", "origin"]


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument(
        "--think-time", type=float, default=2.0, help="Mean seconds a user waits between requests (0: none)"
    )
    parser.add_argument("--llm-max-tokens", type=int, default=48, help="max_tokens of LLM requests")
    parser.add_argument("--api-prefix", default="", help="Route prefix, e.g. /v1")
    parser.add_argument(
        "--photos",
        choices=["mixed", "samples"],
        default="mixed",
        help="mixed: 400 to 4000 px; samples: the three web-sized sample photos only",
    )


def _wait_time(user: HttpUser) -> float:
    mean = user.environment.parsed_options.think_time if user.environment.parsed_options else 2.0
    return (between(0.5 * mean, 1.5 * mean) if mean > 0 else constant(0))(user)


class TikkaUser(HttpUser):
    abstract = True
    wait_time = _wait_time

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.prefix = options.api_prefix if options else ""
        photos = [p for p in PHOTOS if p[0] in SAMPLE_NAMES] if options and options.photos == "samples" else PHOTOS
        # Each user walks the photo set from its own random place.
        self.photos = itertools.islice(itertools.cycle(photos), random.randrange(len(photos)), None)

    def upload(self, route: str, check) -> None:
        name, data = next(self.photos)
        with self.client.post(
            f"{self.prefix}{route}",
            files={"image": (name, data, "image/jpeg")},
            name=route,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            problem = check(response.json())
            if problem:
                response.failure(problem)


def check_prediction(body: dict) -> str | None:
    predictions = body.get("predictions")
    if not isinstance(predictions, dict) or len(predictions) != 5:
        return f"expected 5 predictions, got {predictions!r}"
    values = list(predictions.values())
    if values != sorted(values, reverse=True) or not all(0 <= v <= 1 for v in values):
        return f"predictions are not probabilities, highest first: {values}"
    if not body.get("model"):
        return "no model tag"
    return None


def check_explanation(body: dict) -> str | None:
    for field in ("predicted_class", "attention_map", "heatmap", "method", "grid_size"):
        if not body.get(field):
            return f"explanation lacks {field}"
    if not 0 <= body.get("confidence", -1) <= 1:
        return f"confidence {body.get('confidence')!r} is not a probability"
    return None


class PredictUser(TikkaUser):
    """Classifies photos: the bulk of the traffic."""

    weight = 10

    @task
    def predict(self) -> None:
        self.upload("/predict", check_prediction)


class ExplainUser(TikkaUser):
    """Asks where the model looked (a heavier request)."""

    weight = 2

    @task
    def explain(self) -> None:
        self.upload("/predict/explain", check_explanation)


class LLMUser(TikkaUser):
    """Asks the LLM about a dish; short answers, as the front end's buttons do."""

    weight = 1

    @task(3)
    def dish(self) -> None:
        max_tokens = self.environment.parsed_options.llm_max_tokens if self.environment.parsed_options else 48
        payload = {"dish": random.choice(DISHES), "task": random.choice(TASKS), "max_tokens": max_tokens}
        with self.client.post(
            f"{self.prefix}/llm/dish", json=payload, name="/llm/dish", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            elif not response.json().get("response") or response.json().get("eval_count", 0) < 1:
                response.failure(f"empty LLM answer: {response.text[:200]}")

    @task(1)
    def health(self) -> None:
        with self.client.get(f"{self.prefix}/llm/health", name="/llm/health", catch_response=True) as response:
            if response.status_code != 200 or response.json().get("status") not in (
                "healthy",
                "unavailable",
                "model_missing",
            ):
                response.failure(f"{response.status_code}: {response.text[:200]}")
