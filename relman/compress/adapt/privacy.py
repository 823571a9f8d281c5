"""Differentially private training with Opacus (DP-SGD) and the privacy ledger it leaves.

DP-SGD clips each example's gradient to `max_grad_norm`, adds Gaussian noise of standard
deviation noise_multiplier x max_grad_norm to the sum, and samples batches by Poisson sampling
(each row independently with rate q = batch_size / n). Opacus picks the noise multiplier so
that the planned number of steps spends at most `target_epsilon` at `delta` under its
accountant (RDP by default), and the accountant reports what was actually spent. Training under
DP keeps the last weights: picking the best epoch on validation rows is not covered by the
accountant, so the validation split only reports accuracy.

The ledger recorded on the child (meta["privacy"], and the metric `privacy_epsilon` with the
ledger as its context) says what the guarantee is and what it rests on. Versions trained
without DP have no `privacy_epsilon`, so a gate `privacy_epsilon <= 8` fails for them as "not
evaluated" rather than passing.

FedAvg of DP copies (relman.compress.adapt.merge): the sites' training rows are disjoint, each row
influences only its site's copy, and the average is post-processing of the copies, so by
parallel composition the merged model is (max ε, max δ)-DP with respect to any one row.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any, Sequence

from torch import nn

from relman.catalog import Metric
from relman.errors import RecipeError

MECHANISM = "DP-SGD (per-example clipping, Gaussian noise, Poisson sampling)"
PARALLEL_ASSUMPTION = ("the sites' training rows are disjoint (each person's data is at one site only); "
                       "under that assumption the merge is (max ε, max δ)-DP by parallel composition "
                       "and post-processing")


def check_layers(model: nn.Module, ref: str) -> None:
    """Refuse, naming the layer, a model that DP-SGD cannot train (Opacus' module validators:
    BatchNorm mixes examples of a batch, some layers have no per-example gradients ...)."""
    from opacus.validators import ModuleValidator

    for name, module in model.named_modules():
        validator = ModuleValidator.VALIDATORS.get(type(module))
        if validator is None:
            continue
        errors = validator(module)
        if errors:
            reason = str(errors[0]).split(". ")[0]
            raise RecipeError(f"DP fine-tuning cannot train {ref}: layer '{name or '<root>'}' "
                              f"({type(module).__name__}) is not supported by Opacus: {reason}")


# Embeddings looked up with ids shared by the whole batch (a (1, L) buffer broadcast over it):
# Opacus' per-example gradient for them has batch size 1, so they are frozen under DP.
_BROADCAST_EMBEDDINGS = ("position_embeddings", "token_type_embeddings")


def freeze_broadcast_embeddings(model: nn.Module) -> list[str]:
    """Freeze the position / token-type embedding tables (see above); returns their names."""
    frozen = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and name.rpartition(".")[2] in _BROADCAST_EMBEDDINGS:
            if any(p.requires_grad for p in module.parameters()):
                module.requires_grad_(False)
                frozen.append(name)
    return frozen


@dataclass
class PrivateTraining:
    """What `make_private` hands back: the wrapped model, optimizer and Poisson data loader."""

    engine: Any
    model: nn.Module
    optimizer: Any
    loader: Any
    target_epsilon: float
    delta: float
    max_grad_norm: float
    accountant: str
    frozen: list[str]

    @property
    def noise_multiplier(self) -> float:
        return float(self.optimizer.noise_multiplier)

    @property
    def sample_rate(self) -> float:
        return float(self.loader.sample_rate)

    def steps(self) -> int:
        return int(sum(n for _, _, n in self.engine.accountant.history))

    def epsilon(self) -> float:
        return float(self.engine.get_epsilon(self.delta)) if self.steps() else 0.0

    def ledger(self, *, epochs: int, train_samples: int) -> dict[str, Any]:
        return {"mechanism": MECHANISM, "accountant": self.accountant, "epsilon": self.epsilon(),
                "delta": self.delta, "target_epsilon": self.target_epsilon, "noise_multiplier": self.noise_multiplier,
                "sample_rate": self.sample_rate, "steps": self.steps(), "epochs": epochs,
                "max_grad_norm": self.max_grad_norm, "train_samples": train_samples,
                "unit": "one training row", "covers": "the training split (validation rows only report accuracy)",
                "frozen_for_dp": self.frozen,
                "library": f"opacus {metadata.version('opacus')}"}

    def account_skipped_step(self) -> None:
        """An empty Poisson batch still counts as a step (conservative accounting)."""
        self.engine.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

    def unwrap(self) -> nn.Module:
        module = self.model._module if hasattr(self.model, "_module") else self.model
        if hasattr(self.model, "_close"):
            self.model._close()  # remove Opacus' hooks so the model saves and runs as usual
        return module


def make_private(model: nn.Module, optimizer: Any, n_train: int, batch_size: int, *, epochs: int,
                 target_epsilon: float, delta: float, max_grad_norm: float, ref: str,
                 accountant: str = "rdp") -> PrivateTraining:
    """Wrap model + optimizer + a Poisson loader over row indices for DP-SGD."""
    import torch
    from opacus import PrivacyEngine

    if target_epsilon <= 0:
        raise RecipeError("target_epsilon must be positive")
    if not 0 < delta < 1:
        raise RecipeError(f"delta must lie between 0 and 1, got {delta}")
    if delta >= 1.0 / max(1, n_train):
        raise RecipeError(f"delta {delta:g} is not below 1/n = {1.0 / max(1, n_train):.3g} for {n_train} training "
                          "rows: such a guarantee allows leaking a whole row; choose a smaller delta")
    check_layers(model, ref)
    frozen = freeze_broadcast_embeddings(model)
    model.train()
    index = torch.utils.data.TensorDataset(torch.arange(n_train))
    loader = torch.utils.data.DataLoader(index, batch_size=min(batch_size, n_train))
    engine = PrivacyEngine(accountant=accountant)
    try:
        private_model, private_opt, private_loader = engine.make_private_with_epsilon(
            module=model, optimizer=optimizer, data_loader=loader, target_epsilon=target_epsilon,
            target_delta=delta, epochs=epochs, max_grad_norm=max_grad_norm)
    except (ValueError, NotImplementedError) as e:
        raise RecipeError(f"DP fine-tuning cannot train {ref}: {e}") from None
    return PrivateTraining(engine, private_model, private_opt, private_loader, target_epsilon, delta,
                           max_grad_norm, accountant, frozen)


def metric(ledger: dict[str, Any]) -> Metric:
    return Metric("privacy", "privacy_epsilon", float(ledger["epsilon"]), dict(ledger))


def compose_parallel(ledgers: Sequence[dict[str, Any] | None], refs: Sequence[str], *,
                     allow_mixed: bool) -> dict[str, Any] | None:
    """The privacy of a FedAvg merge of copies trained on disjoint data (None: no DP parent)."""
    dp = [(r, l) for r, l in zip(refs, ledgers) if l]
    plain = [r for r, l in zip(refs, ledgers) if not l]
    if not dp:
        return None
    if plain and not allow_mixed:
        raise RecipeError(f"cannot merge DP-trained {', '.join(r for r, _ in dp)} with {', '.join(plain)}, trained "
                          "without DP: the result would carry no privacy guarantee for the latter's data. Pass "
                          "--param allow_mixed_privacy=true to merge anyway (no privacy_epsilon is recorded)")
    sites = [{"parent": r, "epsilon": l["epsilon"], "delta": l["delta"], "noise_multiplier": l.get("noise_multiplier"),
              "steps": l.get("steps")} for r, l in dp]
    ledger: dict[str, Any] = {"mechanism": "parallel composition of per-site " + MECHANISM,
                              "accountant": "parallel composition (max over sites)", "assumption": PARALLEL_ASSUMPTION,
                              "sites": sites}
    if plain:
        ledger.update({"epsilon": None, "delta": None, "non_private_parents": plain,
                       "note": "mixed DP and non-DP parents: no bound for the non-DP sites' data"})
    else:
        ledger.update({"epsilon": max(float(s["epsilon"]) for s in sites),
                       "delta": max(float(s["delta"]) for s in sites)})
    return ledger
