"""`nas-rank`'s standalone trainings as jobs: `job.py` (a job as plain data, its result file),
`engine.py` (the jobs run on submitit: local processes, SLURM, or this process)."""
