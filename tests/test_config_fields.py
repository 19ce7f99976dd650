"""config_field: the help text reaches dataclasses and HfArgumentParser; a field without help is refused."""

from dataclasses import dataclass, fields

import pytest
from transformers import HfArgumentParser

from hf_compress import CompressionTrainingArguments
from hf_compress.cli.recipe import RecipeArguments
from hf_compress.config_fields import config_field
from hf_compress.format.config import Int8QuantizationConfig


@dataclass
class Example:
    size: int = config_field(3, "How many.")
    names: list[str] = config_field(help="Which ones.", default_factory=list)


def test_default_help_and_factory():
    first, second = Example(), Example()
    assert first.size == 3 and first.names == [] and first.names is not second.names
    assert {f.name: f.metadata["help"] for f in fields(Example)} == {"size": "How many.", "names": "Which ones."}
    text = HfArgumentParser(Example).format_help()
    assert "How many." in text and "Which ones." in text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(default=1), "help=None is invalid"),
        (dict(default=1, help=""), "help='' is invalid"),
        (dict(default=1, help="x", default_factory=list), "default and default_factory are both set"),
    ],
)
def test_refuses(kwargs, message):
    with pytest.raises(ValueError, match=message):
        config_field(**kwargs)


@pytest.mark.parametrize("cls", [CompressionTrainingArguments, RecipeArguments, Int8QuantizationConfig])
def test_every_field_we_declare_has_help(cls):
    # TrainingArguments' fields are transformers'; ours are the ones annotated in hf_compress's classes.
    ours = {
        name
        for c in cls.__mro__
        if c.__module__.startswith("hf_compress")
        for name in vars(c).get("__annotations__", {})
    }
    assert len(ours) > 5
    missing = [f.name for f in fields(cls) if f.name in ours and not f.metadata.get("help")]
    assert missing == []
