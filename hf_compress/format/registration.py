"""Our saved formats registered with transformers when its quantizers load, not before.

`from_pretrained` finds a checkpoint's loader in the mappings of `transformers.quantizers`, which every model load
imports (through `transformers.modeling_utils`). Importing it costs about 3 s here, as much as the rest of `import
hf_compress`, and `hf-compress --help` or a refused recipe never loads a model. So `import hf_compress` only asks to be
told when that module is imported: the registration (`format/quantizer.py`) then runs right after it, before any
`from_pretrained` can read the mappings. Importing `hf_compress.quantization` registers at once.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# The package, not its `auto` module: our quantizer subclasses HfQuantizer, which the package binds after `auto` ran.
QUANTIZERS = "transformers.quantizers"
REGISTRATION = "hf_compress.format.quantizer"


class _RegisterAfterQuantizers(importlib.abc.MetaPathFinder):
    """Finds nothing itself: hands out transformers' own spec of QUANTIZERS, whose loader then imports ours."""

    def find_spec(self, name, path=None, target=None):
        if name != QUANTIZERS:
            return None
        sys.meta_path.remove(self)  # once; and the spec below must come from the other finders
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            importlib.import_module(REGISTRATION)

        spec.loader.exec_module = exec_module  # this spec's loader instance only
        return spec


def register_when_quantizers_load() -> None:
    """Register now if transformers' quantizers are loaded, else as soon as they are (idempotent)."""
    if QUANTIZERS in sys.modules:
        importlib.import_module(REGISTRATION)
    elif not any(isinstance(finder, _RegisterAfterQuantizers) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterQuantizers())
