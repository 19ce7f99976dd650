"""The command line answers help, argument and recipe errors without loading what only training needs."""

import subprocess
import sys

import pytest

from hf_compress.cli import main


def _help(capsys, command: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def _titles(text: str) -> list[str]:
    return [line.split(":")[0] for line in text.splitlines() if line and not line[0].isspace() and line.endswith(":")]


@pytest.mark.parametrize(
    "command,groups",
    [
        ("distill", ["RecipeArguments", "distillation", "vocabulary"]),
        ("prune", ["RecipeArguments", "pruning", "vocabulary"]),
        (
            "compress",
            ["RecipeArguments", "albert", "low_rank", "distillation", "pruning", "low_bit", "int8", "vocabulary"],
        ),
    ],
)
def test_help_lists_our_fields_first_grouped_by_technique(capsys, command, groups):
    from hf_compress.methods import METHODS

    text = _help(capsys, command)
    titles = _titles(text)
    assert titles[:2] == ["positional arguments", "options"]
    assert titles[2:] == [*groups, "transformers TrainingArguments (Trainer's own options)"]
    order = [m.name for m in METHODS]
    assert [order.index(g) for g in groups[1:]] == sorted(order.index(g) for g in groups[1:])  # the table's order
    text = text[text.index("\npositional arguments:") :]  # the listing, after the usage line naming every flag
    generic = text.index("transformers TrainingArguments (Trainer's own options):")
    assert text.index("  --max_length") < generic and text.index("  --per_device_train_batch_size") > generic
    if command != "prune":
        assert text.index("  --temperature") < text.index("pruning:" if command == "compress" else "vocabulary:")


HEAVY = [
    "datasets",
    "scipy",
    "transformers.modeling_utils",
    "transformers.trainer",
    "pandas",
    "transformers.quantizers",
]


def test_import_hf_compress_loads_no_data_or_model_loading_internals_until_used(tmp_path):
    from hf_compress.methods.int8.transform import quantize_
    from tests.testing_utils import tiny_bert

    quantize_(tiny_bert()).save_pretrained(tmp_path / "int8")
    code = (
        "import sys, hf_compress\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
        # Our loaders join from_pretrained's when transformers loads its quantizers (format/registration.py).
        "from transformers import AutoModelForSequenceClassification\n"
        "from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING\n"
        "print('hf_compress_int8' in AUTO_QUANTIZER_MAPPING)\n"
        f"model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / 'int8')!r})\n"
        "print(type(model.bert.encoder.layer[0].output.dense).__name__)\n"
        "missing = [n for n in hf_compress.__all__ if getattr(hf_compress, n, None) is None]\n"
        "print(missing, 'datasets' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "True", "Int8Linear", "[] True"]


def test_an_unknown_public_name_is_an_attribute_error():
    import hf_compress

    with pytest.raises(AttributeError, match="no_such_name"):
        hf_compress.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["distill", "--help"], ["distill", "MISSPELLED"], ["distill", "RECIPE", "--alpha", "3"]],
    ids=["help", "distill-help", "misspelled-key", "bad-value"],
)
def test_help_and_refusals_load_no_data_or_model_loading_internals(tmp_path, argv):
    from tests.test_bad_inputs import _recipe

    misspelled = tmp_path / "misspelled.yaml"
    misspelled.write_text("temprature: 2.0\n")
    paths = {"MISSPELLED": str(misspelled), "RECIPE": _recipe(tmp_path) if "RECIPE" in argv else None}
    argv = [paths.get(a) or a for a in argv]
    code = (
        "import sys\nfrom hf_compress.cli import main\n"
        f"try:\n    code = main({argv!r})\nexcept SystemExit as exit_:\n    code = exit_.code\n"
        f"print(code, [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    last = result.stderr.strip().splitlines()[-1]
    assert last in ("0 []", "2 []"), result.stderr[-2000:]
