"""The verdict section of bench_proxy.py alone (its figures, no other section):

    python bench/bench_verdict.py            # as in the full run (30 repeats, 60 rounds)
    python bench/bench_verdict.py --quick    # 5 repeats, 10 rounds

Prints the verdict lines of bench_proxy.py's table and the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_proxy import verdict_cost, verdict_lines  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, same figures")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ti-bench-verdict-") as d:
        v = verdict_cost(Path(d), repeat=5 if a.quick else 30)
    print("\n".join(verdict_lines(v)))
    print(json.dumps(v, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
