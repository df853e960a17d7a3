# met_vision: training, explanation and audit on a GPU (a workstation or a cloud VM; the cluster
# uses the Apptainer image, docker/apptainer/met.def, built the same way).
#   docker build -f docker/vision.Dockerfile -t met-vision .
#   docker run --gpus all --ipc=host -v met-data:/data -v "$PWD/runs:/runs" met-vision \
#       --config configs/resnet50-multilabel.yaml --data.data_dir /data --runs_root /runs
# torch/torchvision/timm/lightning/torchmetrics: the versions of constraints.txt, which the tests'
# venv installs too. The torch wheels (CUDA 13.0) carry their own CUDA and NCCL libraries; the
# host's driver comes in with --gpus. rdma-core/libibverbs let NCCL use InfiniBand/RoCE.
FROM ubuntu:22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
        rdma-core libibverbs1 ibverbs-providers librdmacm1 ibverbs-utils \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY constraints.txt /app/constraints.txt
RUN pip install --no-cache-dir -c /app/constraints.txt torch torchvision \
        --extra-index-url https://download.pytorch.org/whl/cu130
COPY packages /app/packages
COPY configs /app/configs
RUN pip install --no-cache-dir -c /app/constraints.txt /app/packages/met_harvester /app/packages/met_vision \
    && useradd --create-home --uid 10001 met

USER 10001:10001
ENTRYPOINT ["python", "-m", "met_vision.fit"]
CMD ["--help"]
