# One image for every gpt4batch service: `docker run gpt4batch <command>` (see compose.yaml).
# NSQ itself runs from the official nsqio/nsq image.
# Offline/air-gapped: `make wheelhouse` fills deploy/wheelhouse/ on the host; the build then
# installs only from there and runs with `docker build --network none` (docs/deployment.md).

# --- build: install the package and its pinned dependencies into a venv -------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY common ./common
COPY services ./services
COPY cli ./cli
COPY examples ./examples
# src/gpt4batch/: the symlinks that name those folders as the gpt4batch.* packages (pyproject).
COPY src ./src
COPY deploy/wheelhouse /wheels
RUN python -m venv /opt/venv \
 && if ls /wheels/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; fi \
 && PIP_CONSTRAINT=/src/constraints.txt /opt/venv/bin/pip install /src \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

# --- runtime: the venv only, no build tools, no source tree, no secrets --------
FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 gpt4batch \
 && useradd --system --uid 10001 --gid gpt4batch --home-dir /home/gpt4batch --create-home gpt4batch \
 && mkdir -p /data && chown gpt4batch:gpt4batch /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GPT4BATCH_LOG_FORMAT=json \
    GPT4BATCH_METRICS_PORT=9100
USER gpt4batch
WORKDIR /data
EXPOSE 9100
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('GPT4BATCH_METRICS_PORT', '9100'), timeout=4)"]
ENTRYPOINT ["gpt4batch"]
CMD ["--help"]
