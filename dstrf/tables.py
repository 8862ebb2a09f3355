"""The one text-table formatter: every table dstrf prints (the train summary, ``dstrf-aggregate``,
``dstrf-inspect``, the nonlinearity table) goes through :func:`format_table`, so they agree on how a value that
does not apply, a NaN and a long table look.

Cells: ``None`` (or a key a row lacks) prints ``-`` -- the value does not apply or is unknown; a float NaN
prints ``nan`` -- a computed value that is undefined must show as such, never as a blank or a 0; other floats
with ``float_format``; everything else with ``str``. Text columns are left-aligned, numbers right-aligned.
Tables longer than ``max_rows`` show their first ``max_rows // 2`` and last ``max_rows // 4`` rows around a
``...`` line (the full table is always in a file beside).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:  # pandas is imported by whoever has a DataFrame: `import dstrf` stays light
    import pandas as pd

__all__ = ["format_table", "format_cell", "elided"]


def format_cell(value: Any, float_format: str = ".3f", missing: str = "-") -> str:
    """One cell: ``missing`` for None, ``nan`` for a NaN, ``float_format`` for other floats, else ``str``."""
    if value is None or type(value).__name__ == "NAType":  # pandas.NA
        return missing
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, float_format)
    if hasattr(value, "dtype") and getattr(value, "shape", None) == ():  # a numpy scalar
        return format_cell(value.item(), float_format, missing)
    return str(value)


def elided(n: int, max_rows: int | None) -> list[int | None]:
    """Row positions to show of ``n`` rows: all of them when ``n <= max_rows`` (or ``max_rows`` is None), else
    the first ``max_rows // 2``, ``None`` (for the ``...`` line) and the last ``max_rows // 4``."""
    if max_rows is None or n <= max_rows:
        return list(range(n))
    return [*range(max_rows // 2), None, *range(n - max_rows // 4, n)]


def _is_frame(rows: object) -> TypeGuard[pd.DataFrame]:
    """Whether ``rows`` is a DataFrame, by duck typing (pandas is not imported to ask ``isinstance``)."""
    return hasattr(rows, "to_dict") and hasattr(rows, "columns")


def format_table(
    rows: pd.DataFrame | Sequence[Mapping[str, Any]],
    columns: Mapping[str, str] | Sequence[str] | None = None,
    *,
    float_format: str = ".3f",
    max_rows: int | None = None,
    footer: Sequence[Mapping[str, Any]] = (),
    indent: str = "",
) -> str:
    """A fixed-width text table.

    Parameters
    ----------
    rows : DataFrame or sequence of dicts
        The body, one row per line.
    columns : mapping of key -> title, or sequence of keys, optional
        Which columns, in order, and their titles (default: every column, titled by its key).
    float_format : str
        Format spec of floats (``".3f"``: 3 decimals; ``".4g"``: 4 significant digits).
    max_rows : int, optional
        Elide the middle of longer bodies (see :func:`elided`); ``footer`` rows are always shown.
    footer : sequence of dicts
        Rows printed after the body (e.g. the mean); keys they lack are left blank, not ``-``.
    indent : str
        Prefix of every line.
    """
    records: list[dict[str, Any]]
    if _is_frame(rows):
        records = rows.to_dict("records")
        frame_keys = list(rows.columns)
    else:
        records = [dict(r) for r in rows]
        frame_keys = None
    if columns is None:
        keys = frame_keys if frame_keys is not None else list(dict.fromkeys(k for r in records for k in r))
        columns = {k: str(k) for k in keys}
    elif not isinstance(columns, Mapping):
        columns = {k: str(k) for k in columns}
    keys = list(columns)

    def cells(row: Mapping[str, Any], blank_missing: bool) -> list[str]:
        return ["" if blank_missing and k not in row else format_cell(row.get(k), float_format) for k in keys]

    body = [cells(records[i], False) if i is not None else None for i in elided(len(records), max_rows)]
    tail = [cells(r, True) for r in footer]
    shown = [c for c in body if c is not None] + tail
    widths = [max([len(columns[k])] + [len(c[j]) for c in shown]) for j, k in enumerate(keys)]
    # text columns read from the left; a column is text when every value it has is a string
    text = [
        all(isinstance(r.get(k), str) for r in records if r.get(k) is not None)
        and any(isinstance(r.get(k), str) for r in records)
        for k in keys
    ]

    def line(values: Sequence[str]) -> str:
        return (
            indent + "  ".join(v.ljust(w) if left else v.rjust(w) for v, w, left in zip(values, widths, text))
        ).rstrip()

    lines = [line([columns[k] for k in keys])]
    lines += [line(c) if c is not None else indent + "..." for c in body]
    lines += [line(c) for c in tail]
    return "\n".join(lines)
