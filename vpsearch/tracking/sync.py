"""`vpsearch sync`: deliver what a spool still holds (after an outage, a crash or a kill).

Each left-over stream is replayed from its first unacknowledged operation, in order,
with the same Delivery code the background sender uses. Streams whose owner process
is still alive and delivering are skipped (unless forced), so sync never races a
running worker. With ``rejected=True`` the operations MLflow refused as client errors
(rejected.jsonl) are replayed too, in their order, for after the cause was fixed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from vpsearch.settings import EMBEDDED, embedded_uri, redact
from vpsearch.tracking import create_sqlite_store
from vpsearch.tracking.journal import Stream, pending_streams, spool_root
from vpsearch.tracking.probe import TrackingUnavailable, apply_env_defaults, check_reachable
from vpsearch.tracking.sender import Delivery, is_permanent

log = logging.getLogger("vpsearch.tracking")


@dataclass
class SyncReport:
    delivered_ops: int = 0
    completed_runs: list[str] = field(default_factory=list)
    skipped_live: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # stream -> why it stopped
    refused_ops: int = 0
    replayed_rejected: int = 0  # refused operations delivered by --rejected
    still_rejected: int = 0  # ... and those refused again
    kept_rejected: int = 0  # refused operations left alone (no --rejected)

    @property
    def ok(self) -> bool:
        return not self.failed


def _groups(stream: Stream) -> list[list[int]]:
    """Pending operations, consecutive log_batch ones merged (as the sender does)."""
    out: list[list[int]] = []
    for i in range(stream.acked, len(stream.ops)):
        op = stream.ops[i]["op"]
        if out and op == "log_batch" and stream.ops[out[-1][-1]]["op"] == "log_batch" and len(out[-1]) < 500:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def replay(stream: Stream, delivery: Delivery, report: SyncReport) -> None:
    for group in _groups(stream):
        try:
            delivery.execute(stream, [stream.ops[i] for i in group])
        except Exception as err:  # noqa: BLE001
            if not is_permanent(err):
                raise
            for i in group:  # retry one by one so only the bad operation is refused
                try:
                    delivery.execute(stream, [stream.ops[i]])
                except Exception as one:  # noqa: BLE001
                    if not is_permanent(one):
                        raise
                    stream.reject(i, f"{type(one).__name__}: {one}")
                    report.refused_ops += 1
        stream.ack(group[-1] + 1)
        report.delivered_ops += len(group)


def replay_rejected(stream: Stream, delivery: Delivery, report: SyncReport) -> None:
    """Deliver the stream's refused operations in order; those refused again stay recorded."""
    records = stream.rejected()
    left: list[dict] = []
    for i, rec in enumerate(records):
        try:
            delivery.execute(stream, [rec["op"]])
        except Exception as err:  # noqa: BLE001
            if not is_permanent(err):  # the server went away: keep the rest for the next sync
                stream.set_rejected(left + records[i:])
                raise
            left.append({**rec, "error": f"{type(err).__name__}: {err}"})
            report.still_rejected += 1
            continue
        report.replayed_rejected += 1
    stream.set_rejected(left)


def sync_spool(root: str | Path | None = None, uri: str | None = None, force: bool = False,
               rejected: bool = False) -> SyncReport:
    """Replay every stream of ROOT's spool; uri overrides the tracking URI each stream recorded;
    rejected=True also replays the operations MLflow refused before."""
    from mlflow import MlflowClient

    apply_env_defaults()
    report = SyncReport()
    clients: dict[str, Delivery] = {}
    for stream in pending_streams(spool_root(root)):
        refused = stream.rejected()
        # a complete stream gets no more operations: its refused ones may be replayed while its owner runs
        if not force and stream.owner_alive() and not (rejected and refused and stream.complete):
            report.skipped_live.append(stream.name)
            continue
        if not rejected:
            report.kept_rejected += len(refused)
        if stream.pending == 0 and not (rejected and refused):
            stream.discard()  # delivered, only its final mark was missing (a killed process)
            continue
        target = uri or stream.meta["tracking_uri"]
        if target == EMBEDDED:  # the runs root's own store, wherever the root is now
            target = embedded_uri(root)
            if target not in clients:
                create_sqlite_store(target, root)
        try:
            if target not in clients:
                check_reachable(target)
                clients[target] = Delivery(MlflowClient(tracking_uri=target))
            if rejected and refused:
                replay_rejected(stream, clients[target], report)
            replay(stream, clients[target], report)
        except TrackingUnavailable as e:
            report.failed[stream.name] = str(e)
            continue
        except Exception as e:  # noqa: BLE001 - keep going with the other streams
            report.failed[stream.name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            continue
        if stream.complete:
            report.completed_runs.append(f"{stream.meta.get('run_name')} ({stream.run_id})")
            stream.discard()
    if report.failed:
        log.warning("vpsearch: %d spool streams could not be delivered to %s", len(report.failed),
                    redact(uri or "their tracking URI"))
    return report


def describe(report: SyncReport) -> str:
    lines = [f"delivered {report.delivered_ops} operations; {len(report.completed_runs)} runs complete"]
    lines += [f"  done: {r}" for r in report.completed_runs]
    if report.replayed_rejected or report.still_rejected:
        lines.append(f"  replayed {report.replayed_rejected} refused operations"
                     + (f"; {report.still_rejected} refused again (see rejected.jsonl in the spool)"
                        if report.still_rejected else ""))
    if report.refused_ops:
        lines.append(f"  {report.refused_ops} operations refused by MLflow (see rejected.jsonl in the spool)")
    if report.kept_rejected:
        lines.append(f"  {report.kept_rejected} operations refused earlier are kept in the spool; once the cause "
                     "is fixed, replay them with `vpsearch sync --rejected`")
    lines += [f"  skipped (the process that owns it still runs and delivers it): {s}" for s in report.skipped_live]
    lines += [f"  not delivered: {s}: {why}" for s, why in report.failed.items()]
    return "\n".join(lines)
