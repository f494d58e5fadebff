"""Opening the database is safe from several processes (workers) at once."""

import threading

from gateway.db import open_database


def test_concurrent_first_opens_of_a_new_database_all_succeed(tmp_path):
    # Without the bounded retry around the switch to WAL, about one trial in thirty failed
    # with "database is locked".
    failures: list[BaseException] = []
    for trial in range(40):
        path = tmp_path / f"trial{trial}.db"
        barrier = threading.Barrier(4, timeout=30)

        def open_it(path=path, barrier=barrier) -> None:
            try:
                barrier.wait()
                open_database(path).conn.close()
            except BaseException as exc:  # collected, asserted below
                failures.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
