"""Shared state between a scripted test and the handlers it loads (see scripted.py)."""

PROGRAM: dict[tuple[int, int], list[tuple]] = {}
READS: list[tuple] = []


def reset(program: dict[tuple[int, int], list[tuple]]) -> None:
    PROGRAM.clear()
    PROGRAM.update(program)
    READS.clear()
