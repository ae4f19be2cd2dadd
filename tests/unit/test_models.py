import pytest

from cartflow.core.models import BatchInput, DataType, InvalidRawKey, RawFile


@pytest.mark.parametrize(
    ("key", "data_type", "part"),
    [
        ("raw/orders/orders_part1.csv", DataType.ORDERS, "orders_part1"),
        ("raw/order_items/2025-07-08/items.CSV", DataType.ORDER_ITEMS, "2025-07-08_items"),
        ("raw/order_lines/x.csv", DataType.ORDER_LINES, "x"),
        ("raw/orders/orders.csv.gz", DataType.ORDERS, "orders"),
        ("raw/orders/2025 08 01 export (1).csv", DataType.ORDERS, "2025 08 01 export (1)"),
        ("raw/products/ünïcode.CSV.GZ", DataType.PRODUCTS, "ünïcode"),
    ],
)
def test_parse_accepts_known_types(key: str, data_type: DataType, part: str) -> None:
    f = RawFile.parse("b", key)
    assert f.data_type is data_type
    assert f.data_type_part == f"{data_type.value}#{part}"
    assert f.uri == f"s3://b/{key}"


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("raw/customers/c.csv", "unknown data type 'customers'"),
        ("raw/orders/o.json", "only .csv and .csv.gz files"),
        ("raw/orders/o.zip", "unzip it and upload the .csv inside"),
        ("raw/orders/o.gz", "name it <file>.csv.gz"),
        ("raw/orders/o.xlsx", 'save the sheet as "CSV UTF-8 (Comma delimited)"'),
        ("raw/orders.csv", "raw/<data_type>/<file>.csv"),
        ("raw/orders/../x.csv", "raw/<data_type>/<file>.csv"),
        ("raw/orders/a\tb.csv", "0009 is not allowed in a key"),
        ("raw/orders/a b /x.csv", "starts or ends with a space"),
        ("processed/orders/a.csv", "not under raw/"),
        ("raw/orders/" + "a" * 600 + ".csv", "longer than"),
    ],
)
def test_parse_rejects_with_specific_reason(key: str, reason: str) -> None:
    with pytest.raises(InvalidRawKey, match=reason.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        RawFile.parse("b", key)


def test_batch_input_splits_paths_by_type_and_plans_archive() -> None:
    files = [
        RawFile.parse("b", k) for k in ("raw/products/p.csv", "raw/orders/o2.csv", "raw/orders/o1.csv", "raw/order_lines/l.csv")
    ]
    bi = BatchInput.from_files(
        batch_id="b1-2025-07-08-000", group_key="2025-07-08", bucket="b", processing_date="2025-07-09", files=files
    )
    assert bi.orders_paths == ["s3://b/raw/orders/o1.csv", "s3://b/raw/orders/o2.csv"]
    assert bi.products_paths == ["s3://b/raw/products/p.csv"]
    assert bi.order_lines_paths == ["s3://b/raw/order_lines/l.csv"]
    assert bi.order_items_paths == []
    assert {a.archive_key for a in bi.archive} == {
        "processed/b1-2025-07-08-000/orders/o1.csv",
        "processed/b1-2025-07-08-000/orders/o2.csv",
        "processed/b1-2025-07-08-000/products/p.csv",
        "processed/b1-2025-07-08-000/order_lines/l.csv",
    }
    # The jobs read staged copies; the archive copies the staged copy, never raw/ again.
    assert bi.staged
    assert all(a.staged_key == "staging/b1-2025-07-08-000/" + a.source_key[len("raw/") :] for a in bi.archive)
    assert all(a.copy_source == f"b/{a.staged_key}" for a in bi.archive)
    assert all(a.read_source == f"b/{a.source_key}" and a.version_id is None and a.delete_raw for a in bi.archive)
    assert bi.read_uri("s3://b/raw/orders/o1.csv") == "s3://b/staging/b1-2025-07-08-000/orders/o1.csv"


def test_each_upload_is_read_and_archived_by_its_version() -> None:
    files = [RawFile.parse("b", "raw/orders/a b.csv"), RawFile.parse("b", "raw/orders/c.csv")]
    bi = BatchInput.from_files(
        batch_id="b2-2025-07-08-000",
        group_key="2025-07-08",
        bucket="b",
        processing_date="2025-07-09",
        files=files,
        versions={"s3://b/raw/orders/a b.csv": "v+1/x"},
        sources={"s3://b/raw/orders/c.csv": "processed/b1/orders/c.csv"},
        replaces=["b1"],
    )
    by_key = {a.source_key: a for a in bi.archive}
    versioned, backfilled = by_key["raw/orders/a b.csv"], by_key["raw/orders/c.csv"]
    # The version is URL-encoded inside CopySource, as S3 parses it.
    assert versioned.read_source == "b/raw/orders/a%20b.csv?versionId=v%2B1%2Fx"
    assert versioned.version_id == "v+1/x" and versioned.delete_raw
    # A backfill reads the archived copy and leaves it in place.
    assert backfilled.read_source == "b/processed/b1/orders/c.csv"
    assert backfilled.version_id is None and not backfilled.delete_raw
    assert bi.replaces == ["b1"]


def test_batch_id_must_be_a_valid_execution_name() -> None:
    with pytest.raises(ValueError):
        BatchInput(batch_id="bad id with spaces", group_key="g", bucket="b", processing_date="2025-01-01")
