"""A campaign whose true cell means are known exactly, run end to end (launch, then report).

The metric is an accuracy-like score (declared in [0, 1]) of 0.8, or 0.3 when a fault flipped
the top exponent bit (bit 30) of any targeted fp32 word: the rare-catastrophe shape of issue
19. With ``W`` words and BER ``p`` the faults are Binomial, so the true cell mean is
``0.8 - 0.5 * (1 - (1 - p) ** W)`` and ``p0 = (1 - p) ** (32 W)``.
"""

from __future__ import annotations

import numpy as np

from pytei_ray.driver import run
from pytei_ray.report import summarize

JOB = '''
import torch
from torch import nn
from pytei_ray import BitFlip, Campaign, Metric, Precision

def build(words):
    def make():
        with torch.random.fork_rng():
            torch.manual_seed(words)
            return nn.Linear(words, 1, bias=False)
    return make

MODELS = {f"w{w}": build(w) for w in (8, 32)}

def data(name):
    return MODELS[name]().weight.detach().view(torch.int32).clone()

def evaluate(model, golden_bits):
    flipped = (model.weight.detach().view(torch.int32) ^ golden_bits) >> 30 & 1
    return {"score": 0.3 if bool(flipped.any()) else 0.8}

campaign = Campaign(name="hidden", models=MODELS, data=data, evaluate=evaluate,
                    bers=[1e-4, 1e-3, 3e-3, 1e-2], repetitions=10,
                    mitigations={"none": None}, seed=19,
                    metrics={"score": Metric(bounds=(0, 1), higher_is_better=True)},
                    precision=Precision("score", 0.025, max_reps=320))
'''


def test_hidden_campaign_intervals_hold_the_known_means(tmp_path):
    job = tmp_path / "hidden.py"
    job.write_text(JOB)
    out = tmp_path / "out"
    run(str(job), str(out), executor="local", progress=False, echo=lambda s: None)
    s = summarize(out, metric="score")
    words = s["model"].str[1:].astype(int).to_numpy()
    truth = 0.8 - 0.5 * (1 - (1 - s["ber"].to_numpy()) ** words)
    covered = (s["ci_low"] <= truth) & (truth <= s["ci_high"])
    print(s[["model", "ber", "trials", "mean", "ci_low", "ci_high", "conclusive"]], truth)
    assert covered.all()
    assert set(s["ci_method"]) == {"p0-cs"} and set(s["ci_level"]) == {0.95}
    done = s["conclusive"].to_numpy()
    assert (np.abs(s["mean"].to_numpy() - truth)[done] <= 0.025).all()
    assert done.sum() >= 4  # the low-BER cells settle well before the cap
