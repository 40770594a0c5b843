"""The queue board two API processes share: each counts the other's queued requests, by priority, as a
bound would (those at least as urgent as the request admitted), through one mapped file."""

from __future__ import annotations

from pyinfer.engine.queue_board import ROWS, QueueBoard, QueueCounts


def two_processes(tmp_path) -> tuple[QueueCounts, QueueCounts]:
    path = str(tmp_path / "board")
    QueueBoard.create(path, 2)
    return QueueCounts(QueueBoard(path, 0)), QueueCounts(QueueBoard(path, 1))


def test_each_process_counts_its_own_and_the_others_requests_at_least_as_urgent(tmp_path):
    first, second = two_processes(tmp_path)
    first.add(5, 1, 100)
    first.add(5, 1, 30)
    first.add(-2, 1, 7)
    second.add(0, 1, 40)
    assert first.ahead_of(5) == second.ahead_of(5) == (4, 177)  # every one of them
    assert first.ahead_of(0) == second.ahead_of(0) == (2, 47)  # not the two of priority 5
    assert first.ahead_of(-3) == (0, 0)
    first.add(5, -1, -100)  # one of priority 5 has its first token
    assert second.ahead_of(5) == (3, 77)
    first.add(5, -1, -30)
    first.add(-2, -1, -7)
    assert first.ahead_of(10**18) == second.ahead_of(10**18) == (1, 40)  # the second's own


def test_a_freed_row_serves_a_new_priority_without_the_old_ones_figures(tmp_path):
    first, second = two_processes(tmp_path)
    first.add(3, 1, 10)
    first.add(3, -1, -10)
    first.add(9, 2, 20)  # takes a row again
    assert second.ahead_of(3) == (0, 0) and second.ahead_of(9) == (2, 20)


def test_priorities_past_the_rows_are_counted_as_the_most_urgent_of_them(tmp_path):
    """Past ROWS - 1 priorities at once, the rest share the last row under the most urgent of them: never
    fewer requests ahead than there are, at worst some that would not run first."""
    first, second = two_processes(tmp_path)
    for priority in range(ROWS + 4):  # rows for 0 .. ROWS - 2; ROWS - 1 .. ROWS + 3 share the last
        first.add(priority, 1, priority)
    assert second.ahead_of(ROWS - 2) == (ROWS - 1, sum(range(ROWS - 1)))
    assert second.ahead_of(ROWS - 1) == (ROWS + 4, sum(range(ROWS + 4)))  # the shared row, all of it
    assert first.ahead_of(ROWS - 1) == (ROWS, sum(range(ROWS)))  # its own figures are exact
    first.add(ROWS - 1, -1, -(ROWS - 1))  # the most urgent of the shared row leaves: the row moves up
    assert second.ahead_of(ROWS - 1) == (ROWS - 1, sum(range(ROWS - 1)))
    assert second.ahead_of(ROWS) == (ROWS + 3, sum(range(ROWS + 4)) - (ROWS - 1))
    first.add(0, -1, 0)  # a row of its own is freed and taken by the next new priority
    first.add(-5, 1, 1000)
    assert second.ahead_of(-5) == (1, 1000)
    for priority in range(ROWS, ROWS + 4):  # the shared row empties: it counts nothing
        first.add(priority, -1, -priority)
    assert second.ahead_of(10**6) == (ROWS - 1, sum(range(1, ROWS - 1)) + 1000)
