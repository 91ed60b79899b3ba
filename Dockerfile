# runyard server image: non-root, dependencies from uv.lock, a HEALTHCHECK on /health/live.
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends git procps \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 runyard

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN pip install --no-cache-dir "uv==0.13.8" \
    && UV_PROJECT_ENVIRONMENT=/opt/venv uv sync --locked --no-dev --no-editable \
    && pip uninstall -y uv

COPY examples ./examples
USER runyard
ENV PATH=/opt/venv/bin:$PATH \
    RUNYARD_DATA_DIR=/home/runyard/data \
    RUNYARD_JOBS_DIR=/app/examples/jobs \
    RUNYARD_LOG_FORMAT=json
EXPOSE 8000
# Tokens are required for a non-loopback bind: mount a tokens file and point at it.
CMD ["runyard", "serve", "--host", "0.0.0.0", "--tokens", "/run/secrets/runyard-tokens.toml"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live').status != 200)"
