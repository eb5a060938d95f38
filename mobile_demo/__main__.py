"""python -m mobile_demo MODEL IMAGE_OR_DIR... (same as ``edgeport-demo``; see mobile_demo.cli)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
