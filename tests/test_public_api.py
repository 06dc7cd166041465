"""The public Beam API as a user composes it: `ReadCbf | WriteToAnyCost` against the emulator
on 127.0.0.1, schema'd rows with `column_map`, constants, `display_data`, and the words
messages use for each face (Beam API or command line)."""
import gzip
import importlib
import inspect
import json
import pkgutil
import random
import typing
from decimal import Decimal

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms.display import DisplayData

from anycost import config
from anycost.delivery.retry import Outcome, RetryPolicy
from anycost.inputs import files
from anycost.outcomes import report
from anycost_emulator import Emulator
from pipeline import main as cli
from tests.support import TEST_KEY, emulator_totals, run_and_collect, run_cli, write_csv
from transforms import CbfBatch, InputFormat, Operation, ReadCbf, WriteToAnyCost, __all__ as exported

HEADER = ["time/usage_start", "cost/cost", "resource/id"]
START, COST, RESOURCE = HEADER


@pytest.fixture
def emu(monkeypatch):
    monkeypatch.setenv("CLOUDZERO_API_KEY", TEST_KEY)
    with Emulator(api_key=TEST_KEY) as emulator:
        yield emulator


def _run(read, tmp_path, between=None, **params):
    """p | read | [between] | WriteToAnyCost(**params): the result PCollections' contents."""
    out = tmp_path / f"out-{random.random()}"
    p = beam.Pipeline(runner=FnApiRunner())
    rows = p | read
    if between is not None:
        rows = rows | between
    result = rows | WriteToAnyCost(**params)
    return run_and_collect(p, result, out)


def _bills(tmp_path):
    """Two CSV files: good rows, a ragged row (refused while reading) and a bad time."""
    first = write_csv(str(tmp_path / "in" / "a.csv"), HEADER, [
        ["2024-08-01T00:00:00Z", "1.25", "vm-1"],
        ["2024-08-01T01:00:00Z", "2.50", "vm-2", "one column too many"],
        ["not a time", "3", "vm-3"],
        ["2024-08-02T00:00:00Z", "0.000000000000000001", "vm-4"]])
    second = write_csv(str(tmp_path / "in" / "b.csv"), HEADER, [
        ["2024-09-01T00:00:00Z", "10", "vm-5"]])
    return first, second


def test_read_cbf_into_write_to_anycost_delivers_exactly_with_bad_rows_in_result_rejected(emu, tmp_path):
    first, _ = _bills(tmp_path)
    out = _run(ReadCbf(str(tmp_path / "in" / "*.csv")), tmp_path, connection_id="c1", api_url=emu.url,
               max_rejected_rows=2)
    assert emulator_totals(emu) == {"c1": {"2024-08": (2, Decimal("1.250000000000000001")),
                                           "2024-09": (1, Decimal(10))}}
    rejected = sorted(out["rejected"], key=lambda r: r["row"])
    assert [(r["file"], r["row"]) for r in rejected] == [(first, 2), (first, 3)]
    assert "time/usage_start" in rejected[1]["reason"] and rejected[1]["values"][START] == "not a time"
    assert len(out["delivered"]) == 2 and out["failed"] == []


def test_read_rejects_count_toward_the_limit_and_over_it_nothing_is_posted(emu, tmp_path):
    _bills(tmp_path)
    out = _run(ReadCbf([str(tmp_path / "in" / "a.csv"), str(tmp_path / "in" / "b.csv")]), tmp_path,
               connection_id="c1", api_url=emu.url, max_rejected_rows=1)
    assert emu.post_count == 0 and out["delivered"] == []
    assert len(out["rejected"]) == 2
    assert {f["status"] for f in out["failed"]} == {"not_sent"}
    assert all("2 rows were rejected, more than max_rejected_rows=1" in f["message"] for f in out["failed"])


def test_a_file_that_breaks_part_way_holds_every_post_back(emu, tmp_path):
    _, good = _bills(tmp_path)
    rows = "".join(f"2024-08-01T00:00:00Z,{i}.5,r{i}\n" for i in range(50_000))
    data = gzip.compress(("time/usage_start,cost/cost,resource/id\n" + rows).encode())
    broken = tmp_path / "in" / "broken.csv.gz"
    broken.write_bytes(data[:-2000])  # the header reads; the rest stops part-way
    out = _run(ReadCbf([good, str(broken)]), tmp_path, connection_id="c1", api_url=emu.url)
    assert emu.post_count == 0 and out["delivered"] == [] and out["rejected"] == []
    assert out["failed"] and all(f["status"] == "not_sent" and "could not be read to the end" in f["message"]
                                 for f in out["failed"])


def _posts(emulator):
    return [(r.connection, r.path, r.idempotency_key, r.body_bytes) for r in emulator.requests if r.method == "POST"]


def test_the_same_files_give_the_command_lines_bodies_and_keys_in_file_order(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDZERO_API_KEY", TEST_KEY)
    for name in "cba":  # the files sort a, b, c: bodies follow that order, not the row order
        write_csv(str(tmp_path / "in" / f"{name}.csv"), HEADER,
                  [[f"2024-08-{d:02d}T{h:02d}:00:00Z", f"{d}.{h}", f"{name}-{d}-{h}"]
                   for d in range(1, 4) for h in range(0, 24, 3)])
    pattern = str(tmp_path / "in" / "*.csv")
    with Emulator(api_key=TEST_KEY) as emu:
        code, _, _ = run_cli(["--input", pattern, "--connection_id", "c1", "--api_url", emu.url,
                              "--max_body_bytes", "1500", "--state_path", str(tmp_path / "state"),
                              f"--report_path={tmp_path / 'report.json'}"])
        by_cli = _posts(emu)
    with Emulator(api_key=TEST_KEY) as emu:
        _run(ReadCbf(pattern), tmp_path, connection_id="c1", api_url=emu.url, max_body_bytes=1500)
        by_api = _posts(emu)
    assert code == 0 and len(by_cli) > 3
    assert by_api == by_cli


def test_a_users_transform_between_sees_cbf_batches_and_may_filter_them(emu, tmp_path):
    _bills(tmp_path)
    seen = []

    def drop_vm5(element):
        assert isinstance(element, CbfBatch)
        seen.append(element.file)
        return element.filter(pc.not_equal(element.batch.column(RESOURCE), "vm-5"))

    out = _run(ReadCbf(str(tmp_path / "in" / "*.csv")), tmp_path, between=beam.Map(drop_vm5),
               connection_id="c1", api_url=emu.url, max_rejected_rows=2)
    assert emulator_totals(emu) == {"c1": {"2024-08": (2, Decimal("1.250000000000000001"))}}
    assert len(out["rejected"]) == 2


def test_cbf_batches_cross_a_users_reshuffle_exactly_and_are_sized_without_being_encoded(emu, tmp_path):
    from transforms.batch import _CbfBatchCoder  # pylint: disable=import-outside-toplevel
    _bills(tmp_path)
    p = beam.Pipeline(runner=FnApiRunner())
    batches = p | ReadCbf(str(tmp_path / "in" / "*.csv"))
    assert isinstance(beam.coders.registry.get_coder(batches.element_type), _CbfBatchCoder)
    out = _run(ReadCbf(str(tmp_path / "in" / "*.csv")), tmp_path, between=beam.Reshuffle(),
               connection_id="c1", api_url=emu.url, max_rejected_rows=2)
    assert emulator_totals(emu) == {"c1": {"2024-08": (2, Decimal("1.250000000000000001")),
                                           "2024-09": (1, Decimal("10"))}}
    assert len(out["rejected"]) == 2
    coder = _CbfBatchCoder()
    big = CbfBatch(pa.RecordBatch.from_pydict({"cost/cost": [str(i) for i in range(50_000)]}), "f.csv", (0,),
                   np.arange(1, 50_001))
    again = coder.decode(coder.encode(big))
    assert again.batch.equals(big.batch) and list(again.row_numbers) == list(big.row_numbers)
    assert 0.5 < coder.estimate_size(big) / len(coder.encode(big)) < 2


def test_read_cbf_checks_the_files_and_its_arguments_when_built(tmp_path):
    write_csv(str(tmp_path / "x.csv"), ["time/usage_start", "cost/cost", "colour"], [["2024-08-01T00:00:00Z", "1", "red"]])
    with pytest.raises(files.InputProblems, match="colour"):
        ReadCbf(str(tmp_path / "x.csv"))
    assert ReadCbf(str(tmp_path / "x.csv"), unknown_columns="drop").plan.dropped_columns == ("colour",)
    assert ReadCbf(str(tmp_path / "x.csv"), column_map={"colour": "resource/tag:colour"}).plan.splits
    for params, named in (({"input_format": "xml"}, "input_format"), ({"csv_delimiter": ";;"}, "csv_delimiter"),
                          ({"currency": "dollars"}, "currency"), ({"tag_keys": "keep"}, "tag_keys"),
                          ({"unknown_columns": "keep"}, "unknown_columns"),
                          ({"column_map": {"a": "x", "b": "x"}}, "column_map")):
        with pytest.raises(ValueError, match=named):
            ReadCbf(str(tmp_path / "x.csv"), **params)


def _display(transform):
    return {item.key: item.value for item in DisplayData.create_from(transform).items}


def test_display_data_shows_the_settings_and_never_the_key(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDZERO_API_KEY", TEST_KEY)
    shown = _display(WriteToAnyCost(connection_id="c1", max_attempts=3, column_map={"cost_cost": COST}))
    assert shown["connection_id"] == "c1" and shown["max_attempts"] == 3 and shown["operation"] == "sum"
    assert shown["api_key_env"] == "CLOUDZERO_API_KEY" and shown["api_key_from_secret_manager"] is False
    assert json.loads(shown["column_map"]) == {"cost_cost": COST}
    assert TEST_KEY not in json.dumps(shown, default=str)
    secret = _display(WriteToAnyCost(connection_id="c1", api_key_secret="projects/p/secrets/s/versions/1"))
    assert secret["api_key_from_secret_manager"] is True and "api_key_env" not in secret
    path = write_csv(str(tmp_path / "a.csv"), HEADER, [["2024-08-01T00:00:00Z", "1", "r"]])
    read = _display(ReadCbf(path, csv_delimiter=","))
    assert read["file_pattern"] == path and read["files"] == 1 and read["input_format"] == "cbf"
    assert read["tag_keys"] == "refuse" and read["currency"] == "USD"


class Usage(typing.NamedTuple):
    usage_start: str
    cost_cost: Decimal
    resource_id: str


MAP = {"usage_start": START, "cost_cost": COST, "resource_id": RESOURCE}


def test_beam_rows_with_a_column_map_arrive_exactly(emu, tmp_path):
    rows = [beam.Row(usage_start="2024-08-01T00:00:00Z", cost_cost=Decimal("1.10"), resource_id="a"),
            beam.Row(usage_start="2024-08-01T01:00:00Z", cost_cost=Decimal("2.000000000000000001"), resource_id="b"),
            beam.Row(usage_start="soon", cost_cost=Decimal("1"), resource_id="c")]
    out = _run(beam.Create(rows), tmp_path, connection_id="c1", api_url=emu.url, column_map=MAP,
               max_rejected_rows=1)
    assert emulator_totals(emu) == {"c1": {"2024-08": (2, Decimal("3.100000000000000001"))}}
    assert [r["values"][START] for r in out["rejected"]] == ["soon"]


def test_a_schemad_pcollection_with_a_column_map_arrives_exactly(emu, tmp_path):
    usage = [Usage("2024-08-01T00:00:00Z", Decimal("0.5"), "a"), Usage("2024-08-02T00:00:00Z", Decimal("0.25"), "b")]
    read = beam.Create(usage).with_output_types(Usage) | beam.Select("usage_start", "cost_cost", "resource_id")
    _run(read, tmp_path, connection_id="c1", api_url=emu.url, column_map=MAP)
    assert emulator_totals(emu) == {"c1": {"2024-08": (2, Decimal("0.75"))}}


def test_operation_and_input_format_constants_are_plain_strings():
    assert (Operation.SUM, Operation.REPLACE_HOURLY, Operation.REPLACE_DROP) == ("sum", "replace_hourly", "replace_drop")
    assert (InputFormat.CBF, InputFormat.FOCUS) == ("cbf", "focus")
    assert Operation.ALL == tuple(cli.build_parser()._option_string_actions["--operation"].choices)
    write = WriteToAnyCost(connection_id="c1", operation=Operation.REPLACE_HOURLY, input_format=InputFormat.FOCUS)
    assert write.settings.operation == "replace_hourly" and json.dumps(write.settings.operation) == '"replace_hourly"'
    assert WriteToAnyCost(connection_id="c1", operation="replace_drop").settings.operation == Operation.REPLACE_DROP


def test_the_public_surface_is_what_all_names():
    import transforms
    assert set(exported) == {"WriteToAnyCost", "WriteToAnyCostResult", "ReadCbf", "CbfBatch", "AggregateHourly",
                             "Operation", "InputFormat"}
    assert all(hasattr(transforms, name) for name in exported)
    for module in _transforms_modules():
        defined = [name for name, value in vars(module).items()
                   if (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ == module.__name__]
        assert [name for name in defined if not name.startswith("_") and name not in exported] == [], module.__name__


def _transforms_modules():
    """Every module of the `transforms` package, imported."""
    import transforms
    return [importlib.import_module(f"transforms.{info.name}") for info in pkgutil.iter_modules(transforms.__path__)]


@pytest.mark.parametrize("face, expected", [
    (config.API, "max_attempts must be a whole number of at least 1, not 0"),
    (config.CLI, "--max_attempts must be a whole number of at least 1, not 0")])
def test_settings_messages_name_the_setting_as_each_face_writes_it(face, expected):
    assert config.WriteSettings(connection_id="c1", max_attempts=0, face=face).problem() == expected
    url = config.WriteSettings(connection_id="c1", api_url="http://example.com", face=face).problem()
    assert url.startswith(config.setting_name("api_url", face) + " must use https://")


def test_core_reasons_name_settings_for_the_beam_api_as_keyword_arguments():
    failing = Outcome(status=503)
    api = RetryPolicy(max_attempts=1, face=config.API).decide(1, 0.0, failing, now=0)
    cli_face = RetryPolicy(max_attempts=1, face=config.CLI).decide(1, 0.0, failing, now=0)
    assert "(max_attempts=1)" in api.reason and "--max_attempts" not in api.reason
    assert "(--max_attempts 1)" in cli_face.reason
    late = RetryPolicy(max_attempts=9, max_total_seconds=1, face=config.API).decide(1, 0.5, failing, now=0,
                                                                                    rng=random.Random(1))
    assert "max_retry_seconds=1" in late.reason or late.retry
    api_settings = WriteToAnyCost(connection_id="c1", max_attempts=2, max_retry_seconds=7).settings
    assert api_settings.face == config.API and RetryPolicy.__dataclass_fields__["face"].default == config.CLI
    hold = report.hold_reason(5, [], api_settings)
    assert "max_rejected_rows=0" in hold and "result.rejected" in hold and "--" not in hold
    assert "--max_rejected_rows 0" in report.hold_reason(5, [], config.RunConfig(connection_id="c1"))
    assert config.setting_on("skip_month_check", config.API) == "skip_month_check=True"
    assert config.setting_on("skip_month_check", config.CLI) == "--skip_month_check"


@pytest.mark.parametrize("flags, named", [
    (["--max_retry_seconds", "-1"], "--max_retry_seconds must be a number of seconds"),
    (["--read_timeout", "-5"], "--read_timeout must be a number of seconds"),
    (["--lease_wait_seconds", "-5"], "--lease_wait_seconds must be a number of seconds"),
    (["--max_attempts", "0"], "--max_attempts must be a whole number of at least 1"),
    (["--max_body_bytes", "999"], "--max_body_bytes must be between 1000 and 5,000,000"),
    (["--test_namespace", " "], "--test_namespace must be printable text"),
    (["--dry_run"], "--dry_run needs --output_dir")])
def test_the_command_line_reuses_the_settings_check_naming_flags(flags, named, capsys):
    with pytest.raises(cli.UsageError, match=named.replace(".", r"\.")):
        cli.parse(["--input", "x.csv", "--connection_id", "c1"] + flags)
    assert cli.main(["--input", "x.csv", "--connection_id", "c1"] + flags) == cli.USAGE_ERROR
    assert named in capsys.readouterr().err
