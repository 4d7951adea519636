"""`nas-search trainer=ddp` with 2 CPU processes: search, retrain and export complete, and only
rank 0 writes the run's files."""

import subprocess
import sys

import pytest

from tests.helpers import TINY


@pytest.mark.slow  # three processes (a launcher relaunches rank 1), three stages: 15 s to a minute
def test_search_retrain_export_under_ddp_on_two_cpu_processes(tmp_path):
    run_dir = tmp_path / "run"
    # `-m`: Lightning relaunches rank 1 with this same command line
    command = [
        sys.executable,
        "-m",
        "nas.cli.search",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "strategy=gdas",
        "space=tiny",
        "retrain.max_epochs=1",
        *TINY,
        f"hydra.run.dir={run_dir}",
        f"paths.data_dir={tmp_path / 'data'}",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Best architecture") == 1  # rank 1 prints no second summary
    for name in (
        "best_arch.yaml",
        "summary.txt",
        "export/model.pt2",
        "export/metrics.json",
        "retrain/checkpoints/best.ckpt",
    ):
        assert (run_dir / name).is_file(), name
    events = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and len({e.parent for e in events}) == 1  # one writer: rank 0's
    assert "sync_dist=True" not in done.stderr  # every epoch-level metric is reduced
    assert "Traceback" not in done.stderr
