"""``python -m n2ngraph`` runs the command-line interface."""

import sys

from n2ngraph.cli import main

if __name__ == "__main__":
    sys.exit(main())
