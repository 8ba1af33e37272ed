"""The pipeline learns: a short HaLP pretraining beats a randomly initialised encoder.

Synthetic NTU data (``synth_ntu``) is prepared as real data is, a tiny BiGRU is pretrained
with ``method=halp`` on the cross-subject training split, and the linear probe and 1-NN
(``halp evaluate``) are run with the pretrained encoder and with the same architecture at
its random initialisation (``encoder_init=random``). Both protocols must gain at least
``MARGIN`` top-1 points from the pretraining.

Why this data. Without lost joints a random BiGRU already reaches 80-100 % on the
synthetic data (94-98 % on this seed; the classes differ in which limbs move, which the
raw coordinates show directly), so there is little to gain: with the settings below,
HaLP gained 0.7-5.5 points there. Here every sample also loses up to 10 joints
(``lost_joints=10``: zeros in the file, which the normalisation keeps at zero, like a
tracker's missing data). The zeros throw a random encoder far off (55-70 % here); ISC's
joint corruption zeroes joints during pretraining, and the pretrained encoder learns to
look past them (83-95 %).

Why these settings (tried on one or two seeds each). The key encoder needs a shorter
memory than the paper's for ~900 steps (``moco.momentum=0.99`` beat 0.999); lr 0.05
with batch 16 made the features worse than random on clean data, batch 64 with lr 0.04
worked; HaLP from epoch 0 lowered the gains, so it starts halfway (``mu_start_epoch=150``,
the paper's MoCo warm-up); 150 epochs instead of 300 gave gaps down to 9 points.

The margin. On this data (seed 1), pretraining seeds 0-5 with evaluation seeds 42-47
(which also draw the random encoder) gave linear 87.5-95.1 % against random 55.6-68.8 %
and 1-NN 83.3-88.9 % against 52.1-64.6 %: the smallest gaps were 18.7 points (linear)
and 21.5 points (1-NN). The fixed seeds here (pretraining 0, evaluation 42) give 87.5 vs
61.8 % and 84.7 vs 63.2 %. ``MARGIN = 10`` leaves room for another platform's float
rounding, which moves a run as another seed would, and is not met without learning: with
``optim.lr=0`` (only BatchNorm statistics move) this test fails (59.7 vs 61.8 %, 65.3 vs
63.2 %), and over seeds lr 0 gained 0-15 points linear and 3-8 points 1-NN. Other data
seeds draw other classes: of seeds 0-9, three (4, 7, 9) gained only 3-16 points (seed 4
holds two "turn + legs" classes and a "turn" class, hard to tell apart once joints are
lost), the other seven 21-38; the data seed is therefore fixed.
"""

from __future__ import annotations

from typing import Any

import pytest

from halp.config import EvalConfig, PretrainConfig, from_dict
from halp.data import prepare, synthetic
from halp.evaluate import evaluate
from halp.train import pretrain

MARGIN = 10.0  # top-1 points the pretrained encoder must gain over the random one

DATA = {"classes": 12, "per_class": 30, "seed": 1, "lost_joints": 10}  # 216 train, 144 test
PRETRAIN: dict[str, Any] = {
    "method": "halp",
    "seed": 0,
    "device": "cpu",
    "encoder": {"hidden_size": 16, "num_layers": 2, "proj_hidden": 64, "out_dim": 16},
    "data": {"frames": 16, "workers": 0},
    "moco": {"queue_size": 128, "momentum": 0.99},
    "halp": {"num_prototypes": 4, "top_k": 32, "refresh_every": 2, "num_positives": 8,
             "mu_start_epoch": 150},
    "optim": {"batch_size": 64, "epochs": 300, "lr": 0.04, "lr_steps": []},
    "log": {"wandb": "disabled", "knn_every": 0, "save_every": 0, "progress": False,
            "health_samples": 0},  # the health probe is tested in test_health.py
}  # fmt: skip
EVAL: dict[str, Any] = {
    "seed": 42,
    "device": "cpu",
    "workers": 0,
    "frames": 16,
    "batch_size": 16,
    "epochs": 30,
    "eval_every": 30,
    "lr": 0.1,
    "lr_steps": [],
    "k": 1,
}


@pytest.fixture(scope="module")
def top1(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], float]:
    """Top-1 per (protocol, encoder_init) after one HaLP pretraining on the synthetic data."""
    root = tmp_path_factory.mktemp("learning")
    synthetic.synth_ntu(root / "raw", **DATA)
    prepare.prepare_ntu("ntu60", [root / "raw"], root / "ntu60")
    data = root / "ntu60" / "xsub"
    config = from_dict(PretrainConfig, PRETRAIN)
    config.data.root = str(data)
    last = pretrain(config, root / "run")
    assert last["mu"] == 1.0 and "loss_halp_joint" in last  # HaLP's term was on at the end
    result = {}
    for protocol in ("linear", "knn"):
        for init in ("pretrained", "random"):
            settings = {
                **EVAL,
                "protocol": protocol,
                "encoder_init": init,
                "checkpoint": str(root / "run" / "checkpoint.pt"),
                "data_root": str(data),
            }
            out = root / f"{protocol}_{init}.json"
            metrics = evaluate(from_dict(EvalConfig, settings), out)["metrics"]
            result[protocol, init] = metrics["top1"]
    return result


@pytest.mark.parametrize("protocol", ["linear", "knn"])
def test_pretraining_beats_random_init(top1: dict[tuple[str, str], float], protocol: str) -> None:
    pretrained, random = top1[protocol, "pretrained"], top1[protocol, "random"]
    assert pretrained - random >= MARGIN, (
        f"{protocol}: HaLP-pretrained top-1 {pretrained:.1f} % vs random-init {random:.1f} %; "
        f"the pretraining must gain at least {MARGIN} points"
    )
