"""Rows do not ride the shuffles: the bounded path shuffles `ChunkRef`s, whose rows wait in
temporary chunk files that the run removes when it ends.

The digests pinned below were computed from the bodies and idempotency keys of the version
before chunk files (rows inside the shuffled chunks), so a ledger it wrote still matches.
"""
import datetime as dt
import glob
import hashlib
import os
import pickle
import random
import tempfile
from decimal import Decimal

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from anycost.config import RowSettings
from anycost.inputs.normalise import SourceBatch, normalise_batch
from tests.support import emulator_totals, run_cli, write_csv, write_parquet

HEADER = ["connection_id", "time/usage_start", "cost/cost", "resource/id", "lineitem/type"]
START, COST, RESOURCE = "time/usage_start", "cost/cost", "resource/id"
# sha256 over the dry run's (file name, body) pairs, and over the (connection, idempotency key)
# pairs WriteToAnyCost posted, as commit c2b0399 (rows inside the shuffled chunks) gave them.
DRY_RUN_DIGEST = "b9448334d822e7f9550060967434364acff26dc0a8d51a5deee1db26ba711b5d"
KEYS_DIGEST = "7d0079d6aee52ecae8d1fa9347aeb183307067b865b1482a97c343321437a6f1"


# ----- inputs and digests (shared with the script that pinned the digests) ------------------

def cli_inputs(folder):
    """Two CSV files and a Parquet file: 3 connections x 2 months, rows of uneven sizes."""
    rng = random.Random(15)
    rows = [[f"c{rng.randrange(3)}", f"2024-{8 + i % 2:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
             f"{rng.randrange(10 ** 6)}.{rng.randrange(100):02d}", "r" * rng.randrange(1, 60) + str(i), "Usage"]
            for i in range(900)]
    write_csv(os.path.join(folder, "a.csv"), HEADER, rows[:300])
    write_csv(os.path.join(folder, "b.csv"), HEADER, rows[300:600])
    write_parquet(os.path.join(folder, "c.parquet"), {name: [row[i] for row in rows[600:]]
                                                     for i, name in enumerate(HEADER)}, row_group_size=100)
    return os.path.join(folder, "*")


def dry_run_digest(out):
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(out, "*", "*", "*.json"))):
        digest.update(os.path.relpath(path, out).encode() + b"\n")
        with open(path, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()


def dict_rows():
    """Dict rows without file positions, shuffled: the canonical order decides the bodies."""
    rng = random.Random(16)
    rows = [{"connection_id": f"d{i % 2}", START: dt.datetime(2024, 5 + i % 2, 1 + i % 28, i % 24,
                                                               tzinfo=dt.timezone.utc),
             COST: Decimal(rng.randrange(10 ** 5)) / 1000, RESOURCE: f"vm-{rng.randrange(10 ** 6)}"}
            for i in range(700)]
    rng.shuffle(rows)
    return rows


def keys_digest(emulator):
    posts = sorted((r.connection, r.idempotency_key) for r in emulator.requests if r.method == "POST")
    return hashlib.sha256(repr(posts).encode()).hexdigest(), len(posts)


def write_dicts(emulator, options=()):
    from transforms import WriteToAnyCost
    p = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(list(options)))
    _ = (p | beam.Create(dict_rows(), reshuffle=False)
         | WriteToAnyCost(stream_column="connection_id", operation="replace_hourly", api_url=emulator.url,
                          max_body_bytes=2_000))
    p.run().wait_until_finish()


# ----- the reference ------------------------------------------------------------------------

def chunks_of(resource_ids):
    """((connection, month), Chunk) of one batch of rows whose resource ids are given."""
    count = len(resource_ids)
    batch = pa.RecordBatch.from_pydict({START: ["2024-08-16T13:00:00Z"] * count, COST: ["1.5"] * count,
                                        RESOURCE: resource_ids})
    normalised = normalise_batch(batch, SourceBatch("in.csv", (0, 0, 0), np.arange(1, count + 1)),
                                 RowSettings(connection_id="c1"))
    return normalised.chunks


def test_a_reference_reads_its_rows_back_and_stays_small_whatever_their_size(tmp_path):
    from anycost.inputs.chunk_files import ChunkFile, ChunkRef
    rng = random.Random(1)
    short = chunks_of([f"r{i}" for i in range(1000)])[0][1]
    long = chunks_of([rng.randbytes(1000).hex() for _ in range(1000)])[0][1]  # 2 MB that barely compress
    chunk_file = ChunkFile(str(tmp_path))
    refs = [chunk_file.add(chunk) for chunk in (short, long)]
    chunk_file.close()
    assert all(isinstance(ref, ChunkRef) for ref in refs)
    assert [ref.json_rows() for ref in refs] == [short.json_rows(), long.json_rows()]
    assert [ref.rows for ref in refs] == [short.rows, long.rows]
    assert refs[1].offset == len(short.rows) and refs[1].path == refs[0].path
    for ref, chunk in zip(refs, (short, long)):
        assert ref[:2] == chunk[:2] and (ref.lengths, ref.cost_total, ref.hours) == (
            chunk.lengths, chunk.cost_total, chunk.hours)
    sizes = [len(pickle.dumps(ref)) for ref in refs]  # 4 bytes a row of lengths, no rows
    assert abs(sizes[0] - sizes[1]) <= 8 and sizes[1] < len(pickle.dumps(long)) / 50
    assert os.listdir(tmp_path) == [os.path.basename(refs[0].path)]


def test_without_rows_a_reference_points_at_nothing(tmp_path):
    from anycost.inputs.chunk_files import ChunkFile
    chunk_file = ChunkFile(str(tmp_path))
    ref = chunk_file.add(chunks_of(["r1", "r2"])[0][1])
    chunk_file.close()
    empty = ref._replace(rows=b"")
    assert empty.rows == b"" and empty.json_rows() == b"" and empty.path == ""
    assert empty.lengths == ref.lengths and empty.row_count == 2
    with pytest.raises(ValueError, match="rows live in its chunk file"):
        ref._replace(rows=b"{}")


def test_a_chunk_file_cut_short_names_itself(tmp_path):
    from anycost.inputs.chunk_files import ChunkFile, forget_open_files
    chunk_file = ChunkFile(str(tmp_path))
    ref = chunk_file.add(chunks_of(["r1", "r2"])[0][1])
    chunk_file.close()
    forget_open_files()
    with open(ref.path, "r+b") as handle:
        handle.truncate(ref.length - 1)
    with pytest.raises(OSError, match=f"chunk file {ref.path} holds"):
        ref.json_rows()


def test_each_bundle_writes_a_new_file_and_emits_references_only(tmp_path):
    """_NormaliseRows alone: the references it emits point into closed files of the folder."""
    from anycost.config import WriteSettings
    from anycost.inputs.chunk_files import ChunkRef
    from transforms.write import _NormaliseRows
    folder = str(tmp_path / "chunks")
    out = tmp_path / "refs"
    p = beam.Pipeline(runner=FnApiRunner())
    rows = [{START: f"2024-0{8 + i % 2}-01T00:00:00Z", COST: str(i), RESOURCE: "x" * 300} for i in range(200)]
    _ = (p | beam.Create(rows)
         | beam.ParDo(_NormaliseRows(WriteSettings(connection_id="c1"), folder))
         | beam.Map(lambda kv: pickle.dumps(kv).hex())
         | beam.io.WriteToText(str(out), shard_name_template=""))
    p.run().wait_until_finish()
    refs = [pickle.loads(bytes.fromhex(line.strip())) for line in open(out)]
    assert sorted(key for key, _ in refs) == [("c1", "2024-08"), ("c1", "2024-09")]
    assert all(isinstance(ref, ChunkRef) and os.path.dirname(ref.path) == folder for _, ref in refs)
    assert sum(ref.row_count for _, ref in refs) == 200
    assert sorted(ref.json_rows().count(b"x" * 300) for _, ref in refs) == [100, 100]


# ----- compressed or plain ------------------------------------------------------------------

MOUNTS = """/dev/vda1 / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw,nosuid,nodev 0 0
/dev/vdb1 /tmp/disk xfs rw 0 0
tmpfs /mnt/scratch\\040space tmpfs rw 0 0
"""


@pytest.mark.parametrize("folder, compress", [
    ("gs://bucket/temp/anycost-chunks-x", True),  # object storage: bytes over the network
    ("s3://bucket/anycost-chunks-x", True),
    ("/var/lib/runs/anycost-chunks-x", False),  # a local disk: the page cache gives them back
    ("file:///var/lib/runs/anycost-chunks-x", False),
    ("/tmp/anycost-chunks-x", True),  # tmpfs: plain rows would sit in RAM
    ("/tmp/disk/anycost-chunks-x", False),  # the deepest mount decides
    ("/tmpfoo/anycost-chunks-x", False),  # a mount point is a whole path component
    ("/mnt/scratch space/anycost-chunks-x", True),  # /proc/mounts writes a space as \040
])
def test_chunk_rows_are_compressed_off_a_local_disk_only(tmp_path, folder, compress):
    from anycost.inputs.chunk_files import compress_rows
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    assert compress_rows(folder, mounts=str(mounts)) is compress


def test_without_a_mount_table_a_local_folder_is_a_disk(tmp_path):
    from anycost.inputs.chunk_files import compress_rows, filesystem_type
    assert filesystem_type("/tmp", mounts=str(tmp_path / "none")) is None
    assert compress_rows("/tmp/anycost-chunks-x", mounts=str(tmp_path / "none")) is False
    assert compress_rows("gs://b/anycost-chunks-x", mounts=str(tmp_path / "none")) is True


@pytest.mark.parametrize("compress", [True, False])
def test_plain_and_compressed_chunks_hold_the_same_rows_and_references(tmp_path, compress):
    from anycost.inputs.chunk_files import ChunkFile
    from anycost.inputs.chunking import ROWS_CODEC
    batch = pa.RecordBatch.from_pydict({START: ["2024-08-16T13:00:00Z"] * 500, COST: ["1.5"] * 500,
                                        RESOURCE: [f"vm-{i}" for i in range(500)]})
    source = SourceBatch("in.csv", (0, 0, 0), np.arange(1, 501))
    (_, chunk), = normalise_batch(batch, source, RowSettings(connection_id="c1", compress_rows=compress)).chunks
    (_, other), = normalise_batch(batch, source, RowSettings(connection_id="c1", compress_rows=not compress)).chunks
    assert chunk.codec == (ROWS_CODEC if compress else "") and chunk.json_rows() == other.json_rows()
    assert (len(chunk.rows) < chunk.rows_size) is (compress and bool(ROWS_CODEC))
    chunk_file = ChunkFile(str(tmp_path))
    ref = chunk_file.add(chunk)
    chunk_file.close()
    assert ref.json_rows() == other.json_rows() and ref.length == len(chunk.rows)


def test_the_write_decides_compression_from_its_chunk_folder():
    from anycost.config import WriteSettings
    from anycost.inputs import chunk_files
    from transforms.write import _NormaliseRows
    local = os.path.join(tempfile.gettempdir(), "anycost-chunks-x")
    assert _NormaliseRows(WriteSettings(connection_id="c1"), "gs://b/anycost-chunks-x")._settings.compress_rows
    assert (_NormaliseRows(WriteSettings(connection_id="c1"), local)._settings.compress_rows
            is chunk_files.compress_rows(local))
    from transforms.watch import _ReadFiles
    assert _ReadFiles(RowSettings(), 0, "dead", "results", "gs://b/anycost-chunks-x")._settings.compress_rows
    assert _ReadFiles(RowSettings(), 0, "dead", "results", local)._settings.compress_rows is chunk_files.compress_rows(local)


# ----- whole runs ---------------------------------------------------------------------------

def chunk_folders(root):
    return sorted(glob.glob(os.path.join(root, "anycost-chunks-*")))


def compressing(monkeypatch, compress):
    """Chunk files compressed or plain whatever filesystem this machine's temp folder is on."""
    from anycost.inputs import chunk_files
    monkeypatch.setattr(chunk_files, "compress_rows", lambda folder: compress)


@pytest.mark.parametrize("compress", [True, False], ids=["lz4", "plain"])
def test_the_command_line_gives_the_bodies_of_the_version_before_chunk_files(emulator, tmp_path, capsys,
                                                                             monkeypatch, compress):
    compressing(monkeypatch, compress)
    pattern = cli_inputs(str(tmp_path / "in"))
    out = str(tmp_path / "bodies")
    code, _, printed = run_cli(["--input", pattern, "--stream_column", "connection_id", "--max_body_bytes", "1500",
                                "--dry_run", "--output_dir", out, f"--api_url={emulator.url}",
                                f"--report_path={tmp_path}/report.json", f"--dead_letter_path={tmp_path}/dead"],
                               capsys)
    assert code == 0, printed
    assert len(glob.glob(os.path.join(out, "*", "*", "*.json"))) > 20
    assert dry_run_digest(out) == DRY_RUN_DIGEST


@pytest.mark.parametrize("compress", [True, False], ids=["lz4", "plain"])
def test_write_to_anycost_posts_the_keys_of_the_version_before_chunk_files(emulator, tmp_path, monkeypatch,
                                                                          compress):
    compressing(monkeypatch, compress)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a run without temp_location puts them
    write_dicts(emulator)
    digest, posts = keys_digest(emulator)
    assert posts > 20 and digest == KEYS_DIGEST
    expected = {}
    for row in dict_rows():
        month = expected.setdefault(row["connection_id"], {}).setdefault(row[START].strftime("%Y-%m"), [0, 0])
        month[0], month[1] = month[0] + 1, month[1] + row[COST]
    assert emulator_totals(emulator) == {conn: {month: tuple(total) for month, total in months.items()}
                                         for conn, months in expected.items()}
    assert chunk_folders(str(tmp_path)) == []  # the run's last step removed its folder


def test_a_run_keeps_its_chunk_files_under_temp_location_and_removes_them(emulator, tmp_path, capsys):
    temp = tmp_path / "temp"
    pattern = cli_inputs(str(tmp_path / "in"))
    code, report, printed = run_cli(["--input", pattern, "--stream_column", "connection_id",
                                     "--max_body_bytes", "1500", f"--api_url={emulator.url}",
                                     f"--report_path={tmp_path}/report.json", f"--dead_letter_path={tmp_path}/dead",
                                     f"--temp_location={temp}"], capsys)
    assert code == 0, printed
    assert temp.is_dir() and list(temp.iterdir()) == []  # the chunk folder was made there, then removed
    totals = emulator_totals(emulator)
    assert sum(rows for months in totals.values() for rows, _ in months.values()) == 900
    assert sum((cost for months in totals.values() for _, cost in months.values()), Decimal(0)) == sum(
        Decimal(entry["cost"]) for months in report["streams"].values() for entry in months.values())


def test_a_failed_run_leaves_no_chunk_files(tmp_path, capsys, monkeypatch):
    """The job breaks after the chunk files are written (the sink cannot write its dry-run
    bodies where a file stands): the command line removes them on its way out."""
    temp = tmp_path / "temp"
    pattern = cli_inputs(str(tmp_path / "in"))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the dry run wants a folder")
    code, _, printed = run_cli(["--input", pattern, "--stream_column", "connection_id", "--dry_run",
                                "--output_dir", str(blocker / "bodies"), f"--report_path={tmp_path}/report.json",
                                f"--dead_letter_path={tmp_path}/dead", f"--temp_location={temp}"], capsys)
    assert code != 0 and "did not finish" in printed
    assert temp.is_dir() and list(temp.iterdir()) == []


def test_big_buffers_go_back_to_the_system_on_glibc():
    import platform
    from anycost import memory
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert memory.return_big_buffers() is expected
    assert memory.return_big_buffers() is expected  # once per process; a second call changes nothing


def test_arrow_allocates_from_the_system_pool_unless_the_process_chose_one():
    """Run in a child, so that this process's pool stays as it is."""
    import platform
    import subprocess
    import sys
    if not (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"):
        pytest.skip("the system pool is only chosen where glibc returns big buffers")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    probe = ("import pyarrow as pa; from anycost import memory; memory.return_big_buffers(); "
             "print(pa.default_memory_pool().backend_name)")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    chosen = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True,
                            cwd=repo)
    assert chosen.stdout.strip() == "system"
    kept = subprocess.run([sys.executable, "-c", probe], env=dict(env, ARROW_DEFAULT_MEMORY_POOL="mimalloc"),
                          capture_output=True, text=True, check=True, cwd=repo)
    assert kept.stdout.strip() == "mimalloc"
