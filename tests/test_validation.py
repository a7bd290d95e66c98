"""Input is checked before any request: ids of the documented shape, IPv4 addresses, non-empty unique lists."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from eni_async import validation
from eni_async.errors import EniAsyncError, InputError

ID_CHECKS: dict[str, tuple[Callable[[object], str], str]] = {
    "vpc": (validation.vpc_id, "vpc_id"),
    "eni": (validation.eni_id, "eni_id"),
}


@pytest.mark.parametrize("kind", ["vpc", "eni"])
@pytest.mark.parametrize("suffix", ["7t9nf3pu", "m6dyj72l", "00000000", "abcdefgh"])
def test_id_of_the_documented_shape_is_accepted(kind: str, suffix: str) -> None:
    """``vpc-``/``eni-`` followed by 8 lowercase letters or digits is accepted and returned unchanged."""
    check, _ = ID_CHECKS[kind]
    assert check(f"{kind}-{suffix}") == f"{kind}-{suffix}"


BAD_SUFFIXES = [
    pytest.param("7T9NF3PU", id="uppercase"),
    pytest.param("7t9nF3pu", id="one-uppercase"),
    pytest.param("7t9nf3p", id="7-chars"),
    pytest.param("7t9nf3pu1", id="9-chars"),
    pytest.param("", id="empty-suffix"),
    pytest.param("7t9n-3pu", id="dash"),
    pytest.param("7t9n_3pu", id="underscore"),
    pytest.param(" 7t9nf3p", id="leading-space"),
    pytest.param("7t9nf3pu\n", id="trailing-newline"),
    pytest.param("7t9nf3p\u00e9", id="non-ascii"),
]


@pytest.mark.parametrize("kind", ["vpc", "eni"])
@pytest.mark.parametrize("suffix", BAD_SUFFIXES)
def test_id_with_a_bad_suffix_is_rejected(kind: str, suffix: str) -> None:
    """An id whose suffix is not exactly 8 lowercase letters or digits is an ``InputError`` naming it."""
    check, field = ID_CHECKS[kind]
    bad = f"{kind}-{suffix}"
    with pytest.raises(InputError) as info:
        check(bad)
    assert (info.value.field, info.value.value) == (field, bad)


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        ("vpc", "eni-7t9nf3pu"),
        ("eni", "vpc-m6dyj72l"),
        ("vpc", "VPC-7t9nf3pu"),
        ("eni", "ENI-m6dyj72l"),
        ("vpc", "vpc7t9nf3pu1"),
        ("eni", "subnet-m6dyj72l"),
        ("vpc", " vpc-7t9nf3pu"),
        ("eni", ""),
    ],
)
def test_id_with_a_wrong_prefix_is_rejected(kind: str, bad: str) -> None:
    """An id with the other kind's prefix, an uppercase prefix or none is rejected."""
    check, field = ID_CHECKS[kind]
    with pytest.raises(InputError) as info:
        check(bad)
    assert info.value.field == field


@pytest.mark.parametrize("kind", ["vpc", "eni"])
@pytest.mark.parametrize("bad", [None, 12345678, b"vpc-7t9nf3pu", ["eni-m6dyj72l"]], ids=repr)
def test_non_string_id_is_rejected(kind: str, bad: object) -> None:
    """An id that is not a ``str`` is an ``InputError``, not a ``TypeError``."""
    check, _ = ID_CHECKS[kind]
    with pytest.raises(InputError) as info:
        check(bad)
    assert info.value.value is bad


def test_id_error_is_a_value_error_naming_field_and_value() -> None:
    """The error is a ``ValueError`` (and an ``EniAsyncError``) whose message names the field and the value."""
    with pytest.raises(ValueError, match="eni_id") as info:
        validation.eni_id("eni-BAD")
    assert isinstance(info.value, EniAsyncError)
    assert "'eni-BAD'" in str(info.value)


def test_custom_field_name_is_reported() -> None:
    """A caller may name the field, and the error uses that name."""
    with pytest.raises(InputError, match="--vpc-id") as info:
        validation.vpc_id("nope", field="--vpc-id")
    assert info.value.field == "--vpc-id"


@pytest.mark.parametrize("ip", ["10.0.0.2", "0.0.0.0", "255.255.255.255", "172.16.32.111", "192.168.0.1"])
def test_valid_ipv4_is_accepted(ip: str) -> None:
    """A dotted-quad IPv4 address is accepted and returned."""
    assert validation.ipv4(ip) == ip


@pytest.mark.parametrize(
    "bad",
    [
        "10.0.0.256",
        "10.0.0",
        "10.0.0.1.2",
        "::1",
        "fe80::1",
        "",
        " 10.0.0.2",
        "10.0.0.2 ",
        "10.0.0.02",
        "10.0.0.-1",
        "10.0.0.2/32",
        "ten.zero.zero.two",
        "0x0a.0.0.2",
        "\u0661\u0660.0.0.2",
        10,
        167772162,
        None,
        b"10.0.0.2",
        ("10.0.0.2",),
    ],
    ids=repr,
)
def test_invalid_ipv4_is_rejected(bad: object) -> None:
    """Anything but a dotted-quad IPv4 string is an ``InputError`` naming the field and the value."""
    with pytest.raises(InputError) as info:
        validation.ipv4(bad)
    assert (info.value.field, info.value.value) == ("ip", bad)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "ips",
    [
        ["10.0.0.2"],
        ["10.0.0.2", "10.0.0.3"],
        ("10.0.0.2", "10.0.0.3"),
        (ip for ip in ["10.0.0.2", "10.0.0.3"]),
    ],
    ids=["one", "list", "tuple", "generator"],
)
def test_ip_list_accepts_any_iterable_of_ips(ips: object) -> None:
    """A non-empty iterable of distinct IPv4 addresses comes back as a tuple, in order."""
    result = validation.ip_list(ips)
    assert isinstance(result, tuple)
    assert result[0] == "10.0.0.2"


def test_ip_list_keeps_order() -> None:
    """The IPs come back in the caller's order."""
    ips = ["10.0.0.9", "10.0.0.2", "10.0.0.5"]
    assert validation.ip_list(ips) == tuple(ips)


@pytest.mark.parametrize("empty", [[], (), set()], ids=["list", "tuple", "set"])
def test_empty_ip_list_is_rejected(empty: object) -> None:
    """An empty list is an ``InputError`` on ``ips``."""
    with pytest.raises(InputError, match="at least one") as info:
        validation.ip_list(empty)
    assert info.value.field == "ips"


def test_duplicate_ip_is_rejected_naming_it() -> None:
    """The same IP twice is an ``InputError`` that names the duplicate."""
    with pytest.raises(InputError, match="duplicate") as info:
        validation.ip_list(["10.0.0.2", "10.0.0.3", "10.0.0.2"])
    assert (info.value.field, info.value.value) == ("ips", "10.0.0.2")


@pytest.mark.parametrize("bare", ["10.0.0.2", "10.0.0.2,10.0.0.3", ""])
def test_bare_string_is_rejected(bare: str) -> None:
    """A bare string is not a list of IPs (it would otherwise iterate character by character)."""
    with pytest.raises(InputError, match="list") as info:
        validation.ip_list(bare)
    assert (info.value.field, info.value.value) == ("ips", bare)


@pytest.mark.parametrize("bad", [None, 10, b"10.0.0.2"], ids=repr)
def test_non_iterable_ip_list_is_rejected(bad: object) -> None:
    """Something that is not a list of strings is an ``InputError``, not a ``TypeError``."""
    with pytest.raises(InputError):
        validation.ip_list(bad)


def test_bad_ip_inside_a_list_is_named() -> None:
    """A bad IP inside the list is reported with the list's field name and the bad value."""
    with pytest.raises(InputError) as info:
        validation.ip_list(["10.0.0.2", "10.0.0.256"])
    assert (info.value.field, info.value.value) == ("ips", "10.0.0.256")
    assert "10.0.0.256" in str(info.value)


def test_release_request_checks_all_three() -> None:
    """A release request returns the VPC id, ENI id and IPs once all three are valid."""
    assert validation.release_request("vpc-7t9nf3pu", "eni-m6dyj72l", ["10.0.0.2"]) == (
        "vpc-7t9nf3pu",
        "eni-m6dyj72l",
        ("10.0.0.2",),
    )


@pytest.mark.parametrize(
    ("vpc", "eni", "ips", "field"),
    [
        ("vpc-BAD", "eni-m6dyj72l", ["10.0.0.2"], "vpc_id"),
        ("vpc-7t9nf3pu", "eni-BAD", ["10.0.0.2"], "eni_id"),
        ("vpc-7t9nf3pu", "eni-m6dyj72l", [], "ips"),
    ],
)
def test_release_request_names_the_bad_part(vpc: str, eni: str, ips: list[str], field: str) -> None:
    """A release request with one bad part fails on that part's field."""
    with pytest.raises(InputError) as info:
        validation.release_request(vpc, eni, ips)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("count", "sizes"),
    [(25, [10, 10, 5]), (1, [1]), (10, [10]), (11, [10, 1]), (20, [10, 10]), (0, [])],
)
def test_chunks_of_at_most_ten(count: int, sizes: list[int]) -> None:
    """IPs split into consecutive chunks of at most 10, in order (D9)."""
    ips = tuple(f"10.0.{i // 250}.{i % 250 + 1}" for i in range(count))
    parts = validation.chunks(ips)
    assert [len(part) for part in parts] == sizes
    assert tuple(ip for part in parts for ip in part) == ips


def test_chunks_with_a_smaller_size() -> None:
    """``chunks`` honours an explicit size."""
    assert validation.chunks(("a", "b", "c"), size=2) == [("a", "b"), ("c",)]


def test_max_ips_per_call_is_ten() -> None:
    """At most 10 IPs go in one call (docs/protocol.md D9)."""
    assert validation.MAX_IPS_PER_CALL == 10


@pytest.mark.parametrize("bad", ["eni-BAD", 7, None, "vpc-12345678"])
def test_eni_ids_are_checked_each_and_the_first_bad_one_is_named(bad: object) -> None:
    """A describe's ids: repeats dropped in first-seen order; one that is not an ENI id is named."""
    assert validation.eni_ids(["eni-0000000b", "eni-0000000a", "eni-0000000b"]) == [
        "eni-0000000b",
        "eni-0000000a",
    ]
    with pytest.raises(InputError) as caught:
        validation.eni_ids(["eni-0000000a", bad, "eni-x"])
    assert caught.value.field == "eni_id"
    assert caught.value.value == bad


def test_chunks_of_one_call_or_more() -> None:
    """At most ten IPs a call, in order; nothing to chunk is no chunk."""
    ips = tuple(f"10.0.0.{i}" for i in range(1, 24))
    assert validation.chunks(ips[:10]) == [ips[:10]]
    assert validation.chunks(ips) == [ips[:10], ips[10:20], ips[20:]]
    assert validation.chunks(()) == []
