"""`Method`: what one compression technique declares — its place in a run, when it is on, what it may not follow.

The shape follows ModelOpt's modes (`modelopt/torch/opt/mode.py`: each mode declares its convert step and the modes
that may not come next) and llm-compressor's modifiers (every technique goes through one lifecycle). A trainer never
names a technique: it loops over the enabled methods of `hf_compress.methods.METHODS` at each stage, in table order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The stages of a compression run, in the order a run goes through them:
# "student"  the recipe builds the student from the teacher (before any trainer exists);
# "convert"  the trainer converts the student: `before_trainer` hooks before Trainer.__init__ (so that the optimizer
#            and accelerate see the converted parameters), `after_trainer` hooks after it (they need the collator and
#            the train batches), both before any optimizer exists;
# "train"    the method adds hooks to the training loop (masks, schedules, losses);
# "finalize" once, after training: the method's part of finalize() (bake, slice, pack, quantize, cut).
STAGES = ("student", "convert", "train", "finalize")

Hook = Callable[..., Any]


@dataclass(frozen=True)
class Method:
    """One technique of the table.

    Attributes:
        name: its key in the table and the name of its docs page.
        record: the key of its record in config.json's `compression` entry (default: name).
        variant: where two methods share a record key, the recorded `method` value that tells this one apart.
        label: how a model card names it.
        tags: its Hub tags.
        stages: the stages it takes part in (see STAGES).
        arguments: the dataclass holding its fields (a mixin of the arguments classes that offer it), or None.
        enabled: whether an arguments object (a TrainingArguments subclass) turns it on; None: never from arguments
            (a transform the recipe or the user calls).
        check: validates its own fields, and its combinations with the methods it cannot follow: the rule lives here,
            with the method that imposes it. Called once from the arguments' `__post_init__`.
        before_trainer: `(args, model, train_dataset) -> model`, the conversion that must precede Trainer.__init__.
        after_trainer: `(trainer) -> None`, the conversion that follows it.
        validate: `(trainer) -> None`, what only the built trainer can tell (data, tokenizer), checked at the end of
            its __init__, before any training.
        setup: `(trainer) -> None`, the training hooks.
        finalize: `(trainer) -> None`, its part of finalize(), run in table order.
        layout: `(model) -> dict`, the int8 quantization config's fields that record the structure this method gave
            the model (e.g. the rank of every factorised Linear), so that a loader rebuilds it before the quantized
            modules are swapped in; int8's quantize_ asks every method of the table.
    """

    name: str
    label: str
    record: str | None = None
    variant: str | None = None
    tags: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    arguments: type | None = None
    enabled: Callable[[Any], bool] | None = None
    check: Hook | None = None
    before_trainer: Hook | None = None
    after_trainer: Hook | None = None
    validate: Hook | None = None
    setup: Hook | None = None
    finalize: Hook | None = None
    layout: Hook | None = None
    variants: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    def __post_init__(self):
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"stages={self.stages!r} is invalid; allowed: {STAGES}")

    @property
    def record_key(self) -> str:
        """The key of its record in config.json's `compression` entry."""
        return self.record or self.name

    def is_enabled(self, args: Any) -> bool:
        """Whether `args` turns this method on (False for arguments classes without its fields)."""
        if self.enabled is None or (self.arguments is not None and not isinstance(args, self.arguments)):
            return False
        return bool(self.enabled(args))

    def check_arguments(self, args: Any) -> None:
        """Its field checks and combination rules, when `args` carries its fields."""
        if self.check is not None and (self.arguments is None or isinstance(args, self.arguments)):
            self.check(args)


@dataclass(frozen=True)
class ModuleKind:
    """One kind of module a method saves, as config.json's `quantized_modules` names it (e.g. "linear_4bit").

    Attributes:
        name: the kind, as recorded per module in the quantization config.
        method: the name of the method that owns it (a row of METHODS).
        empty: `(module, config, saved_name) -> nn.Module`, the empty module `from_pretrained` fills, built in place
            of the float `module` (on its device: meta while loading) from what the config records.
        converts: `(module) -> bool`, for a kind int8's quantize_ makes from another method's float module (e.g. a
            factorised Linear): whether `module` is one; None for int8's own kinds (nn.Linear, nn.Embedding).
        from_float: `(module, per_token, per_tensor) -> nn.Module`, that module in int8 (with `converts`).
    """

    name: str
    method: str
    empty: Hook
    converts: Hook | None = None
    from_float: Hook | None = None


@dataclass
class MethodArguments:
    """Mixin of our arguments classes: after the base class's checks, every method of the table checks its own fields
    and the combinations it refuses, once (`hf_compress.methods.check_methods`)."""

    def __post_init__(self):
        super().__post_init__()
        from . import check_methods  # the table imports this module

        check_methods(self)
