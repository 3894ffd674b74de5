"""Regenerate the README's "what the search buys you" table from the shipped recordings.

    python benchmarks/search_table.py          # table from the saved replays (studies/recorded/*.replay.json)
    python benchmarks/search_table.py --run    # replay every shipped recording first (minutes: GP and skopt)
    python benchmarks/search_table.py --write  # and put the table into README.md

tests/test_replay.py checks that README.md holds what this prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = ["pushing_wide", "dancer_wide"]


def main() -> int:
    from vpsearch.reporting import replay
    from vpsearch.reporting.recorded import RecordedStudy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="replay the recordings again (20 orders, 10 sampler seeds)")
    ap.add_argument("--write", action="store_true", help="write the table into README.md")
    args = ap.parse_args()
    folder = ROOT / "studies" / "recorded"
    if args.run:
        for name in RECORDINGS:
            rec = RecordedStudy.load(folder / f"{name}.json")
            done = replay.run_replay(rec, replay.DEFAULT_PRUNERS, replay.DEFAULT_SAMPLERS, 20, [2, 8], 10,
                                     skip_refused=True)
            (folder / f"{name}.replay.json").write_text(json.dumps(replay.as_json(done, rec), indent=2) + "\n")
    table = replay.summary_table([json.loads((folder / f"{n}.replay.json").read_text()) for n in RECORDINGS])
    print(table)
    if args.write:
        readme = (ROOT / "README.md").read_text()
        head, rest = readme.split(replay.README_BEGIN)
        _, tail = rest.split(replay.README_END)
        (ROOT / "README.md").write_text(f"{head}{replay.README_BEGIN}\n{table}\n{replay.README_END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
