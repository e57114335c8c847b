"""Table ownership in the core: ``copy_upsert(..., owner=...)`` records the owner as the last
line of the table's comment when it creates the table or first writes one without that
line (keeping the user's lines), refuses another owner before anything is written, and a
role that may not comment on the table writes without recording."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from resources import (
    PostgresResource,
    TableMismatchError,
    TableOwnerError,
    WritePlan,
    WriteResult,
    copy_upsert,
)
from resources.claims import OWNER_MARKER

from .conftest import Database

TABLE = "shop.products"
PLAN = WritePlan.from_options(conflict_target="sku")
FRAME = pd.DataFrame({"sku": ["a", "b"], "price": [1.0, 2.0]})


def write(
    postgres: PostgresResource,
    owner: str | None,
    frame: pd.DataFrame = FRAME,
    plan: WritePlan = PLAN,
    **kwargs: Any,
) -> WriteResult:
    return postgres.run(
        lambda conn: copy_upsert(
            conn, frame, schema="shop", table="products", plan=plan, owner=owner, **kwargs
        )
    )


def comment(db: Database) -> str | None:
    found = db.fetch("SELECT obj_description($1::regclass, 'pg_class') AS c", TABLE)
    return found[0]["c"]  # type: ignore[no-any-return]


def test_a_table_the_write_creates_records_its_owner(
    postgres: PostgresResource, db: Database
) -> None:
    write(postgres, "asset shop/products")
    assert comment(db) == f"{OWNER_MARKER}asset shop/products"
    result = write(postgres, "asset shop/products", FRAME.assign(price=[3.0, 4.0]))
    assert result.rows_updated == 2
    assert comment(db) == f"{OWNER_MARKER}asset shop/products"


@pytest.mark.parametrize("mode", ["upsert", "replace"])
def test_adopting_a_table_made_by_hand_keeps_the_users_comment(
    postgres: PostgresResource, db: Database, mode: str
) -> None:
    db.execute(
        "CREATE SCHEMA shop; CREATE TABLE shop.products (sku text PRIMARY KEY, price float8);"
        "COMMENT ON TABLE shop.products IS E'Prices, by sku.\\nAsk the shop team.'"
    )
    plan = WritePlan.from_options(conflict_target="sku", write_mode=mode)
    write(postgres, "op 'prices' output 'result'", plan=plan)
    assert comment(db) == (
        f"Prices, by sku.\nAsk the shop team.\n{OWNER_MARKER}op 'prices' output 'result'"
    )
    assert len(db.rows(TABLE, "sku")) == 2


def test_another_owner_is_refused_and_the_table_is_unchanged(
    postgres: PostgresResource, db: Database
) -> None:
    write(postgres, "asset shop/products")
    before, noted = db.snapshot(TABLE), comment(db)
    for plan in (PLAN, WritePlan.from_options(write_mode="replace", conflict_target="sku")):
        for frame in (FRAME.assign(price=[9.0, 9.0]), FRAME.iloc[:0]):
            with pytest.raises(TableOwnerError) as raised:
                write(postgres, "asset other/prices", frame, plan)
            message = str(raised.value)
            assert "shop.products" in message
            assert "asset shop/products" in message and "asset other/prices" in message
            assert "'table' metadata" in message and "'shared_table: true'" in message
            assert isinstance(raised.value, TableMismatchError)
    assert db.snapshot(TABLE) == before and comment(db) == noted


def test_no_owner_neither_checks_nor_records(postgres: PostgresResource, db: Database) -> None:
    write(postgres, None)
    assert comment(db) is None
    write(postgres, "asset shop/products")
    result = write(postgres, None, FRAME.assign(price=[5.0, 6.0]))  # a shared table's writer
    assert result.rows_updated == 2
    assert comment(db) == f"{OWNER_MARKER}asset shop/products"


def test_an_owner_is_stored_as_text_whatever_it_holds(
    postgres: PostgresResource, db: Database
) -> None:
    hostile = "x'); DROP TABLE shop.products; -- $$ %L \\"
    write(postgres, hostile)
    assert comment(db) == OWNER_MARKER + hostile
    write(postgres, hostile)


def test_a_role_that_does_not_own_the_table_writes_without_recording(
    database_url: str, db: Database
) -> None:
    role = f"loader_{os.getpid()}"
    db.execute(
        "CREATE SCHEMA shop; CREATE TABLE shop.products (sku text PRIMARY KEY, price float8);"
        "COMMENT ON TABLE shop.products IS 'by hand';"
        f"CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA shop TO {role};"
        f"GRANT SELECT, INSERT, UPDATE ON shop.products TO {role}"
    )
    url = make_url(database_url).set(username=role).render_as_string(hide_password=False)
    loader = PostgresResource(url=url)
    try:
        result = write(loader, "asset shop/products")
        assert result.rows_inserted == 2 and comment(db) == "by hand"
        # A recorded owner is still checked for such a role.
        db.execute(f"COMMENT ON TABLE shop.products IS E'by hand\\n{OWNER_MARKER}asset a'")
        before = db.snapshot(TABLE)
        with pytest.raises(TableOwnerError, match="asset a"):
            write(loader, "asset shop/products", FRAME.assign(price=[7.0, 7.0]))
        assert db.snapshot(TABLE) == before
    finally:
        loader.dispose()
        db.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_two_first_writers_of_one_table_one_records_the_other_is_refused(
    database_url: str, db: Database, postgres: PostgresResource
) -> None:
    """Both plan on a table without an owner line; the second to record it waits for the
    first's commit, reads its line, and fails."""
    db.execute(
        "CREATE SCHEMA shop; CREATE TABLE shop.products (sku text PRIMARY KEY, price float8)"
    )
    recorded, release = threading.Event(), threading.Event()
    other = PostgresResource(url=database_url)

    async def first(conn: Any) -> None:
        async with conn.begin():
            await copy_upsert(
                conn, FRAME, schema="shop", table="products", plan=PLAN, owner="asset a"
            )
            recorded.set()
            while not release.is_set():
                await asyncio.sleep(0.02)

    thread = threading.Thread(target=lambda: postgres.run(first))
    thread.start()
    try:
        assert recorded.wait(30)
        errors: list[BaseException] = []

        def second() -> None:
            try:
                write(other, "asset b", FRAME.assign(sku=["c", "d"]))
            except BaseException as exc:
                errors.append(exc)

        late = threading.Thread(target=second)
        late.start()
        late.join(1.0)
        assert late.is_alive(), "the second writer did not wait for the first's comment"
        release.set()
        late.join(60)
    finally:
        release.set()
        thread.join(60)
        other.dispose()
    assert len(errors) == 1 and isinstance(errors[0], TableOwnerError), errors
    assert comment(db) == f"{OWNER_MARKER}asset a"
    assert [r["sku"] for r in db.rows(TABLE, "sku")] == ["a", "b"]
