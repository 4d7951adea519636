"""Export a retrained subnet as a folder that runs without `nas`: the arch, the weights, a
`torch.export` program with a standalone `predict.py`, the metrics, and optionally an int8 copy.

The program takes any batch and, where every op traces with a symbolic length (full,
performer), any length up to max_len; a model with another op (local, linformer, lsh,
synthesizer specialize the length while tracing) takes exactly max_len, and shorter inputs are
padded with mask False, which every op ignores. model.json's `dynamic_len` says which. A
causal language model also gets a decode-step program (`write_decode_program`), with which
predict.py generates from a cached state instead of re-running the prefix at every token.

What is safe to accept from others: `weights.safetensors` (safetensors,
https://huggingface.co/docs/safetensors, holds tensors only and runs no code when read),
`decode_state.pt` (tensors only, read with `torch.load(weights_only=True)`) and the text files
(arch.yaml, space.yaml, model.json, metrics.json). `model.pt2`, `decode.pt2` and `model_int8.pt`
are programs: loading and running them executes the operations someone put there, so load
them only from a source you trust; `nas.export.load` rebuilds the model from the safe files.
The folder is written beside `out` under a temporary name and renamed into place, so a crash
leaves no half-written export (a rerun, e.g. `nas-search resume=<run>`, writes it again).
# b batch, n sequence (max_len in the program), C classes
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from nas import cost
from nas.atomic import atomic_folder
from nas.errors import ConfigError, excerpt
from nas.metrics import COMPANIONS, METRICS, evaluate_each
from nas.model import ModelShape, ModelSpec, Subnet, input_shape, random_input
from nas.ops.attention import revisions, warn_revision_changes
from nas.predict import MODEL_SCHEMA, InputError, describe
from nas.safe_load import read_checkpoint, read_json
from nas.space import Arch, SearchSpace

# Every file export may write; an overwrite removes them all first, so that a stale file
# (e.g. an int8 copy from an earlier quantized export) never sits beside new ones.
FILES = (
    "arch.yaml",
    "space.yaml",
    "model.json",
    "weights.safetensors",
    "model.pt2",
    "predict.py",
    "metrics.json",
    "model_int8.pt",
    "task.json",
    "decode.pt2",
    "decode_state.pt",
)
MODEL_KEYS = ("shape", "metric")  # what model.json must hold: ModelShape.to_dict() and the metric
HPARAMS = ("model", "metric")  # what a retrain checkpoint must hold: ModelSpec.to_dict() and the metric
LEGACY_MODEL = ("arch", "space", "shape")  # what a checkpoint from before ModelSpec holds for `model`

PREDICT = Path(__file__).with_name("predict.py")  # copied into every export folder
# What metrics.json may hold (a schema as nas.predict's MODEL_SCHEMA): what `export` writes.
METRICS_SCHEMA = {
    "metric": METRICS,
    "seq_len": int,
    "cost/params": int,
    "cost/flops": int,
    "cost/latency_ms": float,
    "cost/latency_method": str,
    "arch": {"depth": int, "layers": [{"attention": str, "heads": int, "ffn_dim": int}]},
    "size/float_bytes?": int,
    "size/int8_bytes?": int,
    "int8/latency_ms?": float,
    "int8/delta?": float,
    **{f"{prefix}test/{m}?": float for prefix in ("", "int8/") for m in METRICS},
}


def export(
    ckpt: str | Path,
    out: str | Path,
    overwrite: bool = False,
    quantize: bool = False,
    eval_batches: Iterable[dict] | None = None,
    seq_len: int | None = None,
    task: dict | None = None,
) -> dict:
    """Write the subnet of a retrain checkpoint into the folder `out`.

    Files: `arch.yaml`, `space.yaml`, `model.json` (the task sizes and `op_revisions`, see
    `nas.ops.attention.warn_revision_changes`), `weights.safetensors` (the subnet's state dict),
    `model.pt2` (a `torch.export` program: tokens (b, max_len) long and mask (b, max_len) bool ->
    logits, any b; a forecaster's: standardised values (b, max_len, channels) -> forecasts (b,
    horizon, channels)), `predict.py` (runs it with torch alone), `metrics.json` (a forecaster's
    test metrics: `test/mse` and `test/mae`), and with `quantize` `model_int8.pt` (the int8 copy of `quantize_int8` as a
    TorchScript program with the same inputs; `predict.py --int8` runs it). A model that decodes
    (causal, token ids, readout tokens) also gets `decode.pt2` and `decode_state.pt`, described
    by model.json's `decode` (`write_decode_program`; `predict.py --generate` runs them).

    Args:
        ckpt: a checkpoint written while training a `RetrainModule`.
        out: the folder to write; an existing non-empty one needs `overwrite`.
        overwrite: replace the export files in `out` (other files there are left alone).
        quantize: also write an int8 dynamically quantized copy and compare it.
        eval_batches: batches (dicts of tokens, mask, target) to measure the test metric on,
            iterated once; e.g. the task's test DataLoader.
        seq_len: the task's length, for FLOPs and latency; default the model's max_len.
        task: the task's `describe()` (vocabulary, input kind, class names), written as
            task.json for predict.py; without it predict.py takes token ids and prints indices.

    Returns:
        The metrics written to metrics.json: `cost/params` (exact), `cost/flops` and
        `cost/latency_ms` (CPU, batch 1) at `seq_len`; with eval_batches `test/<metric>`; with
        quantize `size/float_bytes` and `size/int8_bytes` (the weights as stored: weights.safetensors,
        and the int8 state dict as torch.save writes it), and with eval_batches
        `int8/test/<metric>` and `int8/delta` (int8 minus float).

    Raises:
        ConfigError: `out` is in the way, or `ckpt` is missing or not a retrain checkpoint.
    """
    ckpt, out = Path(ckpt), Path(out)
    _check_out(out, overwrite, ckpt)  # before any work: a refusal should be instant
    hparams, state = _read_checkpoint(ckpt)
    spec = ModelSpec.from_hparams(hparams, source=str(ckpt))
    arch, space, shape = spec.arch, spec.space, spec.shape
    metric = hparams["metric"]
    cost.check_size(spec, str(ckpt))
    warn_revision_changes(hparams.get("op_revisions"), space.op_types(arch), source=str(ckpt))
    model = Subnet(spec)
    _load_weights(model, state, source=str(ckpt))
    seq_len = shape.max_len if seq_len is None else seq_len
    if not 1 <= seq_len <= shape.max_len:
        raise ConfigError(f"seq_len {seq_len} must be in 1..{shape.max_len} (the model's max_len)")

    # written under a temporary name, renamed into place at the end (export files only, with overwrite)
    with atomic_folder(out, owned=FILES) as staging:
        arch.to_yaml(staging / "arch.yaml")
        (staging / "space.yaml").write_text(yaml.safe_dump(space.to_dict(), sort_keys=False))
        save_weights(model, staging / "weights.safetensors")
        dynamic_len = write_program(model, shape.max_len, staging / "model.pt2")
        decode = write_decode_program(model, staging)  # None: the model does not decode
        (staging / "model.json").write_text(
            json.dumps(
                {
                    "shape": shape.to_dict(),
                    "metric": metric,
                    "dynamic_len": dynamic_len,
                    "op_revisions": revisions(space.op_types(arch)),
                    **({"decode": decode} if decode else {}),
                },
                indent=2,
            )
            + "\n"
        )
        shutil.copyfile(PREDICT, staging / "predict.py")
        if task is not None:
            (staging / "task.json").write_text(json.dumps(task, indent=2) + "\n")

        metrics = {
            "metric": metric,
            "seq_len": seq_len,
            "cost/params": sum(p.numel() for p in model.parameters()),
            "cost/flops": cost.flops(spec, seq_len),
            "cost/latency_ms": cost.subnet_latency_ms(model, seq_len, shape.vocab_size),
            "cost/latency_method": LATENCY_METHOD,
            "arch": arch.to_dict(),
        }
        models = {"float": model}
        if quantize:
            models["int8"] = quantize_int8(model)
            write_int8_program(models["int8"], shape.max_len, staging / "model_int8.pt")
            metrics["size/float_bytes"] = (staging / "weights.safetensors").stat().st_size
            metrics["size/int8_bytes"] = saved_bytes(models["int8"].state_dict())
            metrics["int8/latency_ms"] = cost.subnet_latency_ms(models["int8"], seq_len, shape.vocab_size)
        if eval_batches is not None:
            reported = (metric, *COMPANIONS.get(metric, ()))  # a forecast's mse, then its mae
            scores = evaluate_each(models, eval_batches, reported)
            metrics.update({f"test/{m}": scores["float"][m] for m in reported})
            if quantize:
                metrics.update({f"int8/test/{m}": scores["int8"][m] for m in reported})
                metrics["int8/delta"] = scores["int8"][metric] - scores["float"][metric]
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


# How cost/latency_ms is measured: cost.subnet_latency_ms, as the cost model measures archs.
LATENCY_METHOD = (
    "median of 10 timed forward passes after 2 warm-up passes, batch 1 at seq_len, "
    "CPU, float32 (nas.cost.measure_latency_ms, as the cost model)"
)


def save_weights(model: nn.Module, path: Path) -> None:
    """The state dict as safetensors. Each tensor is cloned: safetensors refuses tensors that
    share storage (tied weights), and loading copies into the tied parameter twice, harmlessly."""
    try:
        save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(path))
    except Exception as err:  # safetensors' own error type, also for a full disk: the OSError it is
        if "I/O error" not in str(err):
            raise
        raise OSError(None, str(err).split("I/O error: ")[-1], str(path)) from None


def load(folder: str | Path, int8: bool = False) -> nn.Module:
    """The exported subnet, in eval mode, from arch.yaml, space.yaml, model.json and
    weights.safetensors (no code runs from any of them); with `int8` its int8 copy, quantized
    again from those weights as model_int8.pt was."""
    folder = Path(folder)
    for name in ("arch.yaml", "space.yaml", "model.json", "weights.safetensors"):
        if not (folder / name).is_file():
            raise ConfigError(f"{folder}: not a complete export: no {name}")
    saved = read_json(folder / "model.json", schema=MODEL_SCHEMA)
    if saved["metric"] not in METRICS:
        raise ConfigError(
            f"{folder / 'model.json'}: unknown metric {excerpt(saved['metric'])}; allowed: {', '.join(METRICS)}"
        )
    if (folder / "metrics.json").exists():
        read_json(folder / "metrics.json", schema=METRICS_SCHEMA)
    if (folder / "task.json").exists():
        try:
            describe(folder)  # as predict.py reads it, checked against model.json
        except InputError as err:
            raise ConfigError(str(err)) from None
    shape = ModelShape.from_dict(saved["shape"], source=f"{folder / 'model.json'}: shape")
    arch, space = Arch.from_yaml(folder / "arch.yaml"), SearchSpace.from_yaml(folder / "space.yaml")
    spec = ModelSpec.build(arch, space, shape, source=str(folder / "arch.yaml"))
    cost.check_size(spec, str(folder))
    warn_revision_changes(saved.get("op_revisions"), space.op_types(arch), source=str(folder))
    model = Subnet(spec)
    weights = folder / "weights.safetensors"
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors' own errors: truncated header, bad JSON, bad offsets
        text = str(err).strip()
        raise ConfigError(
            f"{weights}: cannot be read as safetensors ({text.splitlines()[0] if text else type(err).__name__})"
        ) from None
    _load_weights(model, state, source=str(weights))
    return quantize_int8(model) if int8 else model.eval()


def write_program(model: Subnet, max_len: int, path: Path) -> bool:
    """Save `model` as a `torch.export` program, checked against the model at a batch size it
    was not traced with; returns whether its length is dynamic.

    First with any batch and any length 1..max_len (`Dim("n", max=max_len)`). Ops whose
    padding or blocking depends on n as a Python int (today local, linformer, lsh and
    synthesizer: torch.export reports "Constraints violated (n)") cannot trace with a
    symbolic n; a model holding one falls back to a fixed length max_len, which predict.py
    fills by padding with the mask False.
    """
    model.eval()
    if model.spec.shape.input == "values":
        return write_values_program(model, path)
    readout = model.spec.shape.readout
    batch, n = torch.export.Dim("batch", min=1), torch.export.Dim("n", min=1, max=max_len)
    axis = len(input_shape(readout, 1, 1)) - 1  # the length's: 1, or 2 in a pair's (b, 2, n)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(
                model,
                example_inputs(max(2, max_len // 2), readout),
                dynamic_shapes=({0: batch, axis: n}, {0: batch, axis: n}),
            )
        dynamic = True
    except Exception:  # torch.export's UserError/ConstraintViolation for an op that specializes n
        program = torch.export.export(model, example_inputs(max_len, readout), dynamic_shapes=({0: batch}, {0: batch}))
        dynamic = False
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    check_program(model, loaded, max_len)
    if dynamic:
        for length in sorted({1, 7 if max_len >= 7 else max_len, max_len}):
            check_program(model, loaded, length)
    return dynamic


def write_values_program(model: Subnet, path: Path) -> bool:
    """`write_program` for a forecaster: values (b, max_len, channels) -> forecasts (b, horizon,
    channels), any b; the length is fixed (the flatten head reads every patch), so False."""
    program = torch.export.export(
        model, (random_input(model.spec.shape, 2),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
    )
    torch.export.save(program, path)
    check_program(model, torch.export.load(path).module(), model.spec.shape.max_len)
    return False


class DecodeStep(nn.Module):
    """`Subnet.step` over the layers' states as one flat tuple, the form decode.pt2 takes.

    Shape: tokens (1,) long, position 0-dim long, state (tensors of fixed shapes) -> logits
    (1, C), and the next state.
    """

    def __init__(self, model: Subnet, layer_sizes: list[int]):
        super().__init__()
        self.model = model
        self.layer_sizes = layer_sizes  # tensors in each layer's state, in order

    def forward(self, tokens: Tensor, position: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        starts = [sum(self.layer_sizes[:i]) for i in range(len(self.layer_sizes))]
        layers = tuple(state[start : start + size] for start, size in zip(starts, self.layer_sizes))
        logits, layers = self.model.step(tokens, layers, position)
        return logits, tuple(x for layer in layers for x in layer)


def write_decode_program(model: Subnet, folder: Path) -> dict | None:
    """For a model that decodes (causal, token ids, a readout per position): write decode.pt2,
    `DecodeStep` as a `torch.export` program for one sequence with a state of max_len tokens,
    one program for every position; and decode_state.pt, the state before the first token
    where it is not zeros (block_recurrent's learned start state), as {index: tensor} for
    `torch.load(weights_only=True)`: data, so a long KV cache of zeros is never stored.
    Checked against the eager step. Returns model.json's `decode`: each state tensor's shape
    and dtype, or None for a model that does not decode."""
    model.eval()
    try:
        layers = model.init_state(1)
    except ConfigError:  # Subnet says which models decode
        return None
    # cloned: a state tensor that is a view (block_recurrent's start state) would make
    # torch.export guard on its base, which the states the program returns do not have
    state = tuple(x.clone() for layer in layers for x in layer)
    step = DecodeStep(model, [len(layer) for layer in layers])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(step, (torch.ones(1, dtype=torch.long), torch.tensor(0), state))
    torch.export.save(program, folder / "decode.pt2")
    torch.save({str(i): x for i, x in enumerate(state) if torch.count_nonzero(x)}, folder / "decode_state.pt")
    check_decode_program(step, torch.export.load(folder / "decode.pt2").module(), state)
    return {"state": [{"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")} for x in state]}


def check_decode_program(step: DecodeStep, program: Callable, state: tuple[Tensor, ...], positions: int = 32) -> None:
    """Raise unless `program` gives the eager step's logits at the first `positions` positions
    (at most max_len) of a random sequence, each step fed the state the one before returned."""
    shape = step.model.spec.shape
    tokens = torch.randint(1, shape.vocab_size, (min(positions, shape.max_len),))
    eager = state
    with torch.no_grad():
        for t, token in enumerate(tokens):
            got, state = program(token[None], torch.tensor(t), state)
            expected, eager = step(token[None], torch.tensor(t), eager)
            if not torch.allclose(got, expected, atol=1e-5, rtol=1e-5):
                raise RuntimeError(
                    f"the exported decode step differs from the model at position {t} by "
                    f"{(got - expected).abs().max().item():.2e}"
                )


def write_int8_program(model: nn.Module, max_len: int, path: Path) -> None:
    """Save the int8 copy as a TorchScript program for (b, max_len) inputs, checked like
    `write_program`. TorchScript, because torch.export cannot yet hold the packed weights of
    torch's dynamically quantized layers."""
    with torch.no_grad(), _quiet_quantization(), warnings.catch_warnings():
        # Tracing warns that shape checks become constants: they are, for the fixed max_len,
        # and check_program below runs the program on another batch size and other padding.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        shape = model.spec.shape
        example = (random_input(shape, 2),) if shape.input == "values" else example_inputs(max_len, shape.readout)
        program = torch.jit.trace(model.eval(), example, check_trace=False)
        torch.jit.save(program, str(path))
        check_program(model, torch.jit.load(str(path)), max_len)


def example_inputs(max_len: int, readout: str = "classify") -> tuple[Tensor, Tensor]:
    # No op branches on input values, so the example's values do not matter; a batch of 2
    # keeps tracing from specializing the batch dim to 1.
    shape = input_shape(readout, 2, max_len)  # (2, max_len), or (2, 2, max_len) for pairs
    return torch.ones(shape, dtype=torch.long), torch.ones(shape, dtype=torch.bool)


def check_program(model: nn.Module, program: Callable[[Tensor, Tensor], Tensor], max_len: int) -> None:
    """Raise unless `program` gives `model`'s logits on 3 sequences (a batch size it was not
    traced with) padded to max_len by different amounts (for pairs: 3 pairs, each document
    padded by its own amount; for a forecaster: 3 windows of random values)."""
    if model.spec.shape.input == "values":
        values = random_input(model.spec.shape, 3)  # (3, max_len, channels)
        with torch.no_grad():
            expected, got = model(values), program(values)
        if not torch.allclose(got, expected, atol=1e-5, rtol=1e-5):
            raise RuntimeError(
                f"the exported program differs from the model by {(got - expected).abs().max().item():.2e}"
            )
        return
    lengths = torch.tensor([[max_len], [max_len // 2 + 1], [1]])  # (3, 1)
    if model.spec.shape.readout == "pair":
        lengths = torch.stack([lengths, lengths.roll(-1, 0)], 1)  # (3, 2, 1)
    tokens = torch.randint(1, model.embed.tokens.num_embeddings, input_shape(model.spec.shape.readout, 3, max_len))
    mask = torch.arange(max_len) < lengths  # (3, max_len) or (3, 2, max_len)
    with torch.no_grad():
        expected, got = model(tokens, mask), program(tokens, mask)
    if not torch.allclose(got, expected, atol=1e-5, rtol=1e-5):
        raise RuntimeError(f"the exported program differs from the model by {(got - expected).abs().max().item():.2e}")


def saved_bytes(state: dict) -> int:
    """The size of `state` as torch.save writes it."""
    buffer = io.BytesIO()
    with _quiet_quantization():
        torch.save(state, buffer)
    return buffer.getbuffer().nbytes


def quantize_int8(model: Subnet) -> nn.Module:
    """A copy with int8 weights in every linear layer (attention projections, feed-forward,
    readout; torch's dynamic quantization: activations are quantized on the fly), for CPU
    inference. Embeddings and the attention cores' own parameters stay float."""
    with _quiet_quantization():
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8).eval()


@contextlib.contextmanager
def _quiet_quantization():
    """torch.ao.quantization and quantized tensors warn that they are deprecated in favour of
    torchao (not a dependency); torch 2.13 still ships them and they work."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(deprecated|TypedStorage).*")
        yield


def _check_out(out: Path, overwrite: bool, ckpt: Path | None = None) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out {out} is a file, not a folder")
    blocked = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise ConfigError(f"out {out}: its parent {blocked} is a file, not a folder")
    # the folder is renamed into place (an empty one removed first): never the current folder
    if out.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise ConfigError(f"out={out}: the current folder or one above it; name a folder of its own for the export")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"refusing to overwrite {out}: it exists and is not empty; pass overwrite=true")
        if ckpt is not None and out.resolve() in ckpt.resolve().parents:
            raise ConfigError(
                f"refusing to overwrite {out}: it holds the checkpoint {ckpt}; export into a folder of its own"
            )
        if not all((out / name).is_file() for name in ("model.json", "weights.safetensors")):
            raise ConfigError(
                f"refusing to overwrite {out}: it is not an earlier export (no model.json "
                "and weights.safetensors in it); pass a new or empty folder"
            )


def _read_checkpoint(path: Path) -> tuple[dict, dict[str, Tensor]]:
    """The hparams and the subnet's state dict of a retrain checkpoint, or one ConfigError line."""
    ckpt = read_checkpoint(path, "checkpoint")
    what = f"checkpoint {path} is not a LongNAS retrain checkpoint"
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("hyper_parameters"), dict):
        raise ConfigError(f"{what}: no 'hyper_parameters'")
    hparams = ckpt["hyper_parameters"]
    missing = [
        key
        for key in HPARAMS
        if key not in hparams and not (key == "model" and all(name in hparams for name in LEGACY_MODEL))
    ]
    if missing:
        raise ConfigError(f"{what}: its hyper_parameters lack {', '.join(missing)}")
    state = {
        key[len("model.") :]: value for key, value in (ckpt.get("state_dict") or {}).items() if key.startswith("model.")
    }
    if not state:
        raise ConfigError(f"{what}: no subnet weights ('model.*' in its state_dict)")
    return ckpt["hyper_parameters"], state


def _load_weights(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load strictly; a mismatch names the first missing or unexpected weight."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a weight of the wrong shape; its message lists them, a line each
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        first = lines[min(1, len(lines) - 1)]
        raise ConfigError(f"{source}: the weights do not match the arch ({first})") from None
    if missing or unexpected:
        first = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise ConfigError(
            f"{source}: the weights do not match the arch ({first}, "
            f"{len(missing)} missing and {len(unexpected)} unexpected in all)"
        )
