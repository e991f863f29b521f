"""``python -m n2ngraph`` runs the command-line interface."""

import sys

from n2ngraph.cli import main

sys.exit(main())
