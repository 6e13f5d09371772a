"""One typed place for configuration.

Precedence, highest first: command-line flags, ``AUD_*`` environment variables, the TOML file
(``--config F``, else ``<user config dir>/config.toml`` when it exists), then the defaults below.
Every default works on a fresh machine: directories come from platformdirs and are created on start.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

APP_NAME = "aud"
DEFAULT_EXTENSIONS = ("mp4", "mov", "m4v", "avi", "mkv")


def default_config_file() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP_NAME))


def default_inbox() -> Path:
    return Path(platformdirs.user_documents_dir()) / "aud" / "inbox"


def default_outbox() -> Path:
    return Path(platformdirs.user_documents_dir()) / "aud" / "outbox"


def default_models_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "models"


class Settings(BaseSettings):
    """Everything the daemon and the one-shot command can be told."""

    model_config = SettingsConfigDict(env_prefix="AUD_", extra="forbid")

    inbox: Path = Field(default_factory=default_inbox)
    outbox: Path = Field(default_factory=default_outbox)
    state: Path = Field(default_factory=default_state_dir)
    models: Path = Field(default_factory=default_models_dir)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    provider: str = "auto"  # auto | coreml | cuda | cpu (or a full ORT provider name)
    threads_per_worker: int = Field(0, ge=0)  # ONNX Runtime intra-op threads; 0 = cores / workers
    au45: bool = True  # run STAR landmarks and compute AU45 (blink)
    detect_max_side: int = Field(0, ge=0)  # 0 = detect at full resolution (exact)
    detect_every: int = Field(1, ge=1)  # 1 = detect every frame (exact); N: every N-th, follow faces between
    batch_size: int = Field(4, ge=1)  # frames per MTL batch inside a worker (4: fastest, half the memory of 8)
    shard_frames: int = Field(32, ge=1)  # largest shard handed to one worker (shards shrink towards the end)
    shard_retries: int = Field(2, ge=0)  # extra attempts for a shard whose worker died or that timed out
    shard_timeout_seconds: float = Field(1800.0, gt=0)  # a shard running longer: its worker is replaced
    faces: Literal["primary", "all"] = "primary"  # the best face per frame, or every face (with face ids)
    track_gap_frames: int = Field(30, ge=0)  # faces = "all": frames a face may be missing and keep its id
    mirror: bool = False  # hemi-face analysis: left- and right-mirrored CSVs beside the main one
    mirror_videos: bool = False  # with mirror: inspection videos of the mirrored faces and the midline
    csv_style: Literal["aud", "openface2"] = "aud"  # column names and formatting of the CSV
    plots: bool = True  # a PNG beside every CSV
    camera_fx: float | None = Field(None, gt=0)  # camera intrinsics for head pose (pixels); default
    camera_fy: float | None = Field(None, gt=0)  # as OpenFace 2.2: from the frame size
    camera_cx: float | None = None
    camera_cy: float | None = None
    executor: Literal["process", "dask"] = "process"  # where shards run: local processes or a Dask cluster
    dask_scheduler: str | None = None  # executor = "dask": the scheduler's address, tcp://host:8786
    path_map: dict[str, str] = Field(default_factory=dict)  # executor = "dask": {"/Volumes/lab" = "/mnt/lab"}
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    settle_seconds: float = Field(3.0, ge=0)  # size and mtime must be still this long
    rescan_seconds: float = Field(30.0, gt=0)  # periodic inbox rescan (lost events)
    unopenable_grace_seconds: float = Field(60.0, ge=0)  # a still file OpenCV cannot open is taken
    # (and fails with a reason) after this long
    stop_timeout_seconds: float = Field(90.0, ge=0)  # SIGTERM: wait this long for running shards
    follow_symlinks: bool = False
    after_done: Literal["move", "keep"] = "move"  # what happens to a finished input
    log_level: str = "INFO"
    web_port: int = Field(8765, ge=0, le=65535)  # the live page on 127.0.0.1 (`aud open`); 0 = no page

    @field_validator("extensions", mode="before")
    @classmethod
    def _normalise_extensions(cls, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split()]
        return tuple(str(v).lower().lstrip(".") for v in value)

    @model_validator(mode="after")
    def _follow_needs_star(self) -> Settings:
        if self.detect_every > 1 and not self.au45:
            raise ValueError(f"detect_every = {self.detect_every} follows faces with STAR's landmarks, which "
                             "au45 = false (--no-au45) turns off: turn AU45 on or set detect_every = 1")
        return self

    @field_validator("inbox", "outbox", "state", "models", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return Path(os.path.abspath(value.expanduser()))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # flags (init) > environment > TOML (passed in as init defaults by load_settings)
        return (init_settings, env_settings)

    @property
    def socket_path(self) -> Path:
        return self.state / "aud.sock"

    @property
    def database_path(self) -> Path:
        return self.state / "jobs.sqlite3"

    @property
    def coreml_cache_dir(self) -> Path:
        return self.state / "coreml-cache"

    def pipeline_options(self):
        """What a worker's inference pipeline needs from the settings (a core dataclass)."""
        from .core.pipeline import FacesMode, PipelineOptions

        return PipelineOptions(models_dir=self.models, provider=self.provider, workers=self.workers,
                               threads=self.threads_per_worker,
                               au45=self.au45, detect_max_side=self.detect_max_side,
                               detect_every=self.detect_every,
                               batch_size=self.batch_size, faces=FacesMode(self.faces), mirror=self.mirror,
                               cache_dir=self.coreml_cache_dir)

    def output_options(self):
        """How results are written (a core dataclass)."""
        from .core.output import CsvStyle, OutputOptions
        from .core.pipeline import FacesMode

        return OutputOptions(faces=FacesMode(self.faces), csv_style=CsvStyle(self.csv_style), plots=self.plots,
                             mirror=self.mirror, mirror_videos=self.mirror_videos,
                             track_gap_frames=self.track_gap_frames,
                             camera=(self.camera_fx, self.camera_fy, self.camera_cx, self.camera_cy))

    def ensure_dirs(self) -> None:
        for d in (self.inbox, self.outbox, self.state):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o700)


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or wrong; the message says which and why."""


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    # accept both a flat file and one with an [aud] table
    return dict(data.get("aud", data))


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build settings from file, environment and flags (``None`` flags are ignored)."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        file_values = read_toml(Path(config_file))
    elif default_config_file().is_file():
        file_values = read_toml(default_config_file())
    env_names = {k[4:].lower() for k in os.environ if k.startswith("AUD_")}
    values = {k: v for k, v in file_values.items() if k not in env_names}
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        return Settings(**values)
    except Exception as exc:  # pydantic.ValidationError: say it plainly
        raise ConfigError(f"invalid configuration: {exc}") from exc
