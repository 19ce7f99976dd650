"""The README's "Model families" table is the one tests/support_table.py generates from the matrix's cases."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests import support_table
from tests.test_families import CASES, FEATURES, Refusal

ROOT = Path(__file__).resolve().parent.parent


def test_readme_table_is_the_one_generated_from_the_matrix_cases():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert support_table.readme_table(readme) == support_table.render(CASES, FEATURES), (
        "README.md's Model families table differs from tests/test_families.py's cases: run "
        "python -m tests.support_table --write"
    )


def rows(table: str) -> dict[str, list[str]]:
    """Family name -> its cells, in feature order."""
    lines = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| family")]
    return {cells[0]: cells[1:] for cells in (line.strip("| ").split(" | ") for line in lines)}


def test_every_case_has_its_cell_and_every_refusal_its_reason():
    table = rows(support_table.render(CASES, FEATURES))
    assert list(table) == list(support_table.FAMILY_NAMES.values())
    for case in CASES:
        text = table[support_table.FAMILY_NAMES[case.family]][list(FEATURES).index(case.feature)]
        if case.refusal is None:
            assert "works" in text, (case.id, text)
        else:
            assert f"refused{'' if text.startswith('refused:') else ' for'}" in text and case.refusal.reason in text


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            "refuse one head",
            "works for sequence classification, token classification, embeddings; refused for QA: a new reason",
        ),
        ("refuse every head", "refused: a new reason"),
        ("accept the refused head", "works"),
    ],
)
def test_a_changed_case_changes_the_table_and_so_fails_the_readme_check(change, expected):
    family, feature = ("electra", "albert") if change == "accept the refused head" else ("bert", "int8")
    new = Refusal("a new reason", "new")
    changed_cases = []
    for case in CASES:
        if (case.family, case.feature) == (family, feature):
            if change == "refuse one head" and case.head == "question answering":
                case = dataclasses.replace(case, refusal=new)
            elif change == "refuse every head":
                case = dataclasses.replace(case, refusal=new)
            elif change == "accept the refused head":
                case = dataclasses.replace(case, refusal=None)
        changed_cases.append(case)
    table = support_table.render(changed_cases, FEATURES)
    assert table != support_table.render(CASES, FEATURES)
    cell = rows(table)[support_table.FAMILY_NAMES[family]][list(FEATURES).index(feature)]
    assert cell == expected


def test_markers_are_required_and_writing_replaces_only_the_table():
    with pytest.raises(ValueError, match="family-table:start"):
        support_table.readme_table("# README without the table\n")
    text = f"before\n{support_table.START}\nold table\n{support_table.END}\nafter\n"
    written = support_table.with_table(text, "| new |")
    assert written == f"before\n{support_table.START}\n| new |\n{support_table.END}\nafter\n"
    assert support_table.readme_table(written) == "| new |"
