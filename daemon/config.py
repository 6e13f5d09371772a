"""One typed place for configuration.

Precedence, highest first: command-line flags, ``AUD_*`` environment variables, the TOML file
(``--config F``, else ``<user config dir>/config.toml`` when it exists), then the defaults below.
Every default works on a fresh machine: directories come from platformdirs and are created on start.

Each setting is declared once, as a field of ``Settings``: its type, default and help; ``option(...,
group)`` makes it a command-line option too. ``OPTIONS`` reads those fields into the table the command
line builds its parsers from and turns parsed options back into a service's command line (``daemon/cli``).
The TOML file is read by pydantic-settings' own ``TomlConfigSettingsSource``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import platformdirs
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

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


MODEL, RUN, DAEMON = "model", "run", "daemon"
"""The groups of command-line options: the model set (every command that loads models), a run's options
(``aud extract``, ``aud run`` and the services), the daemon's folders (``aud run`` and the services)."""


def option(default: Any = PydanticUndefined, help: str = "", group: str | None = None, *,
           metavar: str | None = None, default_factory: Callable[[], Any] | None = None, **constraints: Any) -> Any:
    """A setting; with ``group`` also a command-line option of that group (``--name-with-dashes``; a
    boolean that defaults to true is turned off by ``--no-name``, and its help describes that flag)."""
    extra: Any = {"cli": group, "metavar": metavar} if group else None
    if default_factory is not None:
        return Field(default_factory=default_factory, description=help, json_schema_extra=extra, **constraints)
    return Field(default, description=help, json_schema_extra=extra, **constraints)


class Settings(BaseSettings):
    """Everything the daemon and the one-shot command can be told: each setting declared here once, with
    its type, default, help and (for the options a user types) its command-line group."""

    model_config = SettingsConfigDict(env_prefix="AUD_", extra="forbid")

    inbox: Path = option(help="the folder to watch", group=DAEMON, default_factory=default_inbox)
    outbox: Path = option(help="where CSVs go", group=DAEMON, default_factory=default_outbox)
    state: Path = option(help="state directory (job database, socket, logs)", group=DAEMON,
                         default_factory=default_state_dir)
    web_port: int = option(8765, "the live page's port on 127.0.0.1 (`aud open`; 0: no page)", DAEMON, ge=0,
                           le=65535)
    models: Path = option(help="directory holding the model set", group=MODEL, default_factory=default_models_dir)
    provider: str = option("auto", "auto (default), coreml, cuda or cpu (or a full ONNX Runtime provider name)",
                           MODEL)
    workers: int = option(help="worker processes (default: the machine's cores)", group=RUN,
                          default_factory=lambda: os.cpu_count() or 1, ge=1)
    au45: bool = option(True, "skip STAR landmarks and AU45 (much faster)", RUN)
    detect_max_side: int = option(0, "detect faces on a frame scaled to this many pixels (0 = full resolution)",
                                  RUN, ge=0)
    detect_every: int = option(1, "detect faces on every N-th frame only and follow them with their landmarks in "
                                  "between (1 = every frame, the default; needs AU45: refused with --no-au45)",
                               RUN, metavar="N", ge=1)
    batch_size: int = option(4, "frames per MTL batch", RUN, ge=1)  # 4: fastest, half the memory of 8
    threads_per_worker: int = option(0, "ONNX Runtime threads per worker (default: the machine's cores / workers)",
                                     RUN, ge=0)
    faces: Literal["primary", "best", "all"] = option(
        "primary", "primary (default): the person tracked longest, one row a frame; best: the best face of each "
                   "frame (OpenFace 3.0's choice); all: every face, with ids that follow each person", RUN)
    mirror: bool = option(False, "hemi-face analysis: left- and right-mirrored CSVs beside the main one", RUN)
    mirror_videos: bool = option(False, "with --mirror: inspection videos of the mirrored faces and the midline",
                                 RUN)
    csv_style: Literal["aud", "openface2"] = option(
        "aud", "CSV column names and formatting: aud's (default) or OpenFace 2.2's", RUN)
    # AU model families: OpenFace 3.0's (MTL) and/or OpenFace 2.2's SVR/SVM (17 + 18 AUs); None: "both" when the
    # model set holds the OpenFace 2.2 files and AU45 is on, else "openface3" (openface2au/options.py)
    au_models: Literal["openface3", "openface2", "both"] | None = option(
        None, "AU models: OpenFace 3.0's, OpenFace 2.2's (17 intensities, 18 occurrences) or both (default: both "
              "when `aud models fetch` brought the OpenFace 2.2 files and AU45 is on, else openface3)", RUN)
    plots: bool = option(True, "no PNG plot beside each CSV", RUN)
    executor: Literal["process", "dask"] = option(
        "process", "where shards run: local worker processes (default) or a Dask cluster", RUN)
    dask_scheduler: str | None = option(None, "with --executor dask: the scheduler, tcp://host:8786", RUN)
    shard_frames: int = Field(32, ge=1)  # largest shard handed to one worker (shards shrink towards the end)
    shard_retries: int = Field(2, ge=0)  # extra attempts for a shard whose worker died or that timed out
    shard_timeout_seconds: float = Field(1800.0, gt=0)  # a shard running longer: its worker is replaced
    track_gap_frames: int = Field(30, ge=0)  # faces "all"/"primary": frames a face may be missing and keep its id
    camera_fx: float | None = Field(None, gt=0)  # camera intrinsics for head pose (pixels); default
    camera_fy: float | None = Field(None, gt=0)  # as OpenFace 2.2: from the frame size
    camera_cx: float | None = None
    camera_cy: float | None = None
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

    @model_validator(mode="after")
    def _mirror_videos_need_mirror(self) -> Settings:
        if self.mirror_videos and not self.mirror:
            raise ValueError("--mirror-videos (mirror_videos = true) shows the mirrored faces of hemi-face "
                             "analysis, which is off: add --mirror (mirror = true) or drop --mirror-videos")
        return self

    def au_models_in_use(self) -> str:
        """``au_models`` resolved against the model set, checked (AuModelsError says what to change)."""
        from .core.openface2au.options import check_au_models, default_au_models

        chosen = self.au_models or default_au_models(self.models, self.au45)
        check_au_models(chosen, self.au45, self.models)
        return chosen

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
        """Flags (init) > environment (AUD_*) > the TOML file ``load_settings`` was given > defaults."""
        config_file = _CONFIG_FILE.get()
        if config_file is None:
            return (init_settings, env_settings)
        given = set(init_settings()) | set(env_settings())  # replace the file's value whole (no dict merge)
        return (init_settings, env_settings, AudTomlSource(settings_cls, config_file, shadowed=given))

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
                               cache_dir=self.coreml_cache_dir, au_models=self.au_models_in_use())

    def output_options(self):
        """How results are written (a core dataclass)."""
        from .core.pipeline import FacesMode
        from .output import CsvStyle, OutputOptions

        return OutputOptions(faces=FacesMode(self.faces), csv_style=CsvStyle(self.csv_style), plots=self.plots,
                             mirror=self.mirror, mirror_videos=self.mirror_videos,
                             track_gap_frames=self.track_gap_frames, detect_every=self.detect_every,
                             camera=(self.camera_fx, self.camera_fy, self.camera_cx, self.camera_cy))


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or wrong; the message says which and why."""


_CONFIG_FILE: ContextVar[Path | None] = ContextVar("aud_config_file", default=None)


class AudTomlSource(TomlConfigSettingsSource):
    """pydantic-settings' TOML source, with aud's two additions: a flat file or one with an ``[aud]``
    table, a missing or invalid file said plainly, and a setting given by a higher source replacing the
    file's whole (pydantic-settings would merge a table such as ``path_map`` key by key)."""

    def __init__(self, settings_cls: type[BaseSettings], toml_file: Path, shadowed: set[str]):
        self.shadowed = shadowed
        super().__init__(settings_cls, toml_file)

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in super().__call__().items() if k not in self.shadowed}

    def _read_file(self, file_path: Path) -> dict[str, Any]:  # type: ignore[override]
        try:
            with open(file_path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {file_path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file_path} is not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"config file {file_path} cannot be read: {exc.strerror or exc}") from exc
        return dict(data.get("aud", data))


def config_file_for(config_file: Path | None) -> Path | None:
    """The TOML file a run reads: the one named, else the user's default one when it exists."""
    if config_file is not None:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    default = default_config_file()
    return default if default.is_file() else None


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build settings from flags, the environment and the TOML file (``None`` flags are ignored)."""
    given = {k: v for k, v in flags.items() if v is not None}
    path = config_file_for(config_file)
    token = _CONFIG_FILE.set(path)
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError("invalid configuration: " + explain(exc, given, path)) from None
    finally:
        _CONFIG_FILE.reset(token)


# --- the options a user types, from the fields above ----------------------------------------------

@dataclass(frozen=True)
class OptionSpec:
    """One command-line option, read off its ``Settings`` field: its name, flag, help and kind."""

    name: str
    group: str
    help: str
    flag: str
    action: Literal["value", "on", "off"]  # takes a value; --name sets true; --no-name sets false
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    def argv(self, value: Any) -> list[str]:
        """The option as a command line gives it (paths absolute: a service starts elsewhere)."""
        if self.action != "value":
            return [self.flag]
        if isinstance(value, Path):
            value = os.path.abspath(value.expanduser())
        return [self.flag, str(value)]


def _spec(name: str, info: FieldInfo) -> OptionSpec:
    extra = info.json_schema_extra
    assert isinstance(extra, dict)
    annotation = info.annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    if annotation is bool:
        on = info.default is not True
        return OptionSpec(name, str(extra["cli"]), info.description or "",
                          "--" + ("" if on else "no-") + name.replace("_", "-"), "on" if on else "off")
    literal = annotation if get_origin(annotation) is Literal else args[0] if len(args) == 1 else None
    if get_origin(literal) is Literal:  # a choice (or None: the default decides)
        choices: tuple[str, ...] | None = tuple(str(a) for a in get_args(literal))
        kind: Any = None
    else:
        choices = None
        kind = args[0] if args else annotation
        kind = None if kind is str else kind
    return OptionSpec(name, str(extra["cli"]), info.description or "", "--" + name.replace("_", "-"), "value",
                      kind, choices, extra.get("metavar"))  # type: ignore[arg-type]


OPTIONS: dict[str, OptionSpec] = {name: _spec(name, info) for name, info in Settings.model_fields.items()
                                  if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("cli")}
"""Every command-line option that is a setting, by setting name."""


def options(*groups: str) -> list[OptionSpec]:
    """The options of ``groups``, group by group, each in its fields' order."""
    return [o for group in groups for o in OPTIONS.values() if o.group == group]


# --- validation errors in the words the user typed ------------------------------------------------

def explain(exc: ValidationError, given: dict[str, Any], config_file: Path | None) -> str:
    """pydantic's errors, each naming where the value came from as the user wrote it (``--detect-every
    0``, ``AUD_DETECT_EVERY=0``, ``detect_every = 0`` in the file) and what is wrong, without links."""
    lines = []
    for error in exc.errors(include_url=False):
        text = str(error["msg"]).removeprefix("Value error, ")
        loc = error.get("loc") or ()
        if not loc:
            lines.append(text)
            continue
        name = str(loc[0])
        value = error.get("input")
        lines.append(f"{_origin(name, value, given, config_file)}: {text[:1].lower() + text[1:]}")
    return "; ".join(lines)


def _origin(name: str, value: Any, given: dict[str, Any], config_file: Path | None) -> str:
    env = f"AUD_{name.upper()}"
    spec = OPTIONS.get(name)
    if name in given and spec is not None:
        return spec.flag if spec.action != "value" else f"{spec.flag} {given[name]}"
    if name not in given and env in os.environ:
        return f"{env}={os.environ[env]}"
    if name not in given and config_file is not None:
        return f"{name} = {value!r} in {config_file}"
    return f"{name} = {value!r}"
