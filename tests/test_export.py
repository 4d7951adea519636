"""Export: the folder's files, the program run in a fresh process that cannot import `nas`, the
weights, `load`, the int8 copy and the one-line errors."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from nas import cost
from nas.errors import ConfigError
from nas.export import export, load, quantize_int8, write_int8_program
from nas.model import ModelShape
from nas.ops.attention import ATTENTION
from nas.space import Arch, SearchSpace
from nas.training.retrain import RetrainModule
from tests.helpers import module_from_file
from tests.ops.test_attention_registry import SMALL_OPTIONS

VOCAB, CLASSES, MAX_LEN, SEQ_LEN = 16, 3, 32, 24
SPACE = {
    "name": "tiny",
    "dim": 32,
    "head_dim": 8,
    "depth": [1, 2],
    "layer": {
        "attention": {op: {"type": op, **SMALL_OPTIONS.get(op, {})} for op in ATTENTION.names()},
        "heads": [2, 4],
        "ffn_dim": [128],
    },  # a wide FFN: the int8 part of the model dominates
}
# A full-length sequence, one ending mid-block for every op, and a short one.
_gen = torch.Generator().manual_seed(1)
SEQUENCES = [torch.randint(1, VOCAB, (n,), generator=_gen).tolist() for n in (MAX_LEN, 19, 5)]

# Runs in a fresh interpreter: every program through its folder's predict.py, with `nas` made
# unimportable, as on a machine where it is not installed.
RUN_ALONE = """
import contextlib, importlib.util, io, json, runpy, sys
import torch

class NoNas:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "nas":
            raise ImportError(f"the exported program imported {name}")

sys.meta_path.insert(0, NoNas())
folders, sequences, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
results = {}
for folder in folders:
    spec = importlib.util.spec_from_file_location("predict", f"{folder}/predict.py")
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)
    program, max_len = predict.load(folder)
    results[folder] = {"batch": predict.predict(program, max_len, sequences),
                       "single": predict.predict(program, max_len, sequences[1:2])}
program, max_len = predict.load(folders[0], int8=True)  # the first was exported with quantize=true
results["int8"] = predict.predict(program, max_len, sequences)
# The script as a user runs it, once: it loads its program again, which costs a second.
sys.argv = ["predict.py", "--logits"] + [" ".join(map(str, seq)) for seq in sequences]
with contextlib.redirect_stdout(io.StringIO()) as printed:
    try:
        runpy.run_path(f"{folders[0]}/predict.py", run_name="__main__")
    except SystemExit as done:
        assert done.code == 0, done.code
results["printed"] = printed.getvalue()
assert not [m for m in sys.modules if m.split(".")[0] == "nas"], "nas was imported"
torch.save(results, out)
"""


def make_checkpoint(path, layers: list[dict], readout: str = "classify"):
    """A RetrainModule after one training step on random data, saved by a Lightning Trainer."""
    torch.manual_seed(0)
    model = {
        "arch": {"depth": len(layers), "layers": layers},
        "space": SPACE,
        "shape": ModelShape(VOCAB, CLASSES, MAX_LEN, readout).to_dict(),
    }
    module = RetrainModule(model, "acc", warmup_steps=1)
    target = (lambda: torch.randint(0, CLASSES, (MAX_LEN,))) if readout == "tokens" else (lambda: torch.tensor(1))
    samples = [
        {
            "tokens": torch.randint(1, VOCAB, (MAX_LEN,)),
            "mask": torch.ones(MAX_LEN, dtype=torch.bool),
            "target": target(),
        }
        for _ in range(4)
    ]
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    loader = DataLoader(samples, batch_size=4)
    trainer.fit(
        module, loader, loader, weights_only=True
    )  # a validation loader (not run) as the module has a validation_step
    trainer.save_checkpoint(path)
    return path


def model_of(ckpt) -> torch.nn.Module:
    return RetrainModule.load_model(str(ckpt)).model.eval()


def eval_batches() -> list[dict]:
    """Test batches as a task makes them, at the task's length, with padding in some rows."""
    gen = torch.Generator().manual_seed(2)
    batches = []
    for _ in range(3):
        lengths = torch.randint(4, SEQ_LEN + 1, (4, 1), generator=gen)
        mask = torch.arange(SEQ_LEN) < lengths  # (4, SEQ_LEN)
        tokens = torch.randint(1, VOCAB, (4, SEQ_LEN), generator=gen) * mask
        batches.append({"tokens": tokens, "mask": mask, "target": torch.randint(0, CLASSES, (4,), generator=gen)})
    return batches


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models are tiny: a second thread only spins, which costs a lot on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def main(tmp_path_factory):
    """A two-layer classifier exported with test batches and the int8 copy."""
    tmp = tmp_path_factory.mktemp("main")
    ckpt = make_checkpoint(
        tmp / "retrain.ckpt",
        [{"attention": "local", "heads": 4, "ffn_dim": 128}, {"attention": "full", "heads": 2, "ffn_dim": 128}],
    )
    batches = eval_batches()
    # A generator: export must iterate the batches only once for both models.
    metrics = export(ckpt, tmp / "out", quantize=True, eval_batches=iter(batches), seq_len=SEQ_LEN)
    return SimpleNamespace(ckpt=ckpt, dir=tmp / "out", metrics=metrics, batches=batches, model=model_of(ckpt))


@pytest.fixture(scope="module")
def op_exports(tmp_path_factory) -> dict:
    """One single-layer model per registered op, with a per-position head so that every
    position's logits are compared, exported without extras."""
    tmp = tmp_path_factory.mktemp("ops")
    folders = {}
    for op in ATTENTION.names():
        ckpt = make_checkpoint(tmp / f"{op}.ckpt", [{"attention": op, "heads": 2, "ffn_dim": 128}], readout="tokens")
        export(ckpt, tmp / op)
        folders[op] = SimpleNamespace(ckpt=ckpt, dir=tmp / op, model=model_of(ckpt))
    return folders


@pytest.fixture(scope="module")
def run_alone(main, op_exports, tmp_path_factory) -> dict:
    """Every program's logits from one fresh process (a process per program costs seconds);
    the main export comes first, as its predict.py also runs as a script."""
    folders = [str(main.dir)] + [str(e.dir) for e in op_exports.values()]
    out = tmp_path_factory.mktemp("alone") / "logits.pt"
    done = subprocess.run(
        [sys.executable, "-c", RUN_ALONE, json.dumps(folders), json.dumps(SEQUENCES), str(out)],
        capture_output=True,
        text=True,
        cwd=out.parent,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out)


@torch.no_grad()
def expected_logits(model, sequences) -> list[torch.Tensor]:
    """The in-framework model on each sequence alone, unpadded and without a mask."""
    return [model(torch.tensor([seq]))[0] for seq in sequences]


@pytest.mark.parametrize("op", ATTENTION.names())
def test_program_alone_matches_the_model_for_every_op(op, op_exports, run_alone):
    export_ = op_exports[op]
    got = run_alone[str(export_.dir)]
    assert got["batch"].shape == (len(SEQUENCES), MAX_LEN, CLASSES)
    for i, (seq, expected) in enumerate(zip(SEQUENCES, expected_logits(export_.model, SEQUENCES))):
        # Padded positions of shorter sequences hold junk; the real ones match the unpadded run.
        torch.testing.assert_close(got["batch"][i, : len(seq)], expected, atol=1e-5, rtol=1e-5)
    alone = expected_logits(export_.model, SEQUENCES[1:2])[0]
    torch.testing.assert_close(got["single"][0, : len(SEQUENCES[1])], alone, atol=1e-5, rtol=1e-5)


def test_classifier_program_and_predict_script(main, run_alone):
    got = run_alone[str(main.dir)]
    expected = torch.stack(expected_logits(main.model, SEQUENCES))  # (3, C)
    torch.testing.assert_close(got["batch"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["single"], expected[1:2], atol=1e-5, rtol=1e-5)
    printed = [json.loads(line) for line in run_alone["printed"].splitlines()]  # a line per sequence
    torch.testing.assert_close(torch.tensor(printed), expected, atol=1e-5, rtol=1e-5)


def test_files_and_metrics(main):
    module = RetrainModule.load_model(str(main.ckpt))
    spec = module.spec
    assert Arch.from_yaml(main.dir / "arch.yaml") == spec.arch
    assert SearchSpace.from_yaml(main.dir / "space.yaml") == spec.space
    assert spec.shape == ModelShape(VOCAB, CLASSES, MAX_LEN)
    # a bidirectional classifier does not decode: no decode program (tests/test_generate.py has the causal ones)
    assert not (main.dir / "decode.pt2").exists() and not (main.dir / "decode_state.pt").exists()
    assert "decode" not in json.loads((main.dir / "model.json").read_text())
    m = json.loads((main.dir / "metrics.json").read_text())
    assert m == main.metrics
    assert m["cost/params"] == sum(p.numel() for p in main.model.parameters())
    assert m["cost/params"] == cost.params(spec)
    assert m["cost/flops"] == cost.flops(spec, SEQ_LEN)
    assert m["cost/flops"] < cost.flops(spec, MAX_LEN)  # measured at seq_len
    assert m["cost/latency_ms"] > 0 and "median" in m["cost/latency_method"]
    assert Arch.from_dict(m["arch"]) == spec.arch
    with torch.no_grad():
        right = sum(int((main.model(b["tokens"], b["mask"]).argmax(-1) == b["target"]).sum()) for b in main.batches)
    assert m["test/acc"] == pytest.approx(right / sum(len(b["target"]) for b in main.batches))


def test_weights_are_safetensors_equal_to_the_model(main):
    from safetensors.torch import load_file

    assert not (main.dir / "weights.pt").exists()
    state = load_file(str(main.dir / "weights.safetensors"))
    expected = main.model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_load_gives_back_the_model(main):
    model = load(main.dir)
    assert not model.training
    batch = main.batches[0]
    with torch.no_grad():
        assert torch.equal(model(batch["tokens"], batch["mask"]), main.model(batch["tokens"], batch["mask"]))


def test_an_op_changed_since_the_export_or_checkpoint_is_named(op_exports, tmp_path, caplog):
    """model.json and the retrain checkpoint record the revisions of the arch's ops past their
    first; a record without linformer's (written before its revision 2) warns on load and export."""
    saved = json.loads((op_exports["linformer"].dir / "model.json").read_text())
    assert saved["op_revisions"] == {"linformer": 2}
    assert json.loads((op_exports["full"].dir / "model.json").read_text())["op_revisions"] == {}
    older = tmp_path / "older"
    shutil.copytree(op_exports["linformer"].dir, older)
    del saved["op_revisions"]
    (older / "model.json").write_text(json.dumps(saved))
    ckpt = torch.load(op_exports["linformer"].ckpt, weights_only=True)
    assert ckpt["hyper_parameters"]["op_revisions"] == {"linformer": 2}
    del ckpt["hyper_parameters"]["op_revisions"]
    torch.save(ckpt, tmp_path / "older.ckpt")
    with caplog.at_level("WARNING", logger="nas"):
        load(op_exports["linformer"].dir)
        load(op_exports["full"].dir)
        assert not caplog.records
        load(older)
        assert "older was written by linformer revision 1 -> 2" in caplog.text
        caplog.clear()
        export(tmp_path / "older.ckpt", tmp_path / "again")
        assert "older.ckpt was written by linformer revision 1 -> 2" in caplog.text


def test_int8_copy_is_smaller_and_scored(main):
    m = main.metrics
    assert m["size/float_bytes"] == (main.dir / "weights.safetensors").stat().st_size
    assert m["size/int8_bytes"] < 0.7 * m["size/float_bytes"]
    assert math.isfinite(m["int8/delta"]) and m["int8/delta"] == pytest.approx(m["int8/test/acc"] - m["test/acc"])
    # The saved copy reloads into the model that was scored: the same metric on the same batches.
    model = load(main.dir, int8=True)
    with torch.no_grad():
        logits = [model(b["tokens"], b["mask"]) for b in main.batches]
        right = sum(int((l.argmax(-1) == b["target"]).sum()) for l, b in zip(logits, main.batches))
        float_logits = main.model(main.batches[0]["tokens"], main.batches[0]["mask"])
    assert m["int8/test/acc"] == pytest.approx(right / sum(len(b["target"]) for b in main.batches))
    assert 0 < (logits[0] - float_logits).abs().max() < 0.1  # quantized, and only slightly off
    assert not [name for name, m in model.named_modules() if type(m) is nn.Linear]  # attention too


def test_int8_program_alone_matches_the_int8_model(main, run_alone):
    # Dynamic quantization scales by each batch's range, so padding changes int8 logits:
    # compare with the in-framework int8 model on the same padded batch.
    tokens = torch.zeros(len(SEQUENCES), MAX_LEN, dtype=torch.long)
    mask = torch.zeros(len(SEQUENCES), MAX_LEN, dtype=torch.bool)
    for i, seq in enumerate(SEQUENCES):
        tokens[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), True
    with torch.no_grad():
        expected = load(main.dir, int8=True)(tokens, mask)
    torch.testing.assert_close(run_alone["int8"], expected, atol=1e-5, rtol=1e-5)


def test_refuses_to_overwrite(main, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"^refusing to overwrite .*; pass overwrite=true$"):
        export(main.ckpt, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_overwrite_replaces_export_files_only(op_exports, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "model_int8.pt").write_text("stale, from an earlier quantized export")
    for name in ("model.json", "weights.safetensors"):  # what marks an earlier export, which overwrite replaces
        (tmp_path / name).write_text("from an earlier export")
    metrics = export(op_exports["full"].ckpt, tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "model_int8.pt").exists() and "size/int8_bytes" not in metrics
    assert (tmp_path / "model.pt2").is_file()


def test_a_checkpoint_from_before_model_spec_loads_and_exports_the_same(main, tmp_path):
    """Retrain checkpoints once held arch, space and shape as three hparams, not one `model`."""
    good = torch.load(main.ckpt, weights_only=True)
    hparams = {key: value for key, value in good["hyper_parameters"].items() if key != "model"}
    older = tmp_path / "older.ckpt"
    torch.save({**good, "hyper_parameters": {**hparams, **good["hyper_parameters"]["model"]}}, older)
    module = RetrainModule.load_model(str(older))
    assert module.spec == RetrainModule.load_model(str(main.ckpt)).spec
    assert module.hparams["model"] == good["hyper_parameters"]["model"]
    metrics = export(older, tmp_path / "out", seq_len=SEQ_LEN)
    assert metrics["cost/params"] == main.metrics["cost/params"] and metrics["cost/flops"] == main.metrics["cost/flops"]
    for name in ("arch.yaml", "space.yaml", "model.json"):
        assert (tmp_path / "out" / name).read_text() == (main.dir / name).read_text()


def test_bad_checkpoints_are_one_line_errors(main, tmp_path):
    good = torch.load(main.ckpt, weights_only=True)
    text = tmp_path / "text.ckpt"
    text.write_text("not a checkpoint")
    no_hparams = tmp_path / "no_hparams.ckpt"
    torch.save({"state_dict": good["state_dict"]}, no_hparams)
    no_model = tmp_path / "no_model.ckpt"
    no_model_hparams = {k: v for k, v in good["hyper_parameters"].items() if k != "model"}
    torch.save({**good, "hyper_parameters": no_model_hparams}, no_model)
    no_weights = tmp_path / "no_weights.ckpt"
    torch.save({**good, "state_dict": {}}, no_weights)
    other_space = tmp_path / "other_space.ckpt"
    model = good["hyper_parameters"]["model"]
    wider = {**model, "space": {**model["space"], "dim": 64}}
    torch.save({**good, "hyper_parameters": {**good["hyper_parameters"], "model": wider}}, other_space)
    cases = {
        tmp_path / "missing.ckpt": "no such file",
        text: "cannot be read as a torch checkpoint",
        no_hparams: "not a LongNAS retrain checkpoint: no 'hyper_parameters'",
        no_model: "hyper_parameters lack model",
        no_weights: "no subnet weights",
        other_space: "weights do not match the arch",
    }
    for ckpt, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)) as err:
            export(ckpt, tmp_path / "out")
        assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing written for a bad checkpoint


def test_load_names_what_a_folder_lacks(main, tmp_path):
    with pytest.raises(ConfigError, match="no arch.yaml"):
        load(tmp_path)
    for name in ("arch.yaml", "space.yaml", "model.json", "weights.safetensors"):
        (tmp_path / name).write_bytes((main.dir / name).read_bytes())
    assert isinstance(load(tmp_path, int8=True), nn.Module)  # int8 quantizes the weights again


def test_predict_pads_to_max_len_with_the_mask_false():
    from nas import predict

    tokens, mask = predict.pad([[5, 3, 9], [7]], 4)
    assert tokens.tolist() == [[5, 3, 9, 0], [7, 0, 0, 0]]
    assert mask.tolist() == [[True, True, True, False], [True, False, False, False]]
    with pytest.raises(ValueError, match="sequence 0 has 5 tokens; the model takes at most 4"):
        predict.pad([[1, 2, 3, 4, 5]], 4)


def folder_script(folder):
    """The folder's own predict.py, imported (its HERE is that folder)."""
    return module_from_file("exported_predict", folder / "predict.py")


@pytest.mark.parametrize(
    "argv,message",
    [
        ([], "no input given; usage:"),
        (["--bogus", "1 2"], "unknown option --bogus"),
        (["1 x 3"], "token 'x' is not an integer id"),
        (["1 2.5"], "token '2.5' is not an integer id"),
        ([f"1 {VOCAB}"], f"token id {VOCAB} is outside the vocabulary 0..{VOCAB - 1}"),
        (["-1"], "token id -1 is outside the vocabulary"),
        (["1 99999999999999999999"], "outside the vocabulary"),
        ([" ".join(["1"] * (MAX_LEN + 1))], f"has {MAX_LEN + 1} tokens; the model takes at most {MAX_LEN}"),
        (["  "], "sequence 0 is empty"),
    ],
)
def test_predict_script_bad_input_is_one_line_and_exit_1(op_exports, capsys, argv, message):
    script = folder_script(op_exports["full"].dir)
    assert script.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("predict.py: ") and message in err
    assert len(err.strip().splitlines()) == 1 or argv == []  # usage follows the one line


def test_predict_script_int8_without_a_copy(op_exports, capsys):
    assert folder_script(op_exports["full"].dir).main(["--int8", "1 2"]) == 1
    assert "has no model_int8.pt" in capsys.readouterr().err


def test_predict_script_prints_label_and_probability(main, capsys):
    script = folder_script(main.dir)
    assert script.main(["5 3 9 2", "7"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    probs = torch.stack(expected_logits(main.model, [[5, 3, 9, 2], [7]])).softmax(-1)  # (2, C)
    assert [line["label"] for line in lines] == probs.argmax(-1).tolist()
    assert [line["probability"] for line in lines] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-5)


def test_predict_help_says_which_files_are_safe(capsys):
    from nas import predict

    assert predict.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "weights.safetensors" in text and "model.pt2" in text and "trust" in text


def test_predict_encodes_raw_task_input():
    from nas import predict
    from nas.tasks.listops import VOCAB as LISTOPS

    listops = {"input": "listops", "tokens": dict(LISTOPS), "ignored": ["(", ")"], "max_len": 16, "vocab_size": 16}
    assert predict.encode("[MAX 4 ( 3 ) ]", listops) == [LISTOPS[t] for t in ("[MAX", "4", "3", "]")]
    with pytest.raises(predict.InputError, match="unknown token 'x'"):
        predict.encode("[MAX x ]", listops)
    text = {"input": "bytes", "offset": 1, "max_len": 16, "vocab_size": 257}
    assert predict.encode("hé", text) == [ord("h") + 1, 0xC3 + 1, 0xA9 + 1]
    assert predict.encode("3 4", text, ids_only=True) == [3, 4]


def test_a_crash_mid_export_leaves_no_folder_and_a_rerun_finishes(main, tmp_path, monkeypatch):
    import nas.export as exporting

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(exporting, "write_program", crash)
    with pytest.raises(RuntimeError, match="killed"):
        export(main.ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # only the staging folder, which a rerun replaces
    monkeypatch.undo()
    export(main.ckpt, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "metrics.json").is_file() and (tmp_path / "out" / "model.pt2").is_file()


def test_out_under_a_file_is_one_line(main, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"its parent .*file is a file, not a folder$"):
        export(main.ckpt, tmp_path / "file" / "out")


def test_the_export_folder_holds_the_package_predict_py(main):
    from nas import predict

    assert (main.dir / "predict.py").read_text() == Path(predict.__file__).read_text()


def test_resume_finishes_an_export_killed_midway(tmp_path, monkeypatch):
    """A run killed while exporting leaves no half export; `resume=` writes it again."""
    import nas.export as exporting
    from nas import pipeline
    from tests.cli.conftest import TINY, compose_config

    def crash(*args, **kwargs):
        raise RuntimeError("killed during export")

    run = tmp_path / "run"
    monkeypatch.setattr(exporting, "write_program", crash)
    with pytest.raises(RuntimeError, match="killed during export"):
        pipeline.run(compose_config("search", run, [*TINY, "retrain.max_epochs=1", "~logger"]), run)
    assert not (run / "export").exists() and not (run / "summary.txt").exists()
    monkeypatch.undo()
    outcome = pipeline.run(
        compose_config("search", run, [*TINY, "retrain.max_epochs=1", "~logger", f"resume={run}"]), run
    )
    assert (run / "export" / "model.pt2").is_file() and (run / "export" / "task.json").is_file()
    assert Arch.from_yaml(run / "export" / "arch.yaml") == outcome.search.arch
    assert not (run / ".export.partial").exists() and (run / "summary.txt").is_file()


DYNAMIC_OPS = {"full", "performer"}  # the others specialize n while tracing: fixed max_len, padded


@pytest.mark.parametrize("op", ATTENTION.names())
def test_program_lengths_1_7_max_len_match_the_model(op, op_exports):
    export_ = op_exports[op]
    dynamic = json.loads((export_.dir / "model.json").read_text())["dynamic_len"]
    assert dynamic == (op in DYNAMIC_OPS)
    program = torch.export.load(str(export_.dir / "model.pt2")).module()
    for length in (1, 7, MAX_LEN):
        tokens = torch.randint(1, VOCAB, (2, length))  # (2, length)
        n = length if dynamic else MAX_LEN
        padded = torch.zeros(2, n, dtype=torch.long)
        padded[:, :length] = tokens
        mask = torch.arange(n) < length  # (n)
        with torch.no_grad():
            got = program(padded, mask.expand(2, n))[:, :length]
            expected = export_.model(tokens)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("op", ATTENTION.names())
def test_every_op_has_an_int8_program(op, op_exports, tmp_path):
    # TorchScript cannot save a Python autograd Function (LSH's row permutations once failed
    # here): ops run plain tensor ops where no gradient is recorded. The write checks the
    # saved program against the int8 model on padded batches.
    write_int8_program(quantize_int8(op_exports[op].model), MAX_LEN, tmp_path / "model_int8.pt")


def test_task_descriptions_are_plain_json(tmp_path):
    from nas.tasks.bytelm import ByteLMTask
    from nas.tasks.listops import VOCAB as LISTOPS
    from nas.tasks.listops import ListOpsTask

    listops = ListOpsTask(data_dir=tmp_path).describe()
    assert json.loads(json.dumps(listops)) == listops
    assert listops["input"] == "listops" and listops["tokens"] == LISTOPS and listops["classes"] == list("0123456789")
    assert max(LISTOPS.values()) < listops["vocab_size"]
    bytelm = ByteLMTask(data_dir=tmp_path).describe()
    assert bytelm["input"] == "bytes" and len(bytelm["classes"]) == bytelm["vocab_size"] == 258
