"""python -m train [options]: the same as ``edgeport train``."""

import sys

from .cli import main

sys.exit(main())
