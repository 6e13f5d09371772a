"""Where a video is on a cluster worker: the daemon's path, rewritten by prefix for machines that mount
the shared volume elsewhere (``{"/Volumes/lab": "/mnt/lab"}``: the Mac's mount point, then the Linux
box's).

A worker tries the rewritten path first and the daemon's own path second, so one map serves a mixed
cluster: a Linux worker finds ``/mnt/lab/...``, a Mac worker (which has no ``/mnt/lab``) finds
``/Volumes/lab/...`` as it is. Prefixes match whole path components (``/Volumes/lab`` does not rewrite
``/Volumes/lab2/x``) and the longest matching prefix wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


class PathMapError(ValueError):
    """A ``path_map`` entry is not a pair of absolute paths; the message names the entry."""


def _normal(path: str) -> str:
    """``path`` without trailing slashes (the root stays ``/``)."""
    return path.rstrip("/") or "/"


@dataclass(frozen=True)
class PathMap:
    rules: tuple[tuple[str, str], ...] = ()  # (daemon's prefix, worker's prefix), longest first

    @classmethod
    def parse(cls, mapping: Mapping[str, str] | None, source: str = "path_map") -> PathMap:
        """Check and normalise a ``{daemon prefix: worker prefix}`` table; ``source`` names it in errors."""
        rules = []
        for key, value in (mapping or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise PathMapError(f"{source}: entry {key!r} = {value!r}: both sides must be strings (paths)")
            for side in (key, value):
                if not side.startswith("/"):
                    raise PathMapError(f"{source}: entry {key!r} = {value!r}: {side!r} is not an absolute path")
            rules.append((_normal(key), _normal(value)))
        return cls(tuple(sorted(rules, key=lambda rule: len(rule[0]), reverse=True)))

    def apply(self, path: str) -> str | None:
        """``path`` with its longest mapped prefix replaced, or None when no prefix matches."""
        for src, dst in self.rules:
            if src == "/":
                rest = path[1:] if path.startswith("/") else None
            elif path == src:
                rest = ""
            elif path.startswith(src + "/"):
                rest = path[len(src) + 1:]
            else:
                rest = None
            if rest is not None:
                return os.path.join(dst, rest) if rest else dst
        return None

    def candidates(self, path: str) -> list[str]:
        """Where to look for ``path`` on a worker, in order: the mapped path, then the path as given."""
        mapped = self.apply(path)
        return [path] if mapped is None or mapped == path else [mapped, path]

    def locate(self, path: str) -> str | None:
        """The first candidate that exists on this machine, or None."""
        return next((p for p in self.candidates(path) if os.path.exists(p)), None)
