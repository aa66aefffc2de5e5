"""Entry script of the frozen window (``PacsPull``): PyInstaller runs this file as ``__main__``."""

import sys

from pacspull.gui.app import main

if __name__ == "__main__":
    sys.exit(main())
