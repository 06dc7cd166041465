"""Inputs: files and rows in, CBF text out. Reading, FOCUS mapping, tags, typed values, validation and chunking; no Beam, no HTTP."""
