"""The create body's framing: `{"month":"YYYY-MM","operation":"...","data":[` rows `]}`.

The exact bytes around the rows, shared by validation (does a row fit in a body?) and by
every packer, so that a body's size is computed the same everywhere. No Beam, no HTTP.
"""

BODY_SUFFIX = b"]}"


def body_prefix(month, operation):
    return b'{"month":"%s","operation":"%s","data":[' % (month.encode(), operation.encode())


def envelope_bytes(operation):
    """Bytes of a body around its rows, for `operation`."""
    return len(body_prefix("2000-01", operation)) + len(BODY_SUFFIX)
