"""Run the exported LongNAS model with torch alone (no `nas` needed):

    python predict.py "5 3 9 2" "7 7 1"       # token ids, one argument per sequence
    python predict.py "[MAX 4 3 [MIN 2 3 ] 1 0 ]"   # raw input where task.json says how (ListOps, text)
    python predict.py --logits "5 3 9 2"      # the raw logits as JSON instead of labels
    python predict.py --int8 "5 3 9 2"        # the int8 copy (exported with quantize=true)
    python predict.py --ids "5 3 9 2"         # token ids even where the task has raw input

Prints, per sequence, the predicted label and its probability as a JSON line (per scored
position for per-token models). The program takes exactly max_len positions, so sequences are
padded to it with the mask False, which the model ignores. Bad input, and a model.json or
task.json that is not as the export wrote it, is one line on stderr and exit status 1.

Which files are safe to accept from others: weights.safetensors and the text files (*.json,
*.yaml) hold data only. model.pt2 (a torch.export program) and model_int8.pt (TorchScript) are
programs: loading and running them executes whatever operations were put in them, so run this
script only on a folder from a source you trust; otherwise rebuild the model from
weights.safetensors with `nas.export.load`.

This file is copied into every export folder as it is (nas.export); it imports nothing of
`nas`, so that the folder runs anywhere torch does.
# b batch, n max_len, C classes
"""

import json
import math
import reprlib
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
USAGE = __doc__.split("\n\n")[1]
MAX_FILE_BYTES = 4 * 2**20  # model.json and task.json are KiB; as nas.safe_load.MAX_BYTES
READOUTS = ("classify", "tokens")
# What model.json and task.json hold, as nas.export writes them: nothing else is accepted (a
# key of a Hydra config such as _target_ included). A schema is a type (int: a whole number
# >= 0; float: a finite number; str; bool), a literal string, None, a tuple (any one of its
# schemas), [schema] (a list of such), {str: schema} (any names, each mapping to such) or a
# dict of keys (exactly those; a key ending in "?" may be absent).
MODEL_SCHEMA = {
    "shape": {"vocab_size": int, "num_classes": int, "max_len": int, "readout": READOUTS, "causal?": bool},
    "metric": str,
    "dynamic_len?": bool,
    "op_revisions?": {str: int},
}
TASK_SCHEMA = {
    "task?": str,
    "input": ("ids", "bytes", "listops"),
    "vocab_size": int,
    "pad?": int,
    "max_len": int,
    "readout?": READOUTS,
    "metric?": str,
    "classes": ([str], None),
    "offset?": int,
    "mask?": int,
    "tokens?": {str: int},
    "ignored?": [str],
}


class InputError(ValueError):
    """Bad input: printed as one line, exit status 1."""


def load(folder: Path = HERE, int8: bool = False):
    """The program (model.pt2, or the TorchScript int8 copy model_int8.pt) as a callable
    module, and the length it takes."""
    folder = Path(folder)
    saved = read_json(folder / "model.json", MODEL_SCHEMA)
    name = "model_int8.pt" if int8 else "model.pt2"
    if not (folder / name).is_file():
        raise InputError(
            f"--int8: {folder} has no model_int8.pt (export with quantize=true)"
            if int8
            else f"{folder} has no model.pt2"
        )
    try:
        program = torch.jit.load(str(folder / name)) if int8 else torch.export.load(str(folder / name)).module()
    except Exception as err:  # torch's own errors for a truncated or foreign file
        raise InputError(f"{folder / name}: cannot be loaded ({short_error(err)})") from None
    # A program with a dynamic length takes any length up to max_len: pad to the longest input only
    max_len = None if saved.get("dynamic_len") and not int8 else saved["shape"]["max_len"]
    return program, max_len


def describe(folder: Path = HERE) -> dict:
    """task.json if the export has one, else token ids over model.json's vocabulary; checked
    against model.json, so that every id it yields is in the model's vocabulary."""
    folder = Path(folder)
    shape = read_json(folder / "model.json", MODEL_SCHEMA)["shape"]
    if not (folder / "task.json").exists():
        return {
            "input": "ids",
            "vocab_size": shape["vocab_size"],
            "max_len": shape["max_len"],
            "readout": shape["readout"],
            "classes": None,
        }
    task = read_json(folder / "task.json", TASK_SCHEMA)
    for key in ("vocab_size", "readout"):
        if task.get(key, shape[key]) != shape[key]:
            raise InputError(
                f"{folder / 'task.json'}: {key} {short(task[key])} differs from model.json's {short(shape[key])}"
            )
    if task["classes"] is not None and len(task["classes"]) != shape["num_classes"]:
        raise InputError(
            f"{folder / 'task.json'}: classes names {len(task['classes'])} classes; "
            f"model.json's shape has {shape['num_classes']}"
        )
    if task["input"] == "listops" and "tokens" not in task:
        raise InputError(f"{folder / 'task.json'}: input listops needs 'tokens'")
    return task


def read_json(path: Path, schema) -> dict:
    """A JSON file of the export, bounded in size and checked against `schema`, or one
    InputError line naming it (json.loads itself stops a deep nesting with RecursionError)."""
    if not path.is_file():
        raise InputError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"{path}: larger than such a file may be ({MAX_FILE_BYTES // 2**20} MiB)")
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except RecursionError:
        raise InputError(f"{path}: malformed JSON: nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, or an integer of over 4300 digits
        raise InputError(f"{path}: malformed JSON: {short_error(err)}") from None
    check(value, schema, str(path))
    return value


def check(value, schema, where: str, field: str = "") -> None:
    """Raise one InputError line naming the file `where` and the field unless `value` is as
    `schema` (above) declares."""
    at = f"{where}: {field}" if field else where
    inner = lambda key: f"{field}.{key}" if field else str(key)
    if isinstance(schema, tuple):
        if not any(fits(value, option) for option in schema):
            raise InputError(f"{at} must be {' or '.join(map(kind, schema))}; got {short(value)}")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise InputError(f"{at} must be a list; got {short(value)}")
        for i, item in enumerate(value):
            check(item, schema[0], where, f"{field}[{i}]")
    elif isinstance(schema, dict):
        if not isinstance(value, dict):
            raise InputError(f"{at} must be an object; got {short(value)}")
        if str in schema:
            for key, item in value.items():
                check(item, schema[str], where, inner(key))
            return
        keys = {key.rstrip("?"): key for key in schema}
        for key, item in value.items():
            if key not in keys:
                raise InputError(f"{at}: unknown key {short(key)}; allowed: {', '.join(keys)}")
            check(item, schema[keys[key]], where, inner(key))
        missing = [key for key in schema if not key.endswith("?") and key not in value]
        if missing:
            raise InputError(f"{at}: no {missing[0]!r}")
    elif not fits(value, schema):
        raise InputError(f"{at} must be {kind(schema)}; got {short(value)}")


def fits(value, schema) -> bool:
    if schema in (int, float, str, bool):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return {
            int: number and isinstance(value, int) and value >= 0,
            float: number and math.isfinite(value),
            str: isinstance(value, str),
            bool: isinstance(value, bool),
        }[schema]
    if schema is None or isinstance(schema, str):
        return value == schema and type(value) is type(schema)
    try:
        check(value, schema, "")
        return True
    except InputError:
        return False


def kind(schema) -> str:
    names = {int: "a whole number", float: "a finite number", str: "a string", bool: "true or false", None: "null"}
    if isinstance(schema, (list, dict)):
        return "a list" if isinstance(schema, list) else "an object"
    return names[schema] if schema in names else repr(schema)


def short(value) -> str:
    """A bounded repr: a value from a tampered file may be huge or deeply nested."""
    return reprlib.repr(value)


def short_error(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def encode(text: str, task: dict, index: int = 0, ids_only: bool = False) -> list:
    """One argument -> token ids, checked against the vocabulary and max_len; with `ids_only`
    the argument is token ids whatever the task's raw input is."""
    kind = "ids" if ids_only else task["input"]
    vocab = task["vocab_size"]
    if kind == "bytes":
        ids = [b + task.get("offset", 1) for b in text.encode("utf-8")]
    elif kind == "listops":
        ignored = task.get("ignored", [])
        words = "".join(" " if ch in ignored else ch for ch in text).split()
        unknown = [w for w in words if w not in task["tokens"]]
        if unknown:
            raise InputError(
                f"sequence {index}: unknown token {short(unknown[0])}; "
                f"expected one of {' '.join(task['tokens'])} {' '.join(ignored)}"
            )
        check_listops(words, index)
        ids = [task["tokens"][w] for w in words]
    else:
        ids = []
        for word in text.split():
            digits = word.removeprefix("-")
            if not (digits.isascii() and digits.isdigit()):  # int() also takes '²', '1_0', ' 5'
                raise InputError(f"sequence {index}: token {short(word)} is not an integer id")
            if len(digits) > 18:  # past any vocabulary (and int() refuses over 4300 digits)
                raise InputError(f"sequence {index}: token id {short(word)} is outside the vocabulary 0..{vocab - 1}")
            ids.append(int(word))
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        source = "" if kind == "ids" else f" (from task.json's input {kind})"
        raise InputError(f"sequence {index}: token id {short(bad[0])}{source} is outside the vocabulary 0..{vocab - 1}")
    if not ids:
        raise InputError(f"sequence {index} is empty")
    if len(ids) > task["max_len"]:
        raise InputError(f"sequence {index} has {len(ids)} tokens; the model takes at most {task['max_len']}")
    return ids


def check_listops(words: list, index: int) -> None:
    """One whole expression: a value, or an operator ('[MAX', ...), its arguments (values or
    expressions) and ']'; else one InputError line (the model would print a label for it)."""
    arguments = []  # per open operator, the arguments it has so far
    for position, word in enumerate(words):
        if position and not arguments:
            raise InputError(f"sequence {index}: {short(word)} after the end of the expression (token {position})")
        if word == "]":
            if not arguments or not arguments[-1]:
                raise InputError(
                    f"sequence {index}: ']' closes {'no operator' if not arguments else 'an operator without arguments'} "
                    f"(token {position})"
                )
            arguments.pop()
            if arguments:
                arguments[-1] += 1
        elif word.startswith("["):
            arguments.append(0)
        elif arguments:
            arguments[-1] += 1
    if arguments:
        raise InputError(f"sequence {index}: {len(arguments)} operator(s) not closed; each '[' needs its ']'")


def pad(sequences, max_len):
    """Token lists -> tokens (b, n) long and mask (b, n) bool, True = real token; n is max_len,
    or the longest sequence for a program of dynamic length (max_len None)."""
    max_len = max_len or max(len(seq) for seq in sequences)
    tokens = torch.zeros(len(sequences), max_len, dtype=torch.long)
    mask = torch.zeros(len(sequences), max_len, dtype=torch.bool)
    for i, seq in enumerate(sequences):
        if len(seq) > max_len:
            raise InputError(f"sequence {i} has {len(seq)} tokens; the model takes at most {max_len}")
        tokens[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = True
    return tokens, mask


def predict(program, max_len, sequences):
    """Logits (b, C) for a classifier, or (b, max_len, C) per position (padding rows are junk)."""
    with torch.no_grad():
        return program(*pad(sequences, max_len))


def labelled(logits, length: int, classes) -> dict:
    """The predicted label and its softmax probability; per position for per-token logits."""
    probs = logits.float().softmax(-1)  # (C) or (n, C)
    if probs.dim() == 2:
        probs = probs[:length]  # (length, C)
    p, index = probs.max(-1)
    name = lambda i: classes[i] if classes else i
    if probs.dim() == 1:
        return {"label": name(int(index)), "probability": round(float(p), 6)}
    return {"labels": [name(int(i)) for i in index], "probabilities": [round(float(q), 6) for q in p]}


def main(argv) -> int:
    flags = {a for a in argv if a.startswith("--")}
    args = [a for a in argv if not a.startswith("--")]
    if "--help" in flags or "-h" in argv:
        print(__doc__)
        return 0
    unknown = flags - {"--int8", "--logits", "--ids", "--help"}
    if unknown:
        print(f"predict.py: unknown option {min(unknown)}; allowed: --int8 --logits --ids --help", file=sys.stderr)
        return 1
    if not args:  # usage, rather than inventing an input
        print(f"predict.py: no input given; usage:\n{USAGE}", file=sys.stderr)
        return 1
    try:
        task = describe()
        sequences = [encode(arg, task, i, "--ids" in flags) for i, arg in enumerate(args)]
        program, max_len = load(int8="--int8" in flags)
        outputs = predict(program, max_len, sequences)
        classes = task.get("classes")
        if classes and outputs.shape[-1] != len(classes):  # a program of another export
            raise InputError(f"the program gives {outputs.shape[-1]} outputs; task.json names {len(classes)} classes")
        for seq, logits in zip(sequences, outputs):
            if "--logits" in flags:
                print(json.dumps((logits if logits.dim() == 1 else logits[: len(seq)]).tolist()))
            else:
                print(json.dumps(labelled(logits, len(seq), task.get("classes"))))
    except InputError as err:
        print(f"predict.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
