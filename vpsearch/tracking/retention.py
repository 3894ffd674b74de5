"""Top-k checkpoint retention: only the k best trials of a study keep their checkpoint.

A study of 200 trials would otherwise store 200 checkpoints nobody opens. When a trial
completes, the sender (never the training thread) ranks it by ``val/psnr_best`` against
the trials of the same study whose checkpoint is kept (tag ``vpsearch.checkpoint=kept``):

- not in the top k: its checkpoint is not uploaded at all (tag ``not_top_k``); one the study's
  folder retention deleted before a delayed upload is tagged ``gone`` (not a refusal);
- in the top k: uploaded, tagged ``kept``; trials pushed out of the top k get their
  ``checkpoints/`` deleted where the artifact repository can delete (local folders,
  the server's proxied ``mlflow-artifacts``, S3, ...), tag ``deleted``; where it cannot
  (verified by listing afterwards), tag ``kept_undeletable`` so it stops counting.

Workers completing at the same moment may briefly keep k+1; the next completion trims
it back, since every completion re-ranks all kept trials.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from vpsearch.tracking import names

log = logging.getLogger("vpsearch.tracking")
CHECKPOINT_DIR = "checkpoints"


def _kept_runs(client: Any, experiment_id: str, parent_run_id: str | None) -> list[Any]:
    filt = f"tags.`{names.TAG_CHECKPOINT}` = 'kept'"
    if parent_run_id:
        filt += f" and tags.`{names.MLFLOW_PARENT}` = '{parent_run_id}'"
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filt, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def delete_checkpoints(client: Any, run: Any) -> str:
    """Delete a run's checkpoints/ artifacts; returns the new tag value."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri)
        repo.delete_artifacts(CHECKPOINT_DIR)
    except (NotImplementedError, Exception) as e:  # noqa: BLE001 - any repo may refuse
        log.info("vpsearch: cannot delete checkpoints of run %s (%s)", run.info.run_id, e)
    # some repositories implement delete as a silent no-op: believe the listing, not the call
    left = client.list_artifacts(run.info.run_id, CHECKPOINT_DIR)
    return "kept_undeletable" if left else "deleted"


def store_checkpoint(client: Any, run_id: str, path: str) -> None:
    """Upload a checkpoint to the run's checkpoints/; into a local artifact folder (the embedded
    store) as a hard link to the trial folder's file: the same bytes, not a second copy on disk."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    uri = client.get_run(run_id).info.artifact_uri
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        dest = Path(url2pathname(parsed.path)) / CHECKPOINT_DIR / Path(path).name
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.unlink(missing_ok=True)
            os.link(path, dest)
            return
        except OSError:  # another file system, or no hard links here: upload a copy
            pass
    client.log_artifact(run_id, path, CHECKPOINT_DIR)


def retain_checkpoint(client: Any, run_id: str, op: dict[str, Any]) -> str:
    """Upload op['path'] for run_id if the trial ranks in the top op['keep']; trim the rest.

    op: {"path", "score", "keep" (None = keep all), "experiment_id", "parent_run_id"}.
    Returns the run's checkpoint tag.
    """
    keep = op.get("keep")
    if not Path(op["path"]).is_file():
        # the study's own retention (search/checkpoints.sweep) deleted it while an outage held the
        # upload back: the trial left the top k meanwhile, and there is nothing to upload or refuse
        state = "gone"
    elif keep is not None and keep <= 0:
        state = "not_top_k"
    elif keep is None:
        store_checkpoint(client, run_id, op["path"])
        state = "kept"
    else:
        kept = [r for r in _kept_runs(client, op["experiment_id"], op.get("parent_run_id"))
                if r.info.run_id != run_id]
        ranking = sorted([(names.score(r.data.metrics.get(names.BEST_PSNR)), r.info.run_id, r) for r in kept]
                         + [(names.score(op["score"]), run_id, None)], key=lambda x: x[0], reverse=True)
        top = {rid for _, rid, _ in ranking[:keep]}
        if run_id in top:
            store_checkpoint(client, run_id, op["path"])
            state = "kept"
        else:
            state = "not_top_k"
        for _, rid, run in ranking[keep:]:
            if run is not None:  # a trial pushed out of the top k by this one
                client.set_tag(rid, names.TAG_CHECKPOINT, delete_checkpoints(client, run))
    client.set_tag(run_id, names.TAG_CHECKPOINT, state)
    return state
