"""Bodies: CBF text in, request bodies out. Packing months and hours under the body limit; no Beam, no HTTP."""
