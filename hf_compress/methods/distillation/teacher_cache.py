"""Teacher logits computed once per example and reused on later epochs (logit-only distillation)."""

from __future__ import annotations

import torch


def example_keys(inputs: dict) -> list[bytes]:
    """A content key per example: its real tokens (and segment ids), independent of padding and batch order."""
    ids = inputs["input_ids"].cpu()
    mask = inputs.get("attention_mask")
    mask = mask.cpu().bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
    segments = inputs.get("token_type_ids")
    keys = []
    for i in range(ids.shape[0]):
        key = ids[i][mask[i]].numpy().tobytes()
        if segments is not None:
            key += b"|" + segments[i].cpu()[mask[i]].numpy().tobytes()
        keys.append(key)
    return keys


class TeacherLogitCache:
    """Maps an example's real tokens to the teacher's logits for it, stored on its real positions only.

    Per-token logits (token classification, span start/end) are kept for the real tokens and scattered back into
    each new batch's padding, so the cache works whatever padding later batches get. Memory: the logits of every
    distinct example seen (sequence classification: `num_labels` floats each).
    """

    def __init__(self):
        self.entries: dict[bytes, dict[str, torch.Tensor]] = {}
        self.hits = 0
        self.lookups = 0

    def __len__(self) -> int:
        return len(self.entries)

    @torch.no_grad()
    def logits(self, teacher, inputs: dict) -> tuple[dict[str, torch.Tensor], float]:
        """Teacher logits for `inputs` (as `head_logits` returns them) and this batch's hit rate.

        The teacher runs only on examples not seen before.
        """
        from .loss import head_logits

        keys = example_keys(inputs)
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        mask = mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
        missing = [i for i, k in enumerate(keys) if k not in self.entries]
        if missing:
            index = torch.tensor(missing, device=ids.device)
            sub = {k: v.index_select(0, index) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
            fresh = head_logits(teacher(**sub))
            for row, i in enumerate(missing):
                self.entries[keys[i]] = {
                    name: (value[row][mask[i]] if value.dim() >= 3 or name != "logits" else value[row]).detach().cpu()
                    for name, value in fresh.items()
                }
        self.lookups += len(keys)
        self.hits += len(keys) - len(missing)
        out = {}
        for name in self.entries[keys[0]]:
            rows = [self.entries[k][name] for k in keys]
            if rows[0].dim() == 1 and name == "logits":  # one distribution per example
                out[name] = torch.stack(rows).to(ids.device)
                continue
            shape = (len(keys), ids.shape[1], *rows[0].shape[1:])
            padded = torch.zeros(shape, dtype=rows[0].dtype)
            for i, row in enumerate(rows):
                padded[i][mask[i].cpu()] = row
            out[name] = padded.to(ids.device)
        return out, 1.0 - len(missing) / len(keys)
