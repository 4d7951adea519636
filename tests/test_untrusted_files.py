"""Files a user may have been sent (arch, space and archs files, an export's records, standalone
results) are read within bounds, name no code, and every bad one is one line: YAML bombs and
deep or huge files in every reader (in a child process under a memory limit), allocations past
any machine, tampered export records and predict.py input, and the CLI's write and folder cases.
(Issue 32: the threat is a file, not the user's own command line.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import hydra
import pytest

from nas import predict
from nas.cli.common import validate
from nas.errors import ConfigError, excerpt
from nas.export import load
from nas.jobs.job import Budget, Job, read_result, result_path, write_result
from nas.ranking import read_archs
from nas.safe_load import MAX_NESTING, read_json, read_yaml
from nas.space import Arch, SearchSpace
from tests.helpers import module_from_file

ROOT = Path(__file__).resolve().parents[1]
ARCH = {"depth": 1, "layers": [{"attention": "full", "heads": 2, "ffn_dim": 16}]}
SPACE = "name: s\ndim: 16\nhead_dim: 8\ndepth: [1]\nlayer:\n  attention: {full: {}}\n  heads: [2]\n  ffn_dim: [16]\n"
# What an export writes, small: the records are read, the weights never reached by these tests.
RECORDS = {
    "model.json": {
        "shape": {"vocab_size": 16, "num_classes": 10, "max_len": 8, "readout": "classify"},
        "metric": "acc",
        "dynamic_len": False,
        "op_revisions": {},
    },
    "task.json": {
        "task": "listops",
        "input": "listops",
        "vocab_size": 16,
        "pad": 0,
        "max_len": 8,
        "readout": "classify",
        "metric": "acc",
        "classes": list("0123456789"),
        "tokens": {"[MIN": 1, "[MAX": 2, "[MED": 3, "[SM": 4, "]": 5, **{str(d): 6 + d for d in range(10)}},
        "ignored": ["(", ")"],
    },
    "metrics.json": {
        "metric": "acc",
        "seq_len": 8,
        "cost/params": 100,
        "cost/flops": 1000,
        "cost/latency_ms": 1.5,
        "cost/latency_method": "median",
        "arch": ARCH,
        "test/acc": 0.5,
    },
}
LAUGHS = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)  # 9^10 values once expanded


def fake_export(folder: Path, **replace: Path | None) -> Path:
    """An export folder of valid records (weights.safetensors empty), each file named in
    `replace` a link to the given file (None: absent); with predict.py, as export copies it."""
    folder.mkdir(parents=True)
    for name, record in RECORDS.items():
        (folder / name).write_text(json.dumps(record))
    (folder / "arch.yaml").write_text(Arch.from_dict(ARCH).to_yaml())
    (folder / "space.yaml").write_text(SPACE)
    (folder / "weights.safetensors").write_bytes(b"")
    shutil.copyfile(predict.__file__, folder / "predict.py")
    for name, target in replace.items():
        (folder / name).unlink()
        if target is not None:
            (folder / name).symlink_to(target)
    return folder


def result_job() -> Job:
    return Job({"arch": ARCH, "space": {}, "shape": {}}, {}, "", 0, Budget(), {})


def result(**change) -> dict:
    """A standalone result as `train` writes it for `result_job()`."""
    return {
        "arch": ARCH,
        "seed": 0,
        "budget": result_job().budget.__dict__,
        "metric": "acc",
        "val": 0.5,
        "val_loss": 1.2,
        "train_seconds": 3.0,
        "host": "h",
        "pid": 1,
        **change,
    }


# -- YAML bombs, deep and huge files in every reader, under a memory limit --------------------------
def hostile_cases(folder: Path) -> dict:
    """Every reader of a file someone may send, given each hostile file: name -> a call."""
    bombs = {
        "billion laughs": folder / "laughs.yaml",
        "100,000-deep": folder / "deep.yaml",
        "60 MB": folder / "big.yaml",
    }
    bombs["billion laughs"].write_text(LAUGHS)
    bombs["100,000-deep"].write_text("[" * 100_000)
    with open(bombs["60 MB"], "w") as f:  # a valid arch, 60 MB long: 227 s and a MemoryError before
        f.write("depth: 1\nlayers:\n" + "- {attention: full, heads: 2, ffn_dim: 16}\n" * 1_400_000)
    json_bombs = {"100,000-deep": folder / "deep.json", "50 MB": folder / "big.json"}
    json_bombs["100,000-deep"].write_text("[" * 100_000)
    with open(json_bombs["50 MB"], "w") as f:
        f.write('{"a": "' + "x" * 50 * 2**20 + '"}')
    exports = iter(range(1000))
    export_with = lambda name, file: fake_export(folder / f"export{next(exports)}", **{name: file})
    yaml_readers = {
        "arch file (nas-retrain arch=, strategy.arch=)": Arch.from_yaml,
        "space file": SearchSpace.from_yaml,
        "nas-rank archs= list": read_archs,
        "a run folder's YAML (safe_load.read_yaml)": read_yaml,
        "export arch.yaml (nas.export.load)": lambda file: load(export_with("arch.yaml", file)),
        "export space.yaml (nas.export.load)": lambda file: load(export_with("space.yaml", file)),
    }
    json_readers = {
        f"export {name} (nas.export.load)": (lambda file, n=name: load(export_with(n, file))) for name in RECORDS
    }
    json_readers.update(
        {
            f"export {name} (predict.py)": (lambda file, n=name: predict.describe(export_with(n, file)))
            for name in ("model.json", "task.json")
        }
    )
    json_readers["a JSON file (safe_load.read_json)"] = read_json

    def standalone_result(file: Path):
        (folder / "results").mkdir(exist_ok=True)
        path = result_path(folder / "results", result_job())
        path.unlink(missing_ok=True)
        path.symlink_to(file)
        return read_result(folder / "results", result_job())

    json_readers["standalone result"] = standalone_result
    cases = {
        f"{what}: {bomb}": (lambda r=reader, f=file: r(f))
        for what, reader in yaml_readers.items()
        for bomb, file in bombs.items()
    }
    cases.update(
        {
            f"{what}: {bomb}": (lambda r=reader, f=file: r(f))
            for what, reader in json_readers.items()
            for bomb, file in json_bombs.items()
        }
    )
    (folder / "deep.csv").write_text('arch\n"' + "[" * 100_000 + '"\n')
    cases["ranked.csv archs=: a 100,000-deep arch"] = lambda: read_archs(folder / "deep.csv")
    (folder / "big.csv").symlink_to(json_bombs["50 MB"])
    cases["ranked.csv archs=: 50 MB"] = lambda: read_archs(folder / "big.csv")
    cases.update(allocation_cases(folder))
    return cases


def allocation_cases(folder: Path) -> dict:
    """Models past any machine: refused before an allocation, naming the memory."""
    from nas.model import ModelShape
    from nas.supernet import Supernet

    def space_with(layer: str) -> Path:
        path = folder / f"space{len(list(folder.glob('space*')))}.yaml"
        path.write_text(SPACE.split("layer:")[0].replace("dim: 16", "dim: 64") + "layer:\n" + layer)
        return path

    huge_heads = space_with("  attention: {full: {}}\n  heads: [2, 4000000]\n  ffn_dim: [16]\n")
    huge_k = space_with("  attention: {linformer: {k: 100000000}}\n  heads: [2]\n  ffn_dim: [16]\n")
    (folder / "digits.yaml").write_text(f"depth: 1\nlayers:\n- {{attention: full, heads: {'9' * 5000}, ffn_dim: 16}}\n")
    vocab = folder / "vocab.json"
    vocab.write_text(
        json.dumps({**RECORDS["model.json"], "shape": {**RECORDS["model.json"]["shape"], "vocab_size": 10**9}})
    )
    supernet = lambda space: Supernet(SearchSpace.from_yaml(space), ModelShape(291, 291, 48), sharing="separate")

    def retrain(space: Path):  # nas-retrain builds a Subnet of the arch alone, not the supernet
        from types import SimpleNamespace

        from omegaconf import OmegaConf

        from nas import pipeline

        arch = Arch.from_dict({"depth": 1, "layers": [{"attention": "full", "heads": 4000000, "ffn_dim": 16}]})
        task = SimpleNamespace(shape=ModelShape(291, 291, 48), metric="acc")
        pipeline.retrain(
            None,
            arch,
            SearchSpace.from_yaml(space),
            task,
            folder / "retrain",
            settings=OmegaConf.create({"init": "scratch", "distill": 0.0}),
        )

    return {
        "allocation: an arch with a 5000-digit heads": lambda: Arch.from_yaml(folder / "digits.yaml"),
        "allocation: heads: [4000000] (nas-search's supernet)": lambda: supernet(huge_heads),
        "allocation: linformer k: 100000000 (nas-search's supernet)": lambda: supernet(huge_k),
        "allocation: heads: [4000000] (nas-retrain's subnet)": lambda: retrain(huge_heads),
        "allocation: model.json vocab_size 1e9 (nas.export.load)": lambda: load(
            fake_export(folder / "vocab_export", **{"model.json": vocab, "task.json": None})
        ),
    }


# The child: the cases above under RLIMIT_AS of 1 GiB past what its imports hold; prints
# {case: [exception type, message, seconds]}.
CHILD = """
import json, resource, sys, time
from pathlib import Path
from tests import test_untrusted_files as t
cases = t.hostile_cases(Path(sys.argv[1]))
size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, size + 2**30))
out = {}
for name, call in cases.items():
    start = time.perf_counter()
    try:
        call()
        out[name] = [None, "accepted", 0]
    except BaseException as err:
        out[name] = [type(err).__name__, t.excerpt(str(err), 400), time.perf_counter() - start]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("hostile")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder)], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert child.returncode == 0, child.stderr[-2000:]
    return json.loads(child.stdout.splitlines()[-1])


def _listing() -> list[str]:
    """The case names, without writing the big files (a listing for parametrize)."""
    yaml_bombs, json_bombs = ("billion laughs", "100,000-deep", "60 MB"), ("100,000-deep", "50 MB")
    yaml_readers = [
        "arch file (nas-retrain arch=, strategy.arch=)",
        "space file",
        "nas-rank archs= list",
        "a run folder's YAML (safe_load.read_yaml)",
        "export arch.yaml (nas.export.load)",
        "export space.yaml (nas.export.load)",
    ]
    json_readers = [
        *(f"export {name} (nas.export.load)" for name in RECORDS),
        "export model.json (predict.py)",
        "export task.json (predict.py)",
        "a JSON file (safe_load.read_json)",
        "standalone result",
    ]
    return [
        *(f"{r}: {b}" for r in yaml_readers for b in yaml_bombs),
        *(f"{r}: {b}" for r in json_readers for b in json_bombs),
        "ranked.csv archs=: a 100,000-deep arch",
        "ranked.csv archs=: 50 MB",
        "allocation: an arch with a 5000-digit heads",
        "allocation: heads: [4000000] (nas-search's supernet)",
        "allocation: linformer k: 100000000 (nas-search's supernet)",
        "allocation: heads: [4000000] (nas-retrain's subnet)",
        "allocation: model.json vocab_size 1e9 (nas.export.load)",
    ]


def test_the_listing_names_every_hostile_case(hostile):
    assert sorted(hostile) == sorted(_listing())


@pytest.mark.parametrize("case", _listing())
def test_a_hostile_file_is_one_line_fast_and_within_memory(hostile, case):
    kind, message, seconds = hostile[case]
    assert kind in ("ConfigError", "InputError"), f"{case}: {kind}: {message}"
    assert "\n" not in message and len(message) < 400, message
    assert seconds < 10, f"{case}: {seconds:.1f} s"
    bounds = {
        "laughs": "100,000 values",
        "deep": f"nested more than {MAX_NESTING}",
        "MB": "MiB",
        "digit": "4300 digits",
        "allocation": "GiB",
    }  # the bound each case meets
    if "predict.py" in case or "task.json" in case:  # load checks task.json as predict.py reads it
        bounds["deep"] = "nested too deeply"  # predict.py's own reader: json.loads stops it
    if "ranked.csv" in case:
        bounds["MB"] = "malformed CSV: field larger than field limit"  # under the 64 MiB a ranked.csv may be
    assert bounds[next(key for key in bounds if key in case)] in message, message


def test_the_hostile_files_are_refused_by_the_bounds_not_by_luck(tmp_path):
    """Within the bounds the same readers accept the same shapes: the files above fail for their
    size, nesting and expansion only. An alias and a merge key that stay small still load."""
    (tmp_path / "ok.yaml").write_text("a: &x [1, 2]\nb: *x\nc: &m {k: 1}\nd: {<<: *m, j: 2}\n")
    assert read_yaml(tmp_path / "ok.yaml") == {"a": [1, 2], "b": [1, 2], "c": {"k": 1}, "d": {"k": 1, "j": 2}}
    depth = MAX_NESTING - 1
    (tmp_path / "deep.yaml").write_text("[" * depth + "]" * depth)
    (tmp_path / "deep.json").write_text("[" * depth + "]" * depth)
    assert read_yaml(tmp_path / "deep.yaml") == read_json(tmp_path / "deep.json")
    (tmp_path / "strings.json").write_text(json.dumps(["[" * 1000, "\\]"]))  # brackets in strings do not nest
    assert read_json(tmp_path / "strings.json")[0] == "[" * 1000
    for text, message in [
        ("a: &a [*a]\n", "an alias inside its own anchor"),
        ("a\0b", "a binary file"),
        (b"\xff\xfe", "not UTF-8 text"),
        (f"h: {'9' * 5000}\n", "4300 digits"),
        ("a: 2024-13-45\n", "month must be in 1..12"),
    ]:
        path = tmp_path / "bad.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(ConfigError, match=message) as err:
            read_yaml(path, "arch file")
        assert str(err.value).startswith(f"arch file {path}: ")
    with pytest.raises(ConfigError, match="not a file"):
        read_yaml("/dev/zero")


def test_excerpt_is_bounded_for_any_value():
    nested = [1]
    for _ in range(30):
        nested = [nested] * 10  # 10^30 leaves: repr would never end
    for value in (nested, "x" * 10**7, 10**4000, {"_target_": "os.system", "k": [1] * 10**6}):
        assert len(excerpt(value)) <= 60
    assert excerpt({"attention": "full", "heads": 2}) == repr({"attention": "full", "heads": 2})


# -- tampered export records: strict schemas, and a _target_ at any depth runs nothing ----------------
def payload(marker: Path) -> dict:
    """What Hydra would turn into Path(marker).write_text("pwned") (issue 32's .pth writer)."""
    return {
        "_target_": "pathlib.Path.write_text",
        "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}, "pwned"],
    }


def tampered(record: str, marker: Path, depth: int) -> dict:
    """The record with the payload `depth` levels down: under a key of its own (1), as one of its
    objects (2), or inside one (3)."""
    data = json.loads(json.dumps(RECORDS[record]))
    field = {"model.json": "shape", "task.json": "tokens", "metrics.json": "arch"}[record]
    if depth == 1:
        data["_args_"] = [payload(marker)]
    else:
        data[field] = payload(marker) if depth == 2 else {**data[field], "inner": payload(marker)}
    return data


def folder_script(folder: Path):
    """The folder's own predict.py, imported (its HERE is that folder), as test_export does."""
    return module_from_file("exported_predict", folder / "predict.py")


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("record", list(RECORDS))
def test_a_target_in_an_export_record_runs_nothing_and_is_one_line(tmp_path, capsys, record, depth):
    marker = tmp_path / "marker"
    folder = fake_export(tmp_path / "export")
    (folder / record).write_text(json.dumps(tampered(record, marker, depth)))
    with pytest.raises(ConfigError) as err:
        load(folder)
    message = str(err.value)
    assert "\n" not in message and str(folder / record) in message
    assert re.search(r"unknown key '(_args_|_target_|inner)'|must be", message), message
    if record != "metrics.json":  # predict.py reads model.json and task.json
        assert folder_script(folder).main(["[MAX 1 2 ]"]) == 1
        printed = capsys.readouterr().err.strip()
        assert len(printed.splitlines()) == 1 and printed.startswith("predict.py: ") and record in printed
    assert not marker.exists()


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("record", list(RECORDS))
def test_the_payload_runs_when_instantiated(tmp_path, record, depth):
    """The test above can fail: each tampered record, given to Hydra, writes the marker."""
    marker = tmp_path / "marker"
    hydra.utils.instantiate(tampered(record, marker, depth))
    assert marker.read_text() == "pwned"


def test_an_untampered_fake_export_gets_past_every_record(tmp_path):
    """The refusals above come from the tampering: the same folder untouched reaches the weights."""
    with pytest.raises(ConfigError, match="weights.safetensors: cannot be read as safetensors"):
        load(fake_export(tmp_path / "export"))


def model_record(**shape):
    return json.dumps({**RECORDS["model.json"], "shape": {**RECORDS["model.json"]["shape"], **shape}})


@pytest.mark.parametrize(
    "record, content, message",
    [  # before: JSONDecodeError, AttributeError, silent
        ("model.json", "garbage{", "malformed JSON"),
        ("model.json", "[1, 2]", "must be an object"),
        ("model.json", model_record(max_len="long"), "shape.max_len must be a whole number"),
        ("model.json", model_record(vocab_size=True), "model.json: shape.vocab_size must be a whole number"),
        ("model.json", model_record(readout="pixels"), "shape.readout must be 'classify' or 'tokens'"),
        ("model.json", json.dumps({**RECORDS["model.json"], "metric": "f1"}), "unknown metric 'f1'"),
        ("metrics.json", json.dumps({**RECORDS["metrics.json"], "test/acc": float("nan")}), "must be a finite number"),
        ("task.json", json.dumps({**RECORDS["task.json"], "classes": ["a", "b"]}), "classes names 2 classes"),
        ("task.json", json.dumps({**RECORDS["task.json"], "vocab_size": 17}), "vocab_size 17 differs"),
        (
            "arch.yaml",
            "depth: 1\nlayers:\n- {attention: lsh, heads: 2, ffn_dim: 16}\n",
            "arch.yaml: layer 0: attention 'lsh'",
        ),
    ],
)
def test_a_tampered_export_record_is_one_line(tmp_path, record, content, message):
    folder = fake_export(tmp_path / "export")
    (folder / record).write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load(folder)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "files, argv, message",
    [  # before: a traceback each, or a label printed
        ({"task.json": None}, ["1 --5 2"], "token '--5' is not an integer id"),  # ids: no task.json
        ({"task.json": None}, ["1 ² 2"], "token '²' is not an integer id"),
        ({"task.json": None}, ["1 1_0"], "token '1_0' is not an integer id"),
        ({"task.json": None}, [f"1 {'9' * 5000}"], "is outside the vocabulary 0..15"),
        ({}, ["[MAX 1 2"], "1 operator(s) not closed"),
        ({}, ["[MAX ]"], "closes an operator without arguments"),
        ({}, ["] 1"], "closes no operator"),
        ({}, ["[MAX 1 ] 2"], "'2' after the end of the expression"),
        ({}, ["1 2"], "'2' after the end of the expression"),
        ({"task.json": "{garbage"}, ["1"], "task.json: malformed JSON"),
        (
            {"task.json": json.dumps({**RECORDS["task.json"], "vocab_size": "many"})},
            ["1"],
            "vocab_size must be a whole number",
        ),
        ({"task.json": json.dumps({**RECORDS["task.json"], "classes": ["a"]})}, ["1"], "classes names 1 classes"),
        (
            {"task.json": json.dumps({**RECORDS["task.json"], "tokens": {**RECORDS["task.json"]["tokens"], "1": 99}})},
            ["[MAX 1 2 ]"],
            "token id 99 (from task.json's input listops) is outside the vocabulary",
        ),
        (
            {"task.json": json.dumps({**RECORDS["task.json"], "input": "listops", "tokens": None})},
            ["1"],
            "tokens must be an object",
        ),
        ({"model.json": None}, ["1"], "model.json: no such file"),
        ({"model.json": model_record(max_len="long")}, ["1"], "shape.max_len must be a whole number"),
        ({"model.json": "[1]"}, ["1"], "model.json must be an object"),
        ({"task.json": None}, ["[MAX 1 ]"], "token '[MAX' is not an integer id"),  # ids over model.json
        ({}, ["[MAX 1 ]"], "has no model.pt2"),  # well-formed input reaches the program
        ({}, ["--generate", "5", "[MAX 1 ]"], "--generate needs a causal language model's export"),
        (  # a decode state past any machine, refused before allocating (more in tests/test_generate.py)
            {
                "model.json": json.dumps(
                    {**RECORDS["model.json"], "decode": {"state": [{"shape": [2**40] * 2, "dtype": "int64"}]}}
                )
            },
            ["--generate", "1", "[MAX 1 ]"],
            "an export's is at most 64 GiB",
        ),
    ],
)
def test_predict_script_refuses_in_one_line(tmp_path, capsys, files, argv, message):
    folder = fake_export(tmp_path / "export", **{name: None for name in files})
    for name, content in files.items():
        if content is not None:
            (folder / name).write_text(content)
    assert folder_script(folder).main(argv) == 1
    printed = capsys.readouterr().err.strip()
    assert len(printed.splitlines()) == 1 and printed.startswith("predict.py: ") and message in printed, printed


def test_every_task_description_fits_the_task_json_schema(tmp_path):
    """task.json is read strictly: whatever a registered task describes must pass."""
    from nas.tasks import TASKS

    for name in TASKS.names():
        try:
            task = TASKS.get(name)(data_dir=tmp_path)
        except ConfigError:
            continue  # a task that needs the user's files (text) describes itself like its base
        predict.check(json.loads(json.dumps(task.describe())), predict.TASK_SCHEMA, name)


# -- the CLI paths: archs=<binary>, standalone_dir=/dev/null, out=., a full disk, a result read back ---
def test_a_binary_archs_file_and_a_file_standalone_dir_are_one_line(tmp_path):
    (tmp_path / "archs.bin").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "archs.csv").write_bytes(bytes(range(256)) * 64)
    for path in (tmp_path / "archs.bin", tmp_path / "archs.csv"):
        with pytest.raises(ConfigError, match="not UTF-8 text|a binary file") as err:
            read_archs(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="standalone_dir /dev/null: not a folder"):
        read_result(Path("/dev/null"), result_job())


def test_export_never_writes_over_the_current_folder_or_a_folder_that_is_not_an_export(tmp_path, monkeypatch):
    from nas.export import export

    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    (work / "keep.txt").write_text("mine")
    (work / "runs" / "best.ckpt").write_text("a checkpoint")
    monkeypatch.chdir(work)
    cases = {
        ".": "the current folder or one above it",
        "..": "the current folder or one above it",
        "runs": "it holds the checkpoint",
        str(work / "runs" / ".."): "the current folder or one above it",
    }
    for out, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            export(work / "runs" / "best.ckpt", out, overwrite=True)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "n.txt").write_text("notes")
    with pytest.raises(ConfigError, match="it is not an earlier export"):
        export("best.ckpt", tmp_path / "notes", overwrite=True)
    from omegaconf import OmegaConf

    with pytest.raises(ConfigError, match="out=.: the current folder"):  # the CLI, before its lock files
        validate(OmegaConf.create({"out": "."}), "nas-export")
    assert (work / "keep.txt").read_text() == "mine" and (tmp_path / "notes" / "n.txt").is_file()


WRITE = """
import resource, sys
from pathlib import Path
from torch import nn
from nas.cli.common import one_line_errors
from nas.export import save_weights
resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))  # as `ulimit -f`: writes past it fail
write = {"text": lambda: Path(sys.argv[2]).write_text("x" * 100_000),
         "weights": lambda: save_weights(nn.Linear(100, 100), Path(sys.argv[2]))}[sys.argv[1]]
one_line_errors("nas-export")(write)()
"""


@pytest.mark.parametrize(
    "what, named", [("text", "writing under its output folder"), ("weights", "weights.safetensors")]
)
def test_a_full_disk_is_one_line(tmp_path, what, named):  # before: OSError: File too large, a traceback
    target = tmp_path / ("out.txt" if what == "text" else "weights.safetensors")
    child = subprocess.run(
        [sys.executable, "-c", WRITE, what, str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = child.stderr.strip().splitlines()
    assert child.returncode == 1 and len(lines) == 1, child.stderr[-2000:]
    assert lines[0].startswith("nas-export: error: ") and named in lines[0] and "File too large" in lines[0]


@pytest.mark.parametrize(
    "change, message",
    [  # before: all silently believed
        ({"val": 5.0}, "val 5.0 is outside 0..1 (the range of acc); remove the file"),
        ({"val": float("nan")}, "val must be a finite number"),
        ({"val_loss": -1.0}, "val_loss -1.0 is outside 0..inf"),
        ({"metric": "f1"}, "metric must be 'acc' or 'bpb'"),
        ({"_target_": "os.system"}, "unknown key '_target_'"),
        ({"budget": {"lr": {"_target_": "os.system"}}}, "budget.lr must be a finite number"),
        ({"seed": 1}, "its seed is not this job's"),
        ({"arch": {**ARCH, "depth": 2}}, "its arch is not this job's"),
    ],
)
def test_a_standalone_result_read_back_is_checked(tmp_path, change, message):
    job = result_job()
    write_result(tmp_path, job, result())
    assert read_result(tmp_path, job) == result()  # a real one is believed
    write_result(tmp_path, job, result(**change))
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        read_result(tmp_path, job)
    assert str(result_path(tmp_path, job)) in str(err.value) and "\n" not in str(err.value)
