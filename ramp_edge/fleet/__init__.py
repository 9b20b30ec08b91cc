"""Fleet: how ramp-edge reaches devices, one or many.

    transport.py  the `Transport` Protocol and its result types (RunResult, PushResult, errors)
    local.py      `LocalConnection`: this machine, stdlib only (`--device localhost`)
    ssh.py        `Connection`: paramiko (the `fleet` extra); sshconfig.py, shell.py beside it
    hosts.py      `Host` and the one `user@addr[:port]` parser (--host and inventories)
    inventory.py  Ansible-style YAML inventories (stdlib + PyYAML)
    group.py      fan-out: one operation over many hosts, per-host outcomes

Only ssh.py and sshconfig.py import paramiko; import them only where an SSH link is needed.
"""
