"""Entry script of the frozen command line (``pacspull``): PyInstaller runs this file as ``__main__``."""

from pacspull.core.cli import run

if __name__ == "__main__":
    run()
