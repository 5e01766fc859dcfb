# One image for both processes, as the Procfile runs them:
#   docker run IMAGE            the API (web) on $PORT (8000)
#   docker run IMAGE worker     the arq worker (or PROCESS_ROLE=worker)

# ---- build: dependencies in their own layer, then the app ----------------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies only change when pyproject.toml or the lock does: this layer is cached across
# code edits. The pins are the ones the tests ran with.
COPY pyproject.toml .ci/constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install -c constraints.txt -r requirements.txt

COPY README.md LICENSE ./
COPY app ./app
COPY workers ./workers
RUN pip install --no-deps .

# ---- run: the virtualenv, a non-root user, nothing else -------------------------------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics
RUN useradd --create-home --uid 10001 --user-group chat
COPY --from=build /opt/venv /opt/venv
WORKDIR /home/chat
USER 10001:10001

EXPOSE 8000
# The worker has no port: the check passes for it when its role is not web.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["chat-backend", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["chat-backend"]
CMD ["web"]
