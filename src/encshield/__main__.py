"""``python -m encshield`` runs the command line."""

import sys

from encshield.cli import main

sys.exit(main())
