"""Shared helpers of the training tests: a tiny MLP, its data, a short training run."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pytei_ray import BitFlip
from pytei_ray.faults import layout_of
from pytei_ray.training import AtStep, TrainingFaults, train_step


def bits(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().view(layout_of(t.dtype).int_dtype).reshape(-1).numpy().copy()


def make(opt: str = "adam", seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
    optim = (torch.optim.Adam(model.parameters(), 1e-2) if opt == "adam"
             else torch.optim.SGD(model.parameters(), 0.05, momentum=0.9))
    g = torch.Generator().manual_seed(1)
    data = torch.randn(12, 4, 8, generator=g), torch.randn(12, 4, 2, generator=g)
    return model, optim, data


def closure(model, data, i):
    def run():
        loss = ((model(data[0][i]) - data[1][i]) ** 2).mean()
        loss.backward()
        return loss
    return run


ONE_STEP = AtStep(3)
HIGH_MANTISSA = BitFlip(n=3, bits=[20, 21, 22])  # changes a value by ~10%: always visible


def run(site=None, when=ONE_STEP, error=HIGH_MANTISSA, steps=6, opt="adam", seed=7,
        mitigations=()):
    """A short training run: (step records, parameter words after every step, faults)."""
    model, optim, data = make(opt)
    tf = None if site is None else TrainingFaults(model, optim, site=site, error=error,
                                                  when=when, seed=seed, steps=12,
                                                  mitigations=mitigations)
    recs, params = [], []
    try:
        for i in range(steps):
            recs.append(train_step(i, model, optim, closure(model, data, i), faults=tf,
                                   mitigations=mitigations))
            params.append(np.concatenate([bits(p) for p in model.parameters()]))
    finally:
        if tf is not None:
            tf.remove()
    return recs, params, tf


GOLDEN = {}


def golden(opt="adam"):
    if opt not in GOLDEN:
        GOLDEN[opt] = run(None, opt=opt)
    return GOLDEN[opt]
