from __future__ import annotations

import pytest

from shared.errors import ConfigurationError, InvalidInput
from shared.webhooks.destinations import AllowList, DestinationRefused, check_destination, check_url

NONE = AllowList()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not NONE.allows_address(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert NONE.allows_address(address)


def test_the_allow_list_takes_hosts_addresses_and_ranges() -> None:
    allow = AllowList.parse(" hooks.internal , 127.0.0.1, 10.0.0.0/8,[::1] ")
    assert allow.allows_host("HOOKS.internal.")
    assert allow.allows_address("127.0.0.1") and not allow.allows_address("127.0.0.2")
    assert allow.allows_address("10.200.3.4")
    assert allow.allows_address("::1")
    assert not allow.allows_address("192.168.0.1")


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "bad host!", "a..b"])
def test_a_malformed_allow_list_is_a_configuration_error(entry: str) -> None:
    with pytest.raises(ConfigurationError):
        AllowList.parse(entry)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hook",
        "https://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:8080/",
        "http://api.localhost/",
        # A trailing dot names the same host: it must not get around the check.
        "http://localhost.:8080/",
        "http://LOCALHOST../",
        "http://api.localhost./",
        "http://127.0.0.1.:9000/hook",
    ],
)
def test_urls_naming_private_destinations_are_refused(url: str) -> None:
    with pytest.raises(DestinationRefused):
        check_url(url, NONE)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "http:///path",
        "http://./path",
        "https://user:pw@example.com/",
        "example.com/hook",
        "http://x.com:0/",
    ],
)
def test_malformed_urls_are_invalid(url: str) -> None:
    with pytest.raises(InvalidInput):
        check_url(url, NONE)


def test_allow_listed_destinations_pass() -> None:
    allow = AllowList.parse("127.0.0.1,localhost")
    assert check_url("http://127.0.0.1:9000/hook", allow) == "127.0.0.1"
    assert check_url("http://localhost/hook", allow) == "localhost"
    assert check_url("http://localhost.:8080/hook", allow) == "localhost"
    assert check_url("https://example.com/hook", NONE) == "example.com"


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f000001", "0177.0.0.1"])
async def test_names_that_resolve_to_private_addresses_are_refused(host: str) -> None:
    # Legacy numeric forms are not IP literals, so they go through the resolver: the classic bypass.
    with pytest.raises(DestinationRefused):
        await check_destination(f"http://{host}/hook", NONE)


async def test_a_name_that_does_not_resolve_is_accepted_for_now() -> None:
    # It may resolve later; every connection is checked again when it is made.
    await check_destination("https://no-such-host.invalid/hook", NONE)
