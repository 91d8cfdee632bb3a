"""Deep-recommendation-system (DRS) robustness: how much AUC do bit flips in the weights cost?

Six click-through-rate models (FM, Wide & Deep, DCN, DeepFM, AFN, DLRM) are trained once on a
click log, then every trial flips random bits of their weights at a bit error rate (BER), scores
the faulty model on the held-out test split (AUC-ROC, log loss) and restores the weights. Four
protections are compared on the same faults: none, selective bit protection, and two kinds of
activation clipping.

    python -m pytei_ray.launch jobs/drs.py                   # full, AUC +-0.025: ~10 min, 2 CPUs
    python -m pytei_ray.launch jobs/drs.py --set small=1     # a first look in about a minute
    python -m pytei_ray.launch jobs/drs.py --set activations=1   # + faults in layer outputs
    python -m pytei_ray.launch jobs/drs.py --set dataset=criteo --set data=/data/train.txt
    python -m pytei_ray.launch jobs/drs.py --set dataset=movielens --set data=ml-1m/ratings.dat
    python -m pytei_ray.launch jobs/drs.py --set rescore=0   # no re-scoring of table faults
    python -m pytei_ray.launch jobs/drs.py --set subsample=0  # every test sample, every trial
    python -m pytei_ray.report results/drs                   # tables and plots

Nothing is downloaded. Without ``data`` the log is a synthetic Criteo-like one (generated, same
seed -> same rows). With a real file the first ``rows`` lines are read (default: the setting's
size, 100k full / 20k small). Rows are split 80/10/10 into train / validation / test with a
fixed seed: models train on train, stop early on validation AUC, Ranger calibrates on
validation, and only the metrics use test.

Embedding faults are cheap: a trial whose faults all lie in embedding rows scores only the test
samples that look those rows up (patched into the fault-free logits; ``n_rescored`` in its row),
after each worker checked that this gives the full evaluation's metrics bit for bit. Any other
evaluated trial scores 1,000 random test samples (``n_scored``; the same for a point's four
mitigations): its AUC and log loss are unbiased estimates of the full test split's, so the
cells' means and confidence sequences hold at a ninth of the cost; per-trial SDC is not
reported for those cells (``--set subsample=0`` scores every sample; docs/campaign.md).

Training happens before the trials, once per model, and the checkpoint is stored with the
results (``results/drs/_artifacts/``): a resumed run, an extension (``--extend --repetitions
20``) or another campaign written to the same directory loads it instead of training again.

To study your own model, copy this file and change ``models`` (any ``name -> factory``; a
factory that takes ``ctx`` can cache its training with ``ctx.artifact(key, produce)``), ``data``
and ``evaluate`` (see docs/campaign.md).

``--set activations=1`` adds a target set ``dense-out``: transient bit flips in the outputs of
the middle layers (MLP, cross, FM, interaction, logarithmic neurons: the leaf modules under
``dense``) while the test split is scored, instead of in the weights (docs/activations.md).
Those trials are always evaluated (no fault-free shortcut), so it is a separate campaign name
(``drs-act``) and a longer run; combine it with ``small=1`` for a first look.

``--set training=1`` is the training variant (campaign ``drs-train``; ``drs-train-small`` with
``small=1``): the trained models keep training (Adam, the schedule's batch size and learning
rate, a few warm-up steps for its moments) for an 8-step window, and one flip of the top
exponent bit (fp32 bit 30) strikes once at step 2 in the weights, the parameter gradients,
Adam's ``exp_avg`` / ``exp_avg_sq`` or the outputs of the ``dense`` layers, or permanently in
the weights. Each trial is scored by test log loss and AUC and classified against the golden
window of its model and mitigation (masked, spike_and_recover, silent_degradation, divergence,
immediate_nonfinite); mitigations none / clip (gradient-norm clipping) / skip (skip a step whose
loss or gradient norm jumps) / rollback (redo it from a snapshot) / sbp (sign and exponent bits
of the weights protected), paired on the same faults. See docs/drs.md, "Faults during training".

    python -m pytei_ray.launch jobs/drs.py --set training=1 --set small=1   # about a minute
    python -m pytei_ray.launch jobs/drs.py --set training=1                 # a few minutes
"""

from pytei_ray import Activations, BitFlip, Campaign
from pytei_ray.campaign import BitFlipIn, Level
from pytei_ray.mitigations import SBP, Clip, Ranger
from pytei_ray.stats import Precision
from pytei_ray.studies.drs import CLAMP_LAYERS, MODELS, TARGET_SETS, DRSStudy
from pytei_ray.training import (
    AtStep,
    OptimizerState,
    Outputs,
    ParamGrads,
    Permanent,
    Training,
    Weights,
    standard_mitigations,
)


def make_campaign(small: bool = False, dataset: str = "synthetic", data: str | None = None,
                  rows: int | None = None, activations: bool = False,
                  rescore: bool = True, training: bool = False,
                  subsample: int = 1000) -> Campaign:
    """The DRS campaign.

    Args:
        small: a first look (smaller log and grid, about a minute) instead of the full study.
        dataset: ``"synthetic"``, ``"criteo"`` (a ``train.txt``) or ``"movielens"`` (MovieLens-1M
            ``ratings.dat``).
        data: path of the real dataset's file (required unless synthetic).
        rows: rows of the log to use (default: 100k full, 20k small).
        activations: also inject into the outputs of the ``dense`` layers (target ``dense-out``).
        rescore: re-score a trial whose faults all lie in embedding rows on the test samples
            that look them up (the same metrics, bit for bit); False scores every trial in full.
        training: the training variant instead (faults while the models keep training).
    """
    # Which data, how to train, how to score: the DRS library's ready-made hooks.
    study = DRSStudy.preset("small" if small else "full", dataset=dataset, path=data, rows=rows)
    if training:
        if activations:
            raise ValueError("`training=1` has its own sites (activations included); drop "
                             "`activations=1`.")
        return training_campaign(study, small, dataset)

    name = ("drs" + ("-act" if activations else "") + ("-small" if small else "")
            + ("" if dataset == "synthetic" else f"-{dataset}"))
    targets = dict(TARGET_SETS)    # embedding.* / dense.* / predictor.* / all
    if activations:                # faults in what the middle layers compute, not in the weights
        targets["dense-out"] = Activations("dense.*")
    return Campaign(
        name=name,
        # name -> factory. study.model(m) trains model m on the first use and caches the
        # checkpoint with the results; afterwards every worker just loads it.
        models={m: study.model(m) for m in MODELS},  # fm wide_deep dcn deepfm afn dlrm
        data=study.eval_data,          # per model: the test split (+ validation for Ranger)
        # -> {"auc": AUC-ROC, "logloss": log loss} on test, split into per-sample logits and
        # their score, so that a trial whose faults all lie in embedding rows re-scores only
        # the test samples that look those rows up (the same metrics, bit for bit)
        evaluate=study.split,
        rescore=bool(rescore),         # --set rescore=0: every trial scored in full
        # A trial that needs a full evaluation (faults outside the tables, or in rows most
        # samples read) scores 1,000 random test samples, the same for its four mitigations:
        # its AUC is then an unbiased estimate of the full test AUC (a mean over click /
        # non-click pairs), ~9x cheaper. Cell means and their confidence sequences hold; per-trial
        # SDC and quantiles are of the estimates. --set subsample=0: every test sample.
        subsample=int(subsample) or None,
        calibrate=study.calibrate,     # profiled mitigations (Ranger) see validation only
        # Bit error rates: every bit of every targeted weight flips with this probability.
        bers=[1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2] if not small
        else [1e-8, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2],
        repetitions=3 if small else 10,  # Monte-Carlo draws of the faults per point (round 1)
        # Then repeat where the answer is still open: points whose test-AUC confidence sequence
        # (95%, valid for any outcome shape and under these repeated looks) is wider than
        # +-0.025 get 1.5x the repetitions, up to 360 (~97,000 trials, most points stop at 120
        # or 180: where faulted trials spread +-0.1 in AUC, or almost all keep the golden AUC
        # and a rare collapse must be excluded, +-0.025 honestly takes ~145; 3 points need
        # 360). Measured on 2 cores, training included: ~9-10 min, every AUC cell settled
        # (README, "The DRS study"; ~33 min with `--set subsample=0`). The small look is a
        # fixed grid; with activations=1 (trials that always score every sample) +-0.1,
        # doubling up to 40.
        precision=None if small else Precision("auc", halfwidth=0.1, max_reps=40)
        if activations else Precision("auc", halfwidth=0.025, max_reps=360, growth=1.5),
        # Where the faults go: parameter-name globs of the models' three parts (or all).
        targets=targets,
        error_models={"bitflip": BitFlip},
        mitigations={
            "none": None,
            "sbp": SBP(),                          # sign + exponent bits protected (ECC-like)
            "clip": Clip(layers=CLAMP_LAYERS),     # PyTEI: outputs clamped to +-100, NaN -> 0
            "ranger": Ranger(layers=CLAMP_LAYERS),  # per-layer bounds seen on validation data
        },
        seed=2024,                     # the whole campaign is a function of it
        chunk_size=16,                 # trials per message to a worker (4 points x 4 mitigations)
    )


def training_campaign(study: DRSStudy, small: bool, dataset: str) -> Campaign:
    """The training variant: faults while the trained models keep training (``training=1``)."""
    models = ("fm", "dlrm") if small else tuple(MODELS)
    window = 8                          # steps each trial trains after the checkpoint
    sites = {
        "weights": Weights(None),               # every parameter: stays, training continues
        "param-grads": ParamGrads(),            # p.grad before optimizer.step()
        "optim-state": OptimizerState(["exp_avg", "exp_avg_sq"]),   # Adam's moments
        "fwd-act": Outputs("dense.*"),          # outputs of the dense layers, forward pass
    }
    timings = {"once": AtStep(2), "permanent": Permanent()}   # permanent: same positions
    plan = [(s, "once") for s in sites] + [("weights", "permanent")]
    if small:
        plan = [("weights", "once"), ("optim-state", "once"), ("weights", "permanent")]
    targets = {f"{s}-{w}": Level(Training(sites[s], timings[w], steps=window), site=s, timing=w)
               for s, w in plan}
    study.check_targets(targets, models)  # a site a model or Adam lacks stops here (exit 2)
    # none / clip (gradient-norm clipping before each update) / skip (no update on a loss or
    # gradient-norm jump) / rollback (restore the snapshot, redo the step) / sbp (sign and
    # exponent bits of the weights kept), paired on the same faults
    mitigations = standard_mitigations(("none", "rollback", "sbp") if small else None)
    return Campaign(
        name="drs-train" + ("-small" if small else "")
        + ("" if dataset == "synthetic" else f"-{dataset}"),
        # the model factory returns the trained model *and* a warm Adam (restorable)
        models={m: study.trainer(m) for m in models},
        data=study.eval_data,
        evaluate=study.evaluate_training,   # -> logloss (classified on it), auc on test
        targets=targets,
        # one flip of fp32's top exponent bit per site and faulty step (a count: BER unused)
        error_models={"exp-msb": Level(BitFlipIn([30], n=1), bits="exp-msb")},
        bers=[1e-6],
        repetitions=2,
        mitigations=mitigations,
        seed=2024,
        chunk_size=4,
    )


campaign = make_campaign()
