"""Train an agent: ``python scripts/train.py --config configs/default.yaml [--key value ...]``.

The same as ``xlstm-rl train ...``; see ``xlstm_rl/cli.py``.
"""

import sys

from xlstm_rl.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
