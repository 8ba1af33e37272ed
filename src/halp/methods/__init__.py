"""Methods: presets (what a method is), the pretraining model and its checkpoints.

- :mod:`~halp.methods.presets`: each method as data (modalities, extra views, loss
  terms); re-exported here, and importing it loads no torch;
- :mod:`~halp.methods.views`: the model-side view transforms a preset's views name;
- :mod:`~halp.methods.model`: the one builder behind every skeleton preset;
- :mod:`~halp.methods.checkpoint`: saving, loading and resuming pretraining runs.

A new method is objectives (:mod:`halp.objectives`), a preset and, if it needs one, a
view transform; the training loop (:mod:`halp.train`) and the model know no method.
"""

from halp.methods.presets import (
    FINETUNE_LR,
    GRAPH_METHODS,
    GRAPH_PRESETS,
    LINEAR_LR,
    MODALITIES,
    PRESETS,
    Preset,
    Term,
    View,
    check_config,
    inactive_terms,
    linear_lr,
    method_label,
    preset_of,
    term_weight,
    term_weights,
    views_of,
)

__all__ = [
    "FINETUNE_LR",
    "GRAPH_METHODS",
    "GRAPH_PRESETS",
    "LINEAR_LR",
    "MODALITIES",
    "PRESETS",
    "Preset",
    "Term",
    "View",
    "check_config",
    "inactive_terms",
    "linear_lr",
    "method_label",
    "preset_of",
    "term_weight",
    "term_weights",
    "views_of",
]
