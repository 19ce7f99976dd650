"""Low-rank factorisation of Linear layers: plain, Fisher-weighted or activation-aware SVD, with a saving layout.

A rank-r factorisation W ≈ up · down of an out×in weight (down: in→r, up: r→out) cuts the layer's parameters and
multiply-adds by r(out + in) / (out·in); dense kernels run it faster with no sparse support. Three ways to choose
the r directions, each the exact minimiser of its own error (derivations in `decompose`):

- "svd": truncated SVD of W, minimising ‖W − Ŵ‖_F.
- "fisher": Fisher-Weighted SVD (Hsu et al., ICLR 2022, arXiv:2207.00112). The diagonal Fisher F_ij (squared
  gradients of the task loss of each calibration batch, averaged over the batches) is summed over each row i of the
  PyTorch weight (one output unit): I_i = Σ_j F_ij, and Ŵ minimises ‖diag(√I)(W − Ŵ)‖_F, the row-grouped
  approximation of Σ F⊙(W − Ŵ)². The paper's solution is Ŵ = diag(√I)⁻¹ U_r S_r V_rᵀ with U S Vᵀ the SVD of
  diag(√I) W, which equals W V_r V_rᵀ: we store down = V_rᵀ, up = W V_r, so the un-weighting never divides by a tiny
  row weight. We use the row mean I_i / in instead of the sum (the same directions) so that σ_k² of diag(√I) W is the
  diagonal-Fisher estimate (up to a factor ½) of the loss increase of dropping direction k, comparable across
  modules of any shape: the sensitivity a budget is allocated by. A row with no gradient keeps a small weight.
- "activation": data-aware low rank (DRONE, Chen et al., NeurIPS 2021). Ŵ minimises ‖WX − ŴX‖_F on the calibration
  inputs X (tokens as columns, padding excluded). With C = XXᵀ = Q Λ Qᵀ, the best ŴX is the projection of WX on the
  top-r left singular vectors U_r of W Q Λ^½ (the same as those of WX), so Ŵ = U_r U_rᵀ W: no inverse of C is
  needed, and a rank-deficient X (fewer tokens than inputs, dead features) is handled exactly.

Saving layout: a LowRankLinear keeps both factors in one flat 1-D `weight` (down row-major, then up), next to the
original `bias`. A loader that does not know the format meets a 1-D `weight` where nn.Linear expects out×in and
raises on the shape, instead of loading factors into a dense layer; `restore_low_rank_layout` rebuilds the modules
so that `load_state_dict` / `from_pretrained` fill them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import invalid, is_int, require
from ...format.config import LowRankConfig
from ...provenance import applied, record
from .calibration import calibrate
from .config import LOW_RANK_METHODS as METHODS
from .ranks import allocate_budget, rank_for_energy, rank_for_ratio, saves_parameters

logger = logging.getLogger(__name__)

STEP = "low_rank"  # provenance key in config.compression
FilterFn = Callable[[nn.Module, str], bool]
# Rows with no gradient at all get this fraction of the mean row Fisher, so that they still weigh a little.
FISHER_FLOOR = 1e-6


class LowRankLinear(nn.Module):
    """y = up(down(x)): down is in→rank without bias, up is rank→out with the original bias.

    Both factors live in one flat parameter `weight` of rank·(in + out) numbers, down (rank×in) first, then up
    (out×rank), each row-major; `down_weight` and `up_weight` are views of it, so gradients and optimizers see one
    tensor. A new module holds zeros until its tensors are loaded (see `restore_low_rank_layout`).
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.weight = nn.Parameter(torch.zeros(rank * (in_features + out_features), device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None

    @classmethod
    def from_factors(cls, up: torch.Tensor, down: torch.Tensor, bias: torch.Tensor | None) -> LowRankLinear:
        """A module computing x ↦ up·(down·x) + bias; up: (out, rank), down: (rank, in), bias: (out,) or None."""
        (out_features, rank), in_features = up.shape, down.shape[1]
        module = cls(in_features, out_features, rank, bias is not None, device=up.device, dtype=up.dtype)
        with torch.no_grad():
            module.weight.copy_(torch.cat([down.reshape(-1), up.reshape(-1)]))
            if bias is not None:
                module.bias.copy_(bias)
        return module

    @property
    def down_weight(self) -> torch.Tensor:
        """(rank, in) view of `weight`."""
        return self.weight[: self.rank * self.in_features].view(self.rank, self.in_features)

    @property
    def up_weight(self) -> torch.Tensor:
        """(out, rank) view of `weight`."""
        return self.weight[self.rank * self.in_features :].view(self.out_features, self.rank)

    def down(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.down_weight)

    def up(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.up_weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def dense_weight(self) -> torch.Tensor:
        """up · down: the (out, in) weight this module computes with."""
        return self.up_weight @ self.down_weight

    def input_weight_and_grad(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The down factor D (rank, in), whose columns meet the input, and its gradient (None before a backward).

        Scaling input column j of y = U·D·x scales column j of D only, so a column-block sum of D ⊙ ∂L/∂D equals the
        one of W ⊙ ∂L/∂W for the dense product W = U·D (what head importance reads off an output projection).
        """
        grad = self.weight.grad
        split = self.rank * self.in_features
        return self.down_weight, None if grad is None else grad[:split].view(self.rank, self.in_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
            f"bias={self.bias is not None}"
        )


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's list of layers: the largest nn.ModuleList (by parameters) under `model.base_model`.

    BERT-style encoders keep their layers in one ModuleList (`encoder.layer`, ALBERT's `albert_layer_groups`);
    embeddings, pooler and task heads are outside it. The outermost list wins a tie (ALBERT with one group).
    """
    base = getattr(model, "base_model", model)
    best: tuple[int, nn.ModuleList] | None = None
    for _, module in base.named_modules():  # parents come before their children
        if isinstance(module, nn.ModuleList):
            size = sum(p.numel() for p in module.parameters())
            if best is None or size > best[0]:
                best = (size, module)
    if best is None:
        raise ValueError(f"{type(model).__name__} has no list of encoder layers; select modules with filter_fn")
    return best[1]


def select_linears(model: nn.Module, filter_fn: FilterFn | None = None) -> dict[str, nn.Linear]:
    """The nn.Linear modules to factorise: those inside the encoder layers, or those `filter_fn(module, name)` keeps.

    A shared (ALBERT) layer's Linears appear once. A Linear whose weight is tied to another module is left out, since
    factorising it would untie the two.
    """
    if filter_fn is None:
        inside = {id(m) for m in encoder_layers(model).modules()}
        keep = lambda module, name: id(module) in inside  # noqa: E731
    else:
        keep = filter_fn
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            owners.setdefault(id(weight), []).append(name)
    selected = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and keep(module, name):
            if len(owners[id(module.weight)]) > 1:
                logger.warning("not factorising %s: its weight is tied to %s", name, owners[id(module.weight)])
                continue
            selected[name] = module
    return selected


@dataclass
class Decomposition:
    """The ordered directions of one weight: its spectrum and a basis on the input ("in") or output ("out") side."""

    spectrum: torch.Tensor  # descending singular values of the (weighted) matrix the method decomposes
    side: str
    basis: torch.Tensor  # side "in": (k, in) rows V_kᵀ; side "out": (out, k) columns U_k

    def factors(self, weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(up, down) of rank `rank` with up·down = W V_r V_rᵀ (side "in") or U_r U_rᵀ W (side "out")."""
        if self.side == "in":
            down = self.basis[:rank]
            up = weight @ down.T
        else:
            up = self.basis[:, :rank]
            down = up.T @ weight
        # Equal norms per direction in both factors: same product, better-conditioned gradients when training.
        scale = (down.norm(dim=1) / up.norm(dim=0).clamp_min(1e-30)).sqrt().clamp_min(1e-30)
        return up * scale, down / scale[:, None]


def fisher_weights(rows: torch.Tensor) -> torch.Tensor:
    """√(row Fisher), floored at FISHER_FLOOR of the mean; all ones when no row has any gradient."""
    mean = rows.mean()
    if mean <= 0:
        return torch.ones_like(rows)
    return (rows + FISHER_FLOOR * mean).sqrt()


def decompose(
    weight: torch.Tensor, method: str, fisher_rows: torch.Tensor | None, covariance: torch.Tensor | None
) -> Decomposition:
    """The directions `method` ranks for a float64 (out, in) weight (see the module docstring for the errors)."""
    if method == "svd":
        _, s, vh = torch.linalg.svd(weight, full_matrices=False)
        return Decomposition(s, "in", vh)
    if method == "fisher":
        # min ‖D(W − Ŵ)‖ over rank r: Ŵ = D⁻¹ [DW]_r = W V_r V_rᵀ, with V the right singular vectors of DW.
        _, s, vh = torch.linalg.svd(fisher_weights(fisher_rows)[:, None] * weight, full_matrices=False)
        return Decomposition(s, "in", vh)
    # min ‖(W − Ŵ)X‖ over rank r: ŴX = U_r U_rᵀ WX, with U the left singular vectors of WX, equal to those of
    # W Q Λ^½ since (WX)(WX)ᵀ = W C Wᵀ. Eigenvalues below zero are rounding: clamp them.
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    u, s, _ = torch.linalg.svd(weight @ (eigenvectors * eigenvalues.clamp_min(0).sqrt()), full_matrices=False)
    return Decomposition(s, "out", u)


def output_error(weight: torch.Tensor, approx: torch.Tensor, covariance: torch.Tensor) -> float:
    """‖WX − ŴX‖_F / ‖WX‖_F on the calibration inputs, from their covariance C = XXᵀ (0 when WX = 0)."""
    delta = weight - approx
    num = float(((delta @ covariance) * delta).sum())
    den = float(((weight @ covariance) * weight).sum())
    return (max(num, 0.0) / den) ** 0.5 if den > 0 else 0.0


def _check_arguments(model, rank, rank_ratio, energy, budget, method, dataloader, num_batches, filter_fn) -> None:
    criteria = dict(rank=rank, rank_ratio=rank_ratio, energy=energy, budget=budget)
    given = {k: v for k, v in criteria.items() if v is not None}
    if len(given) != 1:
        raise invalid("rank/rank_ratio/energy/budget", given or None, "exactly one of them set")
    require(hasattr(model, "config"), "model", type(model).__name__, "a transformers PreTrainedModel (with .config)")
    if rank is not None:
        require(is_int(rank) and rank >= 1, "rank", rank, "an integer >= 1")
    for field, value in (("rank_ratio", rank_ratio), ("energy", energy), ("budget", budget)):
        if value is not None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1
            require(ok, field, value, "a number in (0, 1]")
    require(method in METHODS, "method", method, ", ".join(repr(m) for m in METHODS))
    needs_labels = method == "fisher" or budget is not None
    if dataloader is None and (needs_labels or method == "activation"):
        batches = "an iterable of batches" + (" with labels" if needs_labels else "")
        raise invalid("dataloader", None, f"{batches} for method={method!r}" + (" with a budget" if budget else ""))
    require(is_int(num_batches) and num_batches >= 1, "num_batches", num_batches, "an integer >= 1")
    require(filter_fn is None or callable(filter_fn), "filter_fn", filter_fn, "None or a callable (module, name)")
    existing = getattr(model.config, "quantization_config", None)
    if existing is not None and not isinstance(existing, LowRankConfig):
        method = existing.get("quant_method") if isinstance(existing, dict) else existing.quant_method
        raise invalid("model", f"quantized ({method})", "a float model: factorise before quantize_")
    factorised = [n for n, m in model.named_modules() if isinstance(m, LowRankLinear)]
    if factorised:
        raise invalid(
            "model", f"{type(model).__name__} with LowRankLinear {factorised[0]}", "a model not yet factorised"
        )


def factorize_linear_(
    model: nn.Module,
    rank: int | None = None,
    rank_ratio: float | None = None,
    energy: float | None = None,
    budget: float | None = None,
    method: str = "svd",
    dataloader: Iterable | None = None,
    num_batches: int = 8,
    filter_fn: FilterFn | None = None,
) -> nn.Module:
    """Replace Linear layers of `model` in place by rank-r `LowRankLinear` factorisations; return the model.

    Selected: every nn.Linear inside the encoder layers (attention q/k/v/output, FFN up/down; not the embeddings,
    pooler or head), or those `filter_fn(module, name)` keeps. Exactly one rule sets the ranks:
    - rank: the same rank r for every module (capped at min(out, in));
    - rank_ratio in (0, 1]: per module, the largest r whose factors hold at most that fraction of its weight's
      parameters, r = ⌊ratio · out·in / (out + in)⌋ (at least 1);
    - energy in (0, 1]: per module, the smallest r keeping that fraction of the method's spectrum's energy Σσ²;
    - budget in (0, 1]: the selected weights keep at most that fraction of their parameters in total, ranks allocated
      across modules greedily by Fisher sensitivity per parameter (`low_rank_ranks.allocate_budget`; needs labels).
    A module whose rank would not save parameters (r(out + in) >= out·in) stays a plain nn.Linear. Biases are kept
    as they are and are not counted by the rules.

    method: "svd" (plain truncated SVD), "fisher" (Fisher-Weighted SVD, Hsu et al. 2022, arXiv:2207.00112) or
    "activation" (data-aware, DRONE, Chen et al. 2021); see the module docstring for what each minimises. "fisher"
    and a budget need `dataloader` batches with labels (the model must return a loss); "activation" needs batches.
    Statistics come from up to `num_batches` batches of `dataloader` (dicts of tensors given to `model(**batch)`),
    measured on the unfactorised model. Works under torch.no_grad() / torch.inference_mode() callers, and on models
    built under them; the new parameters are normal (trainable) tensors.

    Recorded in `model.config.compression["low_rank"]`: method, the rule, `ranks` (name -> rank of each factorised
    module, what `restore_low_rank_layout` needs), parameters of the selected modules before / after (weights and
    biases), and per module: shape (out, in), rank (None: kept dense), parameters before / after, the fraction of the
    spectrum's energy kept and, when a dataloader is given, the relative output error ‖WX − ŴX‖ / ‖WX‖ on the
    calibration inputs. Raises ValueError (field=value is invalid; allowed: ...) before any work on bad arguments.
    """
    _check_arguments(model, rank, rank_ratio, energy, budget, method, dataloader, num_batches, filter_fn)
    targets = select_linears(model, filter_fn)
    if not targets:
        raise invalid("filter_fn", filter_fn, "a selection of at least one nn.Linear of the model")
    rules = dict(rank=rank, rank_ratio=rank_ratio, energy=energy, budget=budget)
    criterion = {k: v for k, v in rules.items() if v is not None}

    # inference_mode(False): new parameters must be normal tensors even when the caller runs in inference mode.
    with torch.inference_mode(False), torch.no_grad():
        calibration = None
        if dataloader is not None:
            fisher = method == "fisher" or budget is not None
            calibration = calibrate(model, targets, dataloader, num_batches, fisher)
        rows = (calibration.fisher_rows if calibration else None) or {}
        covariances = calibration.covariance if calibration else {}
        weights = {n: m.weight.detach().double() for n, m in targets.items()}
        shapes = {n: (m.out_features, m.in_features) for n, m in targets.items()}
        decompositions = {n: decompose(weights[n], method, rows.get(n), covariances.get(n)) for n in targets}

        if budget is not None:
            # Sensitivity is the Fisher-weighted spectrum whatever the method that then factorises.
            spectra = {
                n: d.spectrum if method == "fisher" else decompose(weights[n], "fisher", rows[n], None).spectrum
                for n, d in decompositions.items()
            }
            ranks = allocate_budget(spectra, shapes, budget)
        elif rank is not None:
            ranks = {n: rank for n in targets}
        elif rank_ratio is not None:
            ranks = {n: rank_for_ratio(*shapes[n], rank_ratio) for n in targets}
        else:
            ranks = {n: rank_for_energy(d.spectrum, energy) for n, d in decompositions.items()}

        report = {}
        for name, module in targets.items():
            out, inp = shapes[name]
            r = min(ranks[name], out, inp)
            factorise = saves_parameters(out, inp, r)
            bias = 0 if module.bias is None else out
            energies = decompositions[name].spectrum.square()
            kept = float(energies[:r].sum() / energies.sum()) if factorise and energies.sum() > 0 else 1.0
            approx = weights[name]
            if factorise:
                up, down = decompositions[name].factors(weights[name], r)
                dtype = module.weight.dtype
                new = LowRankLinear.from_factors(up.to(dtype), down.to(dtype), module.bias)
                new.weight.requires_grad_(module.weight.requires_grad)  # a frozen layer stays frozen
                if module.bias is not None:
                    new.bias.requires_grad_(module.bias.requires_grad)
                approx = new.dense_weight().double()
                model.set_submodule(name, new)
            error = output_error(weights[name], approx, covariances[name]) if covariances else None
            report[name] = {
                "shape": [out, inp],
                "rank": r if factorise else None,
                "parameters_before": out * inp + bias,
                "parameters_after": (r * (out + inp) if factorise else out * inp) + bias,
                "energy_kept": round(kept, 6),
                "output_error": None if error is None else round(error, 6),
            }

    record(
        model.config,
        STEP,
        {
            "method": method,
            **criterion,
            "calibration_batches": None if calibration is None else calibration.batches,
            "ranks": {n: e["rank"] for n, e in report.items() if e["rank"] is not None},
            "parameters_before": sum(e["parameters_before"] for e in report.values()),
            "parameters_after": sum(e["parameters_after"] for e in report.values()),
            "modules": report,
        },
    )
    ranks = recorded_ranks(model.config)
    if ranks:  # from_pretrained rebuilds the layout from the config (see low_rank_loading)
        from ...format.quantizer import attach  # the quantizer imports this module when loading

        attach(model, LowRankConfig(ranks=dict(ranks)))
    return model


def recorded_ranks(config) -> dict[str, int]:
    """The ranks `factorize_linear_` recorded in a config (empty for a model it never touched)."""
    return dict(applied(config).get(STEP, {}).get("ranks", {}))


def _resolve_name(model: nn.Module, saved_name: str, names: Mapping[str, nn.Module]) -> str:
    """`saved_name` in `model`, adding or dropping the base-model prefix (a base model from a task checkpoint)."""
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    for name in (saved_name, saved_name.removeprefix(prefix), prefix + saved_name):
        if name in names:
            return name
    raise invalid("ranks", saved_name, f"names of nn.Linear modules of {type(model).__name__}")


def restore_low_rank_layout(model: nn.Module, ranks: Mapping[str, int]) -> nn.Module:
    """Swap the named nn.Linear modules for empty LowRankLinear of the given ranks, in place; return the model.

    Run it on a freshly built model (any device, meta included) before `load_state_dict` / `from_pretrained` fills it
    with a factorised checkpoint's tensors; `recorded_ranks(config)` gives the ranks a checkpoint was saved with.
    Names may carry or omit the base-model prefix (a base model loading a task checkpoint). A module that already is
    a LowRankLinear of that rank is left as it is. Raises ValueError before any swap on an unknown name, a module that
    is not an nn.Linear, or a rank outside [1, min(out, in)].
    """
    require(isinstance(ranks, Mapping) and len(ranks) > 0, "ranks", ranks, "a non-empty dict of module name -> rank")
    names = dict(model.named_modules())
    plan = {}
    for saved_name, r in ranks.items():
        name = _resolve_name(model, saved_name, names)
        module = names[name]
        if isinstance(module, LowRankLinear) and module.rank == r:
            continue
        field = f"ranks[{saved_name!r}]"
        require(isinstance(module, nn.Linear), field, type(module).__name__, "the name of an nn.Linear module")
        upper = min(module.in_features, module.out_features)
        require(is_int(r) and 1 <= r <= upper, field, r, f"an integer in [1, {upper}]")
        plan[name] = (module, r)
    with torch.inference_mode(False):
        for name, (module, r) in plan.items():
            weight = module.weight
            new = LowRankLinear(
                module.in_features, module.out_features, r, module.bias is not None, weight.device, weight.dtype
            )
            model.set_submodule(name, new)
    return model
