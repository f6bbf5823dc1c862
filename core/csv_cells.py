"""CSV that Dialer writes, safe to open in a spreadsheet (CSV injection, OWASP).

Recipients' fields come from clients (a CSV upload, a JSON body): a cell such as
`=HYPERLINK("http://evil.example",...)` or `@SUM(...)` is stored as given, and a spreadsheet
opening an export of it would run it as a formula. Every CSV Dialer writes goes through
`csv_writer`, which neutralises such cells by prefixing a single quote, as OWASP recommends.
There is no CSV export yet: the recipients export of a campaign (the call-control issue) is
meant to write its rows with it.

A cell that is a plain number (`+12025550100`, `-3`, `1.5`) is left as it is: a spreadsheet
reads it as that number, not as a formula, and a phone number must stay dialable."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import IO, Any

# What a spreadsheet takes as the start of a formula (Excel, LibreOffice, Google Sheets),
# tab and carriage return included: some strip them first.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def neutral_cell(value: Any) -> str:
    """The cell as text, with a leading `'` when a spreadsheet would read it as a formula."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


class SafeCSVWriter:
    """csv.writer whose every cell goes through neutral_cell."""

    def __init__(self, stream: IO[str]) -> None:
        self._writer = csv.writer(stream)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([neutral_cell(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(stream: IO[str]) -> SafeCSVWriter:
    return SafeCSVWriter(stream)
