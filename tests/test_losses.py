import math

import pytest
import torch

from hf_compress.losses import attention_loss, ce_loss, hidden_state_loss, kd_loss


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
