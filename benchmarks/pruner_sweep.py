"""The schedule-aware pruner's options swept on a recording: epochs saved against the best lost.

    python benchmarks/pruner_sweep.py studies/recorded/pushing_wide.json [--orders 20] [--workers 2]

One line per setting (startup trials x patience x percentile x noise margin), each replayed on the
same random trial orders. A setting chosen on a recording is fitted to it: read the frontier, not
the best line.
"""

from __future__ import annotations

import argparse
import itertools
import time

from vpsearch.reporting.recorded import RecordedStudy
from vpsearch.reporting.replay import replay_pruners
from vpsearch.search.spec import PrunerSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recording")
    ap.add_argument("--orders", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    rec = RecordedStudy.load(args.recording)
    print(f"{rec.name}: {args.orders} orders, {args.workers} simulated workers")
    for n0, patience, pct, margin in itertools.product([2, 5], [1, 2, 3], [40.0, 50.0, 60.0], [0.0, 0.5, 1.0]):
        spec = PrunerSpec(name="schedule_aware", n_startup_trials=n0, patience=patience, percentile=pct,
                          noise_margin=margin)
        t0 = time.perf_counter()
        r = replay_pruners(rec, [spec], orders=args.orders, workers=args.workers)[0]
        print(f"startup {n0} patience {patience} percentile {pct:g} margin {margin:g}: saved {r.epochs_saved:.0%}, "
              f"regret {r.regret:.3f} (max {r.regret_max:.3f}), best pruned {r.best_pruned:.0%} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
