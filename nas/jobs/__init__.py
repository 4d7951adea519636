"""Work run as jobs by processes and machines sharing a folder: `queue.py`, `nas-rank`'s
standalone trainings."""
