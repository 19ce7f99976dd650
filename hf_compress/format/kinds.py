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
