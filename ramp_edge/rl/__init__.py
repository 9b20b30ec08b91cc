"""RAMP's reinforcement-learning allocator: a SAC policy that picks a quant type per tensor.

- `features_adapter`: the per-tensor observation features (numpy).
- `reward`: quality-first reward, asymmetric budget penalty, cliff (stdlib).
- `env`: `AllocationEnv`, one episode walks a model's quantizable tensors (gymnasium).
- `sac`: train / save / load the policy and apply it zero-shot (stable_baselines3).

gymnasium and stable_baselines3 are imported only by `env` and `sac`; install them with
pip install 'ramp-edge[rl]'.
"""
