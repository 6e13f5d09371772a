#!/usr/bin/env python
"""Is the suite slower than before? The same tests' times in two runs, like for like.

    .venv/bin/python bench/suite_time.py BEFORE.xml AFTER.xml [--top 15]

Each file is a pytest JUnit report (``pytest --junitxml=FILE``, e.g. ``PYTEST_ADDOPTS=--junitxml=FILE`` under
``.ci/run``) of one checkout's suite, run one after the other on a quiet machine. A suite that grew (new tests
for new features) is not slower for it: only tests present in both runs under the same id (file and name) are
compared; tests that were moved or renamed count as added and removed, and are listed as such. Per test the
time is setup + call + teardown as JUnit records it (a module fixture's setup is charged to the first test
that uses it). Prints the totals of the common tests, the ratio after/before, the largest differences either
way, and the time of the tests each run has alone.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def times(report: Path) -> dict[str, float]:
    """Test id ("path/to/test_x.py::name[param]") -> seconds, for the tests that ran (not skipped)."""
    out: dict[str, float] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            continue
        path = case.get("classname", "").replace(".", "/")
        module, _, cls = path.rpartition("/") if path.split("/")[-1][:1].isupper() else (path, "", "")
        test = f"{module}.py::{cls + '::' if cls else ''}{case.get('name')}"
        out[test] = out.get(test, 0.0) + float(case.get("time", 0.0))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)
    before, after = times(args.before), times(args.after)
    common = sorted(set(before) & set(after))
    if not common:
        print("no test is in both reports", file=sys.stderr)
        return 1
    b, a = sum(before[t] for t in common), sum(after[t] for t in common)
    only_before, only_after = set(before) - set(after), set(after) - set(before)
    print("| | tests | before s | after s | after/before |\n|---|---|---|---|---|")
    print(f"| in both runs | {len(common)} | {b:.1f} | {a:.1f} | {a / b:.3f} |")
    print(f"| before only (removed or moved) | {len(only_before)} | {sum(before[t] for t in only_before):.1f} | | |")
    print(f"| after only (added or moved) | {len(only_after)} | | {sum(after[t] for t in only_after):.1f} | |")
    print(f"| whole run | {len(before)} / {len(after)} | {sum(before.values()):.1f} | {sum(after.values()):.1f} | |")
    diffs = sorted(common, key=lambda t: after[t] - before[t])
    for title, picked in (("slower", diffs[::-1][:args.top]), ("faster", diffs[:args.top])):
        print(f"\nmost {title} (common tests):\n\n| test | before s | after s |\n|---|---|---|")
        for t in picked:
            print(f"| `{t}` | {before[t]:.2f} | {after[t]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
