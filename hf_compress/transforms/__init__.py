"""Transforms of a model, `transform_(model, ...) -> model` (in place when the name ends in `_`)."""
