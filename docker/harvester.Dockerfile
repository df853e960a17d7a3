# met-harvester: the long-running mirror daemon.
#   docker build -f docker/harvester.Dockerfile -t met-harvester .
#   docker run -v met-data:/data -p 127.0.0.1:9108:9108 met-harvester
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MET_HARVESTER_DATA_DIR=/data \
    MET_HARVESTER_LISTEN=0.0.0.0:9108

WORKDIR /app
COPY packages/met_harvester /app/met_harvester
RUN pip install --no-cache-dir /app/met_harvester \
    && groupadd --system --gid 10001 met \
    && useradd --system --uid 10001 --gid met --home-dir /data --shell /usr/sbin/nologin met \
    && mkdir -p /data \
    && chown met:met /data

USER 10001:10001
VOLUME ["/data"]
EXPOSE 9108

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["met-harvester"]
CMD ["daemon", "--interval", "6h", "--rate", "1"]
