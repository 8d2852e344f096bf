"""``python -m encshield``: the ``encshield`` command."""

import sys

from encshield.cli import main

sys.exit(main())
