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


def test_import_hf_compress_loads_no_data_or_model_loading_internals_until_used():
    code = (
        "import sys, hf_compress\n"
        "heavy = ['datasets', 'scipy', 'transformers.modeling_utils', 'transformers.trainer', 'pandas']\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING\n"
        "print('hf_compress_int8' in AUTO_QUANTIZER_MAPPING)\n"
        "missing = [n for n in hf_compress.__all__ if getattr(hf_compress, n, None) is None]\n"
        "print(missing, 'datasets' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "True", "[] True"]


def test_an_unknown_public_name_is_an_attribute_error():
    import hf_compress

    with pytest.raises(AttributeError, match="no_such_name"):
        hf_compress.no_such_name  # noqa: B018


@pytest.mark.parametrize("argv", [["--help"], ["distill", "--help"], ["distill", "RECIPE"]])
def test_help_and_refusals_load_no_data_or_model_loading_internals(tmp_path, argv):
    recipe = tmp_path / "misspelled.yaml"
    recipe.write_text("temprature: 2.0\n")
    argv = [str(recipe) if a == "RECIPE" else a for a in argv]
    code = (
        "import sys\nfrom hf_compress.cli import main\n"
        f"try:\n    code = main({argv!r})\nexcept SystemExit as exit_:\n    code = exit_.code\n"
        "heavy = ['datasets', 'scipy', 'transformers.modeling_utils', 'transformers.trainer', 'pandas']\n"
        "print(code, [m for m in heavy if m in sys.modules], file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    last = result.stderr.strip().splitlines()[-1]
    assert last in ("0 []", "2 []"), result.stderr[-2000:]
