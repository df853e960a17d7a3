"""`met-harvester fake-api`: serve a synthetic Met collection (records and images) on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from met_harvester.commands.common import fail


def _p(flag: str, what: str) -> object:
    return typer.Option(flag, help=f"Fraction (0–1) of {what}.", rich_help_panel="API faults")


def _ip(flag: str, what: str) -> object:
    return typer.Option(
        flag, help=f"Fraction (0–1) of image answers {what}.", rich_help_panel="Image faults"
    )


def fake_api(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on (0: any free port).")
    ] = 8080,
    objects: Annotated[int, typer.Option("--objects", help="Number of synthetic objects.")] = 5000,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed; records and images are deterministic.")
    ] = 0,
    bias: Annotated[
        float | None,
        typer.Option(
            "--bias",
            help="Plant a spurious correlation: objects tagged Women get a warm background tint "
            "with this probability (others 5%). Default: tint on 10% of objects, independent of tags.",
        ),
    ] = None,
    unmarked_tags: Annotated[
        str | None,
        typer.Option(
            "--unmarked-tags",
            help="Comma-separated tags drawn without a motif of their own (e.g. Men,Women): "
            "a model can find them only through what they correlate with, like the --bias tint.",
        ),
    ] = None,
    truth_out: Annotated[
        Path | None,
        typer.Option(
            "--truth-out",
            help="Write every object's tags, classification, motif boxes and tint to this JSON file.",
        ),
    ] = None,
    large_image: Annotated[
        bool,
        typer.Option(
            "--large-image/--no-large-image",
            help="Include object 436535 whose original image is a 6400 px JPEG.",
        ),
    ] = True,
    shuffle: Annotated[
        bool,
        typer.Option(
            "--shuffle/--no-shuffle", help="Shuffle /objects ids on every call, like the Met."
        ),
    ] = True,
    p403: Annotated[
        float, _p("--p403", "API answers: 403 with the Incapsula HTML block page")
    ] = 0.0,
    p429: Annotated[float, _p("--p429", "API answers: 429 with Retry-After")] = 0.0,
    p500: Annotated[float, _p("--p500", "API answers: 500 HTML")] = 0.0,
    p503: Annotated[float, _p("--p503", "API answers: 503 HTML (outage)")] = 0.0,
    p_html200: Annotated[
        float, _p("--p-html200", "API answers: the block page with status 200")
    ] = 0.0,
    p_drop: Annotated[
        float, _p("--p-drop", "API requests whose connection is dropped unanswered")
    ] = 0.0,
    p_truncate: Annotated[float, _p("--p-truncate", "API answers cut off half way")] = 0.0,
    p_invalid_json: Annotated[
        float, _p("--p-invalid-json", "API answers with invalid JSON (200)")
    ] = 0.0,
    p_html404: Annotated[
        float, _p("--p-html404", "record requests answered with IIS's HTML 404 page")
    ] = 0.0,
    listing_truncate: Annotated[
        float, _p("--listing-truncate", "ids left out of full listings (total kept)")
    ] = 0.0,
    latency: Annotated[
        float,
        typer.Option(
            "--latency", help="Seconds added to every API answer.", rich_help_panel="API faults"
        ),
    ] = 0.0,
    latency_jitter: Annotated[
        float,
        typer.Option(
            "--latency-jitter",
            help="Up to this many seconds more, at random.",
            rich_help_panel="API faults",
        ),
    ] = 0.0,
    retry_after: Annotated[
        float,
        typer.Option(
            "--retry-after",
            help="Retry-After seconds of 429 answers.",
            rich_help_panel="API faults",
        ),
    ] = 1.0,
    listing_faults: Annotated[
        bool,
        typer.Option(
            "--listing-faults/--no-listing-faults",
            help="Also inject API faults into /objects, /departments and /search.",
            rich_help_panel="API faults",
        ),
    ] = True,
    fault_seed: Annotated[
        int,
        typer.Option(
            "--fault-seed",
            help="Seed of the per-request fault draws.",
            rich_help_panel="API faults",
        ),
    ] = 0,
    firewall_requests: Annotated[
        int | None,
        typer.Option(
            "--firewall-requests",
            help="Firewall mode: a client IP sending more than N API requests within the window is blocked.",
            rich_help_panel="Firewall",
        ),
    ] = None,
    firewall_window: Annotated[
        float,
        typer.Option(
            "--firewall-window", help="Rolling window in seconds.", rich_help_panel="Firewall"
        ),
    ] = 10.0,
    firewall_block: Annotated[
        float,
        typer.Option(
            "--firewall-block",
            help="Seconds a blocked client gets 403 HTML.",
            rich_help_panel="Firewall",
        ),
    ] = 45.0,
    firewall_html200: Annotated[
        float,
        typer.Option(
            "--firewall-html200",
            help="Fraction of block answers sent with status 200 instead of 403.",
            rich_help_panel="Firewall",
        ),
    ] = 0.0,
    firewall_images: Annotated[
        bool,
        typer.Option(
            "--firewall-images/--no-firewall-images",
            help="Count and block image requests too (the Met's image host is a separate site).",
            rich_help_panel="Firewall",
        ),
    ] = False,
    firewall_count_blocked: Annotated[
        bool,
        typer.Option(
            "--firewall-count-blocked/--no-firewall-count-blocked",
            help="Requests answered with a block count in the window too (like Imperva).",
            rich_help_panel="Firewall",
        ),
    ] = True,
    p_image_truncate: Annotated[float, _ip("--p-image-truncate", "cut off half way")] = 0.0,
    p_image_wrong_type: Annotated[float, _ip("--p-image-wrong-type", "sent as text/plain")] = 0.0,
    p_image_html: Annotated[
        float, _ip("--p-image-html", "replaced by an HTML error page (200)")
    ] = 0.0,
    p_image_bomb: Annotated[
        float, _ip("--p-image-bomb", "replaced by a decompression-bomb PNG")
    ] = 0.0,
    p_image_slow: Annotated[
        float, _ip("--p-image-slow", "streamed slowly (see --image-slow-rate)")
    ] = 0.0,
    image_slow_rate: Annotated[
        float,
        typer.Option(
            "--image-slow-rate",
            help="Bytes/s of slow image streams.",
            rich_help_panel="Image faults",
        ),
    ] = 20_000.0,
    image_latency: Annotated[
        float,
        typer.Option(
            "--image-latency",
            help="Seconds added to every image answer.",
            rich_help_panel="Image faults",
        ),
    ] = 0.0,
) -> None:
    """Serve a synthetic Met API (records, images, faults, firewall) until Ctrl-C.

    Prints `fake-api listening on <api-url>` once ready. Admin endpoints under /_admin/ mutate, add and remove objects and change fault knobs at runtime.
    """
    from met_harvester.testing import (
        CollectionConfig,
        FakeMetAPI,
        FaultConfig,
        FirewallConfig,
        SyntheticCollection,
    )
    from met_harvester.testing.runner import serve_until_signal, write_truth

    fractions = {
        "--p403": p403, "--p429": p429, "--p500": p500, "--p503": p503, "--p-html200": p_html200,
        "--p-drop": p_drop, "--p-truncate": p_truncate, "--p-invalid-json": p_invalid_json,
        "--p-html404": p_html404, "--listing-truncate": listing_truncate,
        "--p-image-truncate": p_image_truncate, "--p-image-wrong-type": p_image_wrong_type,
        "--p-image-html": p_image_html, "--p-image-bomb": p_image_bomb, "--p-image-slow": p_image_slow,
        "--firewall-html200": firewall_html200, "--bias": 0.0 if bias is None else bias,
    }  # fmt: skip
    for flag, value in fractions.items():
        if not 0.0 <= value <= 1.0:
            fail(f"{flag} must be a fraction between 0 and 1, got {value}")
    for flag, value in {
        "--latency": latency, "--latency-jitter": latency_jitter, "--retry-after": retry_after,
        "--image-latency": image_latency,
    }.items():  # fmt: skip
        if value < 0:
            fail(f"{flag} must be >= 0 seconds, got {value}")
    if objects < 0:
        fail(f"--objects must be >= 0, got {objects}")
    if not 0 <= port <= 65535:
        fail(f"--port must be 0–65535, got {port}")
    if image_slow_rate <= 0:
        fail(f"--image-slow-rate must be > 0, got {image_slow_rate}")
    firewall = None
    if firewall_requests is not None:
        if firewall_requests < 1 or firewall_window <= 0 or firewall_block < 0:
            fail(
                "--firewall-requests must be >= 1, --firewall-window > 0 and --firewall-block >= 0"
            )
        firewall = FirewallConfig(
            firewall_requests,
            firewall_window,
            firewall_block,
            firewall_html200,
            include_images=firewall_images,
            count_blocked=firewall_count_blocked,
        )
    faults = FaultConfig(
        p403=p403, p429=p429, p500=p500, p503=p503, p_html200=p_html200, p_drop=p_drop,
        p_truncate=p_truncate, p_invalid_json=p_invalid_json, p_html404=p_html404,
        listing_truncate=listing_truncate, latency=latency,
        latency_jitter=latency_jitter, retry_after=retry_after, listing_faults=listing_faults,
        p_image_truncate=p_image_truncate, p_image_wrong_type=p_image_wrong_type,
        p_image_html=p_image_html, p_image_bomb=p_image_bomb, p_image_slow=p_image_slow,
        image_slow_rate=image_slow_rate, image_latency=image_latency, seed=fault_seed,
    )  # fmt: skip
    collection = SyntheticCollection(
        CollectionConfig(
            n_objects=objects,
            seed=seed,
            bias=bias,
            large_image=large_image,
            unmarked_tags=tuple(t.strip() for t in (unmarked_tags or "").split(",") if t.strip()),
        )
    )
    if truth_out is not None:
        try:
            write_truth(collection, truth_out)
        except OSError as exc:
            fail(f"cannot write --truth-out {truth_out}: {exc}")
    api = FakeMetAPI(collection, faults=faults, firewall=firewall, shuffle_listing=shuffle)
    try:
        asyncio.run(serve_until_signal(api, host, port))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc}")


def register(app: typer.Typer) -> None:
    """Add the `fake-api` command to `app`."""
    app.command("fake-api")(fake_api)
