"""``python -m xlstm_rl.suite RUN_DIR``: one suite run; see ``xlstm_rl.suite.worker``."""

import sys

from xlstm_rl.suite.worker import main

sys.exit(main())
