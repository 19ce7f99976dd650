import pytest
import torch
from torch import nn

from hf_compress.methods.pruning.masks import mask_sparsity, update_masks
from hf_compress.methods.pruning.pruner import Pruner, select_targets
from hf_compress.methods.pruning.schedule import SparsitySchedule, cubic_sparsity, resolve_step
from hf_compress.methods.pruning.scores import Importance
from tests.testing_utils import tiny_bert


def test_cubic_schedule_values():
    assert cubic_sparsity(0, 10, 20, 0.8) == 0.0
    assert cubic_sparsity(10, 10, 20, 0.8) == 0.0
    assert cubic_sparsity(15, 10, 20, 0.8) == pytest.approx(0.8 * (1 - 0.5**3))
    assert cubic_sparsity(20, 10, 20, 0.8) == pytest.approx(0.8)
    assert cubic_sparsity(99, 10, 20, 0.8) == pytest.approx(0.8)
    # Front-loaded: more than half of the pruning happens in the first half of the ramp (Zhu & Gupta).
    assert cubic_sparsity(15, 10, 20, 0.8) > 0.4


def test_schedule_points_as_fractions_or_steps():
    assert resolve_step(0.25, 200) == 50
    assert resolve_step(30, 200) == 30


@pytest.mark.parametrize(
    "start,end,frequency,message",
    [
        (0, 300, 1, r"^pruning_end=300 is invalid; allowed: a step <= 200 \(this run's optimizer steps\)"),
        (250, 0.9, 1, r"^pruning_start=250 is invalid; allowed: a step <= 200"),
        (150, 100, 1, r"^pruning_end=100 is invalid; allowed: a point at or after pruning_start=150"),
        (0.5, 90, 1, r"^pruning_end=90 is invalid; allowed: a point at or after pruning_start=0.5 \(step 100\)"),
        (0, 0.9, 250, r"^pruning_frequency=250 is invalid; allowed: an integer in \[1, 200\] \(this run's steps\)"),
    ],
    ids=["end-past-the-run", "start-past-the-run", "end-before-start", "end-before-start-in-steps", "frequency"],
)
def test_a_schedule_the_run_cannot_follow_is_refused_when_the_run_length_is_known(start, end, frequency, message):
    """The target sparsity would silently not be reached: refused at resolve(max_steps), before the first step."""
    with pytest.raises(ValueError, match=message):
        SparsitySchedule(start, end, frequency).resolve(200)


def test_movement_and_magnitude_choose_different_weights():
    # w0 is large but the gradient pulls it to zero; w1 is small but moves away from zero.
    weight = nn.Parameter(torch.tensor([[2.0, 0.1]]))
    weight.grad = torch.tensor([[1.0, -1.0]])  # SGD: w0 ← 2 − lr, w1 ← 0.1 + lr
    masks = {"w": torch.ones_like(weight, dtype=torch.bool)}
    chosen = {}
    for method in ("movement", "magnitude", "taylor"):
        importance = Importance(method, {"w": weight})
        importance.accumulate()
        chosen[method] = update_masks(importance.current(), masks, 0.5, "global")["w"].tolist()
    assert chosen["movement"] == [[False, True]]  # prunes the large weight that is shrinking
    assert chosen["magnitude"] == [[True, False]]  # prunes the small weight
    assert chosen["taylor"] == [[True, False]]  # |W·g| is larger for w0


def test_taylor_scores_average_over_steps():
    weight = nn.Parameter(torch.tensor([1.0, -2.0]))
    importance = Importance("taylor", {"w": weight})
    for grad in ([1.0, 1.0], [3.0, 0.0]):
        weight.grad = torch.tensor(grad)
        importance.accumulate()
    assert importance.current()["w"].tolist() == pytest.approx([2.0, 1.0])


def test_global_and_per_layer_scope_distribute_sparsity_differently():
    scores = {"big": torch.full((10,), 5.0) + torch.arange(10.0), "small": torch.arange(10.0) * 0.01}
    masks = {n: torch.ones(10, dtype=torch.bool) for n in scores}
    global_masks = update_masks(scores, masks, 0.5, "global")
    per_layer = update_masks(scores, masks, 0.5, "per_layer")
    assert int((~global_masks["small"]).sum()) == 10 and int((~global_masks["big"]).sum()) == 0
    assert int((~per_layer["small"]).sum()) == 5 and int((~per_layer["big"]).sum()) == 5
    assert mask_sparsity(global_masks) == mask_sparsity(per_layer) == 0.5


def test_masks_are_monotone():
    masks = {"w": torch.tensor([True, False, True, True])}
    scores = {"w": torch.tensor([1.0, 100.0, 2.0, 3.0])}  # the pruned weight now scores highest
    new = update_masks(scores, masks, 0.5, "global")["w"]
    assert new.tolist() == [False, False, True, True]


def two_updates(method: str, weight: nn.Parameter) -> tuple[Pruner, list, list]:
    """Two mask updates on 4 weights (25% then 50% pruned); the second step's gradient asks for w0 back."""
    pruner = Pruner(
        {"w": weight}, method=method, target_sparsity=0.5, schedule=SparsitySchedule(0, 2, 1), scope="global"
    )
    pruner.schedule.resolve(10)
    weight.grad = torch.tensor([1.0, -1.0, -1.0, -1.0])  # movement: −W·g = [−2, 0.1, 1, 1]
    pruner.before_optimizer_step()
    pruner.on_step_end(1)
    first = pruner.masks["w"].tolist()
    weight.grad = torch.tensor([-10.0, 1.0, 0.0, 0.0])
    pruner.before_optimizer_step()
    pruner.on_step_end(2)
    return pruner, first, pruner.masks["w"].tolist()


def test_movement_revives_a_pruned_weight_with_the_value_it_had():
    weight = nn.Parameter(torch.tensor([2.0, 0.1, 1.0, 1.0]))
    pruner, first, second = two_updates("movement", weight)
    assert first == [False, True, True, True]  # the large weight moving to zero goes first
    # Straight-through scoring: the pruned w0 is scored with its old value 2.0, −2·(−10) = +20 lifts it back.
    assert pruner.importance.scores["w"].tolist() == pytest.approx([18.0, 0.0, 1.0, 1.0])
    assert second == [True, False, False, True]  # ties (w2, w3) break by position
    assert weight.tolist() == pytest.approx([2.0, 0.0, 0.0, 1.0])  # w0 back with its value
    assert pruner.shadow["w"].tolist() == pytest.approx([0.0, 0.1, 1.0, 0.0])  # what w1, w2 would return with


@pytest.mark.parametrize("method", ["taylor", "magnitude"])
def test_taylor_and_magnitude_masks_never_revive(method):
    weight = nn.Parameter(torch.tensor([2.0, 0.1, 1.0, 1.0]))
    pruner, first, second = two_updates(method, weight)
    assert first == [True, False, True, True]  # both rank w1 lowest
    assert second[1] is False and sum(second) == 2
    assert pruner.shadow == {}


def test_default_targets_are_encoder_linears_only():
    model = tiny_bert()
    targets = select_targets(model)
    assert len(targets) == 2 * 6  # q, k, v, attention output, intermediate, output per layer
    assert all(".encoder.layer." in n for n in targets)
    opted_in = select_targets(model, embeddings=True, pooler=True, classifier=True)
    assert {"bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight", "classifier.weight"} <= set(opted_in)


def test_pruner_reaches_target_and_keeps_zeros():
    model = tiny_bert()
    pruner = Pruner(
        select_targets(model),
        method="magnitude",
        target_sparsity=0.6,
        schedule=SparsitySchedule(0, 4, 1),
        scope="global",
    )
    pruner.schedule.resolve(10)
    for step in range(1, 5):
        pruner.on_step_end(step)
    assert pruner.sparsity() == pytest.approx(0.6, abs=1e-4)
    zeros = sum(int((w == 0).sum()) for w in pruner.targets.values())
    total = sum(w.numel() for w in pruner.targets.values())
    assert zeros / total == pytest.approx(0.6, abs=1e-4)


def test_pruner_state_round_trip():
    model = tiny_bert()
    pruner = Pruner(
        select_targets(model),
        method="movement",
        target_sparsity=0.5,
        schedule=SparsitySchedule(0, 2, 1),
        scope="per_layer",
    )
    pruner.schedule.resolve(4)
    for w in pruner.targets.values():
        w.grad = torch.randn_like(w)
    pruner.before_optimizer_step()
    pruner.on_step_end(1)
    other = Pruner(
        select_targets(tiny_bert()),
        method="movement",
        target_sparsity=0.5,
        schedule=SparsitySchedule(0, 2, 1),
        scope="per_layer",
    )
    other.load_state_dict(pruner.state_dict())
    for name in pruner.masks:
        assert torch.equal(pruner.masks[name], other.masks[name])
        assert torch.equal(pruner.importance.scores[name], other.importance.scores[name])
        assert torch.equal(pruner.shadow[name], other.shadow[name])
        assert pruner.shadow[name].abs().sum() > 0  # movement keeps the values of what it pruned
    assert other.current_target == pruner.current_target


def test_prune_lowest_equals_the_first_entries_of_a_stable_sort():
    from hf_compress.methods.pruning.masks import prune_lowest as _prune_lowest

    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = int(torch.randint(1, 200, (1,), generator=g))
        scores = torch.randint(0, 5, (n,), generator=g).float() if trial % 2 else torch.randn(n, generator=g)
        alive = torch.rand(n, generator=g) > 0.3
        n_prune = int(torch.randint(0, int(alive.sum()) + 1, (1,), generator=g))
        want = alive.clone()
        masked = torch.where(alive, scores, torch.full_like(scores, float("inf")))
        want[torch.sort(masked, stable=True).indices[:n_prune]] = False
        assert torch.equal(_prune_lowest(scores, alive, n_prune), want), trial


def prune_while_training(method: str, steps: int = 150) -> tuple[float, torch.Tensor]:
    """Least squares where the small weights carry the target and the large ones must shrink to zero; prune half.

    Runs the Pruner in Trainer's order (score, optimizer step, re-mask, mask update) and returns the final loss and
    which weights were kept.
    """
    torch.manual_seed(0)
    x = torch.randn(256, 20)
    truth = torch.cat([torch.ones(10), torch.zeros(10)])  # weights 0..9 matter, 10..19 do not
    y = x @ truth
    weight = nn.Parameter(torch.cat([torch.full((10,), 0.05), torch.ones(10)]))
    optimizer = torch.optim.SGD([weight], lr=0.01)
    pruner = Pruner(
        {"encoder.weight": weight},
        method=method,
        target_sparsity=0.5,
        schedule=SparsitySchedule(0, 10, 2),
        scope="global",
    )
    pruner.schedule.resolve(steps)
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        ((x @ weight - y) ** 2).mean().backward()
        pruner.before_optimizer_step()
        optimizer.step()
        pruner.apply_masks()
        pruner.on_step_end(step)
    with torch.no_grad():
        return float(((x @ weight - y) ** 2).mean()), pruner.masks["encoder.weight"]


def test_movement_beats_magnitude_when_small_weights_carry_the_task():
    movement_loss, movement_kept = prune_while_training("movement")
    magnitude_loss, magnitude_kept = prune_while_training("magnitude")
    # Movement keeps the small weights that grow away from zero; magnitude keeps the large ones that were shrinking.
    assert movement_kept.tolist() == [True] * 10 + [False] * 10
    assert magnitude_kept.tolist() == [False] * 10 + [True] * 10
    assert movement_loss < 0.1 and magnitude_loss > 5.0  # magnitude lost all 10 unit weights of the target
