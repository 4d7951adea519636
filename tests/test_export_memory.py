"""Export of a model with the space's memory options: the options survive space.yaml, `load`
rebuilds the same model, and the torch.export program traces and matches it."""

import json

import pytest
import pytorch_lightning as pl
import torch
import yaml
from torch.utils.data import DataLoader

from nas.export import export, load
from nas.model import ModelShape, ModelSpec
from nas.space import SearchSpace
from nas.training.retrain import RetrainModule

VOCAB, CLASSES, MAX_LEN = 16, 3, 32
MEMORY = {"reversible": True, "ffn_chunks": 3}
SPACE = {
    "name": "mem",
    "dim": 16,
    "head_dim": 4,
    "depth": [2],
    "layer": {
        "attention": {"full": {}, "performer": {"features": 8, "redraw_every": 1}, "local": {"window": 8}},
        "heads": [2],
        "ffn_dim": [32],
    },
    "memory": MEMORY,
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("memory_export")
    torch.manual_seed(0)
    arch = {
        "depth": 2,
        "layers": [
            {"attention": "performer", "heads": 2, "ffn_dim": 32},
            {"attention": "local", "heads": 2, "ffn_dim": 32},
        ],
    }
    model = {"arch": arch, "space": SPACE, "shape": ModelShape(VOCAB, CLASSES, MAX_LEN).to_dict()}
    module = RetrainModule(model, "acc", warmup_steps=1)
    samples = [
        {
            "tokens": torch.randint(1, VOCAB, (MAX_LEN,)),
            "mask": torch.ones(MAX_LEN, dtype=torch.bool),
            "target": torch.tensor(1),
        }
        for _ in range(4)
    ]
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    loader = DataLoader(samples, batch_size=2)
    # two reversible training steps; a validation loader (not run), as the module has a validation_step
    trainer.fit(module, loader, loader)
    trainer.save_checkpoint(tmp / "retrain.ckpt")
    export(tmp / "retrain.ckpt", tmp / "out")
    return tmp / "out", RetrainModule.load_model(str(tmp / "retrain.ckpt")).model.eval()


def test_space_yaml_keeps_the_memory_options(exported):
    folder, _ = exported
    assert yaml.safe_load((folder / "space.yaml").read_text())["memory"] == MEMORY
    assert SearchSpace.from_yaml(folder / "space.yaml") == SearchSpace.from_dict(SPACE)


def test_load_rebuilds_the_same_model(exported):
    folder, model = exported
    loaded = load(folder)
    assert loaded.reversible and all(block.ffn_chunks == 3 for block in loaded.blocks)
    tokens = torch.randint(1, VOCAB, (2, MAX_LEN))
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model(tokens))


def test_program_traces_and_matches_the_model(exported):
    folder, model = exported
    assert json.loads((folder / "model.json").read_text())["dynamic_len"] is False  # local
    program = torch.export.load(str(folder / "model.pt2")).module()
    tokens = torch.randint(1, VOCAB, (3, MAX_LEN))
    mask = torch.ones(3, MAX_LEN, dtype=torch.bool)
    mask[1, 20:] = False
    with torch.no_grad():
        torch.testing.assert_close(program(tokens, mask), model(tokens, mask), atol=1e-5, rtol=1e-5)


def test_program_of_dynamic_ops_keeps_any_length(tmp_path):
    """Chunks are a memory schedule, not part of the function: the program runs unchunked, so
    ops that trace with a symbolic length still do."""
    from nas.export import write_program
    from nas.model import Subnet
    from nas.space import Arch

    space = SearchSpace.from_dict(SPACE)
    arch = Arch.from_dict(
        {
            "depth": 2,
            "layers": [
                {"attention": "performer", "heads": 2, "ffn_dim": 32},
                {"attention": "full", "heads": 2, "ffn_dim": 32},
            ],
        }
    )
    torch.manual_seed(0)
    model = Subnet(ModelSpec(arch, space, ModelShape(VOCAB, CLASSES, MAX_LEN)))
    assert write_program(model, MAX_LEN, tmp_path / "model.pt2")  # dynamic length
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    tokens = torch.randint(1, VOCAB, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(
            program(tokens, torch.ones(2, 7, dtype=torch.bool)), model(tokens), atol=1e-5, rtol=1e-5
        )
