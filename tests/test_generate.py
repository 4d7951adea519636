"""`predict.py --generate`: the exported decode-step program's greedy generation equals the eager
`Subnet.step`'s and the argmax of the parallel forward re-run on the growing sequence (an
independent reference); sampling follows softmax(logits / temperature) over the top k, repeats
with --seed; bad input and tampered or missing decode files are one line."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas import predict
from nas.export import export, load, write_decode_program
from nas.model import ModelShape, ModelSpec, Subnet
from nas.space import Arch, LayerArch, SearchSpace
from nas.tasks.lm import CLASSES, LMTask
from tests.helpers import module_from_file

MAX_LEN, PROMPT = 40, "def "
# Windows and blocks shorter than the context, so generation wraps local's ring and crosses
# block_recurrent's blocks several times.
OPTIONS = {
    "full": {},
    "local": {"window": 8},
    "performer": {"features": 16},
    "block_recurrent": {"window": 8, "states": 4},
}
FAST = "full"  # exported for the fast tests; the other ops' exports take a minute on 2 loaded cores


def export_lm(folder: Path, op: str, reversible: bool = False) -> Path:
    """A causal byte LM of two `op` layers with random weights, saved as nas-retrain saves a
    checkpoint and exported with the lm task's description."""
    space = SearchSpace.from_dict(
        {
            "name": "lm",
            "dim": 32,
            "head_dim": 8,
            "depth": [2],
            "layer": {"attention": {op: OPTIONS[op]}, "heads": [2], "ffn_dim": [32]},
            "memory": {"reversible": reversible},
        }
    )
    shape = ModelShape(len(CLASSES), len(CLASSES), MAX_LEN, "tokens", causal=True)
    spec = ModelSpec(Arch(2, (LayerArch(op, 2, 32), LayerArch(op, 2, 32))), space, shape)
    torch.manual_seed(0)
    model = Subnet(spec)
    state = {f"model.{name}": value for name, value in model.state_dict().items()}
    torch.save({"hyper_parameters": {"model": spec.to_dict(), "metric": "bpb"}, "state_dict": state}, folder / "r.ckpt")
    export(folder / "r.ckpt", folder / "export", task=LMTask(data_dir=folder, seq_len=MAX_LEN).describe())
    return folder / "export"


def folder_script(folder: Path):
    """The folder's own predict.py, imported (its HERE is that folder)."""
    return module_from_file("exported_predict", folder / "predict.py")


@pytest.fixture(scope="module")
def fast_export(tmp_path_factory) -> Path:
    return export_lm(tmp_path_factory.mktemp("lm"), FAST)


def prompt_ids() -> list[int]:
    return [b + 1 for b in PROMPT.encode()]  # token = byte + 1, as the lm task's


ALLOWED = (torch.arange(len(CLASSES)) >= 1) & (torch.arange(len(CLASSES)) <= 256)  # every byte, never padding


def greedy_eager_step(model: Subnet, prompt: list[int], count: int) -> list[int]:
    tokens, state = list(prompt), model.init_state(1)
    with torch.no_grad():
        for position in range(len(prompt) + count - 1):
            logits, state = model.step(torch.tensor([tokens[position]]), state, position)
            if position >= len(prompt) - 1:
                tokens.append(int(logits[0].masked_fill(~ALLOWED, -torch.inf).argmax()))
    return tokens[len(prompt) :]


def greedy_parallel(model: Subnet, prompt: list[int], count: int) -> list[int]:
    """The reference: the whole sequence so far through the parallel forward for every token."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(count):
            logits = model(torch.tensor([tokens]), torch.ones(1, len(tokens), dtype=torch.bool))[0, -1]  # (C)
            tokens.append(int(logits.masked_fill(~ALLOWED, -torch.inf).argmax()))
    return tokens[len(prompt) :]


def check_greedy(folder: Path) -> None:
    count = MAX_LEN - len(PROMPT)  # up to the last position the state holds
    script = folder_script(folder)
    program, state = script.load_decoder(folder)
    exported = script.generate(program, state, prompt_ids(), count, ALLOWED, {"--temperature": 0.0})
    model = load(folder)  # rebuilt from the safe files, not from the program
    assert exported == greedy_eager_step(model, prompt_ids(), count) == greedy_parallel(model, prompt_ids(), count)
    assert len(set(exported)) > 3  # the state matters: not one token repeated


def test_greedy_generation_equals_the_eager_step_and_the_parallel_forward(fast_export):
    check_greedy(fast_export)


@pytest.mark.slow
@pytest.mark.parametrize("op, reversible", [(op, False) for op in OPTIONS if op != FAST] + [("full", True)])
def test_greedy_generation_of_every_op(tmp_path, op, reversible):
    folder = export_lm(tmp_path, op, reversible)
    assert json.loads((folder / "model.json").read_text())["shape"]["causal"]
    start = torch.load(folder / "decode_state.pt", weights_only=True)
    assert bool(start) == (op == "block_recurrent")  # its learned start state; the others start at zeros
    check_greedy(folder)


def generated(folder: Path, capsys, *argv: str, prompt: str = PROMPT) -> str:
    assert folder_script(folder).main([*argv, prompt]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_the_script_prints_the_greedy_bytes_as_text(fast_export, capsys):
    count = 12
    want = greedy_parallel(load(fast_export), prompt_ids(), count)
    text = bytes(i - 1 for i in want).decode("utf-8", errors="replace") + "\n"
    assert generated(fast_export, capsys, "--generate", str(count), "--temperature", "0") == text


def test_sampling_repeats_with_a_seed_and_differs_with_another(fast_export, capsys):
    runs = [generated(fast_export, capsys, "--generate=30", f"--seed={seed}") for seed in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2]
    assert runs[0] != generated(fast_export, capsys, "--generate", "30", "--temperature", "0")


def test_top_k_1_equals_greedy(fast_export, capsys):
    greedy = generated(fast_export, capsys, "--generate", "30", "--temperature", "0")
    assert generated(fast_export, capsys, "--generate", "30", "--top-k", "1", "--temperature", "2") == greedy


def test_next_token_samples_softmax_over_the_top_k():
    """Against the closed form: frequencies of 4,000 draws within 4 standard errors of
    softmax(logits / T) renormalised over the k largest allowed logits."""
    logits = torch.tensor([0.0, 2.0, 1.0, 0.5, -1.0, 3.0, 1.5])
    allowed = torch.tensor([True, True, True, True, True, False, True])  # 5 is the largest but not allowed
    generator = torch.Generator().manual_seed(0)
    for temperature, top_k in [(1.0, None), (0.5, 3), (2.0, 2)]:
        kept = logits.masked_fill(~allowed, -torch.inf)
        if top_k is not None:
            kept = kept.masked_fill(kept < kept.topk(top_k).values[-1], -torch.inf)
        want = (kept.double() / temperature).softmax(-1)
        draws = 4_000
        counts = torch.bincount(
            torch.tensor([predict.next_token(logits, allowed, temperature, top_k, generator) for _ in range(draws)]),
            minlength=len(logits),
        )
        got = counts.double() / draws
        assert ((got - want).abs() <= 4 * (want * (1 - want) / draws).sqrt() + 1e-12).all(), (got, want)
    assert predict.next_token(logits, allowed, 0.0, None, generator) == 1  # greedy: the largest allowed
    assert predict.next_token(logits, allowed, 1e-30, None, generator) == 1  # a tiny temperature stays finite


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--generate", "0", PROMPT], "--generate must be a whole number >= 1; got '0'"),
        (["--generate", "-3", PROMPT], "--generate must be a whole number >= 1; got '-3'"),
        (["--generate", "ten", PROMPT], "--generate must be a whole number >= 1; got 'ten'"),
        (["--generate", "5", "--temperature", "-1", PROMPT], "--temperature must be a number >= 0; got '-1'"),
        (["--generate", "5", "--temperature", "nan", PROMPT], "--temperature must be a number >= 0; got 'nan'"),
        (["--generate", "5", "--top-k", "0", PROMPT], "--top-k must be a whole number >= 1; got '0'"),
        (["--generate", "5", "--seed", "-1", PROMPT], "--seed must be a whole number >= 0"),
        (["--top-k", "3", PROMPT], "--top-k applies to --generate only"),
        ([PROMPT, "--generate"], "--generate needs a value"),
        (["--generate", "5", PROMPT, "class "], "--generate continues one prompt"),
        (["--generate", "5", "--int8", PROMPT], "--generate continues one prompt, and takes --ids alone"),
        (["--generate", "5", "--logits", PROMPT], "--generate continues one prompt, and takes --ids alone"),
        (["--generate", "5", "x" * (MAX_LEN - 4)], f"the prompt has {MAX_LEN - 4} tokens; with --generate 5 it may"),
        (["--generate", str(MAX_LEN), "x"], f"the model's context of {MAX_LEN} tokens holds at most {MAX_LEN - 1}"),
        (["--generate", "5", "x" * (MAX_LEN + 1)], f"has {MAX_LEN + 1} tokens; the model takes at most {MAX_LEN}"),
        (["--generate", "5", ""], "sequence 0 is empty"),
        (["--generate", "5", "--ids", "1 300"], "token id 300 is outside the vocabulary 0..256"),
    ],
)
def test_bad_generate_input_is_one_line(fast_export, capsys, argv, message):
    assert folder_script(fast_export).main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("predict.py: ") and message in err, err


def test_the_longest_prompt_fits_exactly(fast_export, capsys):
    printed = generated(fast_export, capsys, "--generate", "4", "--seed", "0", prompt="x" * (MAX_LEN - 4))
    assert 1 <= len(printed.removesuffix("\n")) <= 4  # 4 bytes: 4 characters, fewer if some form one


def test_a_model_of_ids_generates_ids(tmp_path, fast_export, capsys):
    """Without task.json the prompt and the output are token ids (never padding, id 0)."""
    folder = tmp_path / "ids"
    folder.mkdir()
    for name in ("model.json", "decode.pt2", "decode_state.pt", "predict.py"):
        shutil.copyfile(fast_export / name, folder / name)
    ids = " ".join(map(str, prompt_ids()))
    printed = generated(folder, capsys, "--generate", "6", "--temperature", "0", "--ids", prompt=ids)
    want = greedy_parallel(load(fast_export), prompt_ids(), 6)
    assert printed == " ".join(map(str, want)) + "\n"


def test_a_bidirectional_export_has_no_decode_program_and_refuses_generate(tmp_path, capsys):
    """A bidirectional byte model (the shape of the masked bytelm task) writes no decode files."""
    space = SearchSpace.from_dict(
        {
            "name": "s",
            "dim": 16,
            "head_dim": 8,
            "depth": [1],
            "layer": {"attention": {"full": {}}, "heads": [2], "ffn_dim": [16]},
        }
    )
    spec = ModelSpec(Arch(1, (LayerArch("full", 2, 16),)), space, ModelShape(258, 258, 16, "tokens"))
    state = {f"model.{name}": value for name, value in Subnet(spec).state_dict().items()}
    torch.save({"hyper_parameters": {"model": spec.to_dict(), "metric": "acc"}, "state_dict": state}, tmp_path / "c")
    export(tmp_path / "c", tmp_path / "export")
    folder = tmp_path / "export"
    assert not (folder / "decode.pt2").exists() and not (folder / "decode_state.pt").exists()
    assert "decode" not in json.loads((folder / "model.json").read_text())
    assert folder_script(folder).main(["--generate", "5", "1 2 3"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--generate needs a causal language model's export" in err and "bidirectional" in err, err


class Payload:
    """A pickled object that writes a marker file when unpickled, had unpickling run code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.parametrize(
    "name, content, message",
    [  # each before: a traceback, a silent wrong state, or an allocation past any machine
        ("decode.pt2", None, "has no decode.pt2"),
        ("decode_state.pt", None, "has no decode_state.pt"),
        ("decode.pt2", b"garbage", "decode.pt2: cannot be loaded"),
        ("decode_state.pt", b"garbage", "decode_state.pt: cannot be read as tensors"),
        ("decode_state.pt", b"\0" * 2**21, "decode_state.pt: larger than the decode state model.json describes"),
        ("decode_state.pt", [torch.zeros(2)], "decode_state.pt: holds a list, not a dict of tensors"),
        ("decode_state.pt", {"0": torch.ones(3)}, "decode_state.pt: entry '0' is not a tensor of model.json's"),
        ("decode_state.pt", {"99": torch.ones(3)}, "decode_state.pt: entry '99' is not a tensor of model.json's"),
        ("decode_state.pt", {"0": "text"}, "decode_state.pt: entry '0' is not a tensor of model.json's"),
        ("model.json", {"shape": [1, 2, 7, 8], "dtype": "float32"}, "decode.pt2 does not run on model.json's"),
        ("model.json", {"shape": [1, 2, MAX_LEN, 8], "dtype": "int64"}, "decode.pt2 does not run on model.json's"),
        ("model.json", {"shape": [2**40, 2**20], "dtype": "float32"}, "GiB; an export's is at most 64 GiB"),
        ("model.json", {"shape": [1, 2], "dtype": "complex64"}, "model.json: decode.state[0].dtype must be"),
        ("model.json", {"shape": [-1], "dtype": "float32"}, "model.json: decode.state[0].shape[0] must be"),
    ],
)
def test_tampered_or_missing_decode_files_are_one_line(tmp_path, fast_export, capsys, name, content, message):
    folder = tmp_path / "export"
    shutil.copytree(fast_export, folder)
    path = folder / name
    if content is None:
        path.unlink()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif name == "model.json":  # the first state tensor's record replaced
        record = json.loads(path.read_text())
        record["decode"]["state"][0] = content
        path.write_text(json.dumps(record))
    else:
        torch.save(content, path)
    assert folder_script(folder).main(["--generate", "3", PROMPT]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("predict.py: ") and message in err, err


def test_a_pickled_object_in_decode_state_runs_nothing(tmp_path, fast_export, capsys):
    marker = tmp_path / "marker"
    folder = tmp_path / "export"
    shutil.copytree(fast_export, folder)
    torch.save({"0": Payload(marker)}, folder / "decode_state.pt")
    assert folder_script(folder).main(["--generate", "3", PROMPT]) == 1
    assert "decode_state.pt: cannot be read as tensors" in capsys.readouterr().err
    assert not marker.exists()
    torch.load(folder / "decode_state.pt", weights_only=False)  # the test can fail: unpickled, it runs
    assert marker.read_text() == "pwned"


def test_a_decode_program_of_another_model_is_one_line(tmp_path, fast_export, capsys):
    """A decode.pt2 that takes the same state but gives other outputs (another vocabulary) is
    refused at its first step."""
    spec = load(fast_export).spec
    other = Subnet(ModelSpec(spec.arch, spec.space, ModelShape(300, 300, MAX_LEN, "tokens", causal=True)))
    folder = tmp_path / "mixed"
    shutil.copytree(fast_export, folder)
    write_decode_program(other, folder)
    assert folder_script(folder).main(["--generate", "3", PROMPT]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "decode.pt2 does not fit model.json: its outputs" in err, err


@pytest.mark.slow
def test_generate_runs_with_torch_alone(fast_export):
    """The folder's predict.py in a fresh interpreter where `nas` cannot be imported."""
    alone = """
import runpy, sys

class NoNas:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "nas":
            raise ImportError(f"predict.py imported {name}")

sys.meta_path.insert(0, NoNas())
sys.argv = [sys.argv[1], "--generate", "8", "--temperature", "0", "def "]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
    done = subprocess.run(
        [sys.executable, "-c", alone, str(fast_export / "predict.py")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    want = greedy_parallel(load(fast_export), prompt_ids(), 8)
    assert done.stdout == bytes(i - 1 for i in want).decode("utf-8", errors="replace") + "\n"


@pytest.mark.slow
def test_a_reader_that_stops_early_gets_no_traceback(fast_export):
    """`predict.py --generate 8 ... | head -c 1`: the pipe closes before the text is written."""
    run = subprocess.Popen(
        [sys.executable, str(fast_export / "predict.py"), "--generate", "8", PROMPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    run.stdout.close()  # gone before the model is even loaded
    assert run.wait(timeout=120) == 1
    assert run.stderr.read() == b""


def test_the_usage_documents_generate():
    usage = predict.USAGE
    assert re.search(r"--generate 100 .*--temperature .*--top-k .*--seed", usage)
