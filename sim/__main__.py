"""`python -m sim`: the one command-line entry point (the console script `nirvana-sim` is the same)."""

from sim.entry import main

raise SystemExit(main())
