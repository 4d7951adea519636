"""Every configs/task/*.yaml builds its task through the registry (`build_task`), as the CLI
does, and its record builds the same task again."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nas.tasks import TASKS, Task, build_task

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "task"
GENERATED = dict(num_train=16, num_val=4, num_test=4, batch_size=4)
TINY = {
    "listops": dict(GENERATED, max_depth=4, max_args=3, longer_than=2, shorter_than=30, max_len=32),
    "mqar": dict(GENERATED, seq_len=32, num_pairs=4, num_queries=4),
    "lookup": dict(GENERATED, seq_len=32),
    "selective_copy": dict(GENERATED, seq_len=64),
    "pathfinder": GENERATED,
    "bytelm": dict(seq_len=64, max_files=2, batch_size=4),
    "text": dict(batch_size=2),  # plus the files, written below
}


def test_every_task_has_a_config():
    # a file may also be a variant of a task's config (`defaults: [<task>]`)
    assert set(TASKS.names()) <= {p.stem for p in CONFIGS.glob("*.yaml")}


@pytest.mark.parametrize("name", TASKS.names())
def test_config_builds_a_working_task(name, tmp_path):
    cfg = OmegaConf.merge(OmegaConf.load(CONFIGS / f"{name}.yaml"), TINY[name])
    if name == "text":
        for split in ("train", "test"):
            (tmp_path / f"{split}.jsonl").write_text('{"text": "good", "label": 1}\n'
                                                     '{"text": "bad", "label": 0}\n' * 5)
            cfg[f"{split}_file"] = str(tmp_path / f"{split}.jsonl")
    task = build_task(OmegaConf.to_container(cfg), tmp_path, f"configs/task/{name}.yaml")
    assert isinstance(task, Task) and task.name == name
    again = build_task(task.record(), tmp_path, "record")
    assert type(again) is type(task) and again.config == task.config
    assert task.data_dir == tmp_path
    batch = next(iter(task.train_dataloader()))
    assert batch["tokens"].shape[1] <= task.seq_len
    assert set(task.baseline()) == {f"val/{task.metric}", f"test/{task.metric}"}


def test_configs_keep_data_dir_out():
    for path in CONFIGS.glob("*.yaml"):
        assert "data_dir" not in OmegaConf.load(path), f"{path.name} sets data_dir"
