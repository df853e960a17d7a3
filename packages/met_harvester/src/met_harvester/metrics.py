"""Prometheus metrics of one harvester process. One `HarvesterMetrics` per process, passed to the
client, the sync and the image sync (all accept `metrics=None` to skip counting)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class HarvesterMetrics:
    """Every metric the daemon exposes on /metrics, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "met_requests",
            "HTTP requests by endpoint and status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.retries = Counter("met_retries", "Retries by reason.", ["reason"], registry=r)
        self.throttle_changes = Counter(
            "met_throttle_changes",
            "Changes of the adaptive rate.",
            ["pool", "direction"],
            registry=r,
        )
        self.current_rate = Gauge(
            "met_current_rate", "Current request rate (req/s).", ["pool"], registry=r
        )
        self.objects_fetched = Counter("met_objects_fetched", "Object records fetched.", registry=r)
        self.objects_new = Counter("met_objects_new", "New object records stored.", registry=r)
        self.objects_updated = Counter(
            "met_objects_updated", "Object records whose content changed.", registry=r
        )
        self.objects_withdrawn = Counter(
            "met_objects_withdrawn", "Objects marked withdrawn.", registry=r
        )
        self.images_stored = Counter("met_images_stored", "Image blobs stored.", registry=r)
        self.image_bytes = Counter("met_image_bytes", "Bytes of image blobs stored.", registry=r)
        self.failures = Counter("met_failures", "Fetch failures recorded.", ["kind"], registry=r)
        self.quarantined = Counter("met_quarantined", "Records quarantined.", registry=r)
        self.queue_depth = Gauge("met_queue_depth", "Work items waiting.", ["pool"], registry=r)
        self.last_success = Gauge(
            "met_last_successful_sync_timestamp_seconds",
            "Unix time of the last successful sync.",
            registry=r,
        )
        self.sync_duration = Histogram(
            "met_sync_duration_seconds",
            "Duration of sync runs.",
            buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 7 * 24 * 3600),
            registry=r,
        )
