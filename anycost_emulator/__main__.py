"""`python -m anycost_emulator --port 0 --port_file PATH`: the emulator as a local server."""
import sys

from anycost_emulator.emulator import main

if __name__ == "__main__":
    sys.exit(main())
