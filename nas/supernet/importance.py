"""Importance-sorted elastic widths (Once-for-All, Cai et al. 2020, https://arxiv.org/abs/1910.14969).

Smaller widths use the leading heads and FFN units, so before slicing, heads and hidden units
are reordered by importance (the L1 norm of their output weights) so that the small widths get
the important ones. A permutation of heads (Q/K/V rows, O columns and each core's per-head
parameters together) or of hidden units (fc1 rows, fc2 columns) leaves the widest arch's
function unchanged exactly; the optimizer's per-element state is permuted alongside, so the
sort can run during supernet training (e.g. every epoch).
# h heads, d head dim, F hidden units, D model width
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nas.supernet.supernet import SHARED_KEY, SuperAttention, SuperFeedForward


def head_importance(out: nn.Linear, head_dim: int) -> Tensor:
    """L1 norm of each head's columns of the output projection. Shape: -> (h,)."""
    return out.weight.abs().view(out.out_features, -1, head_dim).sum(dim=(0, 2))  # (h,)


def unit_importance(ffn: SuperFeedForward) -> Tensor:
    """L1 norm of each hidden unit's column of fc2. Shape: -> (F,)."""
    return ffn.fc2.weight.abs().sum(dim=0)  # (F,)


@torch.no_grad()
def sort_by_importance(supernet: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, list[int]]:
    """Reorder every layer's heads and FFN units, most important first, in place.

    Args:
        supernet: a Supernet, or a FewShotSupernet (each sub-supernet is sorted on its own).
        optimizer: if given, its per-element state (e.g. Adam's moments) is permuted with the
            parameters, so training continues as if the weights had always been in that order.

    Returns:
        The permutation applied per group, e.g. {"blocks.0.ffn": [...], "blocks.0.attn.shared": [...]}.
    """
    applied: dict[str, list[int]] = {}
    for prefix, net in _supernets(supernet):
        for i, block in enumerate(net.blocks):
            order = torch.argsort(unit_importance(block.ffn), descending=True, stable=True)
            _permute(block.ffn.fc1.weight, 0, order, optimizer)
            _permute(block.ffn.fc1.bias, 0, order, optimizer)
            _permute(block.ffn.fc2.weight, 1, order, optimizer)
            applied[f"{prefix}blocks.{i}.ffn"] = order.tolist()
            for key, order in _sort_heads(block.attn, optimizer).items():
                applied[f"{prefix}blocks.{i}.attn.{key}"] = order
    return applied


def _supernets(net: nn.Module):
    subnets = getattr(net, "subnets", None)
    return [(f"subnets.{k}.", s) for k, s in enumerate(subnets)] if subnets is not None else [("", net)]


def _sort_heads(attn: SuperAttention, optimizer) -> dict[str, list[int]]:
    applied = {}
    for key, proj in attn.projections.items():
        # shared projections carry every core's heads; separate ones only their own core's
        cores = list(attn.cores.values()) if key == SHARED_KEY else [attn.cores[key]]
        order = torch.argsort(head_importance(proj["out"], attn.head_dim), descending=True, stable=True)
        rows = (order[:, None] * attn.head_dim + torch.arange(attn.head_dim, device=order.device)).flatten()  # (h*d,)
        for name, linear in proj.items():
            if name == "out":
                _permute(linear.weight, 1, rows, optimizer)
            else:
                _permute(linear.weight, 0, rows, optimizer)
                _permute(linear.bias, 0, rows, optimizer)
        for core in cores:
            for name in core.per_head:
                _permute(core.head_tensor(name), 0, order, optimizer)
        applied[key] = order.tolist()
    return applied


def _permute(param: Tensor, dim: int, index: Tensor, optimizer) -> None:
    index = index.to(param.device)
    param.copy_(param.index_select(dim, index))
    state = optimizer.state.get(param, {}) if optimizer is not None else {}
    for value in state.values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value.copy_(value.index_select(dim, index))
