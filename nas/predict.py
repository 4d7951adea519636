"""Run the exported LongNAS model with torch alone (no `nas` needed):

    python predict.py "5 3 9 2" "7 7 1"
    python predict.py --int8 "5 3 9 2"     # the int8 copy (exported with quantize=true)

Each argument is one sequence of token ids (0 is padding); each prints its logits as a JSON
line. The program takes exactly max_len positions, so sequences are padded to it with the mask
False, which the model ignores.

This file is copied into every export folder as it is (nas.export); it imports nothing of
`nas`, so that the folder runs anywhere torch does.
# b batch
"""
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def load(folder: Path = HERE, int8: bool = False):
    """The program (model.pt2, or the TorchScript int8 copy model_int8.pt) as a callable
    module, and the length it takes."""
    if int8:
        program = torch.jit.load(str(Path(folder) / "model_int8.pt"))
    else:
        program = torch.export.load(str(Path(folder) / "model.pt2")).module()
    max_len = json.loads((Path(folder) / "model.json").read_text())["shape"]["max_len"]
    return program, max_len


def pad(sequences, max_len):
    """Token lists -> tokens (b, max_len) long and mask (b, max_len) bool, True = real token."""
    tokens = torch.zeros(len(sequences), max_len, dtype=torch.long)
    mask = torch.zeros(len(sequences), max_len, dtype=torch.bool)
    for i, seq in enumerate(sequences):
        if len(seq) > max_len:
            raise ValueError(f"sequence {i} has {len(seq)} tokens; the model takes at most {max_len}")
        tokens[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, :len(seq)] = True
    return tokens, mask


def predict(program, max_len, sequences):
    """Logits (b, C) for a classifier, or (b, max_len, C) per position (padding rows are junk)."""
    with torch.no_grad():
        return program(*pad(sequences, max_len))


if __name__ == "__main__":
    args = [arg for arg in sys.argv[1:] if arg != "--int8"]
    sequences = [[int(t) for t in arg.split()] for arg in args] or [[1, 2, 3]]
    program, max_len = load(int8="--int8" in sys.argv[1:])
    for seq, logits in zip(sequences, predict(program, max_len, sequences)):
        print(json.dumps((logits if logits.dim() == 1 else logits[:len(seq)]).tolist()))  # a line each
