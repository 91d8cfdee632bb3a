"""Vision Transformer robustness: number formats, layers, mitigations, and which bits matter.

A small ViT (patch embedding, class token, pre-norm attention/MLP blocks, head; torch's own
layers) is trained once on scikit-learn's handwritten digits (8x8 images, 10 classes, shipped
with the package: nothing is downloaded) and evaluated as fp32, bf16, fp16 and int8 (torch.ao
dynamic quantization of its Linear layers). Every trial flips random bits of one part of the
weights at a bit error rate (BER), scores the test split (accuracy) and restores the weights.

    python -m pytei_ray.launch jobs/vit.py                  # full, adaptive: < 10 min, 2 CPUs
    python -m pytei_ray.launch jobs/vit.py --set small=1    # a first look in about a minute
    python -m pytei_ray.launch jobs/vit.py --set bits=1     # which bits matter (bit sweep)
    python -m pytei_ray.report results/vit                  # tables and plots
    python -m pytei_ray.report results/vit-bits             # + SDC rate by bit, per format

``--set bits=1`` is the bit-position sweep: exactly one flip, at bit k of a uniformly drawn
weight of the Linear layers, for every k of the word of each format (32 fp32, 16 bf16/fp16,
8 int8 levels); rows carry ``bit`` and ``format``, so the report draws the by-bit plot. Its BER
is a placeholder (one fault whatever the rate). Every row of both campaigns has a ``format``
column; the bit levels carry ``format`` too, which pairs them with the model of that format.

Training happens before the trials and the checkpoint is cached with the results
(``results/vit/_artifacts/``), so reruns and extensions load it. See docs/vit.md.
"""

from pytei_ray import BitFlip, Campaign, Level, bit_levels
from pytei_ray.mitigations import SBP, Clip, Ranger
from pytei_ray.stats import Precision
from pytei_ray.studies.vit import (
    BIT_TARGETS,
    CLAMP_LAYERS,
    TARGET_SETS,
    ViTStudy,
    check_formats,
    format_bits,
)


def make_campaign(small: bool = False, bits: bool = False, tiny: bool = False,
                  dataset: str = "digits", formats: str = "fp32,bf16,fp16,int8",
                  seed: int = 0) -> Campaign:
    """The ViT campaign.

    Args:
        small: a first look (fewer targets, BERs, repetitions; about a minute).
        bits: the bit-position sweep instead of the BER sweep (results/vit-bits).
        tiny: a tiny model and grid for tests (seconds).
        dataset: ``"digits"`` (scikit-learn's, no download).
        formats: comma-separated number formats of ``fp32, bf16, fp16, int8``.
        seed: split, initialization, training and fault seed.
    """
    fmts = check_formats([f.strip() for f in formats.split(",") if f.strip()])
    # Which data, how to train, how to score: the ViT library's ready-made hooks.
    study = ViTStudy.preset("tiny" if tiny else "small" if small else "full", dataset, seed)
    # One trained model, evaluated in each number format; `format` becomes a column.
    models = {f"vit-{f}": Level(study.model(f), format=f) for f in fmts}
    mitigations = {
        "none": None,
        "sbp": SBP(),                           # sign + exponent (int8: sign) bits protected
        "clip": Clip(layers=CLAMP_LAYERS),      # PyTEI: Linear outputs clamped to +-100
        "ranger": Ranger(layers=CLAMP_LAYERS),  # per-layer bounds seen on validation data
    }
    size = "-tiny" if tiny else "-small" if small else ""
    if bits:
        # Which bits matter: one flip at bit k of a random Linear weight, every k of the word.
        # `format` pairs each level with the model of that format (bf16 words have 16 bits).
        error_models = {}
        for f in fmts:
            width = format_bits(f)
            ks = range(width) if not (tiny or small) else range(0, width, 1 if small else 3)
            error_models.update(bit_levels(ks, prefix=f"{f}-bit", format=f))
        return Campaign(
            name=f"vit-bits{size}", models=models, data=study.eval_data,
            evaluate=study.evaluate, calibrate=study.calibrate,
            bers=[1e-6],                  # a placeholder: one fault per trial at any rate
            repetitions=2 if tiny else 3 if small else 6,
            targets={"linear": BIT_TARGETS},
            error_models=error_models,
            # SBP trivially removes sign/exponent flips: the sweep compares none and Ranger
            mitigations={"none": None} if tiny else {"none": None,
                                                     "ranger": mitigations["ranger"]},
            seed=2024 + seed, chunk_size=16)
    targets = dict(TARGET_SETS)  # patch / attention / mlp / norm / head / all
    if tiny or small:
        targets = {k: targets[k] for k in (("all",) if tiny else ("attention", "all"))}
    return Campaign(
        name=f"vit{size}",
        models=models,
        data=study.eval_data,           # test split (+ validation for Ranger)
        evaluate=study.evaluate,        # -> accuracy, nonfinite (NaN/inf outputs), crashed
        calibrate=study.calibrate,      # profiled mitigations (Ranger) see validation only
        bers=[1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2] if not (tiny or small)
        else [1e-5, 1e-3] if tiny else [1e-5, 1e-4, 1e-3, 1e-2],
        repetitions=2 if tiny else 3 if small else 4,
        # Then repeat (8, then 16) where the answer is still open: the accuracy's 95%
        # confidence sequence (valid for any outcome shape and at every look) wider than
        # +-0.3, about what 16 trials can honestly certify where most faulted trials keep the
        # golden accuracy (a rare collapse cannot be excluded to better than ~+-0.26 with 16).
        # `--precision accuracy=0.1 --max-reps 40` asks for more (a run of about half an hour).
        precision=None if (tiny or small) else Precision("accuracy", halfwidth=0.3,
                                                         max_reps=16),
        targets=targets,
        error_models={"bitflip": BitFlip},
        mitigations={"none": None, "sbp": SBP()} if tiny else mitigations,
        seed=2024 + seed,
        chunk_size=16,
    )


campaign = make_campaign()
