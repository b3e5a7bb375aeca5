"""Training and evaluation: datasets (CamVid, folder format), augmentation, metrics,
open-vocabulary label sampling, and the ``lgseg train`` / ``lgseg eval`` commands.

Heavy imports stay in the submodules so ``lgseg_ros.train.metrics`` is cheap to import.
"""
