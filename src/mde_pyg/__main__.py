"""``python -m mde_pyg``: the ``mde-pyg`` command line."""

import sys

from mde_pyg.cli import main

if __name__ == "__main__":
    sys.exit(main())
