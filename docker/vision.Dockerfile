# met_vision: training, explanation and audit on a GPU.
#   docker build -f docker/vision.Dockerfile -t met-vision .
#   docker run --gpus all --ipc=host -v met-data:/data -v "$PWD/runs:/runs" met-vision \
#       --config configs/resnet50-multilabel.yaml --data.data_dir /data
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY packages /app/packages
COPY configs /app/configs
RUN pip install --no-cache-dir torch==2.5.1 torchvision==0.20.1 --index-url https://download.pytorch.org/whl/cu124 \
    && pip install --no-cache-dir /app/packages/met_harvester /app/packages/met_vision \
    && useradd --create-home --uid 10001 met

USER 10001:10001
ENTRYPOINT ["python", "-m", "met_vision.fit"]
CMD ["--help"]
