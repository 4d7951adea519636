"""Second-order DARTS (Liu et al. 2019, eq. 7-8) against autograd's exact unrolled gradient.

The strategy estimates the Hessian-vector product of eq. 8 by central finite differences; the
reference differentiates through the virtual weight step itself (double backward), so a
strategy that silently fell back to the first-order gradient, dropped the Hessian term or
scaled it wrongly would fail here.
"""

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from nas.model import ModelShape
from nas.space import SearchSpace
from nas.supernet import Supernet

from .planted import make

# Two candidates, two head counts, two widths, two depths: every kind of decision has a logit.
SPACE = SearchSpace.from_dict(
    {
        "name": "unrolled",
        "dim": 16,
        "head_dim": 8,
        "depth": [1, 2],
        "layer": {"attention": {"full": {}, "local": {"window": 4}}, "heads": [1, 2], "ffn_dim": [16, 32]},
    }
)
SHAPE = ModelShape(vocab_size=12, num_classes=3, max_len=16)
XI = 0.1  # the virtual step's learning rate: the weight optimizer's, as in the strategy
TOLERANCE = 1e-6  # per logit; the finite differences (eps * |v| = 0.01) are off by ~1e-7 here


def batch(seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, SHAPE.vocab_size, (8, SHAPE.max_len), generator=g)  # (b, n)
    target = torch.randint(0, SHAPE.num_classes, (8,), generator=g)  # (b,)
    return {"tokens": tokens, "mask": torch.ones_like(tokens, dtype=torch.bool), "target": target}


class Mixed(nn.Module):
    """The supernet's mixed forward as a module's forward, for `torch.func.functional_call`."""

    def __init__(self, net: Supernet, partial: int):
        super().__init__()
        self.net, self.partial = net, partial

    def forward(self, tokens: Tensor, weights: dict[str, Tensor], mask: Tensor, edges: Tensor | None) -> Tensor:
        return self.net.forward_mixed(tokens, weights, mask, partial=self.partial, edges=edges)


class Context:
    """A SearchContext with plain SGD on the weights (lr = XI) and an arch optimizer of lr 0,
    so that after a step each architecture parameter's `.grad` is the gradient the strategy used."""

    current_epoch, max_epochs = 0, 1

    def __init__(self, net: Supernet, arch_parameters: list[nn.Parameter]):
        self.supernet = net
        self.optimizers = [torch.optim.SGD(net.parameters(), lr=XI), torch.optim.SGD(arch_parameters, lr=0.0)]

    def optimizer(self, index: int = 0) -> torch.optim.Optimizer:
        return self.optimizers[index]

    def step(self, loss: Tensor, optimizer_index: int = 0) -> None:
        optimizer = self.optimizers[optimizer_index]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def log(self, name, value) -> None:
        pass

    def agree(self, value):
        return value


@pytest.fixture(autouse=True)
def math_attention():
    with sdpa_kernel(SDPBackend.MATH):  # CPU flash attention has no double backward
        yield


def flat(tensors) -> Tensor:
    return torch.cat([t.flatten() for t in tensors])


@pytest.mark.parametrize("partial", [1, 2])  # 2: PC-DARTS, edge weights among the arch parameters
def test_finite_differences_match_the_exact_unrolled_gradient(partial):
    torch.manual_seed(0)
    net = Supernet(SPACE, SHAPE).double()
    strategy = make("darts", SPACE, seed=0, second_order=True, partial=partial).double()
    alphas = strategy.arch_parameters()
    with torch.no_grad():  # away from uniform, so that every candidate's gradient differs
        for a in alphas:
            a.normal_()
    train, val = batch(1), batch(2)

    # The reference: L_val(w - xi * dL_train(w, alpha)/dw, alpha), differentiated in alpha by autograd.
    mixed = Mixed(net, partial)
    names, weights = zip(*net.named_parameters())

    def loss(params, data: dict[str, Tensor]) -> Tensor:
        logits = torch.func.functional_call(
            mixed,
            {f"net.{n}": p for n, p in zip(names, params)},
            (data["tokens"], strategy.probabilities(), data["mask"], strategy.edge_weights()),
        )  # (b, C)
        return F.cross_entropy(logits, data["target"])

    train_grads = torch.autograd.grad(loss(weights, train), weights, create_graph=True)
    unrolled = [w - XI * g for w, g in zip(weights, train_grads)]  # w', a function of alpha
    exact = flat(torch.autograd.grad(loss(unrolled, val), alphas))
    at_unrolled = flat(torch.autograd.grad(loss([w.detach() for w in unrolled], val), alphas))  # no Hessian term
    first_order = flat(torch.autograd.grad(loss(weights, val), alphas))

    strategy.training_step(Context(net, alphas), train, val)
    estimated = flat(a.grad for a in alphas)

    torch.testing.assert_close(estimated, exact, rtol=0, atol=TOLERANCE)
    # the Hessian-vector term and the unrolling are far above the tolerance: without them, or
    # with the first-order gradient, the comparison above fails
    assert (exact - at_unrolled).abs().max() > 100 * TOLERANCE
    assert (exact - first_order).abs().max() > 100 * TOLERANCE
