# The vpsearch image: `vpsearch worker` on a GPU machine, the study dashboard, and the MLflow
# server of docker-compose.yml (the same image, so tracking client and server versions match).
FROM python:3.11-slim-bookworm

# torch first and pinned, from PyTorch's own index: a loose torch from PyPI pulls several GB of
# CUDA wheels. The default is the CPU wheel of torch 2.13.0. On GPU hosts the CUDA wheel of the
# same version is used via the build arg: TORCH_INDEX_URL=https://download.pytorch.org/whl/cuXXX
# (the CUDA build your driver supports; docker-compose.yml passes TORCH_INDEX_URL from .env).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY vpsearch ./vpsearch
# editable: dashboards/ and studies/ are found next to the package, as in a checkout
RUN pip install --no-cache-dir -e .
COPY studies ./studies
COPY dashboards ./dashboards

# no root at run time; the volume mount points exist with the right owner, so named volumes
# start out writable by this user
RUN useradd --create-home --uid 1000 vpsearch \
    && mkdir -p /runs /data /mlartifacts \
    && chown vpsearch:vpsearch /runs /data /mlartifacts
USER vpsearch

# runs root (trial folders, logs, tracking spool) and built-in data on volumes
ENV VPSEARCH_ROOT=/runs \
    VPSEARCH_DATA_HOME=/data/builtin \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true
CMD ["vpsearch", "--help"]
