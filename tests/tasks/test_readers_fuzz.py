"""Malformed data files, generated (Hypothesis) and hand-picked: every reader of a user's file
returns valid examples or raises one ConfigError line, never a raw Python error."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.errors import ConfigError
from nas.tasks import listops, text
from nas.tasks.listops import ListOpsTask
from nas.tasks.pathfinder import PathfinderTask, read_lra
from nas.tasks.text import TextTask
from tests.tasks.task_checks import LRA_LISTOPS

FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
NUM_CLASSES, MAX_LEN = 3, 32


def read_or_error(read, name: str, data: bytes):
    """read(path) of `data` written to a fresh file `name`, or None after checking that the only
    error is a one-line ConfigError."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            return read(path)
        except ConfigError as err:
            assert "\n" not in str(err) and str(err), repr(str(err))
            return None


@st.composite
def corrupted(draw, data: bytes):
    """`data` with a few bytes inserted, deleted or replaced by junk that matters to a reader."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        junk = draw(
            st.binary(max_size=4)
            | st.sampled_from(
                [
                    b"\t",
                    b"\n",
                    b"\r",
                    b'"',
                    b"\x00",
                    b"\xff",
                    b"\xef\xbb\xbf",
                    b"{",
                    b"}",
                    b"\\ud800",
                    b"1",
                    b"9",
                    b"-",
                    b"\xc2\xb2",
                    b"[MIN ",
                    b"]",
                    b"( ",
                ]
            )
        )
        data[at : at + draw(st.integers(0, 3))] = junk
    return bytes(data)


# -- text (TSV / JSONL) ----------------------------------------------------------------------


def read_text(path: Path, truncate: bool = False):
    return text.read_file(path, NUM_CLASSES, MAX_LEN, truncate)


def check_text(data) -> None:
    """What the text reader returns: byte rows no longer than max_len, labels in range."""
    assert len(data) >= 1
    assert all(row.dtype == np.uint8 and 1 <= len(row) + 1 <= MAX_LEN + 1 for row in data.tokens)
    assert data.targets.dtype == np.int64
    assert ((0 <= data.targets) & (data.targets < NUM_CLASSES)).all()


GOOD_TSV = b'text\tlabel\nfine\t1\n"quoted\ttab"\t0\ncaf\xc3\xa9\t2\n'
GOOD_JSONL = b'{"text": "fine", "label": 1}\n{"text": "caf\\u00e9", "label": 2}\n'
FIELDS = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["0", "1", "2", "3", "-1", " 1 ", "1.0", "\u00b2", "\u0661", "text", "label", '"', "\t", "\n"]),
)
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-2, 5), st.floats(), FIELDS, st.sampled_from(["\ud800", "\udfff x"])
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(FIELDS, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def tsv_files(draw) -> bytes:
    header = draw(
        st.sampled_from(["text\tlabel", "Source\tTarget", "label\ttext\textra", "text", "", "TEXT\tLABEL"])
        | st.text(max_size=10)
    )
    rows = draw(st.lists(st.lists(FIELDS, min_size=0, max_size=4), max_size=5))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines = [header] + ["\t".join(row) for row in rows]
    return newline.join(lines).encode("utf-8", "surrogatepass")


@st.composite
def jsonl_files(draw) -> bytes:
    rows = draw(
        st.lists(st.one_of(st.fixed_dictionaries({"text": JSON_VALUES, "label": JSON_VALUES}), JSON_VALUES), max_size=5)
    )
    lines = [json.dumps(row) for row in rows]
    if draw(st.booleans()):
        lines.insert(
            draw(st.integers(0, len(lines))),
            draw(st.sampled_from(["{", "[" * 5000, '{"text": "x", "label": ' + "9" * 5000 + "}", "NaN", "", "  "])),
        )
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@FUZZ
@given(st.one_of(tsv_files(), corrupted(GOOD_TSV)), st.booleans())
def test_tsv_reads_or_is_one_line(data, truncate):
    result = read_or_error(lambda path: read_text(path, truncate), "a.tsv", data)
    if result is not None:
        check_text(result)


@FUZZ
@given(st.one_of(jsonl_files(), corrupted(GOOD_JSONL)), st.booleans())
def test_jsonl_reads_or_is_one_line(data, truncate):
    result = read_or_error(lambda path: read_text(path, truncate), "a.jsonl", data)
    if result is not None:
        check_text(result)


@FUZZ
@given(st.binary(max_size=64), st.sampled_from(["a.tsv", "a.jsonl"]))
def test_arbitrary_bytes_read_or_are_one_line(data, name):
    result = read_or_error(read_text, name, data)
    if result is not None:
        check_text(result)


# -- ListOps (LRA's TSV) ---------------------------------------------------------------------

HAND_WRITTEN = b"Source\tTarget\r\n( [MAX 2 9 ] )\t9\r\n( [MED 1 2 ] )\t1\r\n"
TOKENS = st.sampled_from([*listops.VOCAB, "(", ")", "x", "[MIN1", "", "\u2028", "\x85"])


def lra_lines() -> bytes:
    """The header and two rows of LRA's own files where present, else a hand-written file."""
    path = LRA_LISTOPS / "basic_val.tsv"
    if not path.is_file():
        return HAND_WRITTEN
    with open(path, "rb") as f:
        return b"".join(f.readline() for _ in range(3))


@st.composite
def listops_files(draw) -> bytes:
    header = draw(st.sampled_from(["Source\tTarget", "Target\tSource", "Source", "source\ttarget"]))
    rows = draw(st.lists(st.tuples(st.lists(TOKENS, max_size=8), FIELDS), max_size=5))
    lines = [header] + [f"{' '.join(tokens)}\t{label}" for tokens, label in rows]
    return "\r\n".join(lines).encode("utf-8", "surrogatepass")


@FUZZ
@given(
    st.one_of(listops_files(), corrupted(HAND_WRITTEN), corrupted(lra_lines()), st.binary(max_size=64)), st.booleans()
)
def test_listops_reads_or_is_one_line(data, truncate):
    result = read_or_error(lambda path: listops.read_tsv(path, 4096, truncate), "a.tsv", data)
    if result is not None:
        assert len(result) >= 1 and ((0 <= result.targets) & (result.targets <= 9)).all()
        assert all(len(row) and 1 <= row.min() and row.max() <= len(listops.VOCAB) for row in result.tokens)


# -- Pathfinder (LRA's metadata and PNGs) ----------------------------------------------------


@pytest.fixture(scope="module")
def pathfinder_root(tmp_path_factory):
    """LRA's layout with one good 32x32 image, one 8x8 image and one file that is no image."""
    image = pytest.importorskip("PIL.Image")
    root = tmp_path_factory.mktemp("pathfinder")
    (root / "imgs").mkdir()
    (root / "metadata").mkdir()
    image.fromarray(np.full((32, 32), 7, dtype=np.uint8)).save(root / "imgs" / "good.png")
    image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / "imgs" / "small.png")
    (root / "imgs" / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return root


META_FIELDS = st.sampled_from(
    ["imgs", "good.png", "small.png", "junk.png", "none.png", ".", "..", "0", "1", "2", "-1", "x"]
) | st.text(max_size=4)


@st.composite
def metadata_files(draw) -> bytes:
    lines = draw(st.lists(st.lists(META_FIELDS, max_size=6), max_size=4))
    return "\n".join(" ".join(fields) for fields in lines).encode("utf-8", "surrogatepass")


@FUZZ
@given(st.one_of(metadata_files(), corrupted(b"imgs good.png 0 1 1 0.5\nimgs good.png 1 0\n"), st.binary(max_size=32)))
def test_pathfinder_metadata_reads_or_is_one_line(pathfinder_root, data):
    meta = pathfinder_root / "metadata" / "0.npy"
    meta.write_bytes(data)
    try:
        result = read_lra(pathfinder_root, [meta], 32)
    except ConfigError as err:
        assert "\n" not in str(err), repr(str(err))
        return
    assert result["images"].shape == (len(result["labels"]), 32, 32)
    assert set(result["labels"].tolist()) <= {0, 1} and (result["images"] == 7).all()


# -- hand-picked inputs and the exact line each gives --------------------------------------

LABELS = f"expected a text and an integer label in 0..{NUM_CLASSES - 1}"


@pytest.mark.parametrize(
    "name, data, message",
    [
        (
            "a.tsv",
            b"",
            ":1: expected a header naming a text column (text/source) and a label column (label/target), got []",
        ),
        ("a.tsv", b"text\tlabel\n", ": no examples"),
        ("a.tsv", b"text\tlabel\nok\t\xc2\xb2\n", ":2: " + LABELS),
        ("a.tsv", b"text\tlabel\nok\t\xd9\xa1\n", ":2: " + LABELS),
        ("a.tsv", b"text\tlabel\nok\t" + b"9" * 30 + b"\n", ":2: " + LABELS),
        ("a.tsv", b"text\tlabel\nok\t1\textra\n", ":2: expected 2 tab-separated fields, got 3"),
        ("a.tsv", b"text\tlabel\n" + b"x" * 200_000 + b"\t1\n", ":2: field larger than field limit (131072)"),
        ("a.tsv", b"text\tlabel\n\xff\t1\n", ": not UTF-8 text (invalid start byte)"),
        ("a.jsonl", b"", ": no examples"),
        (
            "a.jsonl",
            b'{"text": "\\ud800", "label": 1}\n',
            ":1: text is not valid Unicode (a lone surrogate such as \\ud800)",
        ),
        ("a.jsonl", b"[" * 100_000 + b"\n", ":1: not JSON (nested too deeply)"),
        ("a.jsonl", b'{"text": "x", "label": ' + b"9" * 5000 + b"}\n", ":1: not JSON (a number too long to read)"),
        ("a.jsonl", b'{"text": "x", "label": true}\n', ":1: " + LABELS),
        ("a.jsonl", b'{"text": ["x"], "label": 1}\n', ":1: " + LABELS),
        ("a.jsonl", b'{"text": "x"}\n', ":1: expected an object with text and label"),
        ("a.jsonl", b'{"text": "x", "label": 1\n', ":1: not JSON (Expecting ',' delimiter)"),
    ],
)
def test_bad_text_file_names_file_and_line(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ConfigError) as err:
        read_text(path)
    assert str(err.value) == f"{path}{message}"


def test_text_with_a_byte_order_mark_reads(tmp_path):
    """Windows editors start UTF-8 files with a BOM; it is not part of the first column name."""
    tsv, jsonl = tmp_path / "a.tsv", tmp_path / "a.jsonl"
    tsv.write_bytes(b"\xef\xbb\xbftext\tlabel\nok\t1\n")
    jsonl.write_bytes(b'\xef\xbb\xbf{"text": "ok", "label": 1}\n')
    for path in (tsv, jsonl):
        data = read_text(path)
        assert data.targets.tolist() == [1] and bytes(data.tokens[0]) == b"ok"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", ":1: expected a header naming Source and Target, got ['']"),
        (b"Source\tTarget\r\n", ": no examples"),
        (
            b"Source\tTarget\r\n[MIN 1 2 ]\t\xc2\xb2\r\n",
            ":2: expected an expression and a label 0-9, got 4 tokens and label '\u00b2'",
        ),
        (b"Source\tTarget\r\n[MIN 1 x ]\t1\r\n", ":2: unknown token 'x'; expected ( ) ] [MIN [MAX [MED [SM or a digit"),
        (b"Source\tTarget\r\n( )\t1\r\n", ":2: expected an expression and a label 0-9, got 0 tokens and label '1'"),
        (b"Source\tTarget\r\n[MIN 1 ]\t1\tx\r\n", ":2: expected 2 tab-separated fields, got 3"),
        (b"Source\tTarget\r\n[MIN \xff ]\t1\r\n", ": not UTF-8 text (invalid start byte)"),
    ],
)
def test_bad_listops_file_names_file_and_line(tmp_path, data, message):
    path = tmp_path / "basic_train.tsv"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as err:
        listops.read_tsv(path, 64, False)
    assert str(err.value) == f"{path}{message}"


def test_bad_pathfinder_files_name_the_file(pathfinder_root, tmp_path):
    meta = pathfinder_root / "metadata" / "0.npy"
    meta.write_bytes(b"imgs junk.png 0 1\n")
    png = pathfinder_root / "imgs" / "junk.png"
    with pytest.raises(ConfigError) as err:
        read_lra(pathfinder_root, [meta], 32)
    assert str(err.value) == f"{meta}:1: {png} is not a readable image (cannot identify image file '{png}')"
    meta.write_bytes(b"imgs good.png 0 1\n\x93NUMPY\n")
    with pytest.raises(ConfigError) as err:
        read_lra(pathfinder_root, [meta], 32)
    assert str(err.value) == (
        f"{meta}: not UTF-8 text (invalid start byte at byte 18); LRA's metadata files are text despite the .npy name"
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TextTask(max_len="long"), "task 'text': option 'max_len' must be an integer; got 'long'"),
        (lambda: TextTask(max_len=64.0), "task 'text': option 'max_len' must be an integer; got 64.0"),
        (lambda: TextTask(truncate="maybe"), "task 'text': option 'truncate' must be true or false; got 'maybe'"),
        (
            lambda: TextTask(train_file={"a": 3}),
            "task 'text': option 'train_file' must be a string or null; got {'a': 3}",
        ),
        (lambda: TextTask(val_fraction=True), "task 'text': option 'val_fraction' must be a number; got True"),
        (lambda: TextTask(val_fraction=2), "task 'text': val_fraction must be in (0, 1), got 2"),
        (lambda: TextTask(batch_size=None), "task 'text': option 'batch_size' must be an integer; got None"),
        (lambda: ListOpsTask(path=["a"]), "task 'listops': option 'path' must be a string or null; got ['a']"),
        (lambda: PathfinderTask(max_turn="abc"), "task 'pathfinder': option 'max_turn' must be a number; got 'abc'"),
        (
            lambda: TextTask(**{"max len": 3}),
            "unknown option 'max len' for task 'text'; allowed: batch_size, "
            "num_workers, seed, train_file, val_file, test_file, val_fraction, num_classes, max_len, truncate",
        ),
    ],
)
def test_task_options_of_the_wrong_type_name_the_option(make, message):
    with pytest.raises(ConfigError) as err:
        make()
    assert str(err.value) == message


def test_task_options_take_paths_and_ints_for_floats(tmp_path):
    """What Python callers and YAML naturally pass still fits: a Path for a file, 45 for 45.0."""
    assert TextTask(train_file=tmp_path / "a.tsv").config.train_file == str(tmp_path / "a.tsv")
    assert PathfinderTask(max_turn=45).config.max_turn == 45
