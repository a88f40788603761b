# syntax=docker/dockerfile:1
# One image for every role: `api`, `worker`, `serve`, `generate`, `train` (the entrypoint is the
# `videopoet` CLI). CPU by default:
#   docker build -t videopoet-server .
# A CUDA worker: PyTorch's CUDA wheels bring their own CUDA libraries, so the wheel index alone
# is enough (the host needs the NVIDIA driver and the NVIDIA Container Toolkit):
#   docker build -t videopoet-server:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
# or on a CUDA base image (its Python is installed below when the base has none):
#   docker build -t videopoet-server:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
# PyTorch's CPU wheels. From PyPI, `pip install torch` on Linux pulls the multi-GB CUDA build.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A CUDA base image has no Python: install the distribution's. Everything goes in a venv.
RUN set -eux; \
    if ! python3 -c "import venv, ensurepip" 2>/dev/null; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv /opt/venv; \
    pip install --upgrade pip; \
    pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

WORKDIR /app
# The dependencies in their own layer, kept across code changes: install the project once
# with empty packages (its requirements stay), then the code itself, editable, so shipped
# checkpoints under models/checkpoints stay where the code looks for them.
COPY pyproject.toml README.md ./
RUN set -eux; \
    for p in app cli core workers models; do mkdir "$p" && touch "$p/__init__.py"; done; \
    pip install .; \
    pip uninstall -y videopoet-server; \
    rm -rf app cli core workers models build ./*.egg-info
COPY app app
COPY cli cli
COPY core core
COPY workers workers
COPY models models
RUN pip install --no-deps -e . && python -c "import app.main, cli.main, workers.jobs, models"

# Not root. /data holds what the service writes (artifacts, metrics files, embedded Redis);
# a named volume mounted there starts with this ownership.
RUN useradd --create-home --uid 10001 --user-group videopoet \
    && mkdir -p /data/artifacts \
    && chown -R videopoet:videopoet /data
USER videopoet

# Listen on every interface inside the container (the CLI's default is loopback).
ENV VIDEOPOET_DATA_DIR=/data \
    VIDEOPOET_HOST=0.0.0.0 \
    VIDEOPOET_WORKER_METRICS_HOST=0.0.0.0
EXPOSE 8000 9101
ENTRYPOINT ["videopoet"]
CMD ["serve"]
