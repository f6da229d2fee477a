"""The mounted FastAPI app (GET routes) and the JSON error shape every route shares."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from tikka.schemas import ErrorResponse, HealthResponse

SERVICE_NAME = "TikkaMasalAI"


def error_response(status_code: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse(
        ErrorResponse(error=error, detail=detail).model_dump(), status_code=status_code
    )


api_app = FastAPI(
    title=f"{SERVICE_NAME} GET routes",
    docs_url=None,  # BentoML serves the whole service's OpenAPI at /docs
    redoc_url=None,
    openapi_url=None,
)
api_app.state.model_tag = "not loaded"


@api_app.exception_handler(HTTPException)
async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
    return error_response(exc.status_code, "http_error", str(exc.detail))


@api_app.exception_handler(RequestValidationError)
async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, "invalid_request", str(exc.errors()))


@api_app.get("/", summary="Status banner")
async def banner(request: Request) -> dict[str, str]:
    return {
        "service": SERVICE_NAME,
        "status": "ok",
        "model": request.app.state.model_tag,
        "predict": "POST /predict (multipart field 'image')",
        "docs": "/docs",
    }


@api_app.get("/health", summary="Process liveness", response_model=HealthResponse)
async def health() -> HealthResponse:
    return HealthResponse(status="ok")
