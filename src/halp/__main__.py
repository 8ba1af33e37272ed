"""``python -m halp``: the same command line as ``halp``."""

import sys

from halp.cli import main

sys.exit(main())
