# The Streamlit front end. Build context: the repository root.
#   docker build -f docker/frontend.Dockerfile -t tikka-frontend .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    STREAMLIT_SERVER_HEADLESS=true \
    TIKKA_API_URL=http://tikka-backend:8000

WORKDIR /app
COPY requirements/frontend.txt ./requirements.txt
RUN pip install --no-cache-dir --no-deps -r requirements.txt \
    && useradd --create-home --uid 10001 streamlit
COPY frontend/ ./frontend/
# The accepted image formats, one list for the API and the app (nothing else of tikka/).
COPY tikka/__init__.py ./tikka/
COPY tikka/model/__init__.py tikka/model/formats.py ./tikka/model/

USER 10001
EXPOSE 8501
# The secrets file (api_url, api_key) is mounted read-only at /app/.streamlit/secrets.toml.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=2)"]
CMD ["streamlit", "run", "frontend/app.py", "--server.port=8501", "--server.address=0.0.0.0"]
