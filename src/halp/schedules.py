"""Schedules over epochs: the step learning rate and the weights of loss terms.

One step schedule serves pretraining (lr 0.01, x0.1 at epoch 351 in the paper, Sec. 4.2)
and every downstream protocol (x0.1 at epochs 50 and 70). A loss term's weight is a
:class:`StepWeight`: 0 before its start epoch, then constant; the HaLP weight mu, 0 for
the first 200 epochs and 1 afterwards (Sec. 4.2), is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def step_lr(base: float, gamma: float, steps: Sequence[int], epoch: int) -> float:
    """``base * gamma ** (number of steps <= epoch)``; epochs count from 0."""
    return base * gamma ** sum(epoch >= s for s in steps)


@dataclass(frozen=True)
class StepWeight:
    """A loss weight that is 0 before ``start_epoch`` and ``value`` from it on."""

    value: float
    start_epoch: int = 0

    def at(self, epoch: int) -> float:
        """The weight during ``epoch`` (0-based)."""
        return self.value if epoch >= self.start_epoch else 0.0
