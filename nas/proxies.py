"""Zero-cost proxies: scores of an untrained model that predict how well it will train, the free
baselines `nas-rank` compares the supernet with. As "Zero-cost proxies for lightweight NAS"
(Abdelfattah et al. 2021, https://arxiv.org/abs/2101.08134) computes them: summed over the
weights of every linear layer, at initialisation, a bigger score predicting a better model.

- `synflow`: synaptic flow (Tanaka et al. 2020, https://arxiv.org/abs/2006.05467), data-free:
  with every weight replaced by its absolute value, R = sum of the outputs for an input of ones,
  and the score sum |w * dR/dw|, in float64 as Abdelfattah et al. do against overflow.
- `grad_norm`: the sum of the L2 norms of the weights' gradients of the task loss on one batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from nas.metrics import task_loss
from nas.model import ModelSpec, Subnet

PROXIES = ("synflow", "grad_norm")


def _linear_weights(model: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


def synflow(model: nn.Module, forward: Callable[[nn.Module], Tensor]) -> float:
    """Synaptic flow of `model`, on a float64 copy with every parameter made non-negative (the
    model itself is untouched).

    Args:
        model: any module.
        forward: runs the copy on an input of ones and returns its output; R is its sum.

    Returns:
        sum over the linear layers' weights w of |w * dR/dw|.
    """
    flow = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in flow.parameters():
            p.abs_()
    flow.zero_grad()
    forward(flow).sum().backward()
    return float(sum((w.detach() * w.grad).abs().sum() for w in _linear_weights(flow) if w.grad is not None))


def grad_norm(model: nn.Module, loss: Callable[[nn.Module], Tensor]) -> float:
    """The sum over the linear layers' weights of the L2 norm of their gradient of `loss(model)`
    (`model`'s own gradients are left as they were).

    Args:
        model: any module.
        loss: the scalar loss of a batch, e.g. the task loss of the first training batch.
    """
    weights = _linear_weights(model)
    grads = torch.autograd.grad(loss(model), weights, allow_unused=True)
    return float(sum(g.norm() for g in grads if g is not None))


def at_initialisation(spec: ModelSpec, batch: dict[str, Tensor], seed: int) -> dict[str, float]:
    """Every proxy of a freshly initialised standalone model of `spec` (torch's default init under
    `seed`, as a standalone training with that seed starts from). Training mode, as when it trains;
    the global random state is left as it was.

    Args:
        spec: the model.
        batch: one training batch (`tokens`, `mask`, `target`); synflow uses only its shape.
        seed: the initialisation's seed.

    Returns:
        {"synflow": ..., "grad_norm": ...}
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Subnet(spec).train()
        tokens, mask = batch["tokens"], batch["mask"]
        # the data-free input: token 1 everywhere (whose embedding is made non-negative like every
        # other weight), no padding
        ones = torch.ones_like(tokens)  # (b, n)
        if ones.is_floating_point():  # a forecaster's values: ones in the float64 of synflow's copy
            ones = ones.double()
        return {
            "synflow": synflow(model, lambda m: m(ones, torch.ones_like(mask))),
            "grad_norm": grad_norm(model, lambda m: task_loss(m(tokens, mask), batch["target"])),
        }
