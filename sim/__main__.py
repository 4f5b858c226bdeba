"""`python -m sim`: the one command-line entry point."""

import os

# Simulation workers do many tiny matrix products: pin BLAS to one thread before numpy loads
# (OpenBLAS on 2 cores was measured 15x slower otherwise for small products).
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from sim.cli import main  # noqa: E402

raise SystemExit(main())
