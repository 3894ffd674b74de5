"""Which storage errors StudyStorage.call retries (a server restart) and which it raises at once."""

from __future__ import annotations

import psycopg2
import pytest
import sqlalchemy.exc

from vpsearch.search.storage import StorageUnavailable, retrying


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
