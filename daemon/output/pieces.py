"""A table's text in pieces: the header line, then its lines a chunk of rows at a time, so that a long
recording's CSV is never held whole (each cell is a Python string only while its piece is made). Both CSV
styles (``text``, ``openface2``) write through it, each with its own cell formats and separators."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np


def lines_in_pieces(head: str, columns: Mapping[str, np.ndarray], cells: Callable[[str, np.ndarray], list[str]],
                    join: Callable[[Sequence[str]], str], rows: int) -> Iterator[str]:
    """``head``, then the table's lines ``rows`` rows at a time: each column's slice made text by
    ``cells(name, values)``, each row's cells joined by ``join`` (either CSV style's)."""
    yield head
    n = min((len(v) for v in columns.values()), default=0)
    for start in range(0, n, rows):
        texts = [cells(name, values[start:start + rows]) for name, values in columns.items()]
        yield "\n".join(join(row) for row in zip(*texts)) + "\n"
