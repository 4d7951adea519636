"""scripts/benchmarks/: the shared harness (a child process per case, medians, JSON out), and
every benchmark's smallest case runs and reports its keys. Nothing here asserts a time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "scripts" / "benchmarks"

# a benchmark of two cases, the second failing in its child
TOY = f"""
import os, sys
sys.path.insert(0, {str(BENCHMARKS)!r})
from harness import in_child, main, parser, settings

def measure(args, x):
    if x < 0:
        sys.exit(f"no case {{x}}")
    return {{"square": x * x * args.scale, "pid": os.getpid()}}

def sweep(args):
    rows = [in_child(x) for x in args.xs]
    return {{"settings": settings(args), "rows": rows, "pid": os.getpid(),
             "failed": in_child(-1, keep_errors=True) if args.failing == "kept" else None}}

if __name__ == "__main__":
    cli = parser(__doc__ or "A toy benchmark.")
    cli.add_argument("--xs", type=int, nargs="+", default=[2, 3])
    cli.add_argument("--scale", type=int, default=1)
    cli.add_argument("--failing", default="none")
    main(cli, sweep, measure)
"""


@pytest.fixture
def toy(tmp_path):
    path = tmp_path / "toy.py"
    path.write_text(TOY)
    return lambda *args: subprocess.run(
        [sys.executable, str(path), *args], check=False, capture_output=True, text=True, cwd=tmp_path
    )


def test_each_case_runs_in_a_child_with_the_benchmarks_own_arguments(toy, tmp_path):
    done = toy("--scale", "10", "--out", str(tmp_path / "toy.json"), "--failing", "kept")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == json.loads((tmp_path / "toy.json").read_text())  # printed and written alike
    assert [row["square"] for row in report["rows"]] == [40, 90]  # the child parsed --scale too
    pids = {row["pid"] for row in report["rows"]}
    assert len(pids) == 2 and report["pid"] not in pids  # a fresh process per case
    assert report["settings"] == {"xs": [2, 3], "scale": 10, "failing": "kept"}  # no --out, no --child
    assert report["failed"] == {"error": "no case -1"}  # kept as a row: the sweep goes on


def test_a_failed_case_stops_the_benchmark_in_one_line(toy):
    done = toy("--xs", "2", "-1")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == "toy.py: case [-1] failed: no case -1"


def test_timings_are_per_call_after_the_warmup_and_interleaved(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import harness

    calls = []
    times = harness.seconds(lambda: calls.append("step"), 3, warmup=2, before=lambda: calls.append("before"))
    assert len(times) == 3 and calls == ["before", "step"] * 5
    calls.clear()
    rounds = harness.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 2)
    assert calls == ["a", "b"] * 3 and [len(t) for t in rounds.values()] == [2, 2]
    assert harness.timer_seconds(lambda: sum(range(100)), min_run_time=0.01) > 0


# the smallest case of each benchmark, and the keys its report has (the docs' tables read them)
SMALLEST = {
    "accuracy": (
        [
            "--lengths",
            "128",
            "--logit-stds",
            "1.0",
            "--ranks",
            "4",
            "--rounds",
            "1",
            "--heads",
            "1",
            "--head-dim",
            "16",
            "--features",
            "16",
            "--bucket-size",
            "16",
            "--cluster",
            "16",
            "--draws",
            "1",
        ],
        {"settings", "references", "results"},
    ),
    "attention": (
        [
            "--ops",
            "full",
            "local_w256",
            "gla",
            "--lengths",
            "64",
            "--dim",
            "32",
            "--heads",
            "2",
            "--repeats",
            "1",
            "--matmul-size",
            "64",
        ],
        {"settings", "cpu", "matmul_gflops", "results"},
    ),
    "darts": (
        [
            "--space",
            "search_spaces/tiny.yaml",
            "--seq-len",
            "16",
            "--batch",
            "1",
            "--steps",
            "1",
            "--modes",
            "single_path,darts_k2",
        ],
        {"settings", "results", "ratios"},
    ),
    "decode": (
        ["--ops", "full", "--contexts", "32", "--dim", "16", "--depth", "1", "--heads", "2", "--tokens", "2"]
        + ["--repeats", "1"],
        {"settings", "cpu_count", "loadavg_at_start", "results", "loadavg_at_end"},
    ),
    "ddp": (
        ["--seq-len", "16", "--batch", "1", "--warmup", "1", "--steps", "1", "--long-len", "32", "--long-steps", "1"],
        {"settings", "cpu_count", "load_avg", "ddp", "speedup_2_over_1", "long"},
    ),
    "memory": (
        ["--depths", "1", "2", "--lengths", "32", "--modes", "plain", "--dim", "32"],
        {"settings", "results", "activation_depth2_over_depth1"},
    ),
    "mixers": (
        ["--ops", "sdpa_causal", "gla", "--lengths", "64", "--dim", "32", "--heads", "2", "--repeats", "1"]
        + ["--matmul-size", "64", "--state-dim", "8"],
        {"settings", "results"},
    ),
    "supernet": (
        ["--space", "search_spaces/tiny.yaml", "--seq-len", "16", "--batch", "1", "--archs", "1", "--repeats", "1"],
        {"settings", "results", "max_ratio", "median_ratio"},
    ),
}


def test_every_benchmark_has_a_smallest_case():
    assert set(SMALLEST) == {p.stem for p in BENCHMARKS.glob("*.py")} - {"harness"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALLEST))
def test_the_smallest_case_reports_its_keys(name, tmp_path):
    args, keys = SMALLEST[name]
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *args, "--threads", "1", "--out", str(tmp_path / "out.json")],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert set(report) == keys and report == json.loads((tmp_path / "out.json").read_text())
    assert "error" not in json.dumps(report.get("results", report))


def run_benchmark(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *args, "--threads", "1"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


TINY_ATTENTION = ["--lengths", "64", "--dim", "32", "--heads", "2", "--repeats", "1", "--matmul-size", "64"]


@pytest.mark.slow
def test_attention_causal_builds_the_causal_forms():
    done = run_benchmark("attention", "--ops", "full", "retnet", "--causal", *TINY_ATTENTION)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["settings"]["causal"] is True and list(report["results"]) == ["full", "retnet"]
    assert all(
        "seconds" in row and "loadavg_1min" in row for rows in report["results"].values() for row in rows.values()
    )


def test_attention_causal_refuses_an_op_without_a_causal_form_in_one_line():
    done = run_benchmark("attention", "--ops", "full", "linformer_k256", "--causal", *TINY_ATTENTION)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "attention.py: --causal, but no causal form: linformer_k256 (" + linformer_refusal() + ")"
    ]


def linformer_refusal() -> str:
    from nas.ops.attention import ATTENTION

    return ATTENTION.get("linformer").causal_refusal


@pytest.mark.slow
def test_decode_times_the_uncached_prefix_only_up_to_its_limit():
    args = ["--ops", "gla", "--contexts", "16", "32", "--uncached-upto", "16", "--dim", "64", "--depth", "1"]
    done = run_benchmark("decode", *args, "--heads", "2", "--tokens", "2", "--repeats", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    short, long = (json.loads(done.stdout)["results"]["gla"][n] for n in ("16", "32"))
    assert short["uncached_ms_per_token"] > 0 and short["speedup"] > 0
    assert long["uncached_ms_per_token"] is None and long["speedup"] is None and long["cached_ms_per_token"] > 0
    assert short["state_mib"] == long["state_mib"] > 0  # GLA's state does not grow with the context
