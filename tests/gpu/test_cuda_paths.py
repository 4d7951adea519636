"""CUDA paths under bf16 autocast (`trainer=gpu`): every op close to its fp32 self, the flash
kernel for `full`, a supernet step and a tiny search end to end. Skipped without CUDA.

    pytest -m gpu tests/gpu          # on a machine with a GPU (under a minute)
"""

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from nas.cli import search as search_cli
from nas.ops.attention import ATTENTION, build
from nas.space import Arch
from nas.supernet import Supernet
from tests.helpers import TINY

from ..cli.conftest import config  # noqa: F401  (the composed-config fixture)
from ..ops.test_attention_registry import SMALL_OPTIONS
from ..strategies.planted import FetchTask, planted_space

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DIM, HEADS, N = 64, 4, 128


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def _run(layer, x, mask, bf16: bool):
    layer.zero_grad()
    x = x.detach().clone().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        out = layer(x, mask)  # (b, n, D)
    (out.float() * mask[..., None]).square().sum().backward()
    grads = {name: p.grad.detach().clone() for name, p in layer.named_parameters() if p.grad is not None}
    return out.float().detach(), x.grad.detach(), grads


def _compare(name: str, options: dict) -> tuple[float, float, float, torch.Tensor]:
    """Relative errors of bf16 autocast against fp32: output (real tokens), input gradient and
    all parameter gradients as one vector (single ones, e.g. a key bias, are ~0 in exact math)."""
    torch.manual_seed(0)
    layer = build(name, DIM, HEADS, N, **options).cuda()
    x = torch.randn(2, N, DIM, device="cuda")
    mask = torch.ones(2, N, dtype=torch.bool, device="cuda")
    mask[1, -9:] = False  # one padded example
    out32, dx32, grads32 = _run(layer, x, mask, bf16=False)
    out16, dx16, grads16 = _run(layer, x, mask, bf16=True)
    assert torch.isfinite(out16).all() and torch.isfinite(dx16).all(), name
    assert all(torch.isfinite(g).all() for g in grads16.values()), name
    real = mask[..., None]
    g32 = torch.cat([g.flatten() for g in grads32.values()])
    g16 = torch.cat([grads16[k].flatten() for k in grads32])
    return _relative(out16 * real, out32 * real), _relative(dx16, dx32), _relative(g16, g32), out16


@pytest.mark.parametrize("name", [n for n in ATTENTION.names() if n != "lsh"])
def test_every_op_in_bf16_autocast_is_close_to_fp32(name):
    out, dx, grads = _compare(name, SMALL_OPTIONS.get(name, {}))[:3]
    # bf16 keeps 8 bits of mantissa (~0.4% per rounding); a few roundings deep stays within a
    # few percent (measured on CPU autocast: <= 0.7% out, <= 3.5% gradients)
    assert out < 0.05 and dx < 0.05 and grads < 0.1, (name, out, dx, grads)


def test_lsh_hashes_in_fp32_under_autocast():
    """LSH's buckets come from the bf16 q projection, so a few tokens change bucket against an
    fp32 run (a different, equally valid hashing): the hashing itself must be fp32's, and with
    buckets of 32 the output stays close (measured on CPU autocast: 5%)."""
    layer = build("lsh", DIM, HEADS, N, bucket_size=32, n_hashes=2).cuda()
    q = torch.randn(2, HEADS, N, DIM // HEADS, device="cuda").bfloat16()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        under_autocast = layer.core.hash(q)
    assert torch.equal(under_autocast, layer.core.hash(q.float()))
    out = _compare("lsh", {"bucket_size": 32, "n_hashes": 2})[0]
    assert out < 0.15


def test_full_takes_the_flash_kernel_without_padding():
    layer = build("full", DIM, HEADS, N).cuda()
    x = torch.randn(2, N, DIM, device="cuda")
    real = torch.ones(2, N, dtype=torch.bool, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = layer(x, real)  # flash only: it would refuse a dense mask
        assert torch.isfinite(out).all()
        padded = real.clone()
        padded[0, -3:] = False
        with pytest.raises(RuntimeError):  # the check can fail: a mask rules flash out
            layer(x, padded)


def test_supernet_training_step_on_cuda():
    torch.manual_seed(0)
    space, task = planted_space(), FetchTask(seq_len=32, distance=31, size=64)
    task.setup()
    net = Supernet(space, task.shape).cuda()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    batch = {k: v.cuda() for k, v in next(iter(task.train_dataloader())).items()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for arch in (space.largest(), space.sample(0)):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = net(batch["tokens"], arch, batch["mask"])  # (b, n, C)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch["target"].flatten())
        assert math.isfinite(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_tiny_search_with_trainer_gpu_end_to_end(config, tmp_path):
    cfg = config("search", "trainer=gpu", *TINY, "retrain.max_epochs=1")
    assert cfg.trainer.precision == "bf16-mixed"
    out = search_cli.run(cfg)
    run_dir = tmp_path / "run"
    for name in ("best_arch.yaml", "summary.txt", "retrain/checkpoints/best.ckpt", "export/model.pt2"):
        assert (run_dir / name).is_file(), name
    assert Arch.from_yaml(run_dir / "best_arch.yaml") == out.search.arch
    assert all(math.isfinite(v) for v in out.metrics.values() if isinstance(v, float))
