"""Fixtures for the fleet tests: real OpenSSH sshd devices on 127.0.0.2, 127.0.0.3, ...

Recipes: ../shared/research/ssh-testing.md. Helpers live in fleetlib.py (importable from the
tests in this folder); tests skip with the reason when sshd is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fleetlib import SSHD, Device, ShapingProxy, _keygen, free_port, make_device


@pytest.fixture(scope="session")
def client_key(tmp_path_factory) -> str:
    if not os.path.exists(SSHD):
        pytest.skip("openssh-server is not installed (apt-get install openssh-server)")
    path = str(tmp_path_factory.mktemp("keys") / "client_ed25519")
    _keygen(path, "test-client")
    return path


@pytest.fixture(scope="session")
def fleet(tmp_path_factory, client_key):
    """Three devices: pi4 on 127.0.0.2, orin on 127.0.0.3, laptop on 127.0.0.4."""
    devices: list[Device] = []
    try:
        for i, name in enumerate(("pi4", "orin", "laptop"), start=2):
            devices.append(
                make_device(tmp_path_factory.mktemp(name), name, f"127.0.0.{i}", client_key)
            )
        yield devices
    finally:
        for device in devices:
            device.stop()


@pytest.fixture
def device_factory(tmp_path, client_key):
    """Make extra devices that a test may kill or cap; all stopped at the end of the test."""
    made: list[Device] = []

    def factory(name: str = "dev", host: str = "127.0.0.5", extra_config: str = "") -> Device:
        workdir = tmp_path / f"{name}-{len(made)}"
        workdir.mkdir()
        device = make_device(workdir, name, host, client_key, extra_config)
        made.append(device)
        return device

    yield factory
    for device in made:
        device.stop()


@pytest.fixture
def known_hosts(tmp_path, fleet) -> Path:
    """A known_hosts file pinning the session fleet's host keys."""
    path = tmp_path / "known_hosts"
    path.write_text("".join(d.known_hosts_line() + "\n" for d in fleet))
    return path


@pytest.fixture
def proxy_factory():
    made: list[ShapingProxy] = []

    def factory(device: Device, rate_bps: float | None = None) -> ShapingProxy:
        listen = ("127.0.0.1", free_port("127.0.0.1"))
        proxy = ShapingProxy(listen, (device.host, device.port), rate_bps)
        made.append(proxy)
        return proxy

    yield factory
    for proxy in made:
        proxy.close()
