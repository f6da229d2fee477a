"""Request and response models: the HTTP contract, and the OpenAPI document at /docs."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tikka.llm.client import Task
from tikka.settings import get_settings

# The LLM routes' limits are part of their request schemas, which BentoML reads as class
# declarations (input_spec) and the OpenAPI document shows: read at import, like the
# few settings services.py declares.
_settings = get_settings()


# The embedded default model's tag, as every example shows it (its version is a hash of the
# weights, the labels and the recipe: the same wherever it is imported; a test holds them equal).
EXAMPLE_MODEL_TAG = "food-classifier:3b0d2eff25caed9e"


class PredictionResponse(BaseModel):
    predictions: dict[str, float] = Field(
        description="Top-5 labels with probabilities, highest first, rounded to 3 decimals.",
        examples=[{"pizza": 0.999, "trifle": 0.0, "bagel": 0.0, "potpie": 0.0, "burrito": 0.0}],
    )
    filename: str = Field(description="Name of the uploaded file.", examples=["pizza.jpg"])
    model: str = Field(description="Model store tag that answered.", examples=[EXAMPLE_MODEL_TAG])


class ExplanationResponse(BaseModel):
    predicted_class: str = Field(examples=["pizza"])
    confidence: float = Field(ge=0, le=1, examples=[0.999])
    attention_map: str = Field(
        description=(
            "Base64 PNG: the heatmap blended over the upload, with the upload's proportions"
            " (long side at most 1024 px)."
        )
    )
    heatmap: str = Field(
        description=(
            "Base64 PNG of the coloured heatmap alone, same size as attention_map, so that"
            " clients can blend it over the photo at an opacity of their choice."
        )
    )
    num_layers: int = Field(
        description=(
            "Layers the map draws on: every transformer layer for attention rollout;"
            " 1 (the last convolutional stage) for Grad-CAM."
        ),
        examples=[1],
    )
    num_heads: int = Field(description="Attention heads per layer fused by rollout; 0 for a CNN.", examples=[0])
    grid_size: str = Field(description="Rows x columns of the model's own feature or token grid.", examples=["7x7"])
    filename: str = Field(examples=["pizza.jpg"])
    method: str = Field(description="'grad-cam' or 'attention-rollout'.", examples=["grad-cam"])
    model: str = Field(description="Model store tag that answered.")


class RawExplanation(BaseModel):
    """What the classifier service returns to the gateway for one image."""

    heatmap: list[list[float]]
    class_index: int
    confidence: float
    method: str
    num_layers: int
    num_heads: int


class ErrorResponse(BaseModel):
    detail: str = Field(description="What was wrong, and what to do about it.")
    error: str = Field(description="A stable machine-readable code.", examples=["not_an_image"])


class HealthResponse(BaseModel):
    status: str = Field(examples=["ok"])


class GenerationOptions(BaseModel):
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(
        min(500, _settings.llm_max_tokens), ge=1, le=_settings.llm_max_tokens, description="Most tokens to generate."
    )
    stream: bool = Field(
        False,
        description=(
            'Stream NDJSON (application/x-ndjson): one {"response": str, "done": false}'
            " object per line as tokens come, then a final line with the statistics"
            ' (done: true), or an {"error", "detail", "done": true, "done_reason": "error"} line.'
        ),
    )


class GenerateRequest(GenerationOptions):
    prompt: str = Field(
        min_length=1,
        max_length=_settings.llm_max_prompt_chars,
        description="Text to continue or answer.",
        examples=["Here is a simple recipe for guacamole.\n\nIngredients:\n-"],
    )


class DishRequest(GenerationOptions):
    dish: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 _'-]*$",
        description="A dish label as /predict returns it, or its human name.",
        examples=["huevos_rancheros"],
    )
    task: Task = Field(examples=["recipe"])
