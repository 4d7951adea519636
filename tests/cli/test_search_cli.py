"""nas-search end to end on tiny settings; TensorBoard contents; presets; bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nas import pipeline
from nas.cli import search
from nas.cli.common import CONFIGS
from nas.space import Arch, SearchSpace
from nas.tasks import build_task
from tests.helpers import TINY, compose_config


def test_search_retrain_export(config, tmp_path):
    cfg = config("search", *TINY, "retrain.max_epochs=1")
    out = search.run(cfg)
    run_dir = tmp_path / "run"
    for name in (
        "best_arch.yaml",
        "summary.txt",
        "checkpoints/last.ckpt",
        "retrain/checkpoints/best.ckpt",
        "export/model.pt2",
        "export/weights.safetensors",
        "export/metrics.json",
    ):
        assert (run_dir / name).is_file(), name
    space = SearchSpace.from_yaml(cfg.space.file)
    assert Arch.from_yaml(run_dir / "best_arch.yaml") == out.search.arch
    space.validate(out.search.arch)
    # the retrained model's test accuracy is the exported float model's, measured apart
    exported = json.loads((run_dir / "export" / "metrics.json").read_text())
    assert out.metrics["retrain/test/acc"] == pytest.approx(exported["test/acc"], abs=1e-6)

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "val/acc"} <= set(tags["scalars"])
    assert any(t.startswith("arch/layer0.attention/") for t in tags["scalars"])
    assert {"search/arch_weights/layer0", "search/choice_counts", "search/chosen_arch"} <= set(tags["images"])
    assert "search/chosen_arch" in tags["tensors"]  # the text table
    assert "hparams" in events.PluginTagToContent("hparams") or events.PluginTagToContent("hparams")


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (Path(CONFIGS) / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_instantiates(tmp_path, experiment):
    overrides = [f"experiment={experiment}"]
    if experiment.startswith("text"):  # reads the user's own files: give it two tiny ones
        for split in ("train", "test"):
            (tmp_path / f"{split}.tsv").write_text("text\tlabel\ngood film\t1\nbad film\t0\n")
            overrides.append(f"task.{split}_file={tmp_path / f'{split}.tsv'}")
    cfg = compose_config("search", tmp_path / "run", overrides)
    header, command = (Path(CONFIGS) / "experiment" / f"{experiment}.yaml").read_text().splitlines()[:2]
    assert header == "# @package _global_"  # Hydra reads this header only on the first lines
    assert command.startswith(f"# nas-search experiment={experiment}")
    task = build_task(OmegaConf.to_container(cfg.task, resolve=True), tmp_path / "data", "test")
    space = SearchSpace.from_yaml(cfg.space.file)
    strategy = pipeline.make_strategy(cfg, space, task, tmp_path)
    assert strategy.name == cfg.strategy.name


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-c",
        "import sys; from nas.cli.{0} import main; sys.argv[0] = 'nas-{0}'; main()".format(args[0]),
        *args[1:],
    ]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_bad_input_is_one_line_and_a_failing_exit(tmp_path):
    """The default suite's end-to-end run of a command: a real process, its exit code, stderr."""
    missing = cli("retrain", f"arch={tmp_path / 'none.yaml'}", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines()[-1] == f"nas-retrain: error: {tmp_path / 'none.yaml'}: no such file"


@pytest.mark.slow  # two more processes: a minute on 2 loaded cores
def test_an_arch_outside_the_space_and_an_unknown_strategy_are_one_line(tmp_path):
    outside = tmp_path / "outside.yaml"
    Arch.from_dict({"depth": 1, "layers": [{"attention": "lsh", "heads": 2, "ffn_dim": 64}]}).to_yaml(outside)
    result = cli("retrain", f"arch={outside}", f"hydra.run.dir={tmp_path / 'r2'}", cwd=tmp_path)
    assert result.returncode != 0
    assert "layer 0: attention 'lsh' is not in space 'quickstart'; allowed: full, local" in result.stderr

    unknown = cli("search", "strategy=bogus", f"hydra.run.dir={tmp_path / 's'}", cwd=tmp_path)
    assert unknown.returncode != 0 and "Could not find 'strategy/bogus'" in unknown.stderr


def test_space_memory_on_the_command_line_replaces_the_files(config):
    """`space.memory=` turns Reformer's memory options on for a space whose file has none."""
    assert (
        pipeline.space_of(config("search")).memory
        == SearchSpace.from_yaml(Path(CONFIGS).parent / "search_spaces" / "quickstart.yaml").memory
    )
    space = pipeline.space_of(config("search", "space.memory={reversible:true,ffn_chunks:2}"))
    assert (space.memory.reversible, space.memory.ffn_chunks) == (True, 2)
