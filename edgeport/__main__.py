"""python -m edgeport COMMAND ...: the same as the ``edgeport`` console script."""

import sys

from edgeport.export.cli import main

sys.exit(main())
