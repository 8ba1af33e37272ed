import sys

from halp.cli import main

sys.exit(main())
