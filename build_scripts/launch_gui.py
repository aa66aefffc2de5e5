"""Entry script of the frozen window (``PacsPull``): PyInstaller runs this file as ``__main__``."""

import sys

if __name__ == "__main__":
    # A retrieve runs in a child process, which in a frozen build is this very executable with the flag
    # (core/retrieve_process.py): it must become the child before anything imports Qt.
    from pacspull.core.retrieve_process import CHILD_FLAG

    if sys.argv[1:] == [CHILD_FLAG]:
        from pacspull.core.retrieve_process import child_main

        sys.exit(child_main())
    from pacspull.gui.app import main

    sys.exit(main())
