"""Full attention against PyTorch's own multi-head attention."""

import torch

from nas.ops.attention import build


def test_full_equals_torch_multihead_attention():
    torch.manual_seed(0)
    dim, heads = 32, 4
    layer = build("full", dim, heads, max_len=64).eval()
    ref = torch.nn.MultiheadAttention(dim, heads, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([layer.proj[n].weight for n in "qkv"]))
        ref.in_proj_bias.copy_(torch.cat([layer.proj[n].bias for n in "qkv"]))
        ref.out_proj.weight.copy_(layer.out.weight)
        ref.out_proj.bias.copy_(layer.out.bias)
        x = torch.randn(3, 40, dim)
        mask = torch.ones(3, 40, dtype=torch.bool)
        mask[1, 25:] = False
        expected, _ = ref(x, x, x, key_padding_mask=~mask, need_weights=False)
        torch.testing.assert_close(layer(x, mask), expected, atol=1e-5, rtol=1e-5)
