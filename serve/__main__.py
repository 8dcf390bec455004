"""``python -m serve`` is ``semore-serve``."""

import sys

from serve.cli import main

sys.exit(main())
