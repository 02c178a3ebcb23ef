# syntax=docker/dockerfile:1
#
# rerankd: one Dockerfile, two images (see docs/deploy.md).
#
#   CPU : docker build --build-arg VARIANT=cpu \
#           --build-arg TORCH_INDEX_URL=<PyTorch's CPU-only wheel index> -t rerankd:0.1.0-cpu .
#   CUDA: docker build --build-arg VARIANT=cuda -t rerankd:0.1.0-cuda .
#
# Build arguments:
#   VARIANT          cpu (ONNX Runtime, float32) or cuda (torch, float16): the serving defaults.
#   TORCH_VERSION    the torch release installed first (default 2.13.0, as in the Makefile).
#   TORCH_INDEX_URL  the package index torch comes from; empty = the default index, whose
#                    Linux x86_64 torch wheel is the CUDA build (it bundles the CUDA runtime,
#                    the host only needs the NVIDIA driver). Point it at PyTorch's CPU-only
#                    index for a much smaller CPU image.
#   BAKE_MODEL       a model to download (and, for cpu, export to ONNX with `rerankd export`) at
#                    build time, so the container starts without the hub; empty = at first start.
#   BAKE_INT8        1 = also build the int8 ONNX model (CPU variant only).
#   PYTHON_IMAGE     the base image of both stages, pinned to a patch release.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG VARIANT=cpu

# ---- build: one virtual environment with torch and rerankd, copied whole into the runtime
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/rerankd/bin:$PATH
RUN python -m venv /opt/rerankd
# torch first and alone, so the index chosen here decides which torch build (CPU or CUDA)
# lands; rerankd itself does not pull torch in.
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"; \
    else \
        pip install --no-cache-dir "torch==${TORCH_VERSION}"; \
    fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rerankd ./rerankd
RUN pip install --no-cache-dir "/src[redis]"

# ---- runtime: the same base, the venv, a non-root user and the model cache on /data
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="rerankd" \
      org.opencontainers.image.description="A reranking server for cross-encoders (bge-reranker-v2-m3 and friends)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 rerankd \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin rerankd \
    && mkdir -p /data/huggingface /data/cache \
    && chown -R 10001:10001 /data
COPY --from=build /opt/rerankd /opt/rerankd
# The image listens on 0.0.0.0, so registry changes (register, launch, terminate) need an
# admin key: run it with -e RERANKD_ADMIN_KEYS=<key> (or RERANKD_OPEN_REGISTRY=true to let
# anyone change it). HF_HOME holds downloaded weights, XDG_CACHE_HOME/rerankd the ONNX exports: both on /data.
# (DL3064 mistakes TOKENIZERS_PARALLELISM for a secret: no secret is set here.)
# hadolint ignore=DL3064
ENV PATH=/opt/rerankd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/data \
    HF_HOME=/data/huggingface \
    XDG_CACHE_HOME=/data/cache \
    TOKENIZERS_PARALLELISM=false \
    RERANKD_HOST=0.0.0.0 \
    RERANKD_PORT=8000

# ---- the serving defaults of each variant; everything stays overridable with RERANKD_*
FROM runtime AS variant-cpu
ENV RERANKD_DEVICE=cpu \
    RERANKD_BACKEND=onnx \
    RERANKD_DTYPE=float32

FROM runtime AS variant-cuda
ENV RERANKD_DEVICE=cuda \
    RERANKD_BACKEND=torch \
    RERANKD_DTYPE=float16 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# ---- final: the chosen variant, optionally with a model baked into /data
# (DL3006 cannot see that variant-${VARIANT} names a stage above, not an image.)
# hadolint ignore=DL3006
FROM variant-${VARIANT} AS final
ARG BAKE_MODEL=
ARG BAKE_INT8=0
USER 10001:10001
WORKDIR /data
# CPU: download the weights and build the ONNX model (`rerankd export`); CUDA (torch):
# download the weights only (`rerankd models`). Serve the same spec as baked: the ONNX cache
# entry is named after it.
RUN if [ -n "$BAKE_MODEL" ]; then \
        if [ "$RERANKD_BACKEND" != onnx ]; then \
            rerankd models "$BAKE_MODEL"; \
        elif [ "$BAKE_INT8" = 1 ]; then \
            rerankd export --model "$BAKE_MODEL" --int8; \
        else \
            rerankd export --model "$BAKE_MODEL"; \
        fi; \
    fi
# Declared after the bake step, so a baked model is part of the image (and seeds a new volume).
VOLUME ["/data"]
EXPOSE 8000
# Slim images have no curl: ask /health with the standard library. 503 (loading, draining)
# raises, so it counts as unhealthy; the start period covers a first download of the weights.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RERANKD_PORT', '8000') + '/health', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["rerankd"]
CMD ["serve"]
