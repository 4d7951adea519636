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
