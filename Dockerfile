# One image for both processes: the API (default command) and the worker
# (`arq workers.settings.WorkerSettings`), as the Procfile runs them.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv
COPY pyproject.toml README.md LICENSE ./
COPY app ./app
COPY workers ./workers
COPY .ci/constraints.txt ./constraints.txt
RUN pip install -c constraints.txt . \
    && useradd --create-home --uid 10001 chat
COPY Procfile ./

USER chat
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health', timeout=2)"
CMD ["sh", "-c", "exec uvicorn app.asgi:create_app --factory --host 0.0.0.0 --port ${PORT:-8000} --no-access-log --proxy-headers --forwarded-allow-ips '*' --timeout-graceful-shutdown 20"]
