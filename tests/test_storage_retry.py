"""Which storage errors StudyStorage.call retries (a server restart) and which it raises at once."""

from __future__ import annotations

import optuna
import psycopg2
import pytest
import sqlalchemy.exc
from postgres import postgres_or_skip
from sqlalchemy import text

from vpsearch.search.storage import StorageUnavailable, open_storage, retrying


def failing_then(result: str, errors: list[Exception]):
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        if errors:
            raise errors.pop(0)
        return result
    return fn, calls


def lost(kind: type, message: str, invalidated: bool) -> Exception:
    return kind("SELECT 1", {}, psycopg2.DatabaseError(message), connection_invalidated=invalidated)


@pytest.mark.parametrize("error", [
    lost(sqlalchemy.exc.OperationalError, "server closed the connection unexpectedly", False),
    # psycopg2 reports some cut connections as a plain DatabaseError; SQLAlchemy marks them invalidated
    lost(sqlalchemy.exc.DatabaseError, "error with status PGRES_TUPLES_OK and no message from the libpq", True),
    lost(sqlalchemy.exc.InternalError, "SSL SYSCALL error: EOF detected", True),
])
def test_a_lost_connection_is_retried_until_it_answers(error, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    fn, calls = failing_then("ok", [error, error])
    assert retrying(fn, "reading trials", "postgresql://db/optuna", wait=60) == "ok"
    assert calls["n"] == 3


def test_a_database_error_on_a_live_connection_is_raised_at_once(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    error = lost(sqlalchemy.exc.DatabaseError, 'relation "trials" does not exist', False)
    fn, calls = failing_then("ok", [error])
    with pytest.raises(sqlalchemy.exc.DatabaseError):
        retrying(fn, "reading trials", "postgresql://db/optuna", wait=60)
    assert calls["n"] == 1


def test_the_retry_budget_ends_in_one_line_naming_the_storage_and_the_cause(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr("time.monotonic", lambda: clock["t"])
    monkeypatch.setattr("time.sleep", lambda s: clock.update(t=clock["t"] + s))
    fn, _ = failing_then("ok", [lost(sqlalchemy.exc.OperationalError, "connection refused", False)] * 20)
    with pytest.raises(StorageUnavailable) as e:
        retrying(fn, "taking a trial", "postgresql://vp:***@db/optuna", wait=10)
    assert str(e.value).startswith("storage postgresql://vp:***@db/optuna unreachable: taking a trial failed ")
    assert "(connection refused)" in str(e.value) and "\n" not in str(e.value)


def test_a_pending_rollback_is_retried():
    """PostgreSQL restarted while a session was mid-transaction: SQLAlchemy then refuses that
    session until it is rolled back, and Optuna reports it as a failed commit."""
    cause = sqlalchemy.exc.PendingRollbackError("Can't reconnect until invalid transaction is rolled back")
    error = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    error.__cause__ = cause
    fn, calls = failing_then("ok", [error])
    assert retrying(fn, "reading trials", "postgresql://db/optuna", wait=60) == "ok"
    assert calls["n"] == 2


@pytest.mark.postgres
def test_a_worker_session_cut_mid_transaction_recovers():
    """What a worker met in CI: its thread's session lost its connection inside a transaction
    (PostgreSQL restarted); the next storage call must recover, not end the worker with a traceback."""
    with postgres_or_skip() as pg:
        store = open_storage(pg.create_database("optuna"), wait=30)
        study = optuna.create_study(study_name="cut", storage=store.storage)
        study.enqueue_trial({"x": 1.0})
        session = store.rdb.scoped_session()  # this thread's session, the one Optuna's calls use
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar()  # opens a transaction
        with store.rdb.engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        with pytest.raises(sqlalchemy.exc.OperationalError):
            session.execute(text("SELECT 1"))  # the connection is gone, the transaction with it
        trials = store.call(lambda: study.get_trials(), "reading trials")
        assert [t.state for t in trials] == [optuna.trial.TrialState.WAITING]
