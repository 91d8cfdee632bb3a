"""Evaluation data follows the replica to its device (a CUDA worker must not get CPU batches)."""

from __future__ import annotations

from collections import namedtuple

import torch

from pytei_ray.execution.worker import to_device

META = torch.device("meta")


def test_tensors_in_containers_move():
    Pair = namedtuple("Pair", "x y")
    data = {"a": (torch.zeros(2), [torch.ones(3)]), "p": Pair(torch.zeros(1), 5), "s": "text"}
    moved = to_device(data, META)
    assert moved["a"][0].device == META and moved["a"][1][0].device == META
    assert isinstance(moved["p"], Pair) and moved["p"].x.device == META and moved["p"].y == 5
    assert moved["s"] == "text"


def test_objects_with_to_move_and_others_pass_through():
    class Batch:
        def __init__(self, t):
            self.t = t

        def to(self, device):
            return Batch(self.t.to(device))

    class NotTorch:
        def to(self, unit: str, scale: float):  # an unrelated `.to`
            return scale

    assert to_device(Batch(torch.zeros(2)), META).t.device == META
    other = NotTorch()
    assert to_device(other, META) is other
    assert to_device(None, META) is None
