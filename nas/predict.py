"""Run the exported LongNAS model with torch alone (no `nas` needed):

    python predict.py "5 3 9 2" "7 7 1"       # token ids, one argument per sequence
    python predict.py "[MAX 4 3 [MIN 2 3 ] 1 0 ]"   # raw input where task.json says how (ListOps, text)
    python predict.py --logits "5 3 9 2"      # the raw logits as JSON instead of labels
    python predict.py --int8 "5 3 9 2"        # the int8 copy (exported with quantize=true)
    python predict.py --ids "5 3 9 2"         # token ids even where the task has raw input

Prints, per sequence, the predicted label and its probability as a JSON line (per scored
position for per-token models). The program takes exactly max_len positions, so sequences are
padded to it with the mask False, which the model ignores. Bad input is one line on stderr and
exit status 1.

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
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
USAGE = __doc__.split("\n\n")[1]


class InputError(ValueError):
    """Bad input: printed as one line, exit status 1."""


def load(folder: Path = HERE, int8: bool = False):
    """The program (model.pt2, or the TorchScript int8 copy model_int8.pt) as a callable
    module, and the length it takes."""
    folder = Path(folder)
    if int8 and not (folder / "model_int8.pt").is_file():
        raise InputError(f"--int8: {folder} has no model_int8.pt (export with quantize=true)")
    if int8:
        program = torch.jit.load(str(folder / "model_int8.pt"))
    else:
        program = torch.export.load(str(folder / "model.pt2")).module()
    saved = json.loads((folder / "model.json").read_text())
    # A program with a dynamic length takes any length up to max_len: pad to the longest input only
    max_len = None if saved.get("dynamic_len") and not int8 else saved["shape"]["max_len"]
    return program, max_len


def describe(folder: Path = HERE) -> dict:
    """task.json if the export has one, else token ids over model.json's vocabulary."""
    folder = Path(folder)
    if (folder / "task.json").is_file():
        return json.loads((folder / "task.json").read_text())
    shape = json.loads((folder / "model.json").read_text())["shape"]
    return {"input": "ids", "vocab_size": shape["vocab_size"], "max_len": shape["max_len"],
            "readout": shape.get("readout", "classify"), "classes": None}


def encode(text: str, task: dict, index: int = 0, ids_only: bool = False) -> list:
    """One argument -> token ids, checked against the vocabulary and max_len; with `ids_only`
    the argument is token ids whatever the task's raw input is."""
    kind = "ids" if ids_only else task.get("input", "ids")
    if kind == "bytes":
        ids = [b + task.get("offset", 1) for b in text.encode("utf-8")]
    elif kind == "listops":
        ignored = task.get("ignored", [])
        words = "".join(" " if ch in ignored else ch for ch in text).split()
        unknown = [w for w in words if w not in task["tokens"]]
        if unknown:
            raise InputError(f"sequence {index}: unknown token {unknown[0]!r}; "
                             f"expected one of {' '.join(task['tokens'])} {' '.join(ignored)}")
        ids = [task["tokens"][w] for w in words]
    else:
        ids = []
        for word in text.split():
            if not word.lstrip("-").isdigit():
                raise InputError(f"sequence {index}: token {word!r} is not an integer id")
            ids.append(int(word))
        bad = [i for i in ids if not 0 <= i < task["vocab_size"]]
        if bad:
            raise InputError(f"sequence {index}: token id {bad[0]} is outside the vocabulary "
                             f"0..{task['vocab_size'] - 1}")
    if not ids:
        raise InputError(f"sequence {index} is empty")
    if len(ids) > task["max_len"]:
        raise InputError(f"sequence {index} has {len(ids)} tokens; the model takes at most {task['max_len']}")
    return ids


def pad(sequences, max_len):
    """Token lists -> tokens (b, n) long and mask (b, n) bool, True = real token; n is max_len,
    or the longest sequence for a program of dynamic length (max_len None)."""
    max_len = max_len or max(len(seq) for seq in sequences)
    tokens = torch.zeros(len(sequences), max_len, dtype=torch.long)
    mask = torch.zeros(len(sequences), max_len, dtype=torch.bool)
    for i, seq in enumerate(sequences):
        if len(seq) > max_len:
            raise InputError(f"sequence {i} has {len(seq)} tokens; the model takes at most {max_len}")
        tokens[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, :len(seq)] = True
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
    name = (lambda i: classes[i] if classes else i)
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
        for seq, logits in zip(sequences, predict(program, max_len, sequences)):
            if "--logits" in flags:
                print(json.dumps((logits if logits.dim() == 1 else logits[:len(seq)]).tolist()))
            else:
                print(json.dumps(labelled(logits, len(seq), task.get("classes"))))
    except InputError as err:
        print(f"predict.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
