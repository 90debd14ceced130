"""SASS as ``cuobjdump -sass`` prints it, read as text (pure functions; :mod:`benchmarks.static` compiles the
kernels): instructions in and outside loops, and the dependent global-memory round trips a loop trip makes."""
from __future__ import annotations

import re


def parse_sass(sass: str) -> tuple[int, int, list[int], list[float], float]:
    """(instructions, outside loops, loop bodies, their memory rounds a trip, memory rounds outside them) from
    ``cuobjdump -sass``; a loop is a backward branch."""
    rows = [(int(a, 16), text.strip()) for a, text in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    addresses = [a for a, _ in rows]
    loops = []
    for address, text in rows:
        m = re.search(r"\bBRA\b.*?(0x[0-9a-f]+)", text)
        if m and int(m.group(1), 16) < address:
            loops.append((int(m.group(1), 16), address))
    inner = [(lo, hi) for lo, hi in loops if not any(lo <= lo2 and hi2 <= hi and (lo2, hi2) != (lo, hi)
                                                     for lo2, hi2 in loops)]
    bodies = [sum(lo <= a <= hi for a in addresses) for lo, hi in inner]
    rounds = [memory_rounds([text for a, text in rows if lo <= a <= hi]) for lo, hi in inner]
    inside = {a for lo, hi in loops for a in addresses if lo <= a <= hi}
    outside = memory_rounds([text for a, text in rows if a not in inside], trips=1)
    return len(addresses), len(addresses) - len(inside), bodies, rounds, outside


def _registers(operand: str) -> set[int]:
    """General registers an operand names (``R4``, a pair ``R2.64``, a quad ``R8.128``)."""
    found = set()
    for m in re.finditer(r"\bR(\d+)(\.64|\.128)?\b", operand):
        first = int(m.group(1))
        found |= set(range(first, first + {".64": 2, ".128": 4}.get(m.group(2), 1)))
    return found


def memory_rounds(body: list[str], trips: int = 2) -> float:
    """Dependent global-memory round trips one trip of a loop body makes (SASS instructions in order): the
    global loads issued before the first instruction that reads one of their results form one round — a warp
    then waits out a memory latency — and the loads after it the next. Counted over two trips and halved, so
    that a load whose result the next trip reads counts where it waits (``trips=1``: straight-line code). A
    frame walk whose shifted loads all issue before their use is one round a frame; one whose second group of
    loads waits on the first, two."""
    rounds, pending, open_round = 0, set(), False
    for text in body * trips:
        op, _, rest = re.sub(r"^@!?U?P\w+\s+", "", text).partition(" ")
        operands = [o.strip() for o in rest.split(",")] if rest else []
        stores = op.startswith(("STG", "STS", "ST.", "RED", "ATOM"))
        written = set() if stores or not operands else _registers(operands[0])
        read = set().union(*map(_registers, operands if stores else operands[1:]))
        if pending & read:  # the warp waits for the round's loads here
            pending, open_round = set(), False
        if op.startswith("LDG"):
            rounds += not open_round
            open_round = True
            if written:
                first = min(written)
                pending |= set(range(first, first + (4 if ".128" in op else 2 if ".64" in op else 1)))
        else:
            pending -= written
    return rounds / trips
