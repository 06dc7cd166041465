"""What a Dataflow worker does first with a job: load its pipeline proto and unpickle it.

Run as `python -I worker_check.py PIPELINE.pb [SITE]` from a folder outside the repository:
`-I` leaves the script's folder, the working folder and PYTHONPATH off `sys.path`, so only
what is installed can be imported, as on a worker. With SITE (the staged sdist installed
there with `pip install --target`), the connector comes only from SITE: the editable install
of the repository is taken off the import system first. The text that must appear nowhere (a
stand-in API key) comes on stdin.

Prints one JSON object: the classes of every DoFn and CombineFn, and whether the text was
found in the proto or in any pickled payload. Fails (exit 1, the error on stderr) when
anything cannot be unpickled, for example a class from a module the workers do not have.
"""
import base64
import bz2
import collections
import json
import sys
import zlib

from apache_beam.internal import pickler
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2


def _raw(payload):
    """Beam's pickles are base64 of a bz2 (or zlib) stream: the bytes to search for text."""
    packed = base64.b64decode(payload)
    for unpack in (bz2.decompress, zlib.decompress):
        try:
            return unpack(packed)
        except (OSError, ValueError, zlib.error):
            continue
    raise ValueError("a pickled payload is neither bz2 nor zlib: cannot search it")


def _pickled_fns(proto):
    """(pickled payload, unpickled fn) of every Python DoFn and CombineFn in the graph."""
    for transform in proto.components.transforms.values():
        urn = transform.spec.urn
        if urn == common_urns.primitives.PAR_DO.urn:
            do_fn = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload).do_fn
            if do_fn.urn == python_urns.PICKLED_DOFN_INFO:
                yield do_fn.payload, pickler.loads(do_fn.payload)[0]
        elif urn == common_urns.composites.COMBINE_PER_KEY.urn:
            combine_fn = beam_runner_api_pb2.CombinePayload.FromString(transform.spec.payload).combine_fn
            yield combine_fn.payload, pickler.loads(combine_fn.payload)


def check(proto_bytes, absent_text):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    proto = beam_runner_api_pb2.Pipeline.FromString(proto_bytes)
    # The whole graph back as Beam objects: transforms, coders, windowing, side inputs.
    beam.Pipeline.from_runner_api(proto, FnApiRunner(), PipelineOptions())
    classes = collections.Counter()
    found = absent_text.encode() in proto_bytes if absent_text else False
    for payload, fn in _pickled_fns(proto):
        classes[f"{type(fn).__module__}.{type(fn).__qualname__}"] += 1
        found = found or bool(absent_text and absent_text.encode() in _raw(payload))
    return {"classes": dict(sorted(classes.items())), "absent_text_found": found}


def use_only(site):
    """Import the connector from `site` alone, not from an editable install of the repository."""
    sys.meta_path[:] = [finder for finder in sys.meta_path
                        if not getattr(finder, "__module__", "").startswith("__editable__")]
    sys.path_hooks[:] = [hook for hook in sys.path_hooks
                         if not getattr(hook, "__module__", "").startswith("__editable__")]
    sys.path_importer_cache.clear()
    sys.path.insert(0, site)


if __name__ == "__main__":
    if len(sys.argv) > 2:
        use_only(sys.argv[2])
    with open(sys.argv[1], "rb") as handle:
        print(json.dumps(check(handle.read(), sys.stdin.read())))
