"""RAMP's reinforcement-learning allocator: a SAC policy that picks a quant type per tensor.

- `features_adapter`: the per-tensor observation features (numpy).
- `reward`: quality-first reward (measured KLD or table surrogate), asymmetric budget penalty,
  cliff (stdlib).
- `env`: `AllocationEnv`, one episode walks a model's quantizable tensors (gymnasium).
- `demos`: knapsack demonstrations for the warm start.
- `sac`: train / save / load the policy; `policy_choices` runs it zero-shot and returns its
  choices and preferences. The budget repair is `ramp_edge.allocate.repair` (rl returns
  choices, allocate repairs); applying a policy imports nothing from `ramp_edge.allocate`
  (only `demos`, at training time, uses its knapsack).

gymnasium and stable_baselines3 are imported only by `env` and `sac`; install them with
pip install 'ramp-edge[rl]'.
"""
