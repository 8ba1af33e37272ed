"""benchmarks/reference_diff.py on a small fake "released" implementation written here.

The fake has the layout and the call signatures of the HaLP authors' repository (a
``moco`` package with a BiGRU, a MoCo builder, a HaLP builder and a positive generator)
but is our own code, a few dozen lines. A faithful fake must agree to 1e-5; fakes with a
planted bug must be caught, and the disagreement named. No released code is needed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "reference_diff", ROOT / "benchmarks" / "reference_diff.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["reference_diff"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


GRU = """
import torch
import torchvision  # noqa: F401  (the released file imports it without using it)
from torch import nn


class EncoderRNN(nn.Module):
    def __init__(self, input_size, hidden_size, num_layers):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, num_layers=num_layers,
                          bidirectional=True, batch_first=True)

    def forward(self, x):
        state = None
        for t in range(x.shape[1]):  # one frame per call, the state carried over
            out, state = self.gru(x[:, t : t + 1], state)
        return out[:, 0]


class BIGRU(nn.Module):
    def __init__(self, en_input_size, en_hidden_size, en_num_layers=3, num_class=60,
                 return_premlp=False):
        super().__init__()
        self.encoder = EncoderRNN(en_input_size, en_hidden_size, en_num_layers)
        self.fc = nn.Linear(2 * en_hidden_size, num_class)
        self.input_norm = nn.BatchNorm1d(en_input_size)

    def forward(self, x, knn_eval=False):
        x = self.input_norm(x.transpose(1, 2)).transpose(1, 2)
        return self.fc(self.encoder(x))
"""

BASELINE = """
import torch
import torch.nn.functional as F
from torch import nn

from .GRU import BIGRU


class MoCo(nn.Module):
    def __init__(self, skeleton_representation, args_bi_gru, dim=128, K=65536, m=0.999,
                 T=0.07, teacher_T=0.05, student_T=0.1, cmd_weight=1.0, topk=1024, mlp=False,
                 pretrain=True{extra_arg}):
        super().__init__()
        self.K, self.m, self.T = K, m, T
        self.encoder_q = BIGRU(**args_bi_gru)
        self.encoder_k = BIGRU(**args_bi_gru)
        for enc in (self.encoder_q, self.encoder_k):
            width = enc.fc.weight.shape[1]
            enc.fc = nn.Sequential(nn.Linear(width, width), nn.ReLU(), enc.fc)
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
{init_extra}

    @torch.no_grad()
    def momentum(self):
        m = {momentum}
        for q, k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            k.data = k.data * m + q.data * (1.0 - m)

    def encode(self, x):
        n, c, t, v, p = x.shape
        return x.permute(0, 2, 3, 1, 4).reshape(n, t, -1)

    def forward(self, im_q, im_k=None, update_prototypes=False, generate_this_step=False):
        q = F.normalize(self.encoder_q(self.encode(im_q)), dim=1)
        with torch.no_grad():
            self.momentum()
            k = F.normalize(self.encoder_k(self.encode(im_k)), dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue.clone()], 1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long).cuda()
{generate}
        ptr = int(self.queue_ptr)
        self.queue[:, ptr : ptr + k.shape[0]] = k.T
        self.queue_ptr[0] = (ptr + k.shape[0]) % self.K
{tail}
"""

BASELINE_TAIL = "        return logits, labels, torch.Tensor([0.0]), None, None"

HALP_IMPORTS = """
import numpy as np
from .generator import pos_generator
from geomstats.learning.kmeans import RiemannianKMeans
from geomstats.geometry.hypersphere import Hypersphere
"""

HALP_INIT = """        self.args = args
        self.register_buffer("prototypes", torch.zeros(args.num_prototypes, dim))

    @torch.no_grad()
    def update_prototypes(self, update_prototypes=False):
        if update_prototypes:
            n = self.args.queue_els_for_prototypes
            order = np.roll(np.arange(self.K), self.K - int(self.queue_ptr))[-n:]
            km = RiemannianKMeans(Hypersphere(dim=128).metric, self.args.num_prototypes)
            km.fit(self.queue[:, order].T.numpy())
            self.prototypes.copy_(torch.from_numpy(km.centroids))"""

HALP_GENERATE = """
        if generate_this_step:
            sim = (k @ self.prototypes.T).detach()
            gen = pos_generator(anchor=k, prototypes=self.prototypes, args=self.args,
                                precomputed_similarity=sim)[0]
            closest = sim.argmax(1, keepdim=True)
            keep = ((gen @ self.prototypes.T).argmax(-1) == closest){keep_bug}
            pull = torch.einsum("nc,nmc->nm", q, gen) / self.T
            loss_pn = -(pull * keep).sum() / (keep.sum() + 1e-8)"""

HALP_TAIL = "        return {returned}"

GENERATOR = """
import numpy as np
import torch
import torch.nn.functional as F


def generate_positives_using_mixup(prototypes, initial_value, inds=None, num_to_generate=1,
                                   args=None, highest_sim_inds=None):
    b, d = initial_value.shape
    pick = torch.from_numpy(np.random.choice(range(inds.shape[1]), (b, num_to_generate),
                                             replace=True))
    sel = prototypes[torch.gather(inds, 1, pick)]  # (B, Ng, D)
    k = initial_value.unsqueeze(1).expand_as(sel)
    p0 = prototypes[highest_sim_inds].unsqueeze(1)
    kappa = (1 - (sel * p0).sum(-1)) / ((k * (p0 - sel)).sum(-1) + 1e-8)
    omega = torch.acos((sel * k).sum(-1))
    t_max = torch.atan(torch.sin(omega) / (kappa + torch.cos(omega) + 1e-8)) / (omega + 1e-8)
    u = torch.FloatTensor(b * num_to_generate).uniform_(0, float(args.lambda_pos))
    t = (1 - u.view(b, num_to_generate)) * t_max
    s = torch.sin(omega) + 1e-8
    alpha, beta = torch.sin((1 - t) * omega) / s, torch.sin(t * omega) / s
    h = alpha.unsqueeze(-1) * k + beta.unsqueeze(-1) * sel
    return h, None, sel


def pos_generator(anchor=None, prototypes=None, args=None, precomputed_similarity=None):
    inds = torch.argsort(precomputed_similarity)
    skip, width = args.skip_closest_positives, args.num_closest_to_ignore_positives
    cands = inds[:, -width - skip : -skip]
    h, raw, sel = generate_positives_using_mixup(prototypes, anchor, inds=cands,
                                                 num_to_generate=args.num_positives, args=args,
                                                 highest_sim_inds=inds[:, -1])
    return F.normalize(h, dim=-1), h, sel
"""


def write_fake(
    root: Path,
    momentum: str = "self.m",
    returned: str = "logits, labels, loss_pn * self.args.mu",
    keep_bug: str = "",
    cuda: bool = True,
) -> Path:
    """A fake checkout of the HaLP repository's moco package under ``root``."""
    pkg = root / "moco"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "GRU.py").write_text(GRU)
    baseline = BASELINE.format(
        extra_arg="", init_extra="", momentum=momentum, generate="", tail=BASELINE_TAIL
    )
    halp = HALP_IMPORTS + BASELINE.format(
        extra_arg=", modality_to_use='joint', args=None",
        init_extra=HALP_INIT,
        momentum=momentum,
        generate=HALP_GENERATE.format(keep_bug=keep_bug),
        tail=HALP_TAIL.format(returned=returned),
    )
    if not cuda:
        baseline = baseline.replace(".cuda()", "")
        halp = halp.replace(".cuda()", "")
    (pkg / "builder_single_modality_baseline.py").write_text(textwrap.dedent(baseline))
    (pkg / "builder_single_modality_halp.py").write_text(textwrap.dedent(halp))
    (pkg / "generator.py").write_text(GENERATOR)
    return root


def run(script: ModuleType, method: str, ref: Path, steps: int = 3):  # type: ignore[no-untyped-def]
    with script.default_dtype(torch.float64):
        return script.BiGRUHarness(method, ref, steps, script.TOL).run(with_deviations=False)


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script()


def test_faithful_baseline_agrees(script: ModuleType, tmp_path: Path) -> None:
    result = run(script, "baseline", write_fake(tmp_path))
    cmp = result["comparison"]
    assert cmp.first_failure is None
    for key in ("loss_cl_joint", "total", "grad", "param", "key_encoder", "queue", "queue_ptr"):
        assert cmp.max_abs[key] <= 1e-5, key
    assert any(".cuda()" in p for p in result["patches"])  # the patch is listed
    assert any("torchvision" in p for p in result["patches"])


def test_wrong_momentum_is_caught_in_the_key_encoder(script: ModuleType, tmp_path: Path) -> None:
    cmp = run(script, "baseline", write_fake(tmp_path, momentum="0.99"))["comparison"]
    assert cmp.first_failure is not None
    # at step 0 the key encoder equals the query encoder, so m does not matter yet
    assert cmp.first_failure.startswith("param/branches.joint.encoder_k.")
    assert "at step 1" in cmp.first_failure
    assert cmp.max_abs["key_encoder"] > 1e-3


def test_faithful_halp_agrees(script: ModuleType, tmp_path: Path) -> None:
    cmp = run(script, "halp", write_fake(tmp_path))["comparison"]
    assert cmp.first_failure is None, cmp.first_failure
    for key in ("loss_halp", "positives", "prototype_input", "prototypes", "grad", "queue"):
        assert cmp.max_abs[key] <= 1e-5, key


def test_swapped_loss_weight_is_caught_and_named(script: ModuleType, tmp_path: Path) -> None:
    # mu weighs the InfoNCE logits instead of the HaLP term
    ref = write_fake(tmp_path, returned="logits * self.args.mu, labels, loss_pn")
    cmp = run(script, "halp", ref, steps=1)["comparison"]
    assert cmp.first_failure is not None
    assert cmp.first_failure.startswith("loss/loss_cl_joint at step 0")


def test_missing_rank_filter_is_caught_in_the_halp_term(script: ModuleType, tmp_path: Path) -> None:
    ref = write_fake(tmp_path, keep_bug=" | True")  # every positive kept
    cmp = run(script, "halp", ref, steps=2)["comparison"]
    assert cmp.first_failure is not None
    assert cmp.first_failure.startswith("loss/loss_halp at step")


def test_command_line_json_and_exit_status(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_fake(tmp_path / "good")
    assert script.main(["--method", "baseline", "--ref", str(good), "--steps", "2"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {
        "method",
        "ref_repo",
        "ref_commit",
        "steps",
        "max_abs_diff",
        "patches",
        "deviations",
    } <= set(record)
    assert record["steps"] == 2 and record["ok"] is True
    assert record["deviations"][0]["config"] == "encoder.reference_forward: False"
    assert record["deviations"][0]["effect_max_abs"]["loss_cl_joint"] > 1e-3  # a visible effect

    bad = write_fake(tmp_path / "bad", momentum="0.5")
    assert script.main(["--method", "baseline", "--ref", str(bad), "--steps", "2"]) == 1
    err = capsys.readouterr().err
    assert "first disagreement: param/branches.joint.encoder_k." in err


def test_a_patch_that_no_longer_applies_is_an_error(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = write_fake(tmp_path, cuda=False)
    assert script.main(["--method", "baseline", "--ref", str(ref), "--steps", "1"]) == 2
    assert "expects 1 occurrence" in capsys.readouterr().err
    assert script.main(["--method", "baseline", "--ref", str(tmp_path / "nowhere")]) == 2


def test_the_run_leaves_the_interpreter_as_it_found_it(script: ModuleType, tmp_path: Path) -> None:
    float_method = torch.Tensor.float
    before = set(sys.modules)
    run(script, "halp", write_fake(tmp_path), steps=1)
    assert torch.Tensor.float is float_method
    assert torch.get_default_dtype() == torch.float32
    leaked = {
        m
        for m in set(sys.modules) - before
        if m.split(".")[0] in ("moco", "geomstats", "torchvision")
    }
    assert not leaked


GSIMCLR = """
import torch
from torch import nn
from torch_geometric.nn import GINConv, global_add_pool

import seaborn  # noqa: F401  (plots only, as the released evaluate_embedding.py)


class Encoder(nn.Module):
    def __init__(self, num_features, dim, num_gc_layers):
        super().__init__()
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        for i in range(num_gc_layers):
            width = dim if i else num_features
            self.convs.append(GINConv(nn.Sequential(nn.Linear(width, dim), nn.ReLU(),
                                                    nn.Linear(dim, dim))))
            self.bns.append(nn.BatchNorm1d(dim))

    def forward(self, x, edge_index, batch):
        layers = []
        for conv, bn in zip(self.convs, self.bns):
            x = bn(torch.relu(conv(x, edge_index)))
            layers.append(global_add_pool(x, batch))
        return torch.cat(layers, 1), None


class simclr(nn.Module):
    def __init__(self, hidden_dim, num_gc_layers):
        super().__init__()
        self.prior = args.prior
        d = hidden_dim * num_gc_layers
        self.encoder = Encoder(dataset_num_features, hidden_dim, num_gc_layers)
        self.proj_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, d))

    def forward(self, x, edge_index, batch, num_graphs):
        return self.proj_head(self.encoder(x, edge_index, batch)[0])

    def loss_cal(self, x, x_aug):
        T = {temperature}
        sim = (x @ x_aug.T) / torch.outer(x.norm(dim=1), x_aug.norm(dim=1))
        sim = torch.exp(sim / T)
        pos = sim.diagonal()
        return -torch.log(pos / (sim.sum(1) - pos)).mean()
"""


def write_fake_graphcl(root: Path, temperature: str = "0.2") -> Path:
    folder = root / "unsupervised_TU"
    folder.mkdir(parents=True)
    (folder / "gsimclr.py").write_text(GSIMCLR.replace("{temperature}", temperature))
    return root


def test_fake_graphcl_agrees_and_a_wrong_temperature_is_named(
    script: ModuleType, tmp_path: Path
) -> None:
    with script.default_dtype(torch.float64):
        good = script.GraphCLHarness("graphcl", write_fake_graphcl(tmp_path / "a"), 2, 1e-5)
        cmp = good.run(with_deviations=False)["comparison"]
        assert cmp.first_failure is None, cmp.first_failure
        assert cmp.max_abs["loss_graphcl"] <= 1e-10 and cmp.max_abs["grad"] <= 1e-10
        bad = script.GraphCLHarness("graphcl", write_fake_graphcl(tmp_path / "b", "0.5"), 2, 1e-5)
        cmp = bad.run(with_deviations=False)["comparison"]
    assert cmp.first_failure is not None
    assert cmp.first_failure.startswith("loss/loss_graphcl at step 0")
