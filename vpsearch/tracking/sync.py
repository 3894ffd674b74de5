"""`vpsearch sync`: deliver what a spool still holds (after an outage, a crash or a kill).

Each left-over stream is replayed from its first unacknowledged operation, in order,
with the same Delivery code the background sender uses. Streams whose owner process
is still alive and delivering are skipped (unless forced), so sync never races a
running worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from vpsearch.settings import redact
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


def sync_spool(root: str | Path | None = None, uri: str | None = None, force: bool = False) -> SyncReport:
    """Replay every stream of ROOT's spool; uri overrides the tracking URI each stream recorded."""
    from mlflow import MlflowClient

    apply_env_defaults()
    report = SyncReport()
    clients: dict[str, Delivery] = {}
    for stream in pending_streams(spool_root(root)):
        if not force and stream.owner_alive():
            report.skipped_live.append(stream.name)
            continue
        if stream.pending == 0:  # delivered, only its final mark was missing (a killed process)
            stream.discard()
            continue
        target = uri or stream.meta["tracking_uri"]
        try:
            if target not in clients:
                check_reachable(target)
                clients[target] = Delivery(MlflowClient(tracking_uri=target))
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
    if report.refused_ops:
        lines.append(f"  {report.refused_ops} operations refused by MLflow (see rejected.jsonl in the spool)")
    lines += [f"  skipped (the process that owns it still runs and delivers it): {s}" for s in report.skipped_live]
    lines += [f"  not delivered: {s}: {why}" for s, why in report.failed.items()]
    return "\n".join(lines)
