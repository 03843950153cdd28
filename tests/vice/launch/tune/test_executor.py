"""Whose a SLURM job id is: a trial records the job it submitted and checks it before adopting it again."""

import json

from vice.launch.sweep.slurm import SlurmQueryError, SlurmRecord
from vice.launch.tune.executor import ATTR_SLURM_RECORD, slurm_record_attrs, trial_job_is_ours

SUBMITTED = SlurmRecord("41", "tune.abc.1f2e3d", "alice", "2026-12-06T04:11:03", "PENDING")


def answers(*records: SlurmRecord):
    """A stand-in for squeue/sacct: the given jobs, by id (the real query needs a cluster)."""
    return lambda ids: {r.job_id: r for r in records if r.job_id in ids}


def mute(ids):
    raise SlurmQueryError("squeue: error: Unable to contact slurm controller")


def test_a_submitted_job_is_recorded_without_its_state():
    attrs = slurm_record_attrs("41", answers(SUBMITTED))
    assert json.loads(attrs[ATTR_SLURM_RECORD]) == {
        "job_id": "41",
        "name": "tune.abc.1f2e3d",
        "user": "alice",
        "submit_time": "2026-12-06T04:11:03",
        "state": "",
    }
    assert slurm_record_attrs("41", mute) == {}  # no record: the id alone will name it, as before


def test_a_recycled_id_is_not_ours_but_a_requeued_job_is():
    attrs = slurm_record_attrs("41", answers(SUBMITTED))
    requeued = SlurmRecord("41", SUBMITTED.name, "alice", "2026-12-06T05:00:00", "RUNNING")
    recycled = SlurmRecord("41", "table3_decomposition.s2.aaaaaa", "alice", "2026-12-06T06:00:00", "RUNNING")
    assert trial_job_is_ours(attrs, answers(SUBMITTED))
    assert trial_job_is_ours(attrs, answers(requeued))
    assert not trial_job_is_ours(attrs, answers(recycled))  # the cluster restarted; id 41 is someone else's
    assert not trial_job_is_ours(attrs, answers())  # SLURM knows no job 41 at all any more
    assert trial_job_is_ours(attrs, mute)  # SLURM does not answer: keep the id's word
    assert trial_job_is_ours({}, answers(recycled))  # a trial recorded before records existed
