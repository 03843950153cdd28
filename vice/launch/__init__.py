"""The orchestration floor: entry points, the job lifecycle, sweeps, studies and the MLflow tracking.

It sits above the method library (everything else in :mod:`vice`), which never imports it
(docs/architecture.md; tests/test_architecture.py checks the arrows).

- :mod:`vice.launch.cli`: ``vice-train`` and ``vice-eval``;
  :mod:`vice.launch.app` is the one Hydra ``main`` every Hydra entry point shares;
- :mod:`vice.launch.job`: one sweep job's life cycle (train, evaluate, record), ``python -m vice.launch.job``;
- :mod:`vice.launch.overrides`: Hydra override text (splitting, display, quoting);
- :mod:`vice.launch.tracking`: MLflow: one client, the run identity, the write side (jobs, sweeps) and
  the read side (which :mod:`analysis` uses);
- :mod:`vice.launch.sweep`: ``vice-sweep`` (compose, checks, cost, SLURM, plan, launch, cli);
- :mod:`vice.launch.tune`: ``vice-tune`` (space, executor, driver, results, cli).
"""
