"""The shared pieces: loss and metrics by hand, padding, baselines, the cache, the registry."""

import math

import numpy as np
import pytest
import torch

from nas.atomic import atomic_write
from nas.errors import ConfigError
from nas.metrics import task_loss, task_metric
from nas.tasks import TASKS, build
from nas.tasks.base import IGNORE_INDEX, collate, majority_accuracy, unigram_bpb
from nas.tasks.cache import cache_dir, choose, sample_distinct


def test_accuracy_counts_only_scored_targets():
    logits = torch.tensor([[[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]]])  # predicts 0, 1, 2
    target = torch.tensor([[0, 2, IGNORE_INDEX]])
    assert task_metric(logits, target, "acc").item() == pytest.approx(0.5)
    assert task_metric(logits[:, 0], torch.tensor([0]), "acc").item() == 1.0  # (B, C) logits


def test_bits_per_byte_of_a_uniform_guess_is_log2_of_the_outputs():
    logits = torch.zeros(2, 7, 256)
    target = torch.randint(0, 256, (2, 7))
    target[0, :3] = IGNORE_INDEX
    assert task_metric(logits, target, "bpb").item() == pytest.approx(8.0)
    assert task_loss(logits, target).item() == pytest.approx(math.log(256))


def test_loss_ignores_unscored_positions():
    logits = torch.randn(3, 5, 4)
    target = torch.randint(0, 4, (3, 5))
    target[:, 2:] = IGNORE_INDEX
    scored_logits, scored_target = logits[:, :2].reshape(-1, 4), target[:, :2].reshape(-1)
    expected = torch.nn.functional.cross_entropy(scored_logits, scored_target)
    assert task_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_unknown_metric():
    with pytest.raises(ConfigError, match="unknown metric 'f1'; allowed: acc, bpb"):
        task_metric(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), "f1")


def test_collate_pads_tokens_with_0_and_targets_with_ignore():
    batch = collate([(np.array([3, 4, 5]), np.array([1, IGNORE_INDEX, 2])), (np.array([6]), np.array([7]))])
    assert batch["tokens"].tolist() == [[3, 4, 5], [6, 0, 0]]
    assert batch["mask"].tolist() == [[True, True, True], [True, False, False]]
    assert batch["target"].tolist() == [[1, IGNORE_INDEX, 2], [7, IGNORE_INDEX, IGNORE_INDEX]]
    labels = collate([(np.array([3, 4]), 1), (np.array([5]), 0)])["target"]
    assert labels.tolist() == [1, 0]


def test_baselines_by_hand():
    assert majority_accuracy(np.array([2, 2, 1]), np.array([2, 1, 1, 2])) == 0.5
    # counts + 1 over 4 outputs: [1, 3, 1, 1] / 6
    assert unigram_bpb(np.array([1, 1]), np.array([1, 0]), 4) == pytest.approx(
        -(math.log2(3 / 6) + math.log2(1 / 6)) / 2
    )


def test_cache_folder_follows_the_parameters(tmp_path):
    a = cache_dir(tmp_path, "t", {"n": 1, "seed": 0})
    assert cache_dir(tmp_path, "t", {"seed": 0, "n": 1}) == a  # key order does not matter
    assert cache_dir(tmp_path, "t", {"n": 2, "seed": 0}) != a
    assert (a / "params.json").read_text() == '{"n": 1, "seed": 0}\n'


def test_interrupted_write_leaves_nothing(tmp_path):
    def fail(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "data.npz", fail)
    assert list(tmp_path.iterdir()) == []
    atomic_write(tmp_path / "data.npz", lambda f: f.write(b"whole"))
    assert [p.name for p in tmp_path.iterdir()] == ["data.npz"]


def test_choose_draws_distinct_sorted_rows():
    rng = np.random.default_rng(0)
    for population, k in [(1000, 10), (12, 6)]:  # the redraw path and the sort path
        rows = choose(rng, 500, population, k)
        assert rows.shape == (500, k) and rows.min() >= 0 and rows.max() < population
        assert (np.diff(rows, axis=1) > 0).all()
        assert len(np.unique(rows[:, 0])) > 1


def test_sample_distinct_tops_up_duplicates():
    sample = lambda rng, n: {"x": rng.integers(0, 40, (n, 1))}  # 30 draws repeat some
    got = sample_distinct(sample, 30, np.random.default_rng(0), "t")["x"].ravel()
    assert len(got) == len(set(got.tolist())) == 30
    with pytest.raises(ConfigError, match="task 't': found only 40 distinct examples of the 50"):
        sample_distinct(sample, 50, np.random.default_rng(0), "t")


def test_registry_and_build():
    assert TASKS.names() == [
        "bytelm",
        "forecast",
        "genomics",
        "listops",
        "lm",
        "lookup",
        "lra_image",
        "lra_retrieval",
        "mqar",
        "pathfinder",
        "selective_copy",
        "text",
    ]
    with pytest.raises(ConfigError, match="unknown task 'imdb'; known: bytelm, forecast, genomics, listops, lm"):
        build("imdb")
    with pytest.raises(ConfigError, match="unknown option 'lenght' for task 'mqar'; allowed: "):
        build("mqar", lenght=3)
    with pytest.raises(ConfigError, match="task 'mqar': batch_size must be >= 1, got 0"):
        build("mqar", batch_size=0)
    assert build("mqar", seq_len=64).seq_len == 64
