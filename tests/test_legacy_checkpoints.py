"""Checkpoints saved by an earlier hf_compress still load, with the logits they had when saved.

tests/fixtures/legacy/<kind>/ holds one tiny model per artifact kind, saved by the main branch at the commit its
make_legacy.py names (before the methods/ + format/ restructuring, issue #33), and expected.json: a fixed input and
the logits that code produced for it. Here the current code loads each with `from_pretrained` after
`import hf_compress`, as a user upgrading would, and must give the same logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

import hf_compress

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
# kind -> the class names the reloaded model must hold (its layout really restored, not loaded into something else)
KINDS: dict[str, set[str]] = {
    "int8": {"Int8Linear", "Int8Embedding"},
    "int8-per-token": {"Int8Linear", "Int8Embedding"},
    "int8-smoothed": {"Int8Linear", "Int8Embedding"},
    "int8-outliers": {"Int8Linear", "Int8Embedding"},
    "int8-gptq": {"Int8Linear", "Int8Embedding"},
    "int8-low-rank": {"Int8LowRankLinear", "Int8Embedding"},
    "low-rank": {hf_compress.LowRankLinear.__name__},
    "low-bit": {hf_compress.LowBitLinear.__name__, hf_compress.LowBitEmbedding.__name__},
    "low-bit-grouped": {hf_compress.LowBitLinear.__name__, hf_compress.LowBitEmbedding.__name__},
    "albert": {"AlbertForSequenceClassification"},
    "vocabulary": {"BertForSequenceClassification"},
    "ffn-sliced": {"BertForSequenceClassification"},
}
# int8 matmuls accumulate in int32 and the float parts run the same ops in the same order: the legacy logits are
# reproduced to float rounding. Measured (AVX2, saved with 1 thread, loaded with 2): max |difference| 0.0, every kind.
TOLERANCE = 1e-5


def test_every_kind_has_its_fixture():
    folders = {path.parent.name for path in LEGACY.glob("*/expected.json")}
    assert folders == set(KINDS), f"fixtures {sorted(folders)} vs kinds {sorted(KINDS)}: rerun make_legacy.py"


@pytest.mark.parametrize("kind", list(KINDS))
def test_legacy_checkpoint_loads_with_its_logits(kind):
    directory = LEGACY / kind
    expected = json.loads((directory / "expected.json").read_text())
    config = json.loads((directory / "config.json").read_text())
    (architecture,) = config["architectures"]
    assert architecture == expected["class"]
    model = transformers.AutoModelForSequenceClassification.from_pretrained(directory).eval()
    assert type(model).__name__ == architecture
    names = {type(m).__name__ for m in model.modules()}
    assert KINDS[kind] <= names, f"{kind}: reloaded with {sorted(names)}"
    if kind == "vocabulary":  # its pruned tokenizer reloads too and gives the ids the legacy model saw
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
        assert len(tokenizer) == model.config.vocab_size < 200
        assert tokenizer(expected["texts"], padding=True)["input_ids"] == expected["input_ids"]
    batch = {name: torch.tensor(expected[name]) for name in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logits = model(**batch).logits
    want = torch.tensor(expected["logits"])
    assert want.abs().max() > 0.1  # a non-trivial output
    difference = (logits - want).abs().max().item()
    assert difference <= TOLERANCE, f"{kind}: max |logits - legacy logits| = {difference}"
