"""Run a benchmark suite: ``python scripts/suite.py configs/suites/smoke.yaml [--workers N]``.

The same as ``xlstm-rl suite ...``; see docs/suite.md.
"""

import sys

from xlstm_rl.cli import main

if __name__ == "__main__":
    sys.exit(main(["suite", *sys.argv[1:]]))
