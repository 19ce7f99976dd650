"""The README's "Model families" table, generated from the cases of the family matrix test (tests/test_families.py).

Each cell says what the matrix asserts for that family and feature over the three task heads: "works" (the case
builds, trains where it trains, saves, and reloads in a fresh process with the same logits) or the documented
refusal. The table is never edited by hand; tests/test_support_table.py fails when README.md and the cases differ.

Usage, from the repository root:
    python -m tests.support_table            print the table
    python -m tests.support_table --write    write it into README.md, between the markers
    python -m tests.support_table --check    exit 1 when README.md's table is not the generated one
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys

from tests.test_families import CASES, FEATURES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
START, END = "<!-- family-table:start -->", "<!-- family-table:end -->"
FAMILY_NAMES = {
    "bert": "BERT",
    "roberta": "RoBERTa",
    "xlm-roberta": "XLM-RoBERTa",
    "electra": "ELECTRA",
    "deberta-v2": "DeBERTa-v2",
    "distilbert": "DistilBERT",
    "mpnet": "MPNet",
}
HEAD_NAMES = {
    "sequence classification": "sequence classification",
    "token classification": "token classification",
    "question answering": "QA",
    "sentence embedding": "embeddings",
}


def cell(cases: list) -> str:
    """One family × feature cell: 'works', 'refused: <reason>', or per group of heads when the heads differ."""
    groups: dict[str | None, list[str]] = {}  # refusal reason (None: works) -> heads
    for case in cases:
        groups.setdefault(case.refusal.reason if case.refusal else None, []).append(HEAD_NAMES[case.head])
    if len(groups) == 1:
        reason = next(iter(groups))
        return "works" if reason is None else f"refused: {reason}"
    return "; ".join(
        f"works for {', '.join(heads)}" if reason is None else f"refused for {', '.join(heads)}: {reason}"
        for reason, heads in groups.items()
    )


def render(cases: list, features: dict) -> str:
    """The Markdown table (families × features) and its legend (each feature's case, from its docstring)."""
    families = list(dict.fromkeys(case.family for case in cases))
    heads = list(dict.fromkeys(case.head for case in cases))
    lines = [
        "| family | " + " | ".join(title for title, _ in features.values()) + " |",
        "|---" * (len(features) + 1) + "|",
    ]
    for family in families:
        cells = [cell([c for c in cases if c.family == family and c.feature == feature]) for feature in features]
        lines.append(f"| {FAMILY_NAMES.get(family, family)} | " + " | ".join(cells) + " |")
    lines += ["", f"Each cell covers the {', '.join(heads[:-1])} and {heads[-1]} heads. The case behind each column:"]
    for title, function in features.values():
        lines.append(f"- {title}: {' '.join(inspect.getdoc(function).split())}")
    return "\n".join(lines)


def generated() -> str:
    """The table for the matrix as it is now."""
    return render(CASES, FEATURES)


def readme_table(text: str) -> str:
    """What README.md holds between the markers (ValueError when they are missing)."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"README.md needs exactly one {START} ... {END} block")
    return text[text.index(START) + len(START) : text.index(END)].strip("\n")


def with_table(text: str, table: str) -> str:
    """README.md's text with `table` between the markers."""
    readme_table(text)
    return text[: text.index(START) + len(START)] + "\n" + table + "\n" + text[text.index(END) :]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="write the table into README.md")
    action.add_argument("--check", action="store_true", help="exit 1 when README.md's table differs")
    args = parser.parse_args()
    table = generated()
    if not (args.write or args.check):
        print(table)
        return 0
    with open(README, encoding="utf-8") as f:
        text = f.read()
    if args.check:
        same = readme_table(text) == table
        print("README.md's family table is up to date" if same else "README.md's family table differs: run --write")
        return 0 if same else 1
    with open(README, "w", encoding="utf-8") as f:
        f.write(with_table(text, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
