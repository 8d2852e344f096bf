"""``python -m encshield.cli``: the ``encshield`` command."""

import sys

from encshield.cli import main

sys.exit(main())
