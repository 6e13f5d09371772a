"""Tests for the CSV text in pieces (daemon/output/text.py, openface2.openface2_chunks): the pieces are the text
whatever their size, so a long recording is written without holding its whole text."""

from __future__ import annotations

import pytest

from daemon import output
from daemon.core.pipeline import FacesMode
from daemon.output import CsvStyle, OutputOptions, text
from daemon.output.openface2 import header_for, openface2_chunks

from .test_tables import make_results

OPTIONS = OutputOptions(faces=FacesMode.BEST, plots=False, mirror=True)


@pytest.fixture(scope="module")
def tables():
    return output.build_tables(make_results(n=23, failed=(0, 7, 8, 22)), OPTIONS, 640, 360)


@pytest.mark.parametrize("rows", [1, 5, 7, 22, 23, 24, 4096])
def test_pieces_of_any_size_make_the_same_text(tables, rows):
    for name, table in tables.items():
        whole = "".join(text.csv_chunks(table, rows=len(table["frame"]) + 1))
        pieces = list(text.csv_chunks(table, rows=rows))
        assert "".join(pieces) == whole == output.csv_text(table)
        assert len(pieces) == 1 + -(-len(table["frame"]) // rows)  # the header, then a piece per ``rows`` rows
        hemi = name != "main"
        of2_whole = "".join(openface2_chunks(table, header_for(table, hemi), rows=10**6))
        assert "".join(openface2_chunks(table, header_for(table, hemi), rows=rows)) == of2_whole
        assert output.table_text(table, CsvStyle.OPENFACE2, hemi) == of2_whole


def test_an_empty_table_is_its_header_line(tables):
    empty = {name: values[:0] for name, values in tables["main"].items()}
    assert output.csv_text(empty) == ",".join(empty) + "\n"
    assert list(text.csv_chunks(empty)) == [",".join(empty) + "\n"]
    assert output.table_text(empty, CsvStyle.OPENFACE2).count("\n") == 1


def test_a_table_openface2_cannot_write_is_refused_before_any_piece(tables):
    broken = dict(tables["main"])
    del broken["pose_Rx"]
    with pytest.raises(output.openface2.TableError, match="pose_Rx"):
        text.table_chunks(broken, CsvStyle.OPENFACE2)  # not iterated: the refusal comes first
