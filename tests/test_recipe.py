import glob
import os
import re

import pytest
import yaml

from hf_compress.cli import RECIPE_COMMANDS, main
from hf_compress.cli.recipe import RecipeArguments, parse_recipe, resolve_model_path
from hf_compress.methods.distillation.config import DistillationTrainingArguments

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
    if command == "quantize":  # a model saved by another recipe: its fields parse, the model comes later
        from hf_compress.cli.quantize import parse

        recipe, args = parse([path, "--output_dir", str(tmp_path)])
        assert args.output_dir == str(tmp_path) and recipe.model_name_or_path
        return
    if command == "search":  # a compress recipe plus its budget: parsed as hf-compress search parses it
        from hf_compress.cli.search import parse

        _, recipe, args, search, _ = parse([path, "--output_dir", str(tmp_path)])
        assert args.output_dir == str(tmp_path) and search.budget[1] > 0
        assert os.path.isdir(resolve_model_path(args.teacher_model_name_or_path))
        return
    args_class = RECIPE_COMMANDS[command][0]
    recipe, args = parse_recipe(path, ["--output_dir", str(tmp_path)], RecipeArguments, args_class)
    assert isinstance(args, args_class)
    assert args.output_dir == str(tmp_path)
    model = recipe.model_name_or_path if command == "prune" else args.teacher_model_name_or_path
    assert os.path.isdir(resolve_model_path(model))


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


@pytest.mark.parametrize("command", ["distill", "prune", "compress"])
def test_recipe_command_help_lists_every_field_with_its_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps help text
    assert "--max_train_samples" in out and "Use only the first N training examples" in out
    assert "--output_dir" in out and "--learning_rate" in out
    if command != "prune":
        assert "--temperature" in out and "Softmax temperature T > 0 of the soft targets" in out
    else:
        assert "--target_sparsity" in out and "--temperature" not in out


@pytest.mark.parametrize(
    "key,value,named",
    [
        ("max_length", 64.5, "max_length=64.5"),
        ("student_layers", 3, "student_layers=3"),
        ("finetune_teacher", 2, "finetune_teacher=2"),
        ("overwrite_output", [1], "overwrite_output=[1]"),
        ("eval_strategy", False, "eval_strategy=False"),
        ("temperature", "hot", "temperature='hot'"),
    ],
)
def test_recipe_values_of_the_wrong_type_are_refused_with_the_key(tmp_path, key, value, named):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({key: value, "output_dir": str(tmp_path)}))
    with pytest.raises(ValueError, match=re.escape(named)):
        parse_recipe(str(path), [], RecipeArguments, DistillationTrainingArguments)


def test_recipe_values_are_converted_to_the_declared_type(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(
        "max_length: 32.0\ntemperature: 3\nstudent_layers: [0, 2]\noutput_dir: x\nfinetune_teacher: 'true'\n"
    )
    recipe, args = parse_recipe(str(path), [], RecipeArguments, DistillationTrainingArguments)
    assert recipe.max_length == 32 and isinstance(recipe.max_length, int)
    assert args.temperature == 3.0 and isinstance(args.temperature, float)
    assert recipe.student_layers == [0, 2] and recipe.finetune_teacher is True


def test_flags_of_the_wrong_type_are_one_line_errors(tmp_path, capsys):
    quickstart = os.path.join(ROOT, "recipes", "quickstart.yaml")
    assert main(["distill", quickstart, "--max_length", "abc", "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max_length" in err[0] and "abc" in err[0]


# ---- YAML 1.1 scalars and YAML errors ----


def parse_text(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return parse_recipe(str(path), [], RecipeArguments, DistillationTrainingArguments)


def test_yaml_1_1_words_and_numbers_in_text_and_choice_fields_are_taken_as_written(tmp_path):
    recipe, args = parse_text(
        tmp_path,
        "eval_strategy: no\nsave_strategy: no\nlogging_strategy: no\nrun_name: 1.10\ntext_column: yes\n"
        "label_column: 2024\nhub_model_id: on\neval_split: 0123\noutput_dir: x\n",
    )
    assert args.eval_strategy == "no" and args.save_strategy == "no" and args.logging_strategy == "no"
    assert args.run_name == "1.10" and args.hub_model_id == "on"  # not "1.1", not True
    assert (recipe.text_column, recipe.label_column, recipe.eval_split) == ("yes", "2024", "0123")  # not 83 (octal)
    assert parse_text(tmp_path, "finetune_teacher: yes\noverwrite_output: off\noutput_dir: x\n")[0].finetune_teacher
    recipe, args = parse_text(tmp_path, "# nothing yet\n")  # an empty recipe: every default
    assert recipe.task == "text-classification" and args.eval_strategy == "no"


@pytest.mark.parametrize(
    "text,message",
    [
        ("save_strategy: off", "save_strategy='off' is invalid; allowed: 'no', 'steps', 'epoch', 'best'"),
        ("eval_strategy: false", "eval_strategy=False is invalid; allowed: 'no', 'steps', 'epoch'; quote it"),
        ("text_column: true", 'text_column=True is invalid; allowed: a string; quote it in the recipe .* e.g. "no"'),
        ("max_length: 010", r"max_length='010' is invalid; allowed: a decimal number .*YAML 1.1 reads 010 as 8"),
        ("max_train_samples: 1:30", r"max_train_samples='1:30' is invalid; .*YAML 1.1 reads 1:30 as 90"),
    ],
    ids=["off-is-not-a-strategy", "false-is-a-boolean", "true-for-text", "octal", "base-60"],
)
def test_yaml_scalars_that_cannot_mean_the_field_are_refused_with_the_fix(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        parse_text(tmp_path, f"{text}\noutput_dir: x\n")


@pytest.mark.parametrize(
    "content,message",
    [
        (
            b"output_dir: x\n\tmax_length: 32\n",
            r"recipe.yaml:2:1='\\tmax_length: 32' is invalid; allowed: valid YAML "
            r"\(found character '\\t' that cannot start any token.*indent with spaces",
        ),
        (
            b"output_dir: x\nmax_length: 32: 4\n",
            r"recipe.yaml:2:15='max_length: 32: 4' is invalid; allowed: valid YAML "
            r"\(mapping values are not allowed here\)",
        ),
        (b"output_dir: x\nstudent_layers: [0, 1\n", r"recipe.yaml:3:1='' is invalid; allowed: valid YAML"),
        (
            b"output_dir: x\nrun_name: a\x07b\n",
            r"recipe.yaml:2:12='run_name: a\\x07b' is invalid; allowed: valid YAML",
        ),
        (b"output_dir: x\nrun_name: caf\xe9\n", r"recipe.yaml:2:14=b'\\xe9' is invalid; allowed: UTF-8 text"),
        (
            b"max_length: 32\noutput_dir: x\nmax_length: 64\n",
            r"recipe.yaml:3:1='max_length' is invalid; allowed: "
            r"each key once \(also line 1\)",
        ),
    ],
    ids=["tab", "colon", "unclosed-list", "control-character", "latin-1", "duplicate-key"],
)
def test_every_yaml_error_names_the_line_and_the_column(tmp_path, content, message):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        parse_recipe(str(path), [], RecipeArguments, DistillationTrainingArguments)


def test_a_qa_stride_that_is_not_below_the_window_is_refused():
    """Consecutive windows overlap by doc_stride tokens: an overlap of max_length or more leaves no new context."""
    for stride in (16, 20):
        with pytest.raises(ValueError, match=rf"^doc_stride={stride} is invalid; allowed: below max_length=16$"):
            RecipeArguments(task="question-answering", dataset_name="squad.json", max_length=16, doc_stride=stride)
    assert RecipeArguments(task="question-answering", dataset_name="squad.json", max_length=16, doc_stride=15)


@pytest.mark.parametrize("field", ["validation_size", "test_size"])
def test_a_held_out_size_that_is_neither_a_fraction_nor_a_count_is_refused(field):
    for value in (0, 1.5, -0.1):
        with pytest.raises(
            ValueError, match=rf"^{field}={value} is invalid; allowed: a fraction in \(0, 1\) or a count"
        ):
            RecipeArguments(dataset_name="data.csv", **{field: value})
    for value in (0.2, 1, 300):  # 1 is one example, 300 three hundred
        assert getattr(RecipeArguments(dataset_name="data.csv", **{field: value}), field) == value
