"""Faults during training: a small GPT, trained on Python's own source, hit while it trains.

A byte-level decoder-only transformer (token + position embeddings, pre-LN attention/MLP
blocks; torch's own layers) is pretrained once on the standard library's source files, read
from this Python installation (nothing is downloaded), and cached with the results
(``results/gpt/_artifacts/``). Every trial restores the checkpoint in place (model, AdamW
moments, data position), trains a short window with faults in one site at one timing, scores
the validation loss (nats per byte) and perplexity, and is classified against the golden
(fault-free) window of its model and mitigation: masked, spike_and_recover, silent_degradation,
divergence, immediate_nonfinite (one 0/1 column each). Each step's loss, gradient norm, update
size and largest attention logit go to the step table (``results/gpt/_steps/``).

    python -m pytei_ray.launch jobs/gpt.py --set small=1    # a first look, about 2 minutes
    python -m pytei_ray.launch jobs/gpt.py                   # the study, under 15 minutes
    python -m pytei_ray.launch jobs/gpt.py --set exponent=1  # + exponent bits at BER 1e-6
    python -m pytei_ray.report results/gpt                   # outcome rates, loss curves

Every mitigation of a point sees the same faults and the same batches (paired). See docs/gpt.md.
"""

from pytei_ray.campaign import BitFlipIn, Campaign, Level
from pytei_ray.stats import Precision
from pytei_ray.studies.gpt import GPTStudy
from pytei_ray.training import (
    ActivationGrads,
    AtStep,
    Every,
    OptimizerState,
    Outputs,
    ParamGrads,
    Permanent,
    Training,
    Weights,
    standard_mitigations,
)

#: The most significant exponent bit of each format's word (a flip multiplies by 2**+-128).
EXP_MSB = {"fp32": 30, "bf16": 14}


def make_campaign(small: bool = False, tiny: bool = False, formats: str = "fp32,bf16",
                  seed: int = 0, exponent: bool = False) -> Campaign:
    """The GPT training-fault campaign.

    Args:
        small: a first look (fewer sites, timings, mitigations; about 2 minutes).
        tiny: a tiny model and grid for tests (seconds).
        formats: comma-separated training formats of ``fp32, bf16``.
        seed: initialization, data-order and fault seed.
        exponent: also flip every exponent bit at BER 1e-6 (error models ``<format>-exponent``,
            twice the points). Off by default: in the 2026-12-02 run such faults were masked in
            every trial outside the weights.
    """
    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    study = GPTStudy.preset("tiny" if tiny else "small", seed)
    window = 6 if (tiny or small) else 8     # steps each trial trains after the checkpoint
    # The model factory returns the model *and* its AdamW at the checkpoint (restorable).
    models = {f"gpt-{f}": Level(study.trainer(f), format=f) for f in fmts}
    # Where faults strike: every site of a training step.
    sites = {
        "weights": Weights("blocks.*"),                   # memory: stays, training continues
        "fwd-act": Outputs("blocks.*.mlp.fc2"),           # MLP outputs in the forward pass
        "bwd-act": ActivationGrads("blocks.*.mlp.fc2"),   # gradients flowing back out of MLPs
        "param-grads": ParamGrads(),                      # p.grad before optimizer.step()
        "optim-state": OptimizerState(["exp_avg", "exp_avg_sq"]),   # AdamW's moments
    }
    # When: at one step (every site), intermittently (each step with p = 1/4) or permanently
    # (the same positions at every step) for some.
    timings = {"once": AtStep(2), "intermittent": Every(0.25), "permanent": Permanent()}
    plan = [(s, "once") for s in sites] + [("weights", "permanent"),
                                           ("param-grads", "intermittent"),
                                           ("fwd-act", "intermittent")]
    if tiny or small:
        plan = [("weights", "once"), ("param-grads", "once")]
    targets = {f"{s}-{w}": Level(Training(sites[s], timings[w], steps=window), site=s, timing=w)
               for s, w in plan}
    study.check_targets(targets)        # a site the model or AdamW lacks stops here (exit 2)
    # Which bits: one flip of the top exponent bit per site and step (a count), or exponent
    # bits at the campaign's rate. `format` pairs each level with the model of its format.
    error_models = {}
    for f in fmts:
        error_models[f"{f}-exp-msb"] = Level(BitFlipIn([EXP_MSB[f]], n=1), format=f,
                                             bits="exp-msb")
        if exponent and not (tiny or small):
            error_models[f"{f}-exponent"] = Level(BitFlipIn("exponent"), format=f,
                                                  bits="exponent")
    # none / clip (gradient-norm clipping before each update) / skip (no update on a loss or
    # gradient-norm jump) / rollback (restore the snapshot, redo the step) / sbp (sign and
    # exponent bits of the weights kept), paired on the same faults
    mitigations = standard_mitigations(("none", "skip") if tiny else
                                       ("none", "skip", "rollback") if small else None)
    return Campaign(
        name="gpt-tiny" if tiny else "gpt-small" if small else "gpt",
        models=models,
        data=study.eval_data,           # the corpus: training batches + validation windows
        evaluate=study.evaluate,        # -> val_loss, perplexity (after the window)
        targets=targets,
        error_models=error_models,
        bers=[1e-6],                    # the rate of the `exponent` levels (a count ignores it)
        repetitions=2 if tiny else 3,
        # Then 6, then 10 repetitions where the divergence rate is still open: its 95%
        # confidence sequence (valid for any outcome shape and at every look) wider than
        # +-0.4. That is about what 10 trials can honestly give a 0/1 rate (none of 10
        # divergent: [0, 0.37]); `--precision divergence=0.2 --max-reps 40` asks for more.
        precision=None if (tiny or small) else Precision("divergence", halfwidth=0.4,
                                                         max_reps=10),
        mitigations=mitigations,
        seed=17 + seed,
        chunk_size=4,
    )


campaign = make_campaign()
