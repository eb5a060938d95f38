"""python -m edgeport.train [options]: the same as ``edgeport train``."""

import sys

from .cli import main

sys.exit(main())
