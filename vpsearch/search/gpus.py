"""`vpsearch worker --device cuda:free`: a worker takes one GPU that no other worker holds.

Docker Compose cannot hand the replicas of a scaled service different GPUs (with
`count: 1` every replica of `--scale worker=N` gets the same first GPU; docker/compose
#11863), so each worker container sees all of its host's GPUs and claims one itself: a
PostgreSQL session advisory lock keyed by the GPU's UUID (unique across machines and
containers), held on a connection of its own for the worker's life. The lock goes with
the connection, so a worker that dies frees its GPU. A PostgreSQL restart drops every
claim: running workers keep their GPU, but one started in that moment may share it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from vpsearch.search.spec import StudyError
from vpsearch.search.storage import StudyStorage

FREE = "cuda:free"


def gpu_uuids() -> list[str]:
    """UUIDs of the visible CUDA devices, in torch's index order."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]


def lock_key(uuid: str) -> int:
    return int.from_bytes(hashlib.sha1(f"vpsearch-gpu:{uuid}".encode()).digest()[:8], "big", signed=True)


def claim_gpu(store: StudyStorage, uuids: list[str]) -> tuple[int, Any]:
    """-> (index of the first unclaimed GPU, the connection that holds the claim: keep it open)."""
    if not uuids:
        raise StudyError(f"--device {FREE}: no CUDA device is visible here (use --device cpu)")
    if store.rdb is None or store.rdb.engine.name != "postgresql":
        raise StudyError(f"--device {FREE} needs a PostgreSQL storage to claim GPUs in (storage {store.shown}); "
                         "give each worker its own --device cuda:N, or use `study run --devices cuda`")
    from sqlalchemy import text

    def claim() -> tuple[int, Any] | None:
        conn = store.rdb.engine.connect()
        for index, uuid in enumerate(uuids):
            if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(uuid)}).scalar():
                conn.commit()  # a session lock outlives the transaction; do not sit idle in one
                return index, conn
        conn.close()
        return None

    got = store.call(claim, "claiming a GPU")
    if got is None:
        raise StudyError(f"--device {FREE}: all {len(uuids)} GPU(s) here are held by other vpsearch workers; "
                         "run one worker per GPU")
    return got
