"""Loaded at interpreter start when this folder is on PYTHONPATH (benchmarks/trial_overhead.py
puts it there): times `vpsearch worker` processes with benchmarks/phase_probe.py."""
import os
import sys

if os.environ.get("VPSEARCH_PHASE_OUT"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import phase_probe

    phase_probe.install(os.environ["VPSEARCH_PHASE_OUT"])
    del sys.path[0]
