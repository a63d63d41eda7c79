"""Evaluate a checkpoint: ``python scripts/evaluate.py CHECKPOINT [--episodes N] [--json PATH]``.

The same as ``xlstm-rl evaluate ...``; see ``xlstm_rl/cli.py``.
"""

import sys

from xlstm_rl.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
