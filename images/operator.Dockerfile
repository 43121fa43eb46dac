# syntax=docker/dockerfile:1
# The operator: `kubetune operator` on slim Python, without the training stack.
# Build from the repository root:
#   docker build -f images/operator.Dockerfile -t ghcr.io/kubetune/operator:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS build
ENV UV_NO_CACHE=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
COPY --from=uv /uv /usr/local/bin/uv
COPY --chmod=755 images/install-lock.sh /usr/local/bin/install-lock
RUN uv venv --python /usr/local/bin/python3 /opt/venv
COPY images/locks/operator.lock /locks/
RUN install-lock /opt/venv /locks/operator.lock
# The project itself, without dependencies: the lock holds every one of them.
COPY pyproject.toml README.md /src/
COPY operator /src/operator
COPY trainer_entrypoint /src/trainer_entrypoint
RUN uv build --wheel --out-dir /wheels /src \
    && uv pip install --python /opt/venv/bin/python --no-deps /wheels/kubetune-*.whl

FROM ${PYTHON_IMAGE} AS operator
# The chart runs the operator as 65532 with a read-only root filesystem.
RUN useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin kubetune
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
ENTRYPOINT ["kubetune"]
CMD ["operator"]
