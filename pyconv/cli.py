"""The ``pyconv`` command (``python -m pyconv``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    import pyconv

    parser = argparse.ArgumentParser(
        prog="pyconv", description="Fast, exact CNNs on the CPU (C++ core + NumPy API)."
    )
    parser.add_argument("--version", action="version", version=f"pyconv {pyconv.__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="show the build: ISA in use, ISAs available, threads, peak")
    args = parser.parse_args(argv)
    if args.command in (None, "info"):
        from . import _core

        print(f"pyconv {pyconv.__version__}")
        print(f"isa: {pyconv.get_isa()} (available: {', '.join(pyconv.available_isas())})")
        print(f"threads: {pyconv.get_num_threads()}")
        print(f"single-core peak: {_core.peak_gflops(0.2):.1f} GFLOP/s")
        return 0
    parser.print_help(sys.stderr)
    return 2
