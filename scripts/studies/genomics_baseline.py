"""The genomics task's baselines, printed as JSON: the majority class and multinomial logistic
regression on k-mer counts (k = 3, 4 and 6), fit on train, scored on val and test
(docs/tasks.md, "DNA classification"). Options are the task's, as on nas-search's command line;
without any, the generated task at its defaults, which experiment=genomics_quick searches.

    python scripts/studies/genomics_baseline.py --out genomics_baseline.json
    python scripts/studies/genomics_baseline.py task.path=~/.genomic_benchmarks/human_nontata_promoters \
        task.num_classes=2 task.max_len=251
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

from nas.tasks.genomics import GenomicsTask, kmer_baseline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the harness, however this file is run
from harness import write_report  # one JSON report for benchmarks and studies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("options", nargs="*", help="task.<option>=<value>, as nas-search takes them")
    parser.add_argument("--k", type=int, nargs="+", default=[3, 4, 6], help="k-mer lengths")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    options = {}
    for option in args.options:
        key, _, value = option.partition("=")
        options[key.removeprefix("task.")] = yaml.safe_load(value)
    with tempfile.TemporaryDirectory() as data_dir:
        task = GenomicsTask(data_dir=data_dir, **options)
        report = {"task": task.record(), "majority": task.baseline()}
        for k in args.k:
            start = time.perf_counter()
            report[f"kmer{k}_logistic"] = {**kmer_baseline(task, k), "seconds": round(time.perf_counter() - start, 1)}
    write_report(report, args.out)


if __name__ == "__main__":
    main()
