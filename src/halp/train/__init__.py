"""``halp pretrain``: the self-supervised pretraining loop of every skeleton method.

- :mod:`~halp.train.loop`: :func:`pretrain` in named stages (setup, resume, the epoch
  loader, one epoch of steps, the end of an epoch);
- :mod:`~halp.train.monitor`: the metrics files, the step checks and representation
  health.
"""

from halp.train.loop import lr_at, pretrain

__all__ = ["lr_at", "pretrain"]
