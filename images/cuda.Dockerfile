# syntax=docker/dockerfile:1
# The GPU images: two targets over one base, so a node that runs both pulls the base once.
#   trainer    torch, TRL, DeepSpeed, peft, Liger kernels, vLLM (GRPO/RLOO generate with it in the
#              training processes); flash-attention 2 with FLASH_ATTN=1 (a source build of an hour
#              or more)
#   evaluator  vLLM, with the transformers engine beside it for loss and perplexity
# Build from the repository root:
#   docker build -f images/cuda.Dockerfile --target trainer -t ghcr.io/kubetune/trainer:0.1.0 .
#   docker build -f images/cuda.Dockerfile --target evaluator -t ghcr.io/kubetune/evaluator:0.1.0 .
# The base is CUDA devel: DeepSpeed compiles its ops (CPU Adam, fused optimizers) and vLLM's
# FlashInfer its kernels the first time a job uses them.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-devel-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

FROM ${CUDA_IMAGE} AS base
ARG PYTHON_VERSION=3.11
ENV DEBIAN_FRONTEND=noninteractive UV_NO_CACHE=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    UV_PYTHON_INSTALL_DIR=/opt/python
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install "$PYTHON_VERSION" && uv venv --python "$PYTHON_VERSION" /opt/venv
# Ubuntu's images come with a user 1000; the job pods run as 1000, so it becomes kubetune.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --uid 1000 --user-group --create-home --shell /bin/bash kubetune
COPY --chmod=755 images/install-lock.sh /usr/local/bin/install-lock
# The pods' root filesystem is read-only: caches go under HOME, which the pods set to /tmp.
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility NUMBA_CACHE_DIR=/tmp/numba
WORKDIR /tmp

# The project as a wheel, installed without dependencies: the locks hold every one of them.
FROM base AS project
COPY pyproject.toml README.md /src/
COPY operator /src/operator
COPY trainer_entrypoint /src/trainer_entrypoint
RUN uv build --wheel --out-dir /wheels /src

FROM base AS trainer
ARG FLASH_ATTN=0
# The GPU architectures flash-attention is compiled for: Ampere, Hopper, Blackwell.
ARG FLASH_ATTN_CUDA_ARCHS="80;90;100;120"
COPY images/locks/trainer.lock images/locks/trainer-flash-attn.lock /locks/
RUN install-lock /opt/venv /locks/trainer.lock \
    && if [ "$FLASH_ATTN" = 1 ]; then \
        FLASH_ATTENTION_FORCE_BUILD=TRUE FLASH_ATTN_CUDA_ARCHS="$FLASH_ATTN_CUDA_ARCHS" MAX_JOBS=4 \
        install-lock /opt/venv /locks/trainer-flash-attn.lock --no-build-isolation; \
    fi
RUN --mount=from=project,source=/wheels,target=/wheels \
    uv pip install --python /opt/venv/bin/python --no-deps /wheels/kubetune-*.whl
USER 1000:1000
CMD ["python", "-m", "trainer_entrypoint", "--help"]

FROM base AS evaluator
COPY images/locks/evaluator.lock /locks/
RUN install-lock /opt/venv /locks/evaluator.lock
RUN --mount=from=project,source=/wheels,target=/wheels \
    uv pip install --python /opt/venv/bin/python --no-deps /wheels/kubetune-*.whl
USER 1000:1000
CMD ["python", "-m", "trainer_entrypoint", "--help"]
