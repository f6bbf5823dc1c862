"""Summarise a py-spy `--format raw` profile (collapsed stacks): the functions with the most
samples, inclusive and self. `python -m bench.profile_summary FILE [--top N] [--match TEXT]`."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def summarise(path: Path, top: int = 25, match: str | None = None) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    out = [f"{path.name}: {total} samples"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        out.append(f"-- {title}")
        shown = 0
        for frame, n in counter.most_common():
            if match and match not in frame:
                continue
            out.append(f"{100 * n / max(total, 1):6.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--match", default=None)
    args = p.parse_args(argv)
    for f in args.files:
        sys.stdout.write(summarise(f, args.top, args.match))
    return 0


if __name__ == "__main__":
    sys.exit(main())
