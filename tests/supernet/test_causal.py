"""Causal models: the supernet (single path, DARTS mixture, GDAS sample) never lets the future reach
the past, an extracted subnet decoding token by token gives its forward's logits (reversible
layers included), the decode step exports with torch.export, and a causal task refuses an op
without a causal form in one line."""

import pytest
import torch
from torch import nn

from nas.errors import ConfigError
from nas.model import ModelShape, ModelSpec, Subnet
from nas.ops.attention import ATTENTION
from nas.space import Arch, LayerArch, SearchSpace
from nas.supernet import SHARING, Supernet

VOCAB, MAX_LEN, N = 12, 24, 21
SHAPE = ModelShape(VOCAB, VOCAB, MAX_LEN, "tokens", causal=True)
# Every causal variant, with blocks, buckets and windows small enough that N spans several.
CANDIDATES = {
    "full": {},
    "local": {"window": 6, "global_tokens": 2},
    "performer": {"features": 8},
    "performer_relu": {"type": "performer", "features": 8, "kernel": "relu"},
    "lsh": {"bucket_size": 4, "n_hashes": 2},
    "block_recurrent": {"window": 6, "states": 3},
    "synthesizer": {"variant": "dense"},
    "synthesizer_random": {"type": "synthesizer", "variant": "random", "rank": None},
    "synthesizer_factorized": {"type": "synthesizer", "variant": "random", "rank": 4},
    "gla": {"chunk": 8, "sub_chunk": 4},
    "retnet": {"type": "gla", "decay": "fixed", "chunk": 8},
    "gated_deltanet": {"chunk": 8},
    "mamba2": {"chunk": 8},
    "hyena": {"order": 8},
}


def causal_space(reversible=False, attention=None):
    return SearchSpace.from_dict(
        {
            "name": "causal",
            "dim": 16,
            "head_dim": 4,
            "depth": [1, 2, 3],
            "layer": {"attention": attention or CANDIDATES, "heads": [1, 2], "ffn_dim": [16, 24]},
            "memory": {"reversible": reversible},
        }
    )


def archs(space, samples=4):
    """Each candidate once (beside another), then random archs."""
    names = list(space.attention)
    paired = [Arch(2, (LayerArch(a, 2, 16), LayerArch(b, 1, 24))) for a, b in zip(names, names[1:] + names[:1])]
    return paired + [space.sample(seed) for seed in range(samples)]


def tokens(seed=0, n=N):
    return torch.randint(1, VOCAB, (2, n), generator=torch.Generator().manual_seed(seed))


def test_every_causal_op_is_in_the_space():
    assert {choice.type for choice in causal_space().attention.values()} == {
        name for name in ATTENTION.names() if not ATTENTION.get(name).causal_refusal
    }


@pytest.mark.parametrize("reversible", [False, True])
def test_decoding_token_by_token_gives_the_forward_logits(reversible):
    space = causal_space(reversible)
    torch.manual_seed(0)
    net = Supernet(space, SHAPE, sharing="separate").eval()
    x = tokens()
    for arch in archs(space):
        sub = net.extract(arch).eval()
        with torch.no_grad():
            forward = sub(x)  # (b, n, C)
            torch.testing.assert_close(forward, net(x, arch), atol=1e-5, rtol=1e-5)
            state, steps = sub.init_state(2, N), []
            for t in range(N):
                logits, state = sub.step(x[:, t], state, torch.tensor(t))
                steps.append(logits)
        torch.testing.assert_close(torch.stack(steps, 1), forward, atol=1e-5, rtol=1e-5, msg=arch.describe())


def test_decoding_with_a_state_of_max_len_and_int_positions():
    space = causal_space()
    torch.manual_seed(1)
    sub = Subnet(ModelSpec(space.sample(3), space, SHAPE)).eval()
    x = tokens(1)
    with torch.no_grad():
        forward = sub(x)
        state = sub.init_state(2)  # max_len long
        for t in range(N):
            logits, state = sub.step(x[:, t], state, t)
            torch.testing.assert_close(logits, forward[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sharing", SHARING)
@pytest.mark.parametrize("reversible", [False, True])
def test_future_tokens_leave_the_past_alone(sharing, reversible):
    """On random archs, the DARTS mixture of every candidate, and a GDAS sample."""
    space = causal_space(reversible)
    torch.manual_seed(0)
    net = Supernet(space, SHAPE, sharing=sharing).eval()
    decisions = space.decisions()
    soft = {key: torch.softmax(torch.randn(len(choices)), 0) for key, choices in decisions.items()}
    hard = {key: torch.nn.functional.one_hot(p.argmax(), len(p)).float() for key, p in soft.items()}
    models = [lambda x, arch=arch: net(x, arch) for arch in archs(space, samples=2)]
    models += [lambda x: net.forward_mixed(x, soft), lambda x: net.forward_mixed(x, hard, hard=True)]
    x = tokens()
    for t in (0, 9, N - 2):
        other = x.clone()
        other[:, t + 1 :] = tokens(5, N - t - 1)
        with torch.no_grad():
            for model in models:
                torch.testing.assert_close(model(other)[:, : t + 1], model(x)[:, : t + 1], atol=1e-6, rtol=1e-6)


def test_reversible_training_keeps_plain_autograd_gradients():
    """The recomputing backward replays the causal ops (a Performer's features, LSH's hashes)."""
    space = causal_space(reversible=True)
    arch = Arch(3, (LayerArch("lsh", 2, 16), LayerArch("performer", 2, 24), LayerArch("block_recurrent", 1, 16)))
    torch.manual_seed(0)
    model = Subnet(ModelSpec(arch, space, SHAPE)).train()
    x = tokens()
    grads = []
    for recompute in (True, False):
        model.recompute = recompute
        model.zero_grad()
        model(x).square().mean().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("reversible", [False, True])
def test_a_causal_task_refuses_linformer_in_one_line(reversible):
    space = causal_space(reversible, {"full": {}, "lin": {"type": "linformer", "k": 8}})
    why = "space 'causal': attention 'lin' \\(linformer\\) has no causal form, so a causal task cannot search it: its E"
    with pytest.raises(ConfigError, match=f"^{why}"):
        Supernet(space, SHAPE)
    arch = Arch(1, (LayerArch("full", 2, 16),))  # even an arch that does not use it: the space is causal
    with pytest.raises(ConfigError, match=f"^ckpt: {why}"):
        ModelSpec.build(arch, space, SHAPE, "ckpt")
    bidirectional = ModelShape(VOCAB, VOCAB, MAX_LEN, "tokens")
    assert Subnet(ModelSpec(arch, space, bidirectional))  # bidirectional, as ever


def test_only_a_causal_token_model_decodes():
    space = causal_space(attention={"full": {}})
    arch = Arch(1, (LayerArch("full", 2, 16),))
    for shape in (ModelShape(VOCAB, VOCAB, MAX_LEN, "tokens"), ModelShape(VOCAB, 3, MAX_LEN, causal=True)):
        model = Subnet(ModelSpec(arch, space, shape))
        with pytest.raises(ConfigError, match="^step decoding needs a causal model of token ids with a readout per"):
            model.init_state(1)


class DecodeStep(nn.Module):
    """A subnet's step as a module: what a decode-step program exports."""

    def __init__(self, model: Subnet):
        super().__init__()
        self.model = model

    def forward(self, tokens, state, position):
        return self.model.step(tokens, state, position)


@pytest.mark.slow
@pytest.mark.parametrize("candidate", list(CANDIDATES))
def test_the_decode_step_exports_as_one_program_for_every_position(candidate):
    space = causal_space(attention={candidate: CANDIDATES[candidate]})
    torch.manual_seed(0)
    model = Subnet(ModelSpec(Arch(1, (LayerArch(candidate, 2, 16),)), space, SHAPE)).eval()
    state = model.init_state(2)
    with torch.no_grad():
        program = torch.export.export(DecodeStep(model), (tokens()[:, 0], state, torch.tensor(0))).module()
        x, exported, eager = tokens(2), state, state
        for t in range(N):
            got, exported = program(x[:, t], exported, torch.tensor(t))
            want, eager = model.step(x[:, t], eager, torch.tensor(t))
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
