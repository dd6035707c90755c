"""`sentangle results` from a checkout: train what benchmarks/results_plan.yaml lists and render
docs/RESULTS.md and the check documents (the engine is sentangle/recipes/results.py).

    python benchmarks/results.py [--plan] [--only SECTION ...] [--workers N] ...   (--help lists all)
"""

import sys

from sentangle.cli import main

if __name__ == "__main__":
    sys.exit(main(["results", *sys.argv[1:]]))
