"""Mitigations: reversible defences evaluated against the same faults.

A mitigation acts at one or both of two points, each undone when the injection handle restores:

* ``filter_faults(faults) -> FaultMap``: hardware protection modelled on the fault map (SBP).
* ``attach(model) -> handle``: software defences as forward hooks (clipping, Ranger); the
  handle's ``remove()`` takes them off.

Write your own by subclassing :class:`Mitigation` and overriding either method; pass instances to
``Injector.inject(model, mitigations=[...])`` or a campaign's ``mitigations`` factor.
"""

from .base import HookHandles, Mitigation, fresh_instances
from .clipping import Clip, Ranger
from .sbp import SBP

__all__ = ["SBP", "Clip", "HookHandles", "Mitigation", "Ranger", "fresh_instances"]
