from __future__ import annotations

from actors.output import OutputTail
from service.jobs import OutputSnapshot


def test_keeps_everything_under_the_limit() -> None:
    tail = OutputTail(10)
    tail.write(b"abc")
    tail.write(b"def")
    assert tail.snapshot() == OutputSnapshot(b"abcdef", 0)


def test_drops_the_front_over_the_limit_and_counts_it() -> None:
    tail = OutputTail(5)
    for chunk in (b"abc", b"def", b"gh"):
        tail.write(chunk)
    snapshot = tail.snapshot()
    assert snapshot.data == b"defgh"
    assert snapshot.offset == 3
    assert snapshot.total == 8


def test_a_chunk_larger_than_the_limit() -> None:
    tail = OutputTail(4)
    tail.write(b"ab")
    tail.write(b"0123456789")
    assert tail.snapshot() == OutputSnapshot(b"6789", 8)


def test_continues_from_an_earlier_attempt_and_reports_offsets() -> None:
    seen: list[tuple[int, bytes]] = []
    tail = OutputTail(
        6, initial=OutputSnapshot(b"xyz", 10), listener=lambda o, c: seen.append((o, c))
    )
    tail.write(b"1234")
    assert tail.snapshot() == OutputSnapshot(b"yz1234", 11)
    assert seen == [(13, b"1234")]
    assert tail.total == 17


def test_version_changes_on_every_write() -> None:
    tail = OutputTail(100)
    before = tail.version
    tail.write(b"x")
    tail.write(b"")
    assert tail.version == before + 1
