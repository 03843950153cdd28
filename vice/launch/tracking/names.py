"""Names shared by what writes runs (the job) and what reads them (vice-sweep, vice-tune, analysis)."""

from __future__ import annotations

#: Tag holding a job run's :func:`vice.launch.tracking.identity.compute_run_key`; a parent run has none.
RUN_KEY_TAG = "run_key"
#: File in the job dir holding the job's MLflow run id.
RUN_ID_FILE = "mlflow_run_id"
#: Metric (logged once, at step 0) holding the number of training images: with ``data.batch_size`` and
#: ``train/world_size`` it turns training steps into epochs (Fig. 6).
NUM_IMAGES_METRIC = "train/num_images"
#: The experiment tag MLflow 3's UI reads to choose an experiment's landing page, and vice's value: model
#: training, so the UI opens on the runs instead of the GenAI "Traces" page (``genai_development``).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_EXPERIMENT_KIND = "custom_model_development"
#: File in the job dir holding the token of the run being created (:func:`open_run` writes it first, so a
#: job killed between creating its run and writing :data:`RUN_ID_FILE` finds the run by its token).
RUN_TOKEN_FILE = "mlflow_run_token"
#: Tag holding that token on the run.
RUN_TOKEN_TAG = "run_token"
#: Tag listing every sweep a job run belonged to, oldest first, comma-separated: a job resumed by a later
#: sweep moves under that sweep's parent run (``mlflow.parentRunId``, ``sweep_id``) but stays in this list.
SWEEP_IDS_TAG = "sweep_ids"
#: Metric holding a job run's active seconds: the sum of its attempts' time from opening to closing the
#: run (a resumed run does not count the time it was dead). Logged at step 0 on every close.
ACTIVE_TIME_METRIC = "job/active_s"
