"""Console entry point (`nirvana-sim`, `python -m sim`): pins BLAS threads before numpy loads, then runs the CLI."""

from __future__ import annotations

import os

BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pin_blas_threads() -> None:
    # Simulation workers do many tiny matrix products: one BLAS thread each (OpenBLAS on 2 cores was
    # measured 15x slower otherwise for small products). Only effective before numpy is imported.
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")


def main() -> int:
    pin_blas_threads()
    from sim.cli import main as cli_main

    return cli_main()
