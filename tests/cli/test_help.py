"""`--help` of every CLI opens with what the command does, before Hydra's generic text."""

import pytest
from hydra import compose, initialize_config_dir

from nas.cli.common import CONFIGS


@pytest.mark.parametrize("name", ["search", "retrain", "export", "rank"])
def test_help_says_what_the_command_does(name):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name=name, return_hydra_config=True, overrides=["hydra.job.name=x"])
    header = cfg.hydra.help.header
    assert header.startswith(f"nas-{name}: ") and f"nas-{name} " in header.split("\n", 2)[2]


def test_search_help_lists_the_task_and_strategy_options(tmp_path):
    """The task= and strategy= options come from the Config dataclasses (ConfigStore), not
    from files: Hydra's help still lists them."""
    import subprocess
    import sys

    from nas.strategies import STRATEGIES
    from nas.tasks import TASKS

    command = [
        sys.executable,
        "-c",
        "import sys; from nas.cli.search import main; sys.argv[0] = 'nas-search'; main()",
        "--help",
    ]
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120).stdout
    assert f"task: {', '.join(sorted(TASKS.names()))}\n" in out
    assert f"strategy: {', '.join(sorted(STRATEGIES.names()))}\n" in out
