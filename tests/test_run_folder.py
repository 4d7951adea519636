"""nas.run_folder.is_rank_zero: the one rank check in nas/."""

import re
from pathlib import Path

from pytorch_lightning.utilities import rank_zero_only

from nas.run_folder import is_rank_zero

NAS = Path(__file__).resolve().parents[1] / "nas"


def test_rank_zero_follows_the_launchers_rank_without_a_process_group(monkeypatch):
    assert is_rank_zero()
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert not is_rank_zero()


def test_no_other_module_asks_for_the_rank():
    asks = re.compile(r"rank_zero_only\.rank|get_rank\(|is_global_zero|global_rank\b|\bdef _rank\(")
    wrong = [
        f"{p.relative_to(NAS.parent)}:{i}"
        for p in NAS.rglob("*.py")
        if p.name != "run_folder.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if asks.search(line)
    ]
    assert not wrong, "use nas.run_folder.is_rank_zero: " + ", ".join(wrong)
