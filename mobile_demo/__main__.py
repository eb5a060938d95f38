"""python -m edgeport.mobile_demo MODEL IMAGE_OR_DIR...: the same as ``edgeport-demo``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
