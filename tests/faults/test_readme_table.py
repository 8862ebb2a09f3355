"""The README's reliability table is the one made from the fault and bad-input cases the tests run."""

from pathlib import Path

from .cases import table

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- reliability-table:start (python -m tests.faults.cases) -->", "<!-- reliability-table:end -->"


def test_readme_reliability_table_is_current() -> None:
    text = README.read_text()
    assert START in text and END in text, f"README.md lacks the {START} ... {END} markers"
    current = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert current == table(), "README's reliability table is out of date: paste `python -m tests.faults.cases`"
