"""The runs root's own MLflow store, made to move with the root.

MLflow records absolute artifact locations (each experiment's, each run's) in its sqlite
store. A runs folder copied or moved elsewhere would keep reading and writing the original's
artifact folder. The store remembers the artifact folder it was written for (a marker file
beside mlflow.db); when it is opened from another place, every stored location under the old
folder is rewritten to the new one, in this copy's database only.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

MARKER = "artifact-root.json"
COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"))


def _recorded(db: Path) -> str | None:
    marker = db.parent / MARKER
    if marker.is_file():
        return json.loads(marker.read_text()).get("artifacts")
    # a store written before the marker existed: its experiments sit under ROOT/mlflow/artifacts/NAME
    with sqlite3.connect(db) as conn:
        for (loc,) in conn.execute("SELECT artifact_location FROM experiments"):
            if loc and "/mlflow/artifacts/" in loc:
                return loc.split("/mlflow/artifacts/", 1)[0] + "/mlflow/artifacts"
    return None


def relocate(db: Path, artifacts: Path) -> int:
    """Point the store's artifact locations at `artifacts` (this root's); returns rows rewritten.
    Callers hold the store's creation lock."""
    new = artifacts.resolve().as_uri()
    old = _recorded(db)
    changed = 0
    if old and old != new:
        with sqlite3.connect(db) as conn:
            for table, column in COLUMNS:
                cur = conn.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                                   f"WHERE substr({column}, 1, ?) = ?", (new, len(old) + 1, len(old), old))
                changed += cur.rowcount
    (db.parent / MARKER).write_text(json.dumps({"artifacts": new}) + "\n")
    return changed
