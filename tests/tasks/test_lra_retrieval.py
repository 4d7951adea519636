"""LRA Retrieval: LRA's TSV files written here in its layout, the generated pairs, the pair model
(each document encoded alone, the head on [u, v, u*v, u-v]) against a reference built by hand,
the supernet and cost model on pairs, and export with predict.py given two texts."""

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas import cost
from nas.errors import ConfigError
from nas.model import ModelShape, ModelSpec, Subnet
from nas.space import Arch, LayerArch, SearchSpace
from nas.supernet import Supernet
from nas.tasks.lra_retrieval import RetrievalTask, topic_words
from tests.tasks.exported import export_task_model, folder_script

SMALL = dict(num_train=64, num_val=16, num_test=16, max_len=64, batch_size=8)
SPACE = {
    "name": "pairs",
    "dim": 16,
    "head_dim": 8,
    "depth": [1, 2],
    "layer": {"attention": {"full": {}, "local": {"window": 4}}, "heads": [1, 2], "ffn_dim": [16, 32]},
}
# LRA's rows: label (as LRA's float column may write it), the two ids, the two texts; no header,
# no quoting, bytes that are not UTF-8 kept as they are.
ROWS = [
    (b"1", b"P01-1001", b"W02-2002", b'a "quoted" text', b"another text"),
    (b"0.0", b"P03-3003", b"J04-4004", b"caf\xc3\xa9 \xff\xfe raw bytes", b"x"),
    (b"1.0", b"A", b"B", b"short", b"longer second document"),
]


def write_tsv(path, rows, newline=b"\n"):
    path.write_bytes(b"".join(b"\t".join(row) + newline for row in rows))
    return path


def lra_folder(tmp_path, rows=ROWS):
    for name in ("train", "eval", "test"):
        write_tsv(tmp_path / f"new_aan_pairs.{name}.tsv", rows)
    return tmp_path


def test_reads_lra_tsv_files_as_bytes(tmp_path):
    task = RetrievalTask(data_dir=tmp_path, path=str(lra_folder(tmp_path)), max_len=32)
    task.setup()
    assert (task.readout, task.vocab_size, task.num_classes) == ("pair", 257, 2)
    for split in ("train", "val", "test"):
        got = [
            ((a - 1).astype(np.uint8).tobytes(), (b - 1).astype(np.uint8).tobytes(), int(y))
            for (a, b), y in task.splits[split]
        ]
        assert got == [(r[3], r[4], int(float(r[0]))) for r in ROWS]


def test_crlf_and_truncation(tmp_path, caplog):
    folder = tmp_path / "lra"
    folder.mkdir()
    for name in ("train", "eval", "test"):
        write_tsv(folder / f"new_aan_pairs.{name}.tsv", ROWS, newline=b"\r\n")
    task = RetrievalTask(data_dir=tmp_path, path=str(folder), max_len=16, truncate=True)
    task.setup()
    (a, b), _ = task.splits["test"][1]
    assert (a - 1).astype(np.uint8).tobytes() == ROWS[1][3][:16] and len(b) == 1


@pytest.mark.parametrize(
    "row,message",
    [
        ((b"1", b"a", b"b", b"text"), ":2: expected 5 tab-separated fields (label, id1, id2, text1, text2), got 4"),
        ((b"2", b"a", b"b", b"x", b"y"), ":2: label '2' is not 0 or 1"),
        ((b"yes", b"a", b"b", b"x", b"y"), ":2: label 'yes' is not 0 or 1"),
        ((b"1", b"a", b"b", b"", b"y"), ":2: text1 is empty"),
        ((b"1", b"a", b"b", b"x", b"y" * 40), ":2 (text2): sequence of 40 tokens is longer than max_len 32"),
    ],
)
def test_bad_rows_are_one_line_naming_file_and_line(tmp_path, row, message):
    folder = lra_folder(tmp_path, [ROWS[0], row])
    with pytest.raises(ConfigError, match=re.escape(f"new_aan_pairs.train.tsv{message}")) as err:
        RetrievalTask(data_dir=tmp_path, path=str(folder), max_len=32).setup()
    assert "\n" not in str(err.value)


def test_a_missing_split_file_is_named(tmp_path):
    folder = lra_folder(tmp_path)
    (folder / "new_aan_pairs.eval.tsv").unlink()
    with pytest.raises(ConfigError, match="missing file .*new_aan_pairs.eval.tsv"):
        RetrievalTask(data_dir=tmp_path, path=str(folder)).setup()


def test_generated_pairs_match_exactly_when_they_share_a_topic(tmp_path):
    task = RetrievalTask(data_dir=tmp_path, seed=3, **SMALL)
    task.setup()
    words = topic_words(3, task.config.num_topics)
    own = [set(topic) - set(words[-1]) for topic in words[:-1]]  # words only that topic uses

    def topic_of(doc) -> int:
        found = {t for w in (doc - 1).astype(np.uint8).tobytes().split() for t, ws in enumerate(own) if w in ws}
        assert len(found) == 1
        return found.pop()

    labels = []
    for (a, b), y in task.splits["train"]:
        assert 1 <= len(a) <= 64 and 1 <= len(b) <= 64
        assert int(y) == (topic_of(a) == topic_of(b))
        labels.append(int(y))
    assert 0.3 < np.mean(labels) < 0.7


def test_generated_contract(tmp_path):
    task = RetrievalTask(data_dir=tmp_path, **SMALL)
    batch = next(iter(task.train_dataloader()))
    tokens, mask, target = batch["tokens"], batch["mask"], batch["target"]
    assert tokens.shape[:2] == (8, 2) and mask.shape == tokens.shape and target.shape == (8,)
    assert tokens.shape[2] == int(mask.sum(-1).max()) <= task.seq_len  # padded to the longest document
    assert (tokens[~mask] == 0).all() and tokens[mask].min() >= 1
    seen = [pair_examples(task, split) for split in ("train", "val", "test")]
    assert sum(map(len, seen)) == len(set().union(*seen)) == 96  # distinct within and across splits
    again = RetrievalTask(data_dir=tmp_path / "fresh", **SMALL)
    assert pair_examples(again, "train") == pair_examples(task, "train")  # the same seed, generated again
    other = RetrievalTask(data_dir=tmp_path, seed=1, **SMALL)
    assert pair_examples(other, "train") != pair_examples(task, "train")
    assert set(task.baseline()) == {"val/acc", "test/acc"}


def pair_examples(task, split: str) -> list[bytes]:
    task.setup()
    return [a.tobytes() + b"|" + b.tobytes() + b"|" + bytes([int(y)]) for (a, b), y in task.splits[split]]


def pair_batch(n=16, seed=0):
    """Three pairs whose documents are padded by different amounts."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([[[n], [5]], [[9], [n]], [[1], [12]]])  # (3, 2, 1)
    mask = torch.arange(n) < lengths  # (3, 2, n)
    tokens = torch.randint(1, 30, (3, 2, n), generator=g) * mask
    return tokens, mask


@torch.no_grad()
def reference(model: Subnet, tokens, mask) -> torch.Tensor:
    """Each document through the encoder alone, unpadded; then LRA's dual head by hand."""
    pooled = []
    for pair_tokens, pair_mask in zip(tokens, mask):
        for doc, real in zip(pair_tokens, pair_mask):
            x = model.embed(doc[real][None])
            for block in model.blocks:
                x = block(x, None)
            pooled.append(model.readout.norm(x)[0].mean(0))
    u, v = torch.stack(pooled[0::2]), torch.stack(pooled[1::2])  # (3, D)
    head = model.readout.pair
    h = F.relu(F.linear(torch.cat([u, v, u * v, u - v], 1), head[0].weight, head[0].bias))
    h = F.relu(F.linear(h, head[2].weight, head[2].bias))
    return F.linear(h, model.readout.linear.weight, model.readout.linear.bias)


@pytest.mark.parametrize("attention", ["full", "local"])
def test_pair_model_encodes_each_document_alone(attention):
    torch.manual_seed(0)
    space = SearchSpace.from_dict(SPACE)
    arch = Arch(2, (LayerArch(attention, 2, 32), LayerArch("full", 1, 16)))
    model = Subnet(ModelSpec(arch, space, ModelShape(30, 3, 16, "pair"))).eval()
    tokens, mask = pair_batch()
    with torch.no_grad():
        got = model(tokens, mask)
    assert got.shape == (3, 3)
    torch.testing.assert_close(got, reference(model, tokens, mask), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"a pair model takes tokens of shape \(batch, 2, length\), got \(3, 16\)"):
        model(tokens[:, 0], mask[:, 0])


def test_supernet_on_pairs_equals_its_extracted_subnets_and_the_cost_model():
    torch.manual_seed(0)
    space = SearchSpace.from_dict(SPACE)
    shape = ModelShape(30, 3, 16, "pair")
    net = Supernet(space, shape, sharing="separate").eval()
    tokens, mask = pair_batch()
    for seed in range(5):
        arch = space.sample(seed)
        sub = net.extract(arch).eval()
        with torch.no_grad():
            torch.testing.assert_close(sub(tokens, mask), net(tokens, arch, mask), atol=1e-5, rtol=1e-5)
        spec = ModelSpec(arch, space, shape)
        assert sum(p.numel() for p in sub.parameters()) == cost.params(spec)
        single = ModelSpec(arch, space, ModelShape(30, 3, 16))  # one document of a classifier: half the layers' work
        layer_flops = cost.flops(spec, 16) - cost.base_cost(space, shape, 16, "flops")
        assert layer_flops == 2 * (cost.flops(single, 16) - cost.base_cost(space, single.shape, 16, "flops"))
    weights = {key: torch.softmax(torch.randn(len(choices)), 0) for key, choices in space.decisions().items()}
    assert net.forward_mixed(tokens, weights, mask).shape == (3, 3)
    assert net.forward_mixed(tokens, weights, mask, hard=True).shape == (3, 3)


def test_pair_head_flops_match_pytorchs_counter():
    from torch.utils.flop_counter import FlopCounterMode

    space = SearchSpace.from_dict(SPACE)
    shape = ModelShape(30, 3, 16, "pair")
    model = Subnet(ModelSpec(Arch(1, (LayerArch("full", 2, 32),)), space, shape)).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.readout.linear(model.readout.pair(torch.randn(1, 4 * 16)))  # one pair through the head
    assert counter.get_total_flops() == cost.base_cost(space, shape, 16, "flops")


@pytest.mark.slow
@pytest.mark.parametrize("attention,dynamic", [("full", True), ("local", False)])  # local fixes the length
def test_export_and_predict_with_two_texts(tmp_path, capsys, attention, dynamic):
    task = RetrievalTask(data_dir=tmp_path, **SMALL)
    layers = [{"attention": attention, "heads": 2, "ffn_dim": 32}]
    folder, model = export_task_model(task, SPACE, layers, tmp_path)
    describe = json.loads((folder / "task.json").read_text())
    assert describe["readout"] == "pair" and describe["input"] == "bytes"
    assert json.loads((folder / "model.json").read_text())["dynamic_len"] is dynamic
    script = folder_script(folder)
    texts = ["first document", "the second one", "a", "café"]
    assert script.main(texts) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ids = [torch.tensor([b + 1 for b in t.encode()]) for t in texts]
    with torch.no_grad():
        expected = [
            model(
                torch.stack([F.pad(a, (0, 16 - len(a))), F.pad(b, (0, 16 - len(b)))])[None],
                torch.stack([torch.arange(16) < len(a), torch.arange(16) < len(b)])[None],
            )[0]
            for a, b in (ids[:2], ids[2:])
        ]
    probs = torch.stack(expected).softmax(-1)
    assert [p["label"] for p in printed] == [str(i) for i in probs.argmax(-1).tolist()]
    assert [p["probability"] for p in printed] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-5)
    assert script.main(texts[:3]) == 1
    err = capsys.readouterr().err
    assert err.startswith("predict.py: a pair model takes its documents two at a time") and len(err.splitlines()) == 1
