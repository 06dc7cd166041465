"""`python -m anycost_emulator --help`: the emulator as a local server."""
import sys

from anycost_emulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
