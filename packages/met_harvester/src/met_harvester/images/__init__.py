"""The image mirror: a content-addressed blob store under `<data-dir>/images`, fed by a
streaming, validating, allowlisted downloader (`sync_images`), checked by `verify` and pruned
by `gc`."""

from __future__ import annotations

from met_harvester.images.blobstore import BlobStore

__all__ = ["BlobStore"]
