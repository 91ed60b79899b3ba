"""Who a connection is from, as the per-client connection cap counts it (cli/connection_cap.py):
an IPv6 address by its /64, which one host is given whole: counted by address, one client
could open a connection from each of 2^64 and never meet its cap."""

from __future__ import annotations

import pytest

from runyard.cli.connection_cap import client_of


@pytest.mark.parametrize(
    ("peer", "client"),
    [
        (("127.0.0.2", 5000), "127.0.0.2"),
        (("2001:db8:1:2:aaaa::1", 5000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff:ffff:ffff:ffff", 1, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:3::1", 1, 0, 0), "2001:db8:1:3::/64"),
        (("::ffff:10.0.0.7", 1, 0, 0), "10.0.0.7"),  # IPv4 mapped: the IPv4 address
        (("fe80::1%eth0", 1, 0, 2), "fe80::/64"),  # a scope does not make another client
        ("", ""),  # a Unix socket
        (None, ""),
    ],
)
def test_a_connection_is_counted_by_its_client(peer: object, client: str) -> None:
    assert client_of(peer) == client
