"""`vpsearch data verify`: the full check of a dataset's frame caches.

Opening a cache checks folder mtimes and a sample of the files (manifest.py); this stats every
file of every split the config names, says which caches are fresh, stale (with the files that
differ) or missing, rebuilds the stale and missing ones, and lists caches no version of
vpsearch opens any more (older formats), which --prune removes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from vpsearch.config import DataConfig
from vpsearch.data.base import DataError
from vpsearch.data.cache import Verdict, unused_caches, verify


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def all_fresh(self) -> bool:
        """Every cache fresh, or rebuilt from changed files; a damaged one fails the check even
        when rebuilt (the disk or a tool broke it: worth a look)."""
        return all(v.state == "fresh" or (v.rebuilt and v.state != "damaged") for v in self.verdicts)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def verify_data(cfg: DataConfig, rebuild: bool = True, prune: bool = False) -> Report:
    from vpsearch.data import SOURCES
    from vpsearch.data.builtin import resolve_root

    root = resolve_root(cfg.root)
    report = Report()
    for split in dict.fromkeys((cfg.train_split, cfg.val_split, cfg.test_split)):
        try:
            src = SOURCES[cfg.format](root, split, cfg)
        except DataError as e:  # a dataset without that split: nothing to verify there
            report.lines.append(f"{split}: skipped ({e})")
            continue
        if not src.root.is_dir():
            report.lines.append(f"{split}: skipped ({src.root}: folder not found)")
            continue
        v = verify(src, rebuild=rebuild)
        report.verdicts.append(v)
        head = f"{split}: {v.files} files checked in {v.seconds:.1f}s; cache "
        if v.state == "fresh":
            report.lines.append(head + f"fresh ({v.cache})")
        elif v.state == "damaged":
            report.lines.append(head + f"damaged ({v.cache}): {v.damage}"
                                + (f"; rebuilt as {v.rebuilt}" if v.rebuilt else "; not rebuilt (--check-only)"))
        elif v.state == "stale":
            report.lines.append(head + f"stale ({v.cache}): {v.diff.summary()}"
                                + (f"; rebuilt as {v.rebuilt}" if v.rebuilt else "; not rebuilt (--check-only)"))
        else:
            report.lines.append(head + ("missing; built as " + str(v.rebuilt) if v.rebuilt
                                        else "missing; not built (--check-only)"))
    for old in unused_caches(Path(cfg.cache_dir) if cfg.cache_dir else root / ".vpsearch-cache"):
        mb = _size(old) / 2**20
        if prune:
            shutil.rmtree(old, ignore_errors=True)
            report.lines.append(f"removed unused cache {old} ({mb:.0f} MB, an older format)")
        else:
            report.lines.append(f"unused cache {old} ({mb:.0f} MB, an older format): --prune removes it")
    return report
