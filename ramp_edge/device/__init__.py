"""Devices: what a device is and what it can hold.

profiles.py   `DeviceProfile`: TOML seeds in device_profiles/ plus stored measurements;
              aliases resolve to canonical ids (`resolve_name`, used by the CLI only)
profiling.py  measure this host into a `MeasuredProfile` (`ramp-edge profile`)
budget.py     the largest model a profile can hold and run at a target speed
"""
