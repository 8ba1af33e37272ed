"""halp-repro: a reproduction package for HaLP (CVPR 2023).

Modules are named after the concepts of the paper: ``skeleton`` (layout and
normalisation), ``ntu`` and ``pku`` (raw formats and splits), ``storage`` (our on-disk
format), ``prepare`` (raw data -> training arrays), ``synthetic`` (generated raw data),
``dataset`` and ``augment`` (the training loader).
"""

__version__ = "0.1.0"
