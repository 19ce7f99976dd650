"""The search space: one student shape per `Candidate`, built from the teacher as a skeleton to count it exactly.

A candidate is what our saved formats can hold: a subset of the teacher's layers, one FFN width for every layer (a
stock `transformers` config has a single `intermediate_size`, so per-layer widths are not in the space), one weight
width for every Linear, one for the word embeddings (the Linears' or narrower: after a vocabulary cut the embedding
is still nearly half of a small student's bytes), and the vocabulary cut to the train split's tokens or not. Its size
is counted on a skeleton built with the product's own transforms (`create_student`, FFN slicing, `fake_quantize_` +
`bake_low_bit_`, `prune_vocabulary_`) and saved with `save_pretrained`: the trained student has the same tensors, so
the same bytes. Which neurons a skeleton keeps does not matter for its size or speed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from ..evaluation.measure import bytes_on_disk
from ..families import intermediate_size
from .config import FLOAT_WEIGHTS


@dataclass(frozen=True)
class Candidate:
    """One student shape.

    Attributes:
        layers: 0-based teacher layer ids kept, in order.
        ffn_sparsity: fraction of FFN neurons removed in every layer.
        width: the FFN intermediate size that leaves.
        weight_bits: bits of every Linear, and of the word embeddings unless `embedding_bits` says (32: float).
        prune_vocabulary: the word embeddings cut to the train split's tokens.
        embedding_bits: bits of the word embeddings when narrower than `weight_bits` (None: `weight_bits`).
    """

    layers: tuple[int, ...]
    ffn_sparsity: float
    width: int
    weight_bits: int
    prune_vocabulary: bool
    embedding_bits: int | None = None

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def word_embedding_bits(self) -> int:
        """Bits of the word embeddings (32: float)."""
        return self.weight_bits if self.embedding_bits is None else self.embedding_bits

    def recipe_fields(self) -> dict:
        """The recipe fields that make this student in `hf-compress compress`."""
        fields = {"student_layers": list(self.layers), "student_num_hidden_layers": None}
        fields["ffn_sparsity"] = self.ffn_sparsity
        fields["weight_bits"] = None if self.weight_bits == FLOAT_WEIGHTS else self.weight_bits
        if self.weight_bits != FLOAT_WEIGHTS:
            fields["weight_quantization_modules"] = "all"
        # Always named, so that a base recipe's own embedding_weight_bits cannot survive under a searched student.
        narrower = self.word_embedding_bits != self.weight_bits
        fields["embedding_weight_bits"] = self.word_embedding_bits if narrower else None
        fields["prune_vocabulary"] = self.prune_vocabulary
        return fields


def ffn_width(teacher: PreTrainedModel, sparsity: float) -> int:
    """The FFN intermediate size left by `sparsity`, rounded as FFN pruning rounds it."""
    from ..methods.ffn_pruning.transform import neurons_to_remove

    size = intermediate_size(teacher.config)
    return size - neurons_to_remove(sparsity, size)


@torch.no_grad()
def skeleton(
    teacher: PreTrainedModel,
    layers: Sequence[int],
    width: int,
    weight_bits: int,
    tokenizer=None,
    token_ids=None,
    embedding_bits: int | None = None,
) -> tuple[PreTrainedModel, object]:
    """The student of this shape with the teacher's weights (the first `width` neurons of each FFN), quantized and
    packed at `weight_bits` (every Linear, and the word embeddings at `embedding_bits` when given), its vocabulary cut
    to `token_ids` when given.

    Returns (model, tokenizer): the tokenizer is the pruned one when the vocabulary was cut, else `tokenizer`.
    """
    from ..methods.ffn_pruning.transform import ffn_layers, slice_ffn_
    from ..methods.student.transform import create_student

    student = create_student(teacher, layers=list(layers))
    parts = ffn_layers(student)
    if width != parts[0].size:
        masks = [torch.arange(p.size) < width for p in parts]
        slice_ffn_(student, masks)
    # The vocabulary is cut before the weights are rounded (the compress run cuts it after): with one scale per row,
    # the same rows come out either way, and rounding only the kept rows makes a cut skeleton 2-4x cheaper to build.
    if token_ids is not None:
        from ..methods.vocabulary.transform import prune_vocabulary_

        tokenizer = prune_vocabulary_(student, tokenizer, token_ids)
    if weight_bits != FLOAT_WEIGHTS:
        from ..methods.low_bit.fake_quant import fake_quantize_, select_low_bit_modules
        from ..methods.low_bit.modules import bake_low_bit_

        chosen = select_low_bit_modules(student, "all")
        embedding_bits = embedding_bits or weight_bits
        plan = {n: embedding_bits if isinstance(m, torch.nn.Embedding) else weight_bits for n, m in chosen.items()}
        fake_quantize_(student, plan)
        bake_low_bit_(student)
    student.eval()
    return student, tokenizer


def saved_size(model: PreTrainedModel) -> int:
    """Bytes of the weight files `save_pretrained` writes for `model` (as `hf-compress report` counts them)."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # one bar per skeleton would bury the search's own lines
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            return bytes_on_disk(tmp)
    finally:
        if shown:
            logging.enable_progress_bar()


def parameter_count(model: PreTrainedModel) -> int:
    """Parameters of a float skeleton (tied ones once): what `budget_params` counts, whatever the weights' bits."""
    return sum(p.numel() for p in model.parameters())


def os_cpu_name() -> str:
    """The CPU's model name (the latency table is valid on this CPU only)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine
