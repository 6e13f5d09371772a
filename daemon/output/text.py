"""A table as CSV text: aud's style (the schema's names, full precision) or OpenFace 2.2's (``openface2``)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..core.schema import INTEGER_COLUMNS, TEXT_COLUMNS, TIMESTAMP
from .options import CsvStyle


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


def csv_text(table: Mapping[str, np.ndarray]) -> str:
    columns = list(table)
    cells = [_format(c, np.asarray(table[c])) for c in columns]
    lines = [",".join(columns)] + [",".join(row) for row in zip(*cells)]
    return "\n".join(lines) + "\n"


def table_text(table: Mapping[str, np.ndarray], style: CsvStyle, hemi: bool = False) -> str:
    """``table`` in ``style``; ``hemi``: a hemi-face table (``schema.MIRROR_COLUMNS``: no pose, no landmarks)."""
    if style == CsvStyle.OPENFACE2:
        from .openface2 import header_for, openface2_text

        return openface2_text(table, header_for(table, hemi))
    return csv_text(table)
