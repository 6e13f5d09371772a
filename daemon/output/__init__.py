"""Output: what aud makes of a video's measured rows — tables (``tables``), CSV text in aud's style or
OpenFace 2.2's (``text``, ``openface2``), the picture (``plot``) and the result's files (``files``).

It sits above the core: the core measures and ends at rows (``daemon.core``: decode, detect, crop, infer,
post-process); nothing here runs in a worker, and nothing in the core imports this package. Every column name
and threshold comes from ``daemon.core.schema``.

The names below are what the job runner needs in one place (the plot is imported on its own: it loads
matplotlib); ``assemble``/``AssemblyError`` are the core's (``core.assembly``), listed for that caller.
"""

from ..core.assembly import AssemblyError, assemble
from .files import (
           discard_partial,
           inspection_faces,
           output_paths,
           plot_path,
           read_csv,
           side_path,
           sidecar_path,
           write_outputs,
)
from .options import CsvStyle, OutputOptions
from .tables import Table, build_tables, tables_of_written, written_rows
from .text import csv_text, table_text

__all__ = ["AssemblyError", "CsvStyle", "OutputOptions", "Table", "assemble", "build_tables", "csv_text",
           "discard_partial", "inspection_faces", "output_paths", "plot_path", "read_csv", "side_path",
           "sidecar_path", "table_text", "tables_of_written", "write_outputs", "written_rows"]
