"""Ansible-style YAML inventories: inheritance, selection, malformed input named by line/field."""

from __future__ import annotations

import pytest

from ramp_edge.errors import ConfigError
from ramp_edge.fleet.inventory import load_inventory, parse_inventory

GOOD = """\
all:
  vars:
    ansible_user: pi
    ansible_ssh_private_key_file: keys/fleet
  children:
    raspberry_pi:
      vars: {device: pi5, threads: 4}
      hosts:
        pi-lab-1: {ansible_host: 127.0.0.2, ansible_port: 2222}
        pi-lab-2:
    jetson:
      vars: {device: jetson-orin}
      children:
        orins:
          hosts:
            orin-1:
              ansible_host: 127.0.0.3
              ansible_user: nvidia
              ansible_python_interpreter: /opt/py
"""


@pytest.fixture
def inventory_file(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "fleet").write_text("not a real key")
    path = tmp_path / "fleet.yml"
    path.write_text(GOOD)
    return path


def test_variables_inherit_and_hosts_win(inventory_file):
    inv = load_inventory(inventory_file)
    assert [h.name for h in inv.hosts] == ["pi-lab-1", "pi-lab-2", "orin-1"]
    pi1, pi2, orin = inv.hosts
    assert (pi1.address, pi1.port, pi1.user, pi1.device) == ("127.0.0.2", 2222, "pi", "pi5")
    assert (pi2.address, pi2.port) == ("pi-lab-2", None)  # left to ~/.ssh/config
    assert pi1.key_file == str(inventory_file.parent / "keys" / "fleet")
    assert pi1.vars["threads"] == 4
    assert (orin.user, orin.device, orin.python) == ("nvidia", "jetson-orin", "/opt/py")
    assert orin.groups == ("all", "jetson", "orins")


def test_select_by_group_and_host(inventory_file):
    inv = load_inventory(inventory_file)
    assert [h.name for h in inv.select("jetson")] == ["orin-1"]
    assert [h.name for h in inv.select("orin-1,raspberry_pi")] == ["pi-lab-1", "pi-lab-2", "orin-1"]
    assert len(inv.select("all")) == len(inv.select(None)) == 3
    with pytest.raises(ConfigError, match="'nope' is neither a host nor a group"):
        inv.select("nope")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "all:\n  hosts:\n    pi: {ansible_port: twenty}\n",
            r"line 3: host 'pi': ansible_port must be an integer",
        ),
        (
            "all:\n  hosts:\n    pi: {ansible_port: 70000}\n",
            r"line 3: host 'pi': ansible_port 70000 outside",
        ),
        ("all:\n  host:\n    pi: {}\n", r"line 2: group 'all': unknown key 'host'"),
        ("all:\n  hosts:\n    pi: 10.0.0.1\n", r"line 3: host 'pi': expected a mapping"),
        (
            "all:\n  hosts:\n    pi: {ansible_host: [a, b]}\n",
            r"line 3: host 'pi': ansible_host must be",
        ),
        ("all:\n  hosts:\n    pi: {}\n    pi: {}\n", r"line 4: .*duplicate key 'pi'"),
        (
            "all:\n  hosts:\n    pi: {ansible_ssh_private_key_file: missing_key}\n",
            r"line 3: host 'pi': ansible_ssh_private_key_file: no such file",
        ),
        ("all:\n  hosts:\n    web[01:03]: {}\n", r"line 3: host 'web\[01:03\]': host ranges"),
        ("all:\n  hosts:\n   pi: {\n", r"line \d+: invalid YAML"),
        ("all:\n  children:\n    g:\n", r"no hosts"),
        ("", r"the inventory is empty"),
        ("- pi\n", r"line 1: the inventory top level must be a mapping"),
    ],
)
def test_malformed_inventory_names_line_and_field(tmp_path, text, message):
    path = tmp_path / "fleet.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_inventory(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_missing_inventory_file(tmp_path):
    with pytest.raises(ConfigError, match="inventory not found"):
        load_inventory(tmp_path / "nope.yml")


def test_parse_from_text_without_file():
    inv = parse_inventory("all:\n  hosts:\n    a: {ansible_host: 127.0.0.2}\n")
    assert inv.hosts[0].to_dict()["address"] == "127.0.0.2"
