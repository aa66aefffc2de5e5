"""Entry script of the frozen command line (``pacspull``): PyInstaller runs this file as ``__main__``."""

import sys

from pacspull.core.cli import main

if __name__ == "__main__":
    sys.exit(main())
