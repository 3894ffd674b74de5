"""`vpsearch worker --device cuda:free`: a worker takes one GPU that no other worker holds.

Docker Compose cannot hand the replicas of a scaled service different GPUs (with
`count: 1` every replica of `--scale worker=N` gets the same first GPU; docker/compose
#11863), so each worker container sees all of its host's GPUs and claims one itself: a
PostgreSQL session advisory lock keyed by the GPU's UUID (unique across machines and
containers), held on a connection of its own for the worker's life. The lock goes with
the connection, so a worker that dies frees its GPU. A PostgreSQL restart drops every
claim: running workers keep their GPU, but one started in that moment may share it.

With K trials per device (`--trials-per-device K`) each GPU has K slots, each its own lock
keyed by (UUID, slot); slot 0's key is the one-worker-per-GPU key, so workers started with
and without the option still count each other. Slots are taken breadth first: every GPU
gets one worker before any gets a second.
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


def lock_key(uuid: str, slot: int = 0) -> int:
    name = f"vpsearch-gpu:{uuid}" + (f":{slot}" if slot else "")
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)


def claim_order(n_gpus: int, per_device: int = 1) -> list[tuple[int, int]]:
    """(GPU index, slot) in the order a worker tries them: slot 0 of every GPU, then slot 1, ..."""
    return [(index, slot) for slot in range(per_device) for index in range(n_gpus)]


def claim_gpu(store: StudyStorage, uuids: list[str], per_device: int = 1) -> tuple[int, Any]:
    """-> (index of the first GPU with a free slot, the connection that holds the claim: keep it open)."""
    if per_device < 1:
        raise StudyError(f"--trials-per-device {per_device}: expected 1 or more")
    if not uuids:
        raise StudyError(f"--device {FREE}: no CUDA device is visible here (use --device cpu)")
    if store.rdb is None or store.rdb.engine.name != "postgresql":
        raise StudyError(f"--device {FREE} needs a PostgreSQL storage to claim GPUs in (storage {store.shown}); "
                         "give each worker its own --device cuda:N, or use `study run --devices cuda`")
    from sqlalchemy import text

    def claim() -> tuple[int, Any] | None:
        conn = store.rdb.engine.connect()
        for index, slot in claim_order(len(uuids), per_device):
            if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(uuids[index], slot)}).scalar():
                conn.commit()  # a session lock outlives the transaction; do not sit idle in one
                return index, conn
        conn.close()
        return None

    got = store.call(claim, "claiming a GPU")
    if got is None:
        each = f" ({per_device} trials per device)" if per_device > 1 else ""
        raise StudyError(f"--device {FREE}: all {len(uuids)} GPU(s) here are held by other vpsearch workers"
                         f"{each}; run at most {per_device} worker(s) per GPU")
    return got
