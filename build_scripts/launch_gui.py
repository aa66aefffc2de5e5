"""Entry script of the frozen window (``PacsPull``): PyInstaller runs this file as ``__main__``."""

import sys

if __name__ == "__main__":
    # A retrieve runs in a child process, which in a frozen build is this very executable with the flag
    # (core/retrieve_process.py CHILD_FLAG): it becomes the child, at its lower priority (CHILD_NICENESS),
    # before anything is imported; Qt never is (PyInstaller's Qt runtime hook skips itself for the flag:
    # bundle.scripts_for).
    if sys.argv[1:] == ["--pacspull-retrieve-process"]:
        import os

        if hasattr(os, "nice"):
            os.nice(10)
        from pacspull.core.retrieve_process import child_main

        sys.exit(child_main())
    from pacspull.gui.app import main

    sys.exit(main())
