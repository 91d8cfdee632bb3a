"""Studies built on the library: their models, data, training and a campaign's hooks.

* :mod:`.drs`: deep recommendation systems (PyTEI's DRS campaign).
* :mod:`.vit`: a small Vision Transformer in several number formats.
* :mod:`.gpt`: a small byte-level GPT trained on Python's own source (training faults).
* :mod:`.common`: what they share (eval data, torch threads, cached checkpoints).

The library (``faults``, ``injection``, ``campaign``, ``execution``, ...) never imports a study;
job files do.
"""
