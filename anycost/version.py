"""The connector's version, written only here: setup.py reads it, `--version` prints it."""
VERSION = "0.1.0"
