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
    assert all(a.copy_source == f"b/{a.source_key}" for a in bi.archive)


def test_batch_id_must_be_a_valid_execution_name() -> None:
    with pytest.raises(ValueError):
        BatchInput(batch_id="bad id with spaces", group_key="g", bucket="b", processing_date="2025-01-01")
