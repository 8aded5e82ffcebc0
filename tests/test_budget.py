"""Budget caps (--max-bytes, --max-walltime): stop between units, resumable, same results."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from fusecube.config import RunConfig, SyntheticSource
from fusecube.errors import BudgetExceeded, ConfigError
from fusecube.runner import budget as budget_mod
from fusecube.runner.budget import Budget, budget_from_options, fetch_guard, parse_duration
from fusecube.runner.ledger import Ledger


def test_parse_caps():
    assert parse_duration("90s") == 90 and parse_duration("15m") == 900
    assert parse_duration("1h30m") == 5400 and parse_duration("2.5") == 2.5
    for bad in ("soon", "-3s", "0", "5 parsecs"):
        with pytest.raises(ConfigError, match="max-walltime"):
            parse_duration(bad)
    with pytest.raises(ConfigError, match="--max-bytes 'lots'"):
        budget_from_options("lots", None)
    assert budget_from_options(None, None) is None
    capped = budget_from_options("2GB", "10m")
    assert capped.max_bytes == 2 * 10**9 and capped.max_seconds == 600


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_budget_stops_before_the_unit_that_would_cross_a_cap(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(budget_mod.time, "perf_counter", clock)
    budget = Budget(max_seconds=10.0)
    budget.unit_started()
    for done in range(1, 4):  # 3 s a unit: after 2 units (6 s) the 3rd fits (9 s), a 4th not
        clock.now += 3.0
        budget.unit_done()
        if done < 3:
            budget.check(done, 10, unit="blocks", resume="again")
    with pytest.raises(BudgetExceeded, match=r"--max-walltime 10 s cap after 3/10 blocks done, "
                                             r"0\.0 MB moved, 9\.0 s") as info:
        budget.check(3, 10, unit="blocks", resume="Resume it.")
    assert info.value.exit_code == 75 and "Resume it." in str(info.value)
    budget.check(10, 10, unit="blocks", resume="")  # all done: nothing to stop

    bytes_budget = Budget(max_bytes=1000)  # bytes added per unit (a fetch's items)
    guard = fetch_guard(bytes_budget, "again")

    class Item:
        def __init__(self, done: int) -> None:
            self.bytes_read, self.done, self.total = 300, done, 9

    guard(Item(1))
    guard(Item(2))  # 600 + 300 fits
    with pytest.raises(BudgetExceeded, match=r"--max-bytes 0\.0 MB cap after 3/9 items"):
        guard(Item(3))  # 900 + 300 would not
    assert bytes_budget.used()[1] == 900


class RecordingBudget(Budget):
    """A budget without caps that notes the bytes moved when the blocks start and after each."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.at_start = 0
        self.after_block: list[int] = []

    def unit_started(self) -> None:
        super().unit_started()
        self.at_start = self.used()[1]

    def unit_done(self, nbytes: int = 0) -> None:
        super().unit_done(nbytes)
        self.after_block.append(self.used()[1])


class CapAtBlocks(Budget):
    """A byte cap set when the blocks start: ``blocks_bytes`` more than moved until then.

    The stages before the blocks move fewer bytes in a warm process (modules and compiled
    kernels already loaded), so the cap is placed relative to the blocks.
    """

    def __init__(self, blocks_bytes: int) -> None:
        super().__init__(max_bytes=10**15)
        self.blocks_bytes = blocks_bytes

    def unit_started(self) -> None:
        super().unit_started()
        self.max_bytes = self.used()[1] + self.blocks_bytes


def _config(out, ledger) -> RunConfig:
    return RunConfig(source=SyntheticSource(width=48, height=48, seed=5), out=out,
                     gapfill="linear", block_size=16, memory_limit="2GB", report=False,
                     result_gates=False, ledger=str(ledger))


def _load(path) -> xr.Dataset:
    with xr.open_zarr(path) as ds:
        return ds.load()


@pytest.mark.slow  # three small runs: ~15 s each on 2 shared cores
def test_run_stops_at_byte_cap_and_resume_matches_uncapped(tmp_path):
    from fusecube.runner.execution import fingerprint, run

    ledger = tmp_path / "ledger.sqlite"
    recording = RecordingBudget(max_bytes=10**15)
    reference = run(_config(tmp_path / "ref", ledger), budget=recording)
    assert reference.n_blocks == 9 and len(recording.after_block) == 9
    # a cap half way through the blocks of the same run
    budget = CapAtBlocks(int(recording.after_block[4] - recording.at_start))
    with pytest.raises(BudgetExceeded, match=r"--max-bytes .* cap after (\d+)/9 blocks") as info:
        run(_config(tmp_path / "capped", ledger), budget=budget)
    message = str(info.value)
    done = int(message.split("cap after ")[1].split("/")[0])
    assert 0 < done < 9, message
    used, cap = budget.used()[1], budget.max_bytes
    assert used <= cap * 1.05, (used, cap)
    assert used + 2 * budget.next_unit()[1] >= cap  # it did not stop blocks early
    assert "fusecube resume" in message
    book = Ledger(str(ledger))
    record = book.find_resumable(str((tmp_path / "capped").resolve()),
                                 fingerprint(_config(tmp_path / "capped", ledger)))
    assert record is not None and record.status == "stopped" and record.blocks_done == done
    book.dispose()
    assert not (tmp_path / "capped").exists()  # still staged: nothing published

    resumed = run(_config(tmp_path / "capped", ledger), resume=True)
    assert resumed.blocks_resumed == done
    a, b = _load(reference.result), _load(resumed.result)
    assert sorted(a.data_vars) == sorted(b.data_vars)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_cli_walltime_cap_exits_with_progress_then_run_resume_finishes(tmp_path, capsys):
    import json

    from fusecube.cli.app import main

    config = tmp_path / "run.json"
    config.write_text(json.dumps({
        "source": {"kind": "synthetic", "width": 32, "height": 32, "seed": 2},
        "out": str(tmp_path / "out"), "gapfill": "linear", "block_size": 16,
        "memory_limit": "2GB", "report": False, "ledger": str(tmp_path / "ledger.sqlite")}))
    with pytest.raises(SystemExit) as stop:
        main(["run", str(config), "--max-walltime", "0.001s"])
    assert stop.value.code == 75
    err = " ".join(capsys.readouterr().err.split())
    assert "Stopped at the --max-walltime 0.001 s cap before the blocks, " in err, err
    assert "--resume" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as done:
        main(["run", str(config), "--resume"])
    assert done.value.code == 0
    assert (tmp_path / "out" / "result.zarr").exists()


def test_batch_walltime_cap_stops_between_aois_and_resume_finishes(tmp_path):
    from fusecube.batch import BatchConfig, batch_status, run_batch

    csv = tmp_path / "aois.csv"
    csv.write_text("id,lon,lat,size_km\n" + "".join(
        f"a{i},{110.6 + 0.02 * i},-6.9,0.32\n" for i in range(3)))
    config = BatchConfig(out=tmp_path / "b", start="2023-11-01", end="2024-04-30",
                         patch_size=16, concurrency=1, produce=("cube",))
    with pytest.raises(BudgetExceeded, match=r"--max-walltime .* cap after 1/3 AOIs"):
        run_batch(csv, config, budget=Budget(max_seconds=1e-3))
    status = batch_status(tmp_path / "b")
    assert status["state"] == "stopped"
    assert sorted(r.state for r in status["records"]) == ["done", "pending", "pending"]
    result = run_batch(csv, config, resume=True)
    assert [r.state for r in result.records] == ["done"] * 3
