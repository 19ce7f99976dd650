"""The `hf-compress` command: one parser, one module per command."""

from .main import RECIPE_COMMANDS, build_parser, main

__all__ = ["RECIPE_COMMANDS", "build_parser", "main"]
