"""Every `task=<name>` option (registered in Hydra's ConfigStore from the task's Config by
`nas.hydra_configs`) builds its task through the registry (`build_task`), as the CLI does, and
its record builds the same task again."""

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from nas import hydra_configs
from nas.tasks import TASKS, Task, build_task

STORE = ConfigStore.instance()


def option(name: str):
    return STORE.load(f"task/{name}.yaml").node


GENERATED = dict(num_train=16, num_val=4, num_test=4, batch_size=4)
TINY = {
    "listops": dict(GENERATED, max_depth=4, max_args=3, longer_than=2, shorter_than=30, max_len=32),
    "mqar": dict(GENERATED, seq_len=32, num_pairs=4, num_queries=4),
    "lookup": dict(GENERATED, seq_len=32),
    "selective_copy": dict(GENERATED, seq_len=64),
    "pathfinder": GENERATED,
    "bytelm": dict(seq_len=64, max_files=2, batch_size=4),
    "lm": dict(seq_len=64, crops_per_epoch=8, val_windows=4, batch_size=4),
    "text": dict(batch_size=2),  # plus the files, written below
    "forecast": dict(lookback=32, horizon=8, steps=2000, batch_size=4),
    "genomics": dict(GENERATED, max_len=32),
    "lra_retrieval": dict(GENERATED, max_len=32),
    "lra_image": GENERATED,
}


def test_every_task_is_an_option_with_its_configs_defaults():
    assert set(TASKS.names()) <= {name.removesuffix(".yaml") for name in STORE.list("task")}
    lookup = OmegaConf.to_container(option("lookup"))
    assert lookup == {"name": "lookup", **hydra_configs.defaults(TASKS.get("lookup").Config)}
    assert (lookup["num_train"], lookup["num_val"], lookup["num_test"]) == (4000, 500, 500)  # the quickstart's


@pytest.mark.parametrize("name", TASKS.names())
def test_config_builds_a_working_task(name, tmp_path):
    cfg = OmegaConf.merge(option(name), TINY[name])
    if name == "text":
        for split in ("train", "test"):
            (tmp_path / f"{split}.jsonl").write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n' * 5)
            cfg[f"{split}_file"] = str(tmp_path / f"{split}.jsonl")
    task = build_task(OmegaConf.to_container(cfg), tmp_path, f"task={name}")
    assert isinstance(task, Task) and task.name == name
    again = build_task(task.record(), tmp_path, "record")
    assert type(again) is type(task) and again.config == task.config
    assert task.data_dir == tmp_path
    batch = next(iter(task.train_dataloader()))
    assert batch["tokens"].shape[1] <= task.seq_len
    assert {f"val/{task.metric}", f"test/{task.metric}"} <= set(task.baseline())  # forecast: also linear/..., ...


def test_configs_keep_data_dir_out():
    for name in TASKS.names():
        assert "data_dir" not in option(name), f"task={name} sets data_dir"
