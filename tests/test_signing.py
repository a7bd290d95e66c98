"""Signing is pinned by every known-answer vector of docs/protocol.md §3 (made by the official SDKs)."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from eni_async import signing

SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3gnPhESA"
SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA"
V2_PATH = "/v2/index.php"


def _params(query: str) -> dict[str, str]:
    """Split a raw ``k=v&...`` string into parameters, inserted in reverse so the signer must sort them."""
    pairs = [pair.split("=", 1) for pair in query.split("&")]
    return {name: value for name, value in reversed(pairs)}


# (id, method, host, path, raw sorted query of the string to sign, signature)
V2_VECTORS = [
    pytest.param(
        "GET",
        "cvm.api.qcloud.com",
        V2_PATH,
        f"Action=DescribeInstances&Nonce=345122&Region=gz&SecretId={SECRET_ID}&Timestamp=1408704141",
        "HgIYOPcx5lN6gz8JsCFBNAWp2oQ=",
        id="V2-A",
    ),
    pytest.param(
        "GET",
        "cvm.api.qcloud.com",
        V2_PATH,
        f"Action=DescribeInstances&Nonce=345122&Region=gz&SecretId={SECRET_ID}&Timestamp=1408704141"
        "&instanceIds.0=qcvm12345&instanceIds.1=qcvm56789",
        "66prolcgMqz0pm5B52x1Z5ulz/Q=",
        id="V2-A-instanceIds",
    ),
    pytest.param(
        "GET",
        "cvm.api.qcloud.com",
        V2_PATH,
        f"Action=DescribeInstances&InstanceIds.0=ins-09dx96dg&Nonce=11886&Region=ap-guangzhou"
        f"&SecretId={SECRET_ID}&SignatureMethod=HmacSHA256&Timestamp=1465185768",
        "0EEm/HtGRr/VJXTAD9tYMth1Bzm3lLHz5RCDv1GdM8s=",
        id="V2-B-HmacSHA256",
    ),
    pytest.param(
        "GET",
        "cvm.api.qcloud.com",
        V2_PATH,
        f"Action=DescribeInstances&InstanceIds.0=ins-09dx96dg&Nonce=11886&Region=ap-guangzhou"
        f"&SecretId={SECRET_ID}&SignatureMethod=HmacSHA1&Timestamp=1465185768",
        "nPVnY6njQmwQ8ciqbPl5Qe+Oru4=",
        id="V2-B-HmacSHA1",
    ),
    pytest.param(
        "GET",
        "vpc.api.qcloud.com",
        V2_PATH,
        f"Action=UnassignPrivateIpAddresses&Nonce=11886&Region=gz&SecretId={SECRET_ID}"
        "&SignatureMethod=HmacSHA256&Timestamp=1465185768&networkInterfaceId=eni-m6dyj72l"
        "&privateIpAddress.0=10.0.0.2&privateIpAddress.1=10.0.0.3&vpcId=vpc-7t9nf3pu",
        "d2YYeo+4ApKJAanob66husmn0jSEeHRhM3isLkSLoqM=",
        id="V2-C-GET",
    ),
    pytest.param(
        "POST",
        "vpc.api.qcloud.com",
        V2_PATH,
        f"Action=UnassignPrivateIpAddresses&Nonce=11886&Region=gz&SecretId={SECRET_ID}"
        "&SignatureMethod=HmacSHA256&Timestamp=1465185768&networkInterfaceId=eni-m6dyj72l"
        "&privateIpAddress.0=10.0.0.2&privateIpAddress.1=10.0.0.3&vpcId=vpc-7t9nf3pu",
        "qXyaHxukMNFVW6Smey9JwcWIpc8iFwXL/fzIch4v01c=",
        id="V2-C-POST",
    ),
    pytest.param(
        "GET",
        "vpc.api.qcloud.com",
        V2_PATH,
        f"Action=UnassignPrivateIpAddresses&Nonce=11886&Region=gz&SecretId={SECRET_ID}"
        "&SignatureMethod=HmacSHA1&Timestamp=1465185768&networkInterfaceId=eni-m6dyj72l"
        "&privateIpAddress.0=10.0.0.2&privateIpAddress.1=10.0.0.3&vpcId=vpc-7t9nf3pu",
        "hp6VW3ZaNzu3GavTWBvjsIzDZvA=",
        id="V2-C-HmacSHA1",
    ),
    pytest.param(
        "GET",
        "vpc.api.qcloud.com",
        V2_PATH,
        f"Action=DescribeVpcTaskResult&Nonce=11887&Region=gz&SecretId={SECRET_ID}"
        "&SignatureMethod=HmacSHA256&Timestamp=1465185770&taskId=16284",
        "jbbL3MJ8ZImj1wIfof5Rv/5KWDt7+769PkxRVDFTnD4=",
        id="V2-D",
    ),
    pytest.param(
        "GET",
        "vpc.api.qcloud.com",
        V2_PATH,
        f"Action=UnassignPrivateIpAddresses&Nonce=11886&Region=gz&RequestClient=SDK_PYTHON_2.0.15"
        f"&SecretId={SECRET_ID}&SignatureMethod=HmacSHA256&Timestamp=1465185768"
        "&networkInterfaceId=eni-m6dyj72l&privateIpAddress.0=10.0.0.2&privateIpAddress.1=10.0.0.3"
        "&vpcId=vpc-7t9nf3pu",
        "LZbqSKsmeGuxM/vRGahLqQdbRYa0UyvokPzbuKtVO84=",
        id="V2-E",
    ),
    pytest.param(
        "POST",
        "vpc.tencentcloudapi.com",
        "/",
        "Action=UnassignPrivateIpAddresses&Language=zh-CN&NetworkInterfaceId=eni-m6dyj72l&Nonce=12345"
        "&PrivateIpAddresses.0.PrivateIpAddress=10.0.0.2&PrivateIpAddresses.1.PrivateIpAddress=10.0.0.3"
        f"&Region=ap-guangzhou&RequestClient=SDK_PYTHON_3.1.193&SecretId={SECRET_ID}"
        "&SignatureMethod=HmacSHA256&Timestamp=1700000000&Version=2017-03-12",
        "+EInQMMNECfKvIoN2KZeYUSA6hqRyRo9KjX8asJcsQE=",
        id="V3-E-signature-v1",
    ),
]


@pytest.mark.parametrize(("method", "host", "path", "query", "signature"), V2_VECTORS)
def test_v2_string_to_sign_matches_vector(
    method: str, host: str, path: str, query: str, signature: str
) -> None:
    """The string to sign is METHOD + host + path + '?' + the raw pairs sorted by byte order."""
    params = _params(query)
    assert signing.v2_string_to_sign(method, host, path, params) == f"{method}{host}{path}?{query}"


@pytest.mark.parametrize(("method", "host", "path", "query", "signature"), V2_VECTORS)
def test_v2_sign_matches_vector(method: str, host: str, path: str, query: str, signature: str) -> None:
    """Signing the vector's parameters with its SignatureMethod (SHA-1 when absent) gives the SDK's value."""
    params = _params(query)
    sign_method = params.get("SignatureMethod", "")
    assert signing.v2_sign(SECRET_KEY, method, host, path, params, sign_method) == signature


def test_v2_signature_leaves_out_signature_parameter() -> None:
    """A ``Signature`` already among the parameters is not part of the string to sign."""
    query = f"Action=DescribeInstances&Nonce=345122&Region=gz&SecretId={SECRET_ID}&Timestamp=1408704141"
    params = {**_params(query), "Signature": "HgIYOPcx5lN6gz8JsCFBNAWp2oQ="}
    assert signing.v2_string_to_sign("GET", "cvm.api.qcloud.com", V2_PATH, params).endswith("1408704141")


def test_v2_string_to_sign_sorts_array_indexes_lexicographically() -> None:
    """Flattened array names sort as strings: ``privateIpAddress.10`` comes before ``privateIpAddress.2``."""
    params = {"privateIpAddress.2": "c", "privateIpAddress.10": "b", "Action": "a"}
    assert signing.v2_string_to_sign("get", "h", "/p", params) == (
        "GETh/p?Action=a&privateIpAddress.10=b&privateIpAddress.2=c"
    )


def test_v2_a_url_encoded_signature() -> None:
    """V2-A's signature URL-encodes to the published ``...2oQ%3D`` form."""
    assert quote("HgIYOPcx5lN6gz8JsCFBNAWp2oQ=", safe="") == "HgIYOPcx5lN6gz8JsCFBNAWp2oQ%3D"


def test_v2_e_sdk_url_verifies_as_a_server_would() -> None:
    """The old SDK's unsorted V2-E URL re-signs, from its decoded query alone, to the Signature it carries."""
    url = (
        "https://vpc.api.qcloud.com/v2/index.php?vpcId=vpc-7t9nf3pu&networkInterfaceId=eni-m6dyj72l"
        "&privateIpAddress.0=10.0.0.2&privateIpAddress.1=10.0.0.3&Nonce=11886&Timestamp=1465185768"
        "&Action=UnassignPrivateIpAddresses&RequestClient=SDK_PYTHON_2.0.15&Region=gz"
        f"&SecretId={SECRET_ID}&SignatureMethod=HmacSHA256"
        "&Signature=LZbqSKsmeGuxM%2FvRGahLqQdbRYa0UyvokPzbuKtVO84%3D"
    )
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    expected = signing.v2_sign(SECRET_KEY, "GET", parts.netloc, parts.path, params, params["SignatureMethod"])
    assert signing.signatures_equal(params["Signature"], expected)


@pytest.mark.parametrize(
    ("sign_method", "digest"),
    [
        ("HmacSHA256", "HmacSHA256"),
        ("HmacSHA1", "HmacSHA1"),
        (None, "HmacSHA1"),
        ("", "HmacSHA1"),
        ("hmacsha256", "HmacSHA1"),
        ("HMACSHA256", "HmacSHA1"),
        ("HmacSHA256 ", "HmacSHA1"),
        ("SHA256", "HmacSHA1"),
        ("HmacSHA512", "HmacSHA1"),
    ],
)
def test_v2_digest_for(sign_method: str | None, digest: str) -> None:
    """Only the exact value ``HmacSHA256`` selects SHA-256; anything else, or nothing, is SHA-1."""
    assert signing.v2_digest_for(sign_method) == digest


def test_v2_signature_with_near_miss_method_is_sha1() -> None:
    """Signing with a near-miss such as ``hmacsha256`` gives the same bytes as HmacSHA1 (28 Base64 chars)."""
    text = "GETvpc.api.qcloud.com/v2/index.php?Action=X"
    sha1 = signing.v2_signature(SECRET_KEY, text, "HmacSHA1")
    assert signing.v2_signature(SECRET_KEY, text, "hmacsha256") == sha1
    assert len(sha1) == 28
    assert len(signing.v2_signature(SECRET_KEY, text, "HmacSHA256")) == 44


# -- TC3 ---------------------------------------------------------------------------------------------------

V3A_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3*******"
V3A_KEY = "Gu5t9xGARNpq86cd98joQYCN3*******"
V3A_BODY = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
V3A_HEADERS = {"content-type": "application/json; charset=utf-8", "host": "cvm.tencentcloudapi.com"}
V3A_PAYLOAD_HASH = "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
V3A_CANONICAL = (
    "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\n"
    f"content-type;host\n{V3A_PAYLOAD_HASH}"
)
V3A_CANONICAL_HASH = "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
V3A_SIGNATURE = "2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c"

VPC_JSON = {"content-type": "application/json", "host": "vpc.tencentcloudapi.com"}
V3B_BODY = (
    b'{"NetworkInterfaceId": "eni-m6dyj72l", "PrivateIpAddresses": '
    b'[{"PrivateIpAddress": "10.0.0.2"}, {"PrivateIpAddress": "10.0.0.3"}]}'
)
V3B_PAYLOAD_HASH = "efab244470960e19b03bb463511a537b6407ac948ae377604821a06b20db0433"
V3B_CANONICAL = (
    "POST\n/\n\ncontent-type:application/json\nhost:vpc.tencentcloudapi.com\n\n"
    f"content-type;host\n{V3B_PAYLOAD_HASH}"
)
V3B_STRING_TO_SIGN = (
    "TC3-HMAC-SHA256\n1700000000\n2023-11-14/vpc/tc3_request\n"
    "eacefce22a45215dcbcac3edac7d991a74b7eb66eaf5696d881cffd827a30a24"
)
V3B_AUTHORIZATION = (
    f"TC3-HMAC-SHA256 Credential={SECRET_ID}/2023-11-14/vpc/tc3_request, SignedHeaders=content-type;host, "
    "Signature=29b68416573b464f06910eea6bad27123527d31c75e0b9ea5eb2ca4f9d7a74fb"
)
V3D_QUERY = (
    "NetworkInterfaceId=eni-m6dyj72l&PrivateIpAddresses.0.PrivateIpAddress=10.0.0.2"
    "&PrivateIpAddresses.1.PrivateIpAddress=10.0.0.3"
)
V3D_HEADERS = {"content-type": "application/x-www-form-urlencoded", "host": "vpc.tencentcloudapi.com"}


def test_v3_a_payload_hash() -> None:
    """V3-A's exact body bytes hash to the published HashedRequestPayload."""
    assert signing.sha256_hex(V3A_BODY) == V3A_PAYLOAD_HASH


def test_v3_a_canonical_request() -> None:
    """V3-A's canonical request signs content-type (with charset) and host, and hashes as published."""
    canonical = signing.tc3_canonical_request("POST", "", V3A_HEADERS, signing.TC3_SIGNED_HEADERS, V3A_BODY)
    assert canonical == V3A_CANONICAL
    assert signing.sha256_hex(canonical.encode()) == V3A_CANONICAL_HASH


def test_v3_a_string_to_sign_and_signature() -> None:
    """V3-A's string to sign uses the UTC date 2019-02-25 and the ``cvm`` service, and signs as published."""
    string_to_sign = signing.tc3_string_to_sign(V3A_CANONICAL, 1551113065, "cvm")
    assert string_to_sign == f"TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n{V3A_CANONICAL_HASH}"
    assert signing.tc3_signature(V3A_KEY, 1551113065, "cvm", string_to_sign) == V3A_SIGNATURE


def test_v3_a_authorization() -> None:
    """V3-A's masked key pair (asterisks included) gives the published Authorization header."""
    authorization = signing.tc3_authorization(
        V3A_ID,
        V3A_KEY,
        method="POST",
        query="",
        headers=V3A_HEADERS,
        payload=V3A_BODY,
        timestamp=1551113065,
        service="cvm",
    )
    assert authorization == (
        f"TC3-HMAC-SHA256 Credential={V3A_ID}/2019-02-25/cvm/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={V3A_SIGNATURE}"
    )


def test_v3_b_canonical_request() -> None:
    """V3-B's canonical request matches the official VpcClient's, byte for byte."""
    assert signing.sha256_hex(V3B_BODY) == V3B_PAYLOAD_HASH
    canonical = signing.tc3_canonical_request("POST", "", VPC_JSON, signing.TC3_SIGNED_HEADERS, V3B_BODY)
    assert canonical == V3B_CANONICAL


def test_v3_b_string_to_sign() -> None:
    """V3-B's string to sign uses the UTC date 2023-11-14 and the ``vpc`` scope."""
    assert signing.tc3_string_to_sign(V3B_CANONICAL, 1700000000, "vpc") == V3B_STRING_TO_SIGN


def test_v3_b_authorization() -> None:
    """V3-B's Authorization header matches the official VpcClient's."""
    authorization = signing.tc3_authorization(
        SECRET_ID,
        SECRET_KEY,
        method="POST",
        query="",
        headers=VPC_JSON,
        payload=V3B_BODY,
        timestamp=1700000000,
        service="vpc",
    )
    assert authorization == V3B_AUTHORIZATION


@pytest.mark.parametrize(
    ("method", "query", "headers", "payload", "signature"),
    [
        pytest.param(
            "POST",
            "",
            VPC_JSON,
            b'{"TaskId": "f23d1450-ed00-4442-98d4-be409e625e6c"}',
            "57a821a940d36abeb6d7946bd6b0a228a54a9dd5567c884c4a7f391ecb455a5d",
            id="V3-C",
        ),
        pytest.param(
            "GET",
            V3D_QUERY,
            V3D_HEADERS,
            b"",
            "e4f10abf38772d8bbda8f3992414fd363bd9d3742a62702be373ccc693d09322",
            id="V3-D",
        ),
    ],
)
def test_v3_vpc_vector_signature(
    method: str, query: str, headers: dict[str, str], payload: bytes, signature: str
) -> None:
    """The V3-C (task query, POST) and V3-D (unassign, GET with query) vectors sign as the SDK does."""
    authorization = signing.tc3_authorization(
        SECRET_ID,
        SECRET_KEY,
        method=method,
        query=query,
        headers=headers,
        payload=payload,
        timestamp=1700000000,
        service="vpc",
    )
    assert authorization == (
        f"TC3-HMAC-SHA256 Credential={SECRET_ID}/2023-11-14/vpc/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={signature}"
    )


def test_v3_d_get_canonical_request_hashes_empty_payload() -> None:
    """A GET's canonical request carries the query as sent and the hash of an empty payload."""
    canonical = signing.tc3_canonical_request("GET", V3D_QUERY, V3D_HEADERS, signing.TC3_SIGNED_HEADERS, b"")
    assert canonical.split("\n")[2] == V3D_QUERY
    assert canonical.endswith(signing.sha256_hex(b""))


def test_tc3_unsigned_payload_hashes_the_literal() -> None:
    """With ``unsigned_payload`` the canonical request hashes ``UNSIGNED-PAYLOAD``, not the body."""
    canonical = signing.tc3_canonical_request(
        "POST", "", VPC_JSON, signing.TC3_SIGNED_HEADERS, V3B_BODY, unsigned_payload=True
    )
    assert canonical.endswith(signing.sha256_hex(b"UNSIGNED-PAYLOAD"))


@pytest.mark.parametrize(
    ("timestamp", "date"),
    [
        (1551113065, "2019-02-25"),
        (1700000000, "2023-11-14"),
        (1699999199, "2023-11-14"),
        (1700006399, "2023-11-14"),
        (1700006400, "2023-11-15"),
    ],
)
def test_tc3_date_is_utc(timestamp: int, date: str) -> None:
    """The credential-scope date is the UTC date of the timestamp, changing exactly at UTC midnight."""
    assert signing.tc3_date(timestamp) == date


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("HgIYOPcx5lN6gz8JsCFBNAWp2oQ=", "HgIYOPcx5lN6gz8JsCFBNAWp2oQ=", True),
        ("HgIYOPcx5lN6gz8JsCFBNAWp2oQ=", "HgIYOPcx5lN6gz8JsCFBNAWp2oQ", False),
        ("HgIYOPcx5lN6gz8JsCFBNAWp2oQ=", "hgIYOPcx5lN6gz8JsCFBNAWp2oQ=", False),
        ("", "", True),
        ("", "x", False),
        ("ü", "ü", True),
    ],
)
def test_signatures_equal(a: str, b: str, equal: bool) -> None:
    """``signatures_equal`` is exact, case-sensitive string equality (computed in constant time)."""
    assert signing.signatures_equal(a, b) is equal
