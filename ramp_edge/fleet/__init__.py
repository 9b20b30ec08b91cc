"""Fleet: inventories of devices, SSH connections to them, and fan-out over hosts.

`fleet.inventory` is stdlib + PyYAML; `fleet.ssh` imports paramiko (the `fleet` extra), so
import it only where a connection is needed; `fleet.group` imports it lazily.
"""
