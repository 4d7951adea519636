"""`nas-decide`: decide a finished DARTS or GDAS search again with another `strategy.decide.rule`,
from its last checkpoint, without training (`nas.decide_again.decide_again`). Prints JSON: the
two folders, the rule, the decided arch, each decision's paired test of winner against runner-up
and the confidence line (as the new folder's margins.yaml holds them).

    nas-decide run=runs/search/<timestamp> strategy.decide.rule=top2
    nas-decide run=runs/search/<timestamp> strategy.decide.rule=greedy search.eval_batches=32
    nas-decide run=runs/search/<timestamp> strategy.decide.rule=argmax out=runs/search/argmax_again
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nas.cli.common import fail, one_line_errors
from nas.decide_again import decide_again
from nas.safe_load import read_yaml
from nas.strategies.darts import DECIDE

USAGE = f"""arguments, as key=value like nas-search's:
  run=PATH                   a finished darts or gdas search run folder (required)
  strategy.decide.rule=RULE  the rule: {", ".join(DECIDE)} (required)
  out=PATH                   the new run folder, which must not exist (default: <run>_<RULE> beside it)
  any other key=value        more nas-search overrides, after the run's own (e.g. search.eval_batches=32)"""


@one_line_errors("nas-decide")
def run(run: Path, decide: str, out: Path | None, overrides: list[str]) -> dict:
    """Decide `run` again into a new folder; print and return what was decided."""
    folder = decide_again(run, decide, out, overrides)
    sidecar = (
        read_yaml(folder / "margins.yaml", "the decision's margins") if (folder / "margins.yaml").is_file() else {}
    )
    decided = {
        "run": str(run),
        "out": str(folder),
        "decide": decide,
        "arch": read_yaml(folder / "best_arch.yaml", "the decided arch"),
        "evidence": sidecar.get("evidence", []),
        "confidence": sidecar.get("confidence"),
    }
    print(json.dumps(decided, indent=2))
    return decided


def main(argv: list[str] | None = None) -> None:
    doc = __doc__.split("\n\n")
    what = doc[0].removeprefix("`nas-decide`: ")
    parser = argparse.ArgumentParser(
        prog="nas-decide",
        description=what[0].upper() + what[1:],
        epilog=f"{USAGE}\n\nexamples:\n{doc[1]}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="see below")
    parser.error = lambda message: fail("nas-decide", message)  # one line, not usage + error
    given = parser.parse_args(argv).overrides
    options, overrides = {}, []
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail("nas-decide", f"{item!r}: arguments are key=value (run=..., strategy.decide.rule=...)")
        if key in ("run", "out", "strategy.decide.rule"):
            options[key] = value
        else:
            overrides.append(item)
    for key in ("run", "strategy.decide.rule"):
        if not options.get(key):
            fail("nas-decide", f"missing value for '{key}': pass {key}=...")
    out = options.get("out")
    run(Path(options["run"]), options["strategy.decide.rule"], Path(out) if out else None, overrides)


if __name__ == "__main__":  # `python -m nas.cli.decide`
    main()
