"""The data layer: raw formats, preparation, the on-disk format, augmentation, loaders.

``skeleton`` (joint layout, bones, the 2s-AGCN normalisation), ``ntu`` and ``pku`` (the
raw formats and official splits), ``storage`` (the prepared format), ``prepare`` (raw
data to arrays), ``synthetic`` (generated raw data), ``fetch`` (checked downloads),
``augment`` (temporal crops and the spatial augmentation registry), ``modalities``
(joint, motion, bone) and ``loaders`` (the torch datasets and loaders).
"""
