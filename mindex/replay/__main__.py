"""``python -m mindex.replay`` = ``mindex replay``."""

import sys

from mindex.replay.cli import main

sys.exit(main())
