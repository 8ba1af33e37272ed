"""halp-repro: the reproduction package of HaLP (CVPR 2023).

HaLP, "Hallucinating Latent Positives for Skeleton-based Self-Supervised Learning of
Actions" (Shah, Roy, Shah, Mishra, Jacobs, Cherian, Chellappa; CVPR 2023, arXiv:2304.00387).
Docstrings cite the paper by section and equation ("Sec. 3.4, Eq. 7").

The package is layered; a module imports only from its own layer or the layers below:

- core: :mod:`~halp.errors` (every user-facing error under :class:`~halp.errors.HalpError`),
  :mod:`~halp.io` (atomic writes, manifests, hashes), :mod:`~halp.schedules`,
  :mod:`~halp.config` (strict configuration), :mod:`~halp.resources` (shipped data and
  configs), :mod:`~halp.runtime` (devices, processes, provenance);
- :mod:`halp.data`: raw NTU RGB+D and PKU-MMD II formats, preparation into the on-disk
  format, synthetic data, augmentation, modalities and loaders;
- :mod:`halp.encoders`: the BiGRU of the paper;
- :mod:`halp.objectives`: MoCo's InfoNCE and queue, PosHal and the HaLP loss, prototypes,
  CMD, each a composable loss term;
- methods: :mod:`~halp.methods` (presets), :mod:`~halp.methods.model` (the pretraining model),
  :mod:`~halp.methods.checkpoint`;
- :mod:`halp.eval`: classifier fitting and kNN;
- run: :mod:`~halp.train` (``halp pretrain``) and :mod:`~halp.evaluate` (``halp evaluate``);
- :mod:`halp.report`: results naming and reading, the published numbers, tables, figures;
- interface: :mod:`~halp.smoke` (the embedded default run) and :mod:`~halp.cli`.
"""

__version__ = "0.1.0"
