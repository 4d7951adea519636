"""Progressive shrinking and the final comparisons of DARTS / GDAS (nas.strategies.darts_decide)."""

import dataclasses
import math
import re

import pytest
import torch

from nas.errors import ConfigError
from nas.metrics import evaluate
from nas.space import SearchSpace
from nas.supernet import Supernet

from .planted import FetchTask, make, planted_space


def four_op_space() -> SearchSpace:
    """Four attention candidates, so that shrinking takes several steps."""
    return SearchSpace.from_dict(
        {
            "name": "four",
            "dim": 16,
            "head_dim": 4,
            "depth": [1, 2, 3],
            "layer": {
                "attention": {
                    "full": {},
                    "local2": {"type": "local", "window": 2},
                    "local4": {"type": "local", "window": 4},
                    "linformer": {"k": 4},
                },
                "heads": [2, 4],
                "ffn_dim": [16, 32],
            },
        }
    )


class _Ctx:
    """What `on_epoch_end` and `finish` read of a search."""

    def __init__(self, supernet=None, epoch=0, max_epochs=10, metric="acc"):
        self.supernet, self.current_epoch, self.max_epochs, self.metric = supernet, epoch, max_epochs, metric
        self.logged: dict[str, float] = {}

    def log(self, name, value):
        self.logged[name] = value


def shrunk_strategy(name: str, steps: int, **shrink):
    torch.manual_seed(0)
    strategy = make(name, four_op_space(), seed=0, shrink={"every": 1, **shrink})
    with torch.no_grad():
        for alpha in strategy.alphas.values():
            alpha.copy_(torch.randn(alpha.shape))  # distinct weights: a known drop order
    initial = {k: v.detach().clone() for k, v in strategy.logits().items()}
    for epoch in range(steps):
        strategy.on_epoch_end(_Ctx(epoch=epoch))
    return strategy, initial


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_each_shrink_step_drops_the_least_probable_candidate(steps):
    strategy, initial = shrunk_strategy("darts", steps)
    for key, logit in initial.items():
        left = max(1, len(logit) - steps)
        expected = torch.zeros(len(logit), dtype=torch.bool)
        expected[logit.argsort(descending=True)[:left]] = True  # the `left` largest weights stay
        assert torch.equal(strategy.keep()[key], expected), key
        probs = strategy.probabilities()[key]
        assert torch.equal(probs[~expected], torch.zeros(len(logit) - left))  # dropped: exactly 0
        torch.testing.assert_close(probs[expected], torch.softmax(logit[expected], -1))
    dropped = sum(len(logit) - max(1, len(logit) - steps) for logit in initial.values())
    assert len(strategy.report().shrunk) == dropped


def test_shrinking_stops_at_shrink_to_and_waits_for_the_warmup():
    strategy, initial = shrunk_strategy("darts", 5, to=2)
    assert all(int(k.sum()) == min(2, len(initial[key])) for key, k in strategy.keep().items())
    waiting = make("darts", four_op_space(), seed=0, shrink={"every": 2}, warmup_epochs=1)
    for epoch, left in zip(range(5), [4, 4, 3, 3, 2]):  # drops after epochs 2 and 4 (2 and 4 past the warmup)
        waiting.on_epoch_end(_Ctx(epoch=epoch))
        assert int(waiting.keep()["layer0.attention"].sum()) == left


def test_a_fully_shrunk_mixture_is_the_single_path_and_never_runs_the_dropped_ops():
    """Shrunk to one candidate per decision, the soft supernet forward equals the single-path
    forward of the remaining arch, and no dropped candidate (or block past the depth) runs."""
    strategy, _ = shrunk_strategy("darts", 4)
    net = Supernet(four_op_space(), FetchTask(seq_len=12).shape, sharing="separate")
    arch = strategy.current_arch()
    ran = []
    for i, block in enumerate(net.blocks):
        block.norm1.register_forward_hook(lambda *_, i=i: ran.append(("block", i)))
        for cand, core in block.attn.cores.items():
            core.register_forward_hook(lambda *_, i=i, cand=cand: ran.append((i, cand)))
    tokens = torch.randint(0, 10, (3, 12))
    mixed = net.forward_mixed(tokens, strategy.mixture_weights())
    runs = {(i, layer.attention) for i, layer in enumerate(arch.layers)} | {("block", i) for i in range(arch.depth)}
    assert set(ran) == runs  # neither the dropped ops nor the blocks past the depth ran
    torch.testing.assert_close(mixed, net(tokens, arch))
    mixed.sum().backward()
    for i, block in enumerate(net.blocks):
        for cand, proj in block.attn.projections.items():
            used = i < arch.depth and cand == arch.layers[i].attention
            assert all((p.grad is not None) == used for p in proj.parameters()), (i, cand)


def test_gdas_never_samples_a_dropped_candidate():
    strategy, _ = shrunk_strategy("gdas", 2)
    keep = strategy.keep()
    for _ in range(50):
        for key, w in strategy.mixture_weights().items():
            assert torch.equal(w.detach()[~keep[key]], torch.zeros(int((~keep[key]).sum()))), key


def test_shrinking_options_are_checked():
    with pytest.raises(ConfigError, match=re.escape("strategy.shrink.every=-1")):
        make("darts", four_op_space(), shrink={"every": -1})
    with pytest.raises(ConfigError, match=re.escape("strategy.shrink.to=0")):
        make("darts", four_op_space(), shrink={"every": 1, "to": 0})


# -- the final comparison -------------------------------------------------------------------
class Rigged(Supernet):
    """A supernet whose answer is exact (sharpness `sure`) whenever layer 0 attends with `full`."""

    sure = {"full": 8.0}

    def forward(self, tokens, arch, mask=None):
        logits = super().forward(tokens, arch, mask)  # (b, n, C)
        sharpness = self.sure.get(arch.layers[0].attention)
        if sharpness is None:
            return logits
        answer = torch.nn.functional.one_hot(tokens[:, -24], logits.shape[-1]).float()  # FetchTask(distance=23)
        return torch.cat([logits[:, :-1], sharpness * answer[:, None]], 1)


def three_op_space():
    """The planted space with a second, wider window: still too narrow for the fetch distance."""
    return SearchSpace.from_dict(
        {
            "name": "planted3",
            "dim": 32,
            "head_dim": 16,
            "depth": [1, 2],
            "layer": {
                "attention": {"full": {}, "local": {"window": 4}, "local8": {"type": "local", "window": 8}},
                "heads": [2],
                "ffn_dim": [64],
            },
        }
    )


def compare(decide, first="local", sure=None, space=None, leaning=None):
    """A search over the rigged supernet whose weights lean to `first` in layer 0 (or to
    `leaning`: layer 0's logits) and to depth 1, ended by `finish` with `strategy.decide`."""
    torch.manual_seed(0)
    task = FetchTask(distance=23, size=64)
    task.setup()
    space = space or planted_space()
    net = Rigged(space, task.shape)
    if sure is not None:
        net.sure = sure
    strategy = make("darts", space, seed=0, seq_len=task.seq_len, decide={"rule": decide})
    with torch.no_grad():
        if leaning is None:
            leaning = [0.1, 0.2] if first == "local" else [0.2, 0.1]
        strategy.alphas["layer0_attention"].copy_(torch.tensor(leaning))
        strategy.alphas["depth"].copy_(torch.tensor([0.2, 0.1]))
    batches = list(task.val_dataloader())[:2]
    return strategy, strategy.finish(_Ctx(net), batches).best, net, batches


def test_top2_keeps_the_runner_up_when_it_evaluates_better():
    strategy, best, net, batches = compare("top2")
    assert strategy.current_arch().layers[0].attention == "local"  # the weights say local
    assert best.layers[0].attention == "full"
    record = strategy.comparison["layer0.attention"]
    winner, runner_up = record["tried"]
    assert winner["choice"] == "local" and runner_up["choice"] == "full"
    assert record["kept"] == "full" and runner_up["val/acc"] == 1.0 > winner["val/acc"]
    assert winner["val/acc"] == evaluate(net, batches, "acc", strategy.current_arch())  # as evaluate scores
    argmax = strategy.current_arch()
    rival = dataclasses.replace(argmax, layers=(dataclasses.replace(argmax.layers[0], attention="full"),))
    loss = evaluate(net, batches, "bpb", rival) * math.log(2)
    assert runner_up["val/loss"] == pytest.approx(loss)
    # depth leans to 1, so layer 1's decisions do not change the argmax arch: not compared
    assert set(strategy.comparison) == {"depth", "layer0.attention"}


def test_a_decision_on_a_handful_of_items_is_not_separated_and_a_clear_one_is():
    """The same decision, full over local, on 64 fetches (separated) and on 4 (not: even 4 of 4
    discordant items fall one way with probability 1/8 by chance)."""
    strategy, best, net, batches = compare("top2")
    clear = next(s for s in strategy.report().evidence if s.decision == "layer0.attention")
    assert (clear.winner, clear.runner_up, clear.items, clear.test) == ("full", "local", 64, "McNemar")
    assert clear.winner_value == 1.0 > clear.runner_up_value and clear.p < 1e-9 and clear.separated
    few = [{k: v[:4] for k, v in batches[0].items()}]
    assert strategy.finish(_Ctx(net), few).best.layers[0].attention == "full"  # the same choice, on 4 items
    handful = next(s for s in strategy.report().evidence if s.decision == "layer0.attention")
    assert (handful.winner, handful.items) == ("full", 4) and handful.p >= 0.125 and not handful.separated
    assert "layer0.attention: full over local, 1.0000 vs " in handful.describe()
    assert handful.describe().endswith("(not separated)")


def test_argmax_keeps_the_weights_choice():
    strategy, best, _, _ = compare("argmax")
    assert best == strategy.current_arch() and best.layers[0].attention == "local"
    assert strategy.comparison == {} and strategy.report().evidence == ()


def test_a_tie_on_the_metric_goes_to_the_lower_loss():
    """Both candidates answer every item (accuracy 1): the sharper one, with the lower loss, wins."""
    _, best, _, _ = compare("top2", first="full", sure={"full": 4.0, "local": 12.0})
    assert best.layers[0].attention == "local"
    strategy, best, _, _ = compare("top2", first="local", sure={"full": 4.0, "local": 12.0})
    assert best.layers[0].attention == "local"
    assert strategy.comparison["layer0.attention"]["tried"][1]["val/acc"] == 1.0


def test_greedy_finds_a_candidate_the_weights_ranked_third():
    """Layer 0 leans local > local8 > full: the top-2 comparison never tries full, the greedy one does."""
    leaning = [0.1, 0.3, 0.2]  # full, local, local8
    _, top_two, _, _ = compare("top2", space=three_op_space(), leaning=leaning)
    assert top_two.layers[0].attention in ("local", "local8")
    strategy, best, net, batches = compare("greedy", space=three_op_space(), leaning=leaning)
    assert best.layers[0].attention == "full"
    tried = strategy.comparison["layer0.attention"]["tried"]
    assert [t["choice"] for t in tried] == ["full", "local", "local8"]  # settled first, then by probability


def test_greedy_ends_where_no_single_change_scores_better():
    """The record is the last pass: every decision tried with all the others at their final
    choices, the kept one first (nothing changed) and none of the others better by the metric."""
    strategy, best, net, batches = compare("greedy", space=three_op_space(), leaning=[0.1, 0.3, 0.2])
    assert strategy.comparison and set(strategy.comparison) <= set(strategy.space.choices_of(best))
    for key, record in strategy.comparison.items():
        kept, *others = record["tried"]
        assert kept["choice"] == record["kept"] == strategy.space.choices_of(best)[key]
        assert kept["val/acc"] == evaluate(net, batches, "acc", best)
        assert all(other["val/acc"] <= kept["val/acc"] for other in others)


def test_greedy_is_the_default_and_an_unknown_rule_is_refused():
    assert make("gdas", planted_space()).config.decide.rule == "greedy"
    with pytest.raises(ConfigError, match=re.escape("strategy.decide.rule='best': allowed: greedy, top2, argmax")):
        make("darts", planted_space(), decide={"rule": "best"})


@pytest.mark.parametrize("name", ["darts", "gdas"])
def test_resume_across_shrink_every(name):
    """A search checkpointed without shrinking resumes with it (nothing dropped yet); one that
    dropped candidates refuses to resume without it, in one line, rather than revive them."""
    plain = make(name, four_op_space(), seed=0)
    shrinking = make(name, four_op_space(), seed=0, shrink={"every": 1})
    shrinking.load_state_dict(plain.state_dict())  # strict
    assert all(bool(keep.all()) for keep in shrinking.keep().values())
    plain.load_state_dict(shrinking.state_dict())  # nothing dropped: loads as plain

    dropped, _ = shrunk_strategy(name, steps=1)
    assert not all(bool(keep.all()) for keep in dropped.keep().values())
    with pytest.raises(ConfigError, match=re.escape("resume it with strategy.shrink.every > 0")):
        make(name, four_op_space(), seed=0).load_state_dict(dropped.state_dict())
