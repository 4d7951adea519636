"""Every bad input ends a CLI with exit code 1 and one line on stderr, before any training.

Run in-process (each CLI's `run` with a composed config, as Hydra would call it) to stay fast.
"""

from pathlib import Path

import pytest

from nas.cli import export as export_cli
from nas.cli import retrain as retrain_cli
from nas.cli import search as search_cli
from tests.cli.conftest import TINY

CLIS = {"search": search_cli.run, "retrain": retrain_cli.run, "export": export_cli.run}

# (config, overrides, a word the message must contain); {tmp} is the test's tmp_path
BAD = [
    ("search", ["trainer.max_epochs=-2"], "trainer.max_epochs"),
    ("search", ["trainer.max_epochs=abc"], "trainer.max_epochs"),
    ("search", ["trainer.max_epochs=1e3"], "trainer.max_epochs"),
    ("search", ["trainer.max_epochs=0"], "trainer.max_epochs"),
    ("search", ["trainer.devices=0"], "trainer.devices"),
    ("search", ["seed=abc"], "seed"),
    ("search", ["seed=-1"], "seed"),
    ("search", ["retrain.max_epochs=0"], "retrain.max_epochs"),
    ("search", ["task.batch_size=0"], "batch_size"),
    ("search", ["resume={tmp}/nowhere"], "resume"),
    ("search", ["resume={tmp}"], "resume"),
    ("retrain", ["arch={tmp}/missing.yaml", "trainer.max_epochs=abc"], "trainer.max_epochs"),
    ("retrain", ["arch={tmp}/missing.yaml"], "missing.yaml"),
    ("export", ["ckpt={tmp}/missing.ckpt", "out={tmp}/afile/out"], "afile"),
    ("export", ["ckpt={tmp}/missing.ckpt", "out={tmp}/out"], "missing.ckpt"),
    # optimizer settings the optimizers would reject mid-run
    ("search", ["search.lr=abc"], "search.lr"),
    ("search", ["search.lr=-1"], "search.lr"),
    ("search", ["search.grad_clip=abc"], "search.grad_clip"),
    ("search", ["search.eval_batches=0"], "search.eval_batches"),
    ("search", ["strategy.arch_lr=-1"], "strategy.arch_lr"),
    ("retrain", ["arch={tmp}/missing.yaml", "retrain.lr=abc"], "retrain.lr"),
    ("retrain", ["arch={tmp}/missing.yaml", "retrain.distill=1.5"], "retrain.distill"),
    # Lightning's own refusals, as one line
    ("search", ["trainer.accelerator=bogus"], "accelerator='bogus'"),
    ("search", ["trainer.precision=bogus"], "Precision 'bogus'"),
    ("search", ["sharing=bogus"], "sharing"),
    ("search", ["task.seq_len=0"], "seq_len"),
    ("search", ["space.memory={reversible:maybe}"], "memory.reversible"),
    ("search", ["space.memory={bogus:1}"], "unknown key 'bogus'"),
    # arch files of the wrong types or with unknown keys, and damaged checkpoints
    ("retrain", ["arch={tmp}/depth_word.yaml"], "depth"),
    ("retrain", ["arch={tmp}/depth_float.yaml"], "depth"),
    ("retrain", ["arch={tmp}/heads_word.yaml"], "heads"),
    ("retrain", ["arch={tmp}/extra_key.yaml"], "exactly the keys depth, layers"),
    (
        "retrain",
        ["arch={tmp}/arch.yaml", "retrain.init=inherit", "retrain.supernet_ckpt={tmp}/empty.ckpt"],
        "empty.ckpt",
    ),
    ("export", ["ckpt={tmp}/empty.ckpt", "out={tmp}/out"], "empty"),
    ("export", ["ckpt={tmp}/garbage.ckpt", "out={tmp}/out"], "garbage.ckpt"),
]
LAYER = "layers:\n- {attention: full, heads: 2, ffn_dim: 64}\n"
FILES = {
    "depth_word.yaml": 'depth: "one"\n' + LAYER,
    "depth_float.yaml": "depth: 1.0\n" + LAYER,
    "heads_word.yaml": 'depth: 1\nlayers:\n- {attention: full, heads: "four", ffn_dim: 64}\n',
    "extra_key.yaml": "depth: 1\nbogus: 3\n" + LAYER,
    "afile": "not a folder\n",
    "empty.ckpt": "",
    "garbage.ckpt": "\x00\x13garbage" * 50,
    "arch.yaml": "depth: 1\nlayers:\n- {attention: full, heads: 4, ffn_dim: 128}\n",
}


@pytest.mark.parametrize("name,overrides,word", BAD, ids=[" ".join(o) for _, o, _ in BAD])
def test_bad_input_is_one_line(name, overrides, word, config, tmp_path, capsys):
    for file, text in FILES.items():
        (tmp_path / file).write_text(text)
    overrides = [o.replace("{tmp}", str(tmp_path)) for o in overrides]
    extra = {"search": TINY, "retrain": TINY[:-2], "export": []}[name]
    cfg = config(name, *extra, *overrides)
    with pytest.raises(SystemExit) as exit_:
        CLIS[name](cfg)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and word in lines[0], err
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before any training


# Strategy options of a wrong name, type or range: (overrides, the one line's message). Each
# stops before any training (`build_strategy`: `errors.build_config` and the configs' own checks).
BAD_STRATEGY = [
    # were tracebacks (some only after the supernet had trained)
    (["strategy=gdas", "strategy.arch_weight_decay=-1"], "strategy.arch_weight_decay=-1: must be a finite number >= 0"),
    (["strategy=enas", "strategy.controller_samples=abc"], "strategy.controller_samples='abc': must be an integer"),
    (["strategy=enas", "strategy.temperature=0"], "strategy.temperature=0: must be a finite number > 0"),
    (["strategy=evolution", "strategy.population=abc"], "strategy.population='abc': must be an integer"),
    (["strategy=enas", "strategy.final_samples=-2"], "strategy.final_samples=-2: must be a whole number >= 0"),
    (
        ["strategy=evolution", "strategy.constraints={params: nan}"],
        "strategy.constraints.params=nan: must be a finite number > 0",
    ),
    (["strategy=random", "strategy.samples=0"], "strategy.samples=0: must be a whole number >= 1"),
    (
        ["strategy=random", "+strategy.bogus_option=1"],
        "unknown option strategy.bogus_option for strategy=random; allowed: sandwich, distill, fair, sort_every, samples, constraints",
    ),
    # were silently accepted
    (["strategy=darts", "strategy.penalty.weight=-5"], "strategy.penalty.weight=-5: must be a finite number >= 0"),
    (["strategy=darts", "strategy.warmup_epochs=-3"], "strategy.warmup_epochs=-3: must be a whole number >= 0"),
    (
        ["strategy=gdas", "strategy.gumbel.start=-2", "strategy.gumbel.end=-1"],
        "strategy.gumbel.start=-2: must be a finite number > 0",
    ),
    (["strategy=enas", "strategy.baseline_decay=7"], "strategy.baseline_decay=7: must be a number in [0, 1)"),
    (["strategy=enas", "strategy.controller_hidden=0"], "strategy.controller_hidden=0: must be a whole number >= 1"),
    (["strategy=random", "strategy.fair=maybe"], "strategy.fair='maybe': must be true or false"),
    # were unclear: a non-finite loss once training ran, or "???: no such file"
    (["search.lr=inf"], "search.lr=inf: must be a finite number > 0"),
    (
        ["strategy=darts", "strategy.temperature.start=nan"],
        "strategy.temperature.start=nan: must be a finite number > 0",
    ),
    (
        ["strategy=gdas", "strategy.gumbel.start=0", "strategy.gumbel.end=0"],
        "strategy.gumbel.start=0: must be a finite number > 0",
    ),
    (["strategy=fixed"], "strategy.arch is missing: strategy=fixed needs it; pass strategy.arch=<value>"),
    # more of the same kinds
    (
        ["strategy=gdas", "strategy.gumbel.start=0.1", "strategy.gumbel.end=10"],
        "strategy.gumbel.end=10 > strategy.gumbel.start=0.1: the temperature is annealed from gumbel.start down to gumbel.end",
    ),
    (["strategy=evolution", "strategy.mutation_prob=inf"], "strategy.mutation_prob=inf: must be a number in [0, 1]"),
    (["strategy=darts", "strategy.arch_lr=inf"], "strategy.arch_lr=inf: must be a finite number > 0"),
    (["strategy=enas", "strategy.tanh_constant=-1"], "strategy.tanh_constant=-1: must be a finite number > 0"),
    # a wrong type: OmegaConf's typed config refuses it, `errors.build_config` words the one line
    (["strategy=darts", "strategy.arch_lr=abc"], "strategy.arch_lr='abc': must be a number"),
    (["strategy=darts", "strategy.penalty.weight=[1]"], "strategy.penalty.weight=[1]: must be a number"),
    (["strategy=random", "strategy.samples=true"], "strategy.samples=True: must be an integer"),
    (["task.num_train=1.5"], "task: task 'lookup': option 'num_train' must be an integer; got 1.5"),
    (["task.seed=abc"], "task: task 'lookup': option 'seed' must be an integer; got 'abc'"),
]


@pytest.mark.parametrize("overrides,message", BAD_STRATEGY, ids=[" ".join(o) for o, _ in BAD_STRATEGY])
def test_a_bad_strategy_option_is_one_line_before_training(overrides, message, config, capsys, monkeypatch):
    from nas import pipeline

    def trained(*args, **kwargs):
        raise AssertionError("the supernet started training")

    monkeypatch.setattr(pipeline, "fit_supernet", trained)
    with pytest.raises(SystemExit) as exit_:
        search_cli.run(config("search", *TINY, *overrides))
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"nas-search: error: {message}"], err


def test_a_second_process_on_a_locked_run_stops_naming_the_holder(config, tmp_path, capsys):
    from filelock import FileLock

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "run.pid").write_text("4242\n")
    with FileLock(str(run_dir / "run.lock")):  # another process's lock: filelock locks per object
        cfg = config("search", *TINY, f"resume={run_dir}", run_dir=run_dir)
        with pytest.raises(SystemExit) as exit_:
            search_cli.run(cfg)
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "4242" in err[0] and "in use" in err[0]


def test_nas_retrain_honours_the_lock_of_its_run_folder(config, tmp_path, capsys):
    from filelock import FileLock

    from nas.space import SearchSpace

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "run.pid").write_text("4242\n")
    cfg = config("retrain", *TINY[:-2], f"arch={tmp_path / 'arch.yaml'}", f"resume={run_dir}", run_dir=run_dir)
    SearchSpace.from_yaml(cfg.space.file).smallest().to_yaml(tmp_path / "arch.yaml")
    with FileLock(str(run_dir / "run.lock")):
        with pytest.raises(SystemExit) as exit_:
            retrain_cli.run(cfg)
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "4242" in err[0] and "in use" in err[0]


# the command of a finished evolution run, run again, retrained and exported again into the
# run's own retrain/ and export/ and then failed on export/ being there, flipping done to failed
@pytest.mark.parametrize("strategy", ["gdas", "evolution"])
def test_resuming_a_done_run_says_so_and_trains_nothing(strategy, config, tmp_path, capsys, monkeypatch):
    from nas import pipeline, run_folder

    def never(*args):
        raise AssertionError("a done run was searched again")

    monkeypatch.setattr(pipeline, "run", never)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    run_folder.write_status(run_dir, "done")
    cfg = config("search", *TINY, f"strategy={strategy}", f"resume={run_dir}", run_dir=run_dir)
    assert search_cli.run(cfg) is None
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "already done" in out[0] and "summary.txt" in out[0]
    assert run_folder.read_status(run_dir)["state"] == "done"


def test_an_evolution_worker_joins_a_done_run_and_leaves_it_done(config, tmp_path, monkeypatch):
    """A worker (retrain.enabled=false, as the README runs them) still joins a finished study,
    to add trials when given more generations; failing or killed, it leaves the run done."""
    from types import SimpleNamespace

    from nas import pipeline, run_folder

    def fails(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_run", fails)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    run_folder.write_status(run_dir, "done")
    before = run_folder.read_status(run_dir)
    cfg = config("search", *TINY, "strategy=evolution", "retrain.enabled=false", f"resume={run_dir}", run_dir=run_dir)
    with pytest.raises(KeyboardInterrupt):  # it joined: the search ran (and was interrupted)
        search_cli.run(cfg)
    assert run_folder.read_status(run_dir) == before

    monkeypatch.setattr(pipeline, "_run", lambda cfg, run_dir: SimpleNamespace(summary="found nothing new"))
    search_cli.run(cfg)  # a worker that finishes refreshes the status
    status = run_folder.read_status(run_dir)
    assert status["state"] == "done" and status["started"] == before["started"]


def test_a_failed_run_says_failed_in_its_status(config, tmp_path, monkeypatch, capsys):
    import json

    from nas import pipeline

    def broken(cfg, run_dir):
        raise FloatingPointError("loss is nan")

    monkeypatch.setattr(pipeline, "search", broken)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit):
        search_cli.run(config("search", *TINY))
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "loss is nan" in status["error"]
    assert status["started"] <= status["updated"]
    assert lock_is_free(run_dir / "run.lock")


def lock_is_free(path: Path) -> bool:
    """The run released its lock: another process may take it at once."""
    from filelock import FileLock

    lock = FileLock(str(path))
    lock.acquire(timeout=0)
    lock.release()
    return True


def test_a_bad_arch_file_is_one_line_from_the_command_line(tmp_path):
    """The real command, in its own process: nothing else reaches stderr before the error
    (no seed notice, no Hydra block)."""
    import subprocess
    import sys

    (tmp_path / "arch.yaml").write_text('depth: "one"\n' + LAYER)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nas.cli.retrain",
            f"arch={tmp_path / 'arch.yaml'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"nas-retrain: error: {tmp_path / 'arch.yaml'}: depth must be a positive integer; got 'one'"
    ]


def test_paths_output_dir_apart_from_the_run_folder_is_one_line(tmp_path):
    """The run's .hydra/config.yaml (what resume= and nas-rank read) lands in Hydra's folder
    only: the folder is chosen with hydra.run.dir, and the command says so before any work."""
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nas.cli.search",
            f"paths.output_dir={tmp_path / 'mine'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"nas-search: error: paths.output_dir={tmp_path / 'mine'}: the run folder is Hydra's "
        f"({tmp_path / 'run'}); choose it with hydra.run.dir={tmp_path / 'mine'}"
    ]
    assert not (tmp_path / "mine").exists()


def test_under_ddp_only_rank_zero_takes_the_lock(tmp_path, monkeypatch):
    """Lightning relaunches the same command for rank 1 in the same folder: it must not find
    rank 0's lock in its way (tests/cli/test_ddp.py runs the real thing, slow)."""
    from filelock import FileLock
    from pytorch_lightning.utilities import rank_zero_only

    from nas import run_folder

    with FileLock(str(tmp_path / "run.lock")):  # rank 0 holds it
        monkeypatch.setattr(rank_zero_only, "rank", 1)
        ran = []
        with run_folder.working_in(tmp_path):  # rank 1 neither waits for the lock nor is refused
            ran.append(True)
    assert ran == [True]
    assert not (tmp_path / "status.json").exists() and not (tmp_path / "run.pid").exists()
