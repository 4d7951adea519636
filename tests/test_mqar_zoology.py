"""scripts/studies/mqar_zoology.py at tiny settings: each cell is a causal 2-layer model of one
mixer trained as a standalone job, its decoding state is the mixer's, and a rerun reuses every
finished cell instead of training it again."""

from pathlib import Path

import pytest

from tests.helpers import module_from_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "studies" / "mqar_zoology.py"
TINY = [
    "--mixers",
    "full",
    "gla",
    "--widths",
    "16",
    "--head-dim",
    "8",
    "--lengths",
    "32",
    "--pairs",
    "4",
    "--keys",
    "8",
    "--values",
    "8",
    "--num-train",
    "32",
    "--num-val",
    "16",
    "--batch-size",
    "16",
    "--epochs",
    "1",
    "--warmup-steps",
    "1",
]


@pytest.fixture(scope="module")
def study():
    return module_from_file("mqar_zoology", SCRIPT)


def test_cells_train_once_and_are_reused(study, tmp_path, monkeypatch, capsys):
    report = study.main([*TINY, "--folder", str(tmp_path)])
    cells = {c["mixer"]: c for c in report["cells"]}
    assert set(cells) == {"full", "gla"} and report["threads"] == 1
    for cell in cells.values():
        assert (cell["width"], cell["length"], cell["pairs"], cell["steps"]) == (16, 32, 4, 2)  # 32 / 16 per epoch
        assert 0.0 <= cell["val_acc"] <= 1.0 and not cell["reused"]
        assert report["best"][f"{cell['mixer']} d16 n32"] == cell["val_acc"]
    # decoding state of one sequence, 2 layers of 2 heads of 8, float32: a KV cache of the 32
    # positions for attention, one (8, 8) matrix per head for gated linear attention
    assert cells["full"]["state_bytes"] == 2 * 2 * (2 * 32 * 8) * 4
    assert cells["gla"]["state_bytes"] == 2 * 2 * (8 * 8) * 4

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(study.standalone, "train", no_training)
    again = study.main([*TINY, "--folder", str(tmp_path)])
    assert [c["val_acc"] for c in again["cells"]] == [c["val_acc"] for c in report["cells"]]
    assert all(c["reused"] for c in again["cells"])
    capsys.readouterr()


def test_a_pair_count_per_length(study, tmp_path, capsys):
    with pytest.raises(SystemExit):
        study.parse(["--lengths", "256", "1024", "--pairs", "16", "--num-train", "8"])
    assert "--pairs gives 1 counts for 2 lengths" in capsys.readouterr().err
    args = study.parse(["--lengths", "256", "1024", "--num-train", "8"])
    assert args.pairs == [16, 64] and args.num_train == [8, 8]  # Zoology's: pairs grow with length
    assert study.parse([]).num_train == [16000, 6400]  # the table's, at 64 and 256 tokens
    with pytest.raises(SystemExit):
        study.parse(["--lengths", "1024"])
    assert "--num-train: no default for length 1024" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="mqar_zoology: .*seq_len 32 cannot hold 40 pairs"):
        study.main(["--lengths", "32", "--pairs", "40", "--keys", "40", "--num-train", "8", "--folder", str(tmp_path)])
