"""A table as CSV text: aud's style (the schema's names, full precision) or OpenFace 2.2's (``openface2``)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np

from ..core.schema import INTEGER_COLUMNS, TEXT_COLUMNS, TIMESTAMP
from .options import CHUNK_ROWS, CsvStyle
from .pieces import lines_in_pieces


def _format(name: str, values: np.ndarray) -> list[str]:
    if name in TEXT_COLUMNS:
        return [str(v) for v in values]
    # Python floats (``tolist``) format several times faster than NumPy scalars, to the same text
    if name == TIMESTAMP:
        return [format(v, ".6f") for v in values.tolist()]
    if name in INTEGER_COLUMNS:
        cells = [str(int(v)) if math.isfinite(v) else "" for v in values.tolist()]
    else:  # float32 measurements keep their 9 significant digits (enough to round-trip a float32)
        cells = [format(v, ".9g") for v in values.tolist()]
        for i in np.flatnonzero(~np.isfinite(values)).tolist():
            cells[i] = ""
    return cells


def csv_chunks(table: Mapping[str, np.ndarray], rows: int = CHUNK_ROWS) -> Iterator[str]:
    """The CSV text of ``table`` in pieces: the header line, then the lines of ``rows`` rows at a time (a
    long recording's text is never held whole: each cell is a Python string while its piece is made)."""
    columns = {c: np.asarray(table[c]) for c in table}
    return lines_in_pieces(",".join(columns) + "\n", columns, _format, ",".join, rows)


def csv_text(table: Mapping[str, np.ndarray]) -> str:
    return "".join(csv_chunks(table))


def table_chunks(table: Mapping[str, np.ndarray], style: CsvStyle, hemi: bool = False) -> Iterator[str]:
    """``table`` in ``style``, in pieces (``csv_chunks``); ``hemi``: a hemi-face table (``schema.MIRROR_COLUMNS``:
    no pose, no landmarks). A table the style cannot write raises here, before the first piece."""
    if style == CsvStyle.OPENFACE2:
        from .openface2 import header_for, openface2_chunks

        return openface2_chunks(table, header_for(table, hemi))
    return csv_chunks(table)


def table_text(table: Mapping[str, np.ndarray], style: CsvStyle, hemi: bool = False) -> str:
    """``table`` in ``style`` as one string (``table_chunks`` joined)."""
    return "".join(table_chunks(table, style, hemi))
