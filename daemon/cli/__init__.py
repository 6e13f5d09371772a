"""The ``aud`` command line: the parser and its commands (``main``), the control-socket client
(``client``: status, tail, submit, cancel) and the launchd/systemd services (``service``)."""

from .main import (
    DAEMON_SETTINGS,
    RUN_SETTINGS,
    build_parser,
    err,
    main,
    out,
    service_run_args,
    service_settings,
    settings_from,
)

__all__ = ["DAEMON_SETTINGS", "RUN_SETTINGS", "build_parser", "err", "main", "out", "service_run_args",
           "service_settings", "settings_from"]
