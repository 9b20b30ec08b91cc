"""`fleet.hosts`: the one parser of user@addr[:port], shared by --host and inventories."""

from __future__ import annotations

import pytest

from ramp_edge.errors import ConfigError
from ramp_edge.fleet.hosts import parse_host, parse_port


def test_parse_host_forms():
    host = parse_host("pi@pi5.local:2222", device="raspberry-pi-5-8gb")
    assert (host.name, host.address, host.user, host.port, host.device) == (
        "pi5.local",
        "pi5.local",
        "pi",
        2222,
        "raspberry-pi-5-8gb",
    )
    bare = parse_host("10.0.0.7")
    assert (bare.user, bare.port) == (None, None)
    assert parse_host("a@b@host", name="lab").user == "a@b"  # the last @ splits
    assert parse_host("host", name="lab").name == "lab"


@pytest.mark.parametrize(
    ("text", "message"),
    [("pi@", "no address"), ("host:x", "must be an integer"), ("host:70000", "outside 1..65535")],
)
def test_parse_host_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_host(text)


def test_parse_port_is_what_inventories_use():
    assert parse_port("22") == 22
    with pytest.raises(ConfigError, match="ansible_port must be an integer, got True"):
        parse_port(True, "ansible_port")
