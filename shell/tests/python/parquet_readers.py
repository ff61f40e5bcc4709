"""Reads a flowsql Parquet dataset (a directory of date=YYYY-MM-DD/hour=HH/
partitions) with pyarrow, pandas, polars and DuckDB, each as it comes, and
prints one JSON object: per reader, the column names and types it sees and
every row, normalized (timestamps as integer ns since the epoch, lists as
lists), sorted. The Rust test (store_readers.rs) asserts on it.

usage: parquet_readers.py DATASET_DIR
"""

import json
import math
import sys

# Nullable integer columns: pandas holds them as floats, with NaN for NULL.
NULLABLE_INTEGERS = ("processId", "userId")


def value(k, v):
    if hasattr(v, "__iter__") and not isinstance(v, str):
        return list(v)
    if isinstance(v, float) and math.isnan(v):
        return None
    if k in NULLABLE_INTEGERS and isinstance(v, float):
        return int(v)
    return v


def _nan(v):
    return isinstance(v, float) and math.isnan(v)


def normalize(rows):
    out = []
    for r in rows:
        out.append({k: value(k, v) for k, v in r.items()})
    out.sort(key=lambda r: (r["timestamp"], r["cgroupId"], r["connectionDirection"], r["srcIP"], r["srcPort"]))
    return out


def with_pyarrow(root):
    import pyarrow as pa
    import pyarrow.dataset as ds

    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    schema = [[f.name, str(f.type)] for f in table.schema]
    table = table.set_column(
        table.schema.get_field_index("timestamp"), "timestamp", table.column("timestamp").cast(pa.int64())
    )
    return {"schema": schema, "rows": normalize(table.to_pylist())}


def with_pandas(root):
    import pandas as pd

    df = pd.read_parquet(root)
    schema = [[c, str(df[c].dtype)] for c in df.columns]
    lists = [v for v in df["dstDomains"] if len(v)]
    list_type = type(lists[0]).__name__ if lists else None
    element = type(lists[0][0]).__name__ if lists else None
    df["timestamp"] = df["timestamp"].astype("int64")
    rows = []
    for r in df.to_dict("records"):
        r["date"] = str(r["date"])
        r["hour"] = int(r["hour"])
        r["srcDomains"] = [str(x) for x in r["srcDomains"]]
        r["dstDomains"] = [str(x) for x in r["dstDomains"]]
        r = {k: (int(v) if hasattr(v, "item") and not isinstance(v, str) and not _nan(v) else v) for k, v in r.items()}
        rows.append(r)
    return {"schema": schema, "rows": normalize(rows), "listType": list_type, "listElementType": element}


def with_polars(root):
    import polars as pl

    df = pl.read_parquet(f"{root}/**/*.parquet", hive_partitioning=True)
    schema = [[name, str(dtype)] for name, dtype in df.schema.items()]
    df = df.with_columns(pl.col("timestamp").dt.epoch("ns"), pl.col("date").cast(pl.Utf8))
    return {"schema": schema, "rows": normalize(df.to_dicts())}


def with_duckdb(root):
    import duckdb

    con = duckdb.connect()
    source = f"read_parquet('{root}/**/*.parquet', hive_partitioning = true)"
    schema = [[r[0], r[1]] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
    cursor = con.execute(
        f"SELECT * REPLACE (epoch_ns(timestamp) AS timestamp, CAST(date AS VARCHAR) AS date) FROM {source}"
    )
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r)) for r in cursor.fetchall()]
    return {"schema": schema, "rows": normalize(rows)}


def main():
    root = sys.argv[1]
    result = {}
    for name, read in [("pyarrow", with_pyarrow), ("pandas", with_pandas), ("polars", with_polars), ("duckdb", with_duckdb)]:
        result[name] = read(root)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
