"""The table of module kinds: every kind of saved module, registered by the method that owns it.

`from_pretrained` builds a stock model of nn.Linear / nn.Embedding on the meta device; the quantizer replaces each
module that config.json's `quantized_modules` names with the empty module of its kind, then the checkpoint's tensors
fill it. A kind is declared once, in its method's package (`KINDS`), next to the method itself.
"""

from __future__ import annotations

from ..methods import int8, low_bit, low_rank
from ..methods.method import ModuleKind

MODULE_KINDS: dict[str, ModuleKind] = {
    kind.name: kind for method in (int8, low_rank, low_bit) for kind in method.KINDS
}


def module_kind(name: str) -> ModuleKind:
    """The kind called `name`; ValueError naming the known ones (a checkpoint of a newer hf_compress)."""
    if name not in MODULE_KINDS:
        raise ValueError(
            f"quantized_modules kind={name!r} is invalid; allowed: {', '.join(sorted(MODULE_KINDS))} (a checkpoint "
            "written by a newer hf_compress: pip install -U hf_compress)"
        )
    return MODULE_KINDS[name]


def float_parameter_first(model) -> None:
    """Reorder submodules so that the model's first parameter is a floating-point one (outputs are unchanged).

    Why: code that reads a model's dtype from its first parameter would get int8 from the int8 word embeddings (the
    first module of every family's embeddings). sentence-transformers does: `SentenceTransformer(path)` casts its
    Pooling and Normalize modules to that dtype, and `nn.Module.to(torch.int8)` raises. Each module holding the
    first parameter moves to the end of its parent's modules, until a float parameter comes first; nothing moves
    when one already does or none exists.
    """
    moved = set()
    while True:
        name = next((n for n, p in model.named_parameters()), None)
        first = None if name is None else model.get_parameter(name)
        if first is None or first.is_floating_point() or first.is_complex():
            return
        owner_name = name.rsplit(".", 1)[0] if "." in name else ""
        if not owner_name or owner_name in moved:
            return  # the model's own parameter, or a cycle: leave the order as it is
        moved.add(owner_name)
        parent_name, _, child = owner_name.rpartition(".")
        parent = model.get_submodule(parent_name)
        parent._modules[child] = parent._modules.pop(child)
