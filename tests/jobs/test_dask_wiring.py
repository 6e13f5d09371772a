"""``executor = "dask"`` from the settings to the executor: ``make_executor``, ``path_map`` from the TOML file
and from ``AUD_PATH_MAP``, and ``aud run`` against a scheduler that is not there."""

from __future__ import annotations

import json

import pytest

from daemon import cli
from daemon.config import load_settings
from daemon.jobs.dask_executor import DaskExecutor
from daemon.jobs.factory import make_executor
from daemon.jobs.pathmap import PathMap, PathMapError
from tests.jobs.daskcluster import free_port

pytestmark = pytest.mark.usefixtures("isolated_config")  # no AUD_* or user config


def write_config(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_the_toml_path_map_table_reaches_the_executor(tmp_path):
    config = write_config(tmp_path, 'executor = "dask"\ndask_scheduler = "tcp://10.0.0.2:8786"\n'
                                    '[path_map]\n"/Volumes/lab" = "/mnt/lab"\n"/Volumes/lab/clinic" = "/srv/clinic"\n')
    settings = load_settings(config, models=tmp_path / "models")
    executor = make_executor(settings)
    assert isinstance(executor, DaskExecutor)
    assert executor.scheduler == "tcp://10.0.0.2:8786"
    assert executor.path_map == PathMap((("/Volumes/lab/clinic", "/srv/clinic"), ("/Volumes/lab", "/mnt/lab")))
    assert executor.options.models_dir == tmp_path / "models"  # the workers find the models through the map
    assert executor.path_map.apply("/Volumes/lab/clinic/p01.mov") == "/srv/clinic/p01.mov"


def test_aud_path_map_json_reaches_the_executor_and_wins_over_the_file(tmp_path, monkeypatch):
    config = write_config(tmp_path, 'executor = "dask"\ndask_scheduler = "tcp://10.0.0.2:8786"\n'
                                    '[path_map]\n"/Volumes/lab" = "/mnt/lab"\n')
    monkeypatch.setenv("AUD_PATH_MAP", json.dumps({"/Volumes/share": "/data/share"}))
    monkeypatch.setenv("AUD_DASK_SCHEDULER", "tcp://10.0.0.3:8786")
    executor = make_executor(load_settings(config))
    assert isinstance(executor, DaskExecutor)
    assert executor.scheduler == "tcp://10.0.0.3:8786"
    assert executor.path_map == PathMap((("/Volumes/share", "/data/share"),))


def test_flags_choose_the_executor_and_the_process_pool_stays_the_default(tmp_path):
    assert type(make_executor(load_settings(None, models=tmp_path))).__name__ == "ProcessExecutor"
    flags = cli.build_parser().parse_args(["run", "--executor", "dask", "--dask-scheduler", "tcp://127.0.0.1:1"])
    settings = cli.settings_from(flags, "inbox", "outbox", "state", *cli.RUN_SETTINGS)
    assert (settings.executor, settings.dask_scheduler) == ("dask", "tcp://127.0.0.1:1")


def test_dask_without_a_scheduler_and_a_bad_path_map_are_named(tmp_path):
    with pytest.raises(ValueError, match="dask_scheduler"):
        make_executor(load_settings(None, executor="dask"))
    config = write_config(tmp_path, 'executor = "dask"\ndask_scheduler = "tcp://10.0.0.2:8786"\n'
                                    '[path_map]\n"Volumes/lab" = "/mnt/lab"\n')
    with pytest.raises(PathMapError, match="path_map: entry 'Volumes/lab'.*not an absolute path"):
        make_executor(load_settings(config))


def test_aud_run_exits_non_zero_naming_an_unreachable_scheduler(tmp_path, tiny_models, capsys):
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    code = cli.main(["run", "--inbox", str(tmp_path / "in"), "--outbox", str(tmp_path / "out"),
                     "--state", str(tmp_path / "state"), "--models", str(tiny_models), "--provider", "cpu",
                     "--executor", "dask", "--dask-scheduler", address])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert f"aud run: cannot reach the Dask scheduler at {address}:" in err
    assert "Timed out trying to connect" in err or "refused" in err.lower()


def test_aud_run_with_a_bad_path_map_exits_naming_the_entry_before_opening_its_socket(tmp_path, tiny_models,
                                                                                       capsys):
    config = write_config(tmp_path, 'executor = "dask"\ndask_scheduler = "tcp://127.0.0.1:1"\n'
                                    '[path_map]\n"/Volumes/lab" = "mnt/lab"\n')
    state = tmp_path / "state"
    code = cli.main(["run", "--config", str(config), "--inbox", str(tmp_path / "in"), "--outbox",
                     str(tmp_path / "out"), "--state", str(state), "--models", str(tiny_models), "--provider", "cpu"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "aud run: path_map: entry '/Volumes/lab' = 'mnt/lab': 'mnt/lab' is not an absolute path" in err
    assert not (state / "aud.sock").exists()
