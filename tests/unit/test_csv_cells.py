"""core/csv_cells.py: what a spreadsheet would run as a formula is written as text."""

from __future__ import annotations

import csv
import io

import pytest

from core.csv_cells import csv_writer, neutral_cell


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("+12025550100", "+12025550100"),  # a plain number stays dialable
        ("-3", "-3"),
        ("1.5", "1.5"),
        ("Ada", "Ada"),
        ("a=b", "a=b"),
        (None, ""),
        (42, "42"),
    ],
)
def test_neutral_cell(cell: object, written: str) -> None:
    assert neutral_cell(cell) == written


def test_the_writer_neutralises_every_cell_and_reads_back() -> None:
    out = io.StringIO()
    writer = csv_writer(out)
    writer.writerow(["phone_number", "note"])
    writer.writerows([["+12025550100", "=1+1"], ["+12025550101", "@x"]])
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows == [
        ["phone_number", "note"],
        ["+12025550100", "'=1+1"],
        ["+12025550101", "'@x"],
    ]
