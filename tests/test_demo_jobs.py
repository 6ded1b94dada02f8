"""The demo's jobs: what each waits for, and the order that starts the longest chain first."""

from __future__ import annotations

import pytest

from advise.demo import DATA_FOLDERS, _jobs


@pytest.mark.parametrize("features", ["store", "online"])
def test_jobs_start_the_critical_chain_first_and_follow_what_they_need(tmp_path, features):
    roots = {name: tmp_path / "data" / folder for name, folder in DATA_FOLDERS.items()}
    jobs = _jobs(roots, tmp_path / "runs", features, quick=True, seed=0)
    keys = [job.key for job in jobs]
    # run one after another in list order, every job finds what it waits for done
    for position, job in enumerate(jobs):
        assert set(job.after) <= set(keys[:position]), job.key
    # the mini IFM's training (half the demo on 2 cores) is taken first by a free worker
    assert keys[0] == "mini IFM" and not jobs[0].after
    if features == "store":  # the stores PRP reads are extracted before the others
        tokens = [key for key in keys if key.startswith("tokens ")]
        assert tokens[:2] == ["tokens pool", "tokens heldout"] and len(tokens) == 4
        assert set(jobs[keys.index("prp")].after) == {"tokens pool", "tokens heldout"}
