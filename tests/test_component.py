"""PostgresUpsertComponent, loaded from YAML, writes through the IO manager."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import EnvVar
from dagster.components import load_from_defs_folder

from resources import PostgresResource, PostgresUpsertIOManager

from .conftest import Database
from .helpers import counts, written

YAML = """\
type: resources.component.PostgresUpsertComponent
attributes:
  url_env_var: WAREHOUSE_URL
  schema: analytics
  statement_timeout: 60
"""


PYPROJECT = """\
[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "copy_upsert_project"
"""

ASSET = """\
import pandas as pd
from dagster import asset


@asset(metadata={"conflict_target": "id"})
def events() -> pd.DataFrame:
    return pd.DataFrame({"id": [1, 2], "kind": ["click", "view"]})
"""


def test_project_declares_the_resource_and_io_manager_in_yaml(
    tmp_path: Path, database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A components project (defs folder) whose postgres/defs.yaml names the component."""
    defs_folder = tmp_path / "copy_upsert_project" / "defs"
    (defs_folder / "postgres").mkdir(parents=True)
    (defs_folder.parent / "__init__.py").write_text("")
    (defs_folder / "__init__.py").write_text("")
    (defs_folder / "postgres" / "defs.yaml").write_text(YAML)
    (defs_folder / "events.py").write_text(ASSET)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("WAREHOUSE_URL", database_url)

    defs = load_from_defs_folder(path_within_project=tmp_path)
    resources = defs.resources or {}
    postgres = resources["postgres"]
    assert isinstance(postgres, PostgresResource)
    assert postgres.url == EnvVar("WAREHOUSE_URL")  # the name, never the secret
    assert postgres.statement_timeout == 60
    io_manager = resources["io_manager"]
    assert isinstance(io_manager, PostgresUpsertIOManager) and io_manager.schema_ == "analytics"

    job = defs.resolve_implicit_global_asset_job_def()
    for expected in ((2, 2, 0, 0, 0), (2, 0, 0, 2, 0)):
        assert counts(written(job.execute_in_process(), ("events",))) == expected
    assert db.fetch("SELECT count(*) AS n FROM analytics.events") == [{"n": 2}]
