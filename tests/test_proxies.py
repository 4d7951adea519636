"""Zero-cost proxies against closed forms on tiny networks, and on a standalone model at its
initialisation."""

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from nas.metrics import task_loss
from nas.model import ModelShape, ModelSpec, Subnet
from nas.proxies import at_initialisation, grad_norm, synflow
from nas.space import Arch, LayerArch
from nas.training.retrain import RetrainModule
from tests.helpers import load_space


def ones(width: int):
    return lambda m: m(torch.ones(1, width, dtype=torch.float64))


def test_synflow_of_one_linear_layer_is_the_sum_of_its_absolute_weights():
    # R = sum_i (sum_j |W_ij| + |b_i|) for an input of ones: dR/dW_ij = 1, so the score is sum |W|
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    assert synflow(layer, ones(3)) == pytest.approx(layer.weight.double().abs().sum().item(), rel=1e-12)
    assert all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())  # the model is untouched
    assert layer.weight.dtype == torch.float32 and layer.weight.grad is None


@pytest.mark.parametrize("depth", [2, 3])
def test_synflow_of_a_linear_chain_is_its_depth_times_the_flow(depth):
    """Without biases every layer passes on the whole flow R = 1^T |W_L| ... |W_1| 1 (Tanaka et
    al.'s conservation law), so the score is depth x R. ReLUs between the layers change nothing:
    with non-negative weights and input every activation is >= 0."""
    torch.manual_seed(depth)
    widths = [4, 5, 3, 2][: depth + 1]
    layers = [nn.Linear(a, b, bias=False) for a, b in zip(widths, widths[1:])]
    net = nn.Sequential(*(m for layer in layers for m in (layer, nn.ReLU())))
    flow = torch.ones(widths[0], dtype=torch.float64)
    for layer in layers:
        flow = layer.weight.detach().double().abs() @ flow
    assert synflow(net, ones(widths[0])) == pytest.approx(depth * flow.sum().item(), rel=1e-12)


def test_grad_norm_of_one_linear_layer_is_the_residual_norm_times_the_input_norm():
    # loss = 1/2 ||W x + b - t||^2: dL/dW = r x^T with r = W x + b - t, whose Frobenius norm is ||r|| ||x||
    torch.manual_seed(1)
    layer = nn.Linear(3, 2)
    x, t = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, -0.7])
    r = layer(x).detach() - t
    expected = r.norm() * x.norm()
    assert grad_norm(layer, lambda m: 0.5 * ((m(x) - t) ** 2).sum()) == pytest.approx(expected.item(), rel=1e-6)
    assert layer.weight.grad is None  # the model's own gradients are left alone


def test_grad_norm_sums_over_the_linear_layers():
    # two layers, no nonlinearity, loss = sum(W2 W1 x): dL/dW2 = 1 (W1 x)^T, dL/dW1 = W2^T 1 x^T
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))
    w1, w2 = net[0].weight.detach(), net[1].weight.detach()
    x = torch.tensor([0.5, 1.0, -1.0])
    expected = (w1 @ x).norm() * torch.ones(2).norm() + (w2.T @ torch.ones(2)).norm() * x.norm()
    assert grad_norm(net, lambda m: m(x).sum()) == pytest.approx(expected.item(), rel=1e-6)


SHAPE = ModelShape(vocab_size=16, num_classes=4, max_len=24)


def batch(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 16, (4, 24), generator=g)
    mask = torch.ones(4, 24, dtype=torch.bool)
    mask[0, 20:] = False
    return {"tokens": tokens, "mask": mask, "target": torch.randint(0, 4, (4,), generator=g)}


@pytest.mark.parametrize("op", ["full", "local", "linformer", "performer"])
def test_proxies_of_a_standalone_model_at_the_initialisation_of_its_seed(op):
    space = load_space("quickstart")
    spec = ModelSpec(Arch(2, (LayerArch(op, 2, 64), LayerArch("full", 4, 128))), space, SHAPE)
    state = torch.random.get_rng_state()
    scores = at_initialisation(spec, batch(0), seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream goes on unchanged
    assert set(scores) == {"synflow", "grad_norm"} and all(v > 0 for v in scores.values())
    assert at_initialisation(spec, batch(0), seed=3) == scores
    assert at_initialisation(spec, batch(0), seed=4) != scores
    # synflow is data-free: only the batch's shape counts; grad_norm reads the batch
    other = at_initialisation(spec, batch(1), seed=3)
    assert other["synflow"] == scores["synflow"] and other["grad_norm"] != scores["grad_norm"]

    # the model scored is the one a standalone training with that seed starts from
    pl.seed_everything(3, verbose=False)
    model = RetrainModule(spec, "acc").model
    loss = task_loss(model(batch(0)["tokens"], batch(0)["mask"]), batch(0)["target"])
    loss.backward()
    linear = [m.weight.grad.norm() for m in model.modules() if isinstance(m, nn.Linear)]
    assert scores["grad_norm"] == pytest.approx(sum(linear).item(), rel=1e-5)
    torch.manual_seed(3)
    assert synflow(Subnet(spec), lambda m: m(torch.ones(4, 24, dtype=torch.long))) == scores["synflow"]
