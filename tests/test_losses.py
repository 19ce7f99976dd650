import math

import pytest
import torch

from hf_compress.methods.distillation.losses import attention_loss, ce_loss, hidden_state_loss, kd_loss


def reference_kd(s: torch.Tensor, t: torch.Tensor, temperature: float) -> float:
    """Σ_examples T² Σ_c p_t log(p_t / p_s), written out by hand."""
    total = 0.0
    for s_row, t_row in zip(s.tolist(), t.tolist()):
        zs = [math.exp(x / temperature) for x in s_row]
        zt = [math.exp(x / temperature) for x in t_row]
        ps = [z / sum(zs) for z in zs]
        pt = [z / sum(zt) for z in zt]
        total += temperature**2 * sum(a * math.log(a / b) for a, b in zip(pt, ps))
    return total


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 8.0])
def test_kd_loss_matches_hand_formula(temperature):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(5, 3, generator=g) * 3, torch.randn(5, 3, generator=g) * 3
    assert kd_loss(s, t, temperature).item() == pytest.approx(reference_kd(s, t, temperature), rel=1e-5)


def test_kd_loss_zero_iff_same_distribution():
    t = torch.randn(4, 3)
    assert kd_loss(t + 7.0, t, 2.0).item() == pytest.approx(0.0, abs=1e-6)  # a shift leaves softmax unchanged
    assert kd_loss(-t, t, 2.0).item() > 0.1


def test_kd_gradient_tends_to_logit_matching_at_high_temperature():
    # Hinton et al.: with the T² factor, ∂/∂s → (s − t − mean)/C as T grows: a scale that does not depend on T.
    s = torch.randn(6, 3, requires_grad=True)
    t = torch.randn(6, 3)
    diff = (s - t).detach()
    limit = (diff - diff.mean(-1, keepdim=True)) / 3
    for temperature in (50.0, 200.0):
        s.grad = None
        kd_loss(s, t, temperature).backward()
        assert torch.allclose(s.grad, limit, atol=0.03)


def test_ce_loss_sums_and_ignores_unlabelled():
    logits = torch.randn(3, 4)
    labels = torch.tensor([1, -100, 2])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]], reduction="sum")
    assert ce_loss(logits, labels).item() == pytest.approx(expected.item())


def test_hidden_loss_ignores_padding_and_averages_per_example():
    h_t = torch.randn(2, 5, 8)
    h_s = h_t.clone()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    h_s[0, 3:] += 100.0  # differences on padding only
    assert hidden_state_loss(h_s, h_t, mask).item() == pytest.approx(0.0, abs=1e-6)
    h_s[1] += 1.0  # every real feature of example 2 off by one -> that example contributes exactly 1
    assert hidden_state_loss(h_s, h_t, mask).item() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("loss_type", ["kl", "mse"])
def test_attention_loss_zero_for_identical_and_positive_otherwise(loss_type):
    a = torch.softmax(torch.randn(2, 4, 6, 6), -1)
    b = torch.softmax(torch.randn(2, 4, 6, 6), -1)
    assert attention_loss(a, a.clone(), loss_type=loss_type).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_loss(a, b, loss_type=loss_type).item() > 1e-4


def test_attention_loss_with_different_head_counts_averages_heads():
    t = torch.softmax(torch.randn(1, 4, 5, 5), -1)
    s = t.mean(1, keepdim=True).expand(1, 2, 5, 5)  # two heads equal to the teacher's head average
    assert attention_loss(s, t).item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- every term is invariant to padding


def _padded(length: int, real: list[int], seed: int = 0):
    """Per-example real lengths `real`, padded to `length`: (mask, a generator that fills real and pad positions)."""
    mask = torch.zeros(len(real), length, dtype=torch.long)
    for i, n in enumerate(real):
        mask[i, :n] = 1
    return mask


def _pad(real_rows: list[torch.Tensor], length: int, garbage: float) -> torch.Tensor:
    """Stack per-example tensors (tokens, ...) padded to `length` along dim 0 with `garbage` values."""
    out = torch.full((len(real_rows), length, *real_rows[0].shape[1:]), garbage)
    for i, row in enumerate(real_rows):
        out[i, : row.shape[0]] = row
    return out


def _attention(real: list[int], length: int, heads: int, seed: int) -> torch.Tensor:
    """Softmax attention maps that put no mass on padded keys, and arbitrary rows for padded queries."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(len(real), heads, length, length, generator=g)
    key_mask = _padded(length, real).bool()[:, None, None, :]
    return torch.softmax(scores.masked_fill(~key_mask, -1e9), -1)


def _term(name: str, length: int, real: list[int]) -> float:
    """One loss term on the same examples padded to `length`; pad positions get garbage the term must ignore."""
    g = torch.Generator().manual_seed(1)
    mask = _padded(length, real)
    if name in ("kd_span", "ce_span"):
        s = [torch.randn(n, generator=g) * 3 for n in real]
        t = [torch.randn(n, generator=g) * 3 for n in real]
        s_pad, t_pad = _pad(s, length, 50.0), _pad(t, length, -50.0)
        if name == "kd_span":
            return float(kd_loss(s_pad, t_pad, 2.0, mask))
        return float(ce_loss(s_pad, torch.tensor([n - 1 for n in real]), mask))
    if name == "hidden":
        s = [torch.randn(n, 8, generator=g) for n in real]
        t = [torch.randn(n, 8, generator=g) for n in real]
        return float(hidden_state_loss(_pad(s, length, 9.0), _pad(t, length, -9.0), mask))
    # Attention maps differ with the padding length (softmax over more keys); rebuild them so the real part is equal.
    heads = 2
    base_s, base_t = _attention(real, max(real), heads, 3), _attention(real, max(real), heads, 4)
    s = torch.zeros(len(real), heads, length, length)
    t = torch.zeros(len(real), heads, length, length)
    s[..., : max(real), : max(real)], t[..., : max(real), : max(real)] = base_s, base_t
    s[:, :, max(real) :, :] = 1.0 / length  # padded query rows: anything
    t[:, :, max(real) :, :] = 0.5 / length
    return float(attention_loss(s, t, mask, loss_type=name.removeprefix("attention_")))


@pytest.mark.parametrize("name", ["kd_span", "ce_span", "hidden", "attention_kl", "attention_mse"])
def test_every_term_is_the_same_whatever_the_padding(name):
    real = [3, 7, 5]
    assert _term(name, 7, real) == pytest.approx(_term(name, 20, real), rel=1e-5, abs=1e-7)
    assert _term(name, 7, real) > 1e-4  # informative: the term is not trivially zero


@pytest.mark.parametrize("kind", ["sequence", "token"])
def test_transfer_text_is_distilled_and_never_taken_for_a_gold_label(kind):
    """UNLABELLED items count for KD and as items; CE sums over the gold labels only (hand computation)."""
    from hf_compress.methods.distillation.loss import UNLABELLED, logit_terms

    torch.manual_seed(0)
    shape = (3, 4, 5) if kind == "token" else (3, 5)
    s, t = torch.randn(shape), torch.randn(shape)
    if kind == "token":  # example 0 labelled, example 1 transfer text, example 2 labelled; -100: no item
        y = torch.tensor([[1, -100, 2, 0], [UNLABELLED, UNLABELLED, -100, UNLABELLED], [4, 3, -100, -100]])
    else:
        y = torch.tensor([2, UNLABELLED, 0])
    terms, items = logit_terms(kind, {"logits": s}, {"logits": t}, {"labels": y}, None, 2.0, True, True)
    rows = y != -100
    s_rows, t_rows, y_rows = (s[rows], t[rows], y[rows]) if kind == "token" else (s, t, y)
    gold = y_rows >= 0
    kd = sum(
        4.0 * (torch.softmax(t_rows[i] / 2, -1) * (torch.log_softmax(t_rows[i] / 2, -1)
                                                   - torch.log_softmax(s_rows[i] / 2, -1))).sum()
        for i in range(len(y_rows))
    )  # fmt: skip
    ce = sum(-torch.log_softmax(s_rows[i], -1)[y_rows[i]] for i in range(len(y_rows)) if gold[i])
    assert items == len(y_rows) == (8 if kind == "token" else 3) and int(gold.sum()) < items
    assert float(terms["kd_loss"]) == pytest.approx(float(kd), rel=1e-5)
    assert float(terms["ce_loss"]) == pytest.approx(float(ce), rel=1e-5)
