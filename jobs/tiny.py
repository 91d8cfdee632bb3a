"""A tiny campaign that runs in seconds: two small MLPs on generated data.

    python -m pytei_ray.launch jobs/tiny.py --executor local            # ~120 trials
    python -m pytei_ray.launch jobs/tiny.py --set small=1 --dry-run     # 12 trials

Labels come from the fault-free model itself, so the golden accuracy is 1.0 and every lost point
of accuracy is caused by the injected faults.
"""

import torch
from torch import nn

from pytei_ray import BitFlip, Campaign
from pytei_ray.mitigations import SBP, Clip

N_FEATURES, N_CLASSES, N_SAMPLES = 16, 4, 512


def mlp(hidden: int):
    """A factory for a fixed (seeded) random MLP; runs where the trials run."""

    def build() -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(hidden)
            return nn.Sequential(
                nn.Linear(N_FEATURES, hidden), nn.ReLU(),
                nn.Linear(hidden, hidden), nn.ReLU(),
                nn.Linear(hidden, N_CLASSES),
            )

    return build


MODELS = {"mlp16": mlp(16), "mlp64": mlp(64)}


def load_data(model_name: str):
    """Inputs from a seeded generator, labels from the fault-free model."""
    x = torch.randn(N_SAMPLES, N_FEATURES, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = MODELS[model_name]()(x).argmax(dim=1)
    return x, y


def evaluate(model: nn.Module, data) -> dict[str, float]:
    """Accuracy against the clean model's labels, and the largest logit (NaN/Inf show up here)."""
    x, y = data
    logits = model(x)
    return {
        "accuracy": (logits.argmax(dim=1) == y).float().mean().item(),
        "max_abs_logit": logits.abs().max().item(),
    }


def make_campaign(small: bool = False) -> Campaign:
    """The campaign; ``--set small=1`` gives a 12-trial version."""
    return Campaign(
        name="tiny-small" if small else "tiny",
        models={"mlp16": MODELS["mlp16"]} if small else MODELS,
        data=load_data,
        evaluate=evaluate,
        bers=[1e-3, 1e-2] if small else [1e-5, 1e-4, 1e-3, 1e-2],
        repetitions=2 if small else 5,
        mitigations={"none": None, "sbp": SBP(), "clip": Clip()},
        error_models={"bitflip": BitFlip},
        seed=2024,
    )


campaign = make_campaign()
