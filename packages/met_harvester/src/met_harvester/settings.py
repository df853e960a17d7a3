"""One settings object holds every default. Precedence: defaults < TOML file < env
(`MET_HARVESTER_*`) < CLI flags. Pass it into constructors; there are no globals."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from met_harvester import __version__
from met_harvester.hostlist import parse_allowlist

MET_API_URL = "https://collectionapi.metmuseum.org/public/collection/v1"
DEFAULT_USER_AGENT = (
    f"met-harvester/{__version__} (+https://github.com/met-collection/met-collection)"
)


class HarvesterSettings(BaseSettings):
    """Every option of `met-harvester`, with its default."""

    model_config = SettingsConfigDict(
        env_prefix="MET_HARVESTER_", extra="forbid", validate_default=True
    )

    # --- where things are -------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="Data dir; the DB is <data-dir>/met.sqlite.")
    api_url: str = Field(MET_API_URL, description="Base URL of the Met collection API.")

    # --- API requests -----------------------------------------------------------------
    rate: float = Field(80.0, gt=0, description="Ceiling on API requests per second.")
    initial_rate: float | None = Field(
        None,
        gt=0,
        description="API requests/s of a fresh database (default 1, or --rate when given).",
    )
    concurrency: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="API requests in flight at most (default: 2, more as the rate grows).",
    )
    timeout: float = Field(30.0, gt=0, description="Per-request timeout in seconds.")
    user_agent: str = Field(DEFAULT_USER_AGENT, description="User-Agent header sent.")
    max_attempts: int = Field(5, ge=1, description="Attempts per request before giving up.")
    block_cooldown: float = Field(
        2.0, ge=0, description="Seconds from a block answer to the one probe that follows."
    )
    retry_wait: float = Field(
        0.5, ge=0, description="First retry back-off in seconds (exponential, jittered)."
    )
    retry_wait_max: float = Field(30.0, ge=0, description="Longest retry back-off in seconds.")
    batch_size: int = Field(200, ge=1, description="Records written per DB transaction.")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="Largest API body accepted, decoded (16 MiB)."
    )
    listing_margin: float = Field(
        0.02,
        ge=0,
        le=1,
        description="A full listing smaller than the last trustworthy one by more than this "
        "fraction is not trusted to withdraw objects.",
    )
    keep_versions: int | None = Field(
        None,
        ge=0,
        description="Old versions kept per object (newest first); None keeps all.",
    )

    # --- images (issue 3) ---------------------------------------------------------------
    images: bool = Field(True, description="Download images too (--no-images to skip).")
    image_variant: Literal["small", "original"] = Field(
        "small", description="small: primaryImageSmall (falls back to primaryImage); original."
    )
    additional_images: bool = Field(False, description="Also take additionalImages.")
    image_rate: float = Field(20.0, gt=0, description="Ceiling on image requests per second.")
    image_initial_rate: float | None = Field(
        None,
        gt=0,
        description="Image requests/s of a fresh database (default 2, or --image-rate).",
    )
    image_concurrency: int = Field(8, ge=1, le=256, description="Image downloads in flight.")
    image_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["images.metmuseum.org"],
        description="Allowed image hosts, as host or host:port.",
    )
    max_image_bytes: int = Field(100_000_000, gt=0, description="Largest image body accepted.")
    image_timeout: float = Field(
        120.0, gt=0, description="Total deadline of one image download in seconds."
    )
    max_image_pixels: int = Field(
        200_000_000, gt=0, description="Largest image (width x height) accepted."
    )

    # --- CSV bootstrap (issue 4) -----------------------------------------------------------
    priority: str = Field(
        "pd-tagged,pd,rest",
        description="Order in which CSV-known, unfetched ids are synced (comma list of groups).",
    )

    # --- daemon (issue 5) ---------------------------------------------------------------
    interval: str | None = Field(None, description="Daemon: run every interval, e.g. 6h, 30m.")
    at: str | None = Field(None, description="Daemon: run daily at HH:MM.")
    timezone: str = Field("UTC", description="Daemon: time zone of --at.")
    grace: float = Field(30.0, ge=0, description="Seconds in-flight work gets on shutdown.")
    listen: str = Field("127.0.0.1:9108", description="Daemon HTTP endpoint host:port.")
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")

    @field_validator("image_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("image_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        parse_allowlist(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("api_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def start_rate(self, pool: Literal["api", "images"]) -> float:
        """The rate a pool starts at when nothing was learned: the initial rate if given, else
        the ceiling if that was given (the caller asked for that rate), else a polite
        1/s for the API and 2/s for images (never above the ceiling)."""
        if pool == "api":
            initial, ceiling, name, polite = self.initial_rate, self.rate, "rate", 1.0
        else:
            initial, ceiling, name, polite = (
                self.image_initial_rate,
                self.image_rate,
                "image_rate",
                2.0,
            )
        if initial is not None:
            return min(initial, ceiling)
        return ceiling if name in self.model_fields_set else min(polite, ceiling)

    @property
    def max_concurrency(self) -> int:
        """The most API requests that may ever be in flight (`concurrency`, else the automatic
        concurrency's upper bound)."""
        from met_harvester.inflight import MAX_AUTO

        return self.concurrency if self.concurrency is not None else MAX_AUTO

    @property
    def db_path(self) -> Path:
        """`<data-dir>/met.sqlite`."""
        return self.data_dir / "met.sqlite"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_settings(config: Path | None = None, **overrides: Any) -> HarvesterSettings:
    """Build settings from an optional TOML file, the environment and explicit overrides.

    `None` overrides are ignored, so CLI options left unset fall through to env and file.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    if config is not None and not config.is_file():
        raise FileNotFoundError(f"config file not found: {config}")

    if config is None:
        return HarvesterSettings(**given)

    class _FromFile(HarvesterSettings):
        model_config = SettingsConfigDict(toml_file=config)

    settings = _FromFile(**given)
    # keep which fields were given: an explicit --rate is also where a fresh database starts
    return HarvesterSettings.model_construct(
        _fields_set=settings.model_fields_set, **settings.model_dump()
    )
