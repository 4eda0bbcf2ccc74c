"""bench/dynamodb_sizes.py: an item's size as DynamoDB bills it, one copy for the
benchmarks that count units under moto. bench/aws_requests.py's copy counted strings
and numbers only, so a finished job's record (its attempt history is a map) was said
to be 439 bytes where it is 566; bench/scrape_queues.py's counted a number's digits
one way and anything else by its Python repr."""

from __future__ import annotations

from bench import aws_requests
from bench.dynamodb_sizes import item_size


def test_every_attribute_counts_its_name_and_value() -> None:
    assert item_size({"pk": {"S": "héllo"}}) == 2 + 6  # UTF-8 bytes
    assert item_size({"n": {"N": "12345"}}) == 1 + 4  # 3 bytes of digits + 1
    assert item_size({"n": {"N": "-1200.50"}}) == 1 + 4  # significant digits: 12005
    assert item_size({"b": {"B": b"\x00\x01"}, "t": {"BOOL": True}, "z": {"NULL": True}}) == 7
    assert item_size({"s": {"SS": ["ab", "c"]}, "ns": {"NS": ["1", "22"]}}) == 1 + 3 + 2 + 4
    assert item_size({"l": {"L": [{"S": "ab"}, {"N": "7"}]}}) == 1 + 3 + (1 + 2) + (1 + 2)


def test_a_map_counts_its_names_and_values() -> None:
    """A job's attempt history: the bench's record size left it out."""
    history = {"attempt_log": {"M": {"a1": {"S": "x" * 100}}}}
    assert item_size(history) == 11 + 3 + (1 + 2 + 100)
    # bench.aws_requests sizes the record it reports with it (item_bytes).
    assert vars(aws_requests)["item_size"](history) == item_size(history)
