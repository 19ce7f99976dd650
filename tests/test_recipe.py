import glob
import os

import pytest

from hf_compress.cli import RECIPE_COMMANDS, main
from hf_compress.cli.recipe import RecipeArguments, parse_recipe, resolve_model_path
from hf_compress.trainer.distillation_args import DistillationTrainingArguments

ROOT = os.path.dirname(os.path.dirname(__file__))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "recipes", "*.yaml")))


def command_for(recipe_path: str) -> str:
    """The CLI command a recipe is written for, from its `# Run: hf-compress <command>` line."""
    with open(recipe_path) as f:
        for line in f:
            if "hf-compress " in line:
                return line.split("hf-compress ")[1].split()[0]
    raise AssertionError(f"{recipe_path} does not say which hf-compress command runs it")


def test_there_are_recipes():
    assert any(p.endswith("quickstart.yaml") for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_every_recipe_parses(path, tmp_path):
    command = command_for(path)
    args_class = RECIPE_COMMANDS[command][0]
    recipe, args = parse_recipe(path, ["--output_dir", str(tmp_path)], RecipeArguments, args_class)
    assert isinstance(args, args_class)
    assert args.output_dir == str(tmp_path)
    assert resolve_model_path(args.teacher_model_name_or_path)


def test_flags_override_the_recipe(tmp_path):
    quickstart = os.path.join(ROOT, "recipes", "quickstart.yaml")
    recipe, args = parse_recipe(
        quickstart, ["--temperature", "4", "--max_train_samples", "10"], RecipeArguments, DistillationTrainingArguments
    )
    assert args.temperature == 4.0 and recipe.max_train_samples == 10
    assert args.alpha == 0.5  # untouched keys keep the recipe's value


def test_unknown_recipe_key_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("temprature: 2.0\noutput_dir: x\n")
    with pytest.raises(ValueError, match="temprature"):
        parse_recipe(str(path), [], RecipeArguments, DistillationTrainingArguments)


def test_package_scheme_resolves_to_installed_files():
    path = resolve_model_path("pkg://hf_compress/data.py")
    assert os.path.isfile(path) and path.endswith(os.path.join("hf_compress", "data.py"))
    assert resolve_model_path("user/model") == "user/model"


def test_cli_bad_value_is_one_line_and_exit_2(tmp_path, capsys):
    quickstart = os.path.join(ROOT, "recipes", "quickstart.yaml")
    code = main(["distill", quickstart, "--alpha", "2", "--output_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "alpha=2.0" in err and "[0, 1]" in err
