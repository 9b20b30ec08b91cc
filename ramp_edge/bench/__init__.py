"""On-device measurement: result records and the harness that drives agents/ramp_agent.py."""
