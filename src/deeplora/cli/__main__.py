"""``python -m deeplora.cli`` is the ``deeplora`` command."""

import sys

from deeplora.cli import main

sys.exit(main())
