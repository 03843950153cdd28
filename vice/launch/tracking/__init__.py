"""MLflow tracking, in two sides around one client (:func:`vice.launch.tracking.client.mlflow_client`).

- the read side, which :mod:`analysis` may import: :mod:`~vice.launch.tracking.client` (the client, the
  store's URI), :mod:`~vice.launch.tracking.params` (how a value is written as a param or an override),
  :mod:`~vice.launch.tracking.identity` (a run's key), :mod:`~vice.launch.tracking.names` (tag, metric
  and file names) and :mod:`~vice.launch.tracking.read` (every run of an experiment, paged once);
- the write side, for jobs, sweeps and studies only: :mod:`~vice.launch.tracking.write`.

Layout (docs/architecture.md): one MLflow experiment per paper experiment; a parent run per sweep
invocation, created by the submitting process *before* the fan-out (concurrent first-time creation of an
SQLite store races in its migrations); one child run per job.

mlflow is imported inside functions: submitit pickles the entry point with cloudpickle, and nothing here
holds a lock, a handler or a client at module level.
"""
