"""`ramp-edge train`: fit a RAMP allocation policy (SAC) on one or more models."""

from __future__ import annotations

import click

from ramp_edge.cli._common import calibrate_option, emit_json, json_option, ray_address_option


@click.command("train")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Model to train on (built-in name or GGUF path); repeat for several.",
)
@click.option(
    "--budget",
    "budgets",
    multiple=True,
    default=("4.2bpw", "4.6bpw", "5.0bpw", "5.5bpw", "6.0bpw", "7.0bpw"),
    show_default=True,
    help="Budget in bits per weight; repeat to sample several per episode.",
)
@click.option(
    "--steps",
    default=10_000,
    show_default=True,
    type=click.IntRange(1, 10**8),
    help="Environment steps (one step = one tensor).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Policy zip to write.")
@click.option(
    "--resume",
    type=click.Path(exists=True, dir_okay=False),
    help="Continue from a policy or checkpoint zip.",
)
@click.option(
    "--reward",
    type=click.Choice(["surrogate", "kld"]),
    default="surrogate",
    show_default=True,
    help="Quality term: 'kld' = measured mean KLD of the assembled model on calibration "
    "tokens every episode (the paper's reward; seconds per episode); 'surrogate' = summed "
    "per-tensor table errors (fast; its optimum is the knapsack's).",
)
@click.option(
    "--kld-every",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="With --reward surrogate: every N episodes also add the measured KLD (0: off).",
)
@click.option(
    "--eval-every",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Steps between deterministic evaluations (the learning curve; 0: steps/10, >= 1000).",
)
@click.option(
    "--demos/--no-demos",
    default=True,
    show_default=True,
    help="Start from knapsack demonstrations (replay buffer, behaviour cloning) before SAC.",
)
@calibrate_option
@ray_address_option
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--checkpoint-every",
    default=5_000,
    show_default=True,
    type=click.IntRange(0),
    help="Write <out>.ckpt.zip every N steps (0: never).",
)
@json_option
def train(
    models: tuple[str, ...],
    budgets: tuple[str, ...],
    steps: int,
    out: str,
    resume: str | None,
    reward: str,
    kld_every: int,
    eval_every: int,
    demos: bool,
    calibrate: bool,
    ray_address: str | None,
    seed: int,
    checkpoint_every: int,
    as_json: bool,
) -> None:
    """Train a Soft Actor-Critic policy that assigns a quant type to every tensor.

    Each episode walks one model's quantizable tensors at a budget drawn from
    --budget. Reward: --reward kld is the paper's (measured mean KLD of the whole
    assembled model on WikiText-2 validation, in units of the ~uniform Q4_0 file's,
    plus an asymmetric budget penalty and a cliff past the budget; seconds per
    episode); --reward surrogate uses the summed per-tensor table errors instead
    (fast, but its optimum is the knapsack's). The policy acts relative to a
    prior, the knapsack over errors a ridge regression predicts from its features
    (fitted here on the --model tables, stored in the policy). Training starts
    from the knapsack's allocations (behaviour cloning, critic warm-up, then SAC);
    the best policy of the periodic evaluations is saved; with the surrogate that
    has always been the cloned start (step 0). Zero shot on a held-out family
    (bench/transfer.md) the policy's mean KLD was 1.8-1.9x its prior's alone, so
    `--method predicted` (the prior) is the measurement-free method to use.
    Apply with `ramp-edge allocate MODEL --method sac|predicted --policy
    policy.zip` (measures nothing on MODEL).
    Needs the rl extra: pip install 'ramp-edge[rl]'.

    \b
    Example:
      ramp-edge train --model smollm2-135m --budget 4.6bpw --steps 20000 --out policy.zip
      ramp-edge train --model smollm2-135m --out policy.zip --resume policy.ckpt.zip
      ramp-edge train --model smollm2-135m --model gemma3-270m --out policy.zip
      ramp-edge train --model smollm2-135m --budget 4.6bpw --reward kld --steps 400 --out k.zip
    """
    from ramp_edge.errors import ConfigError, require

    require("gymnasium", "rl")
    require("stable_baselines3", "rl")
    if ray_address:
        from ramp_edge.distributed import require_ray

        require_ray()
    from ramp_edge.allocate.api import error_table
    from ramp_edge.allocate.budget import parse_budget
    from ramp_edge.cli._common import open_model
    from ramp_edge.rl import sac
    from ramp_edge.rl.env import make_task
    from ramp_edge.ui import out_console, progress

    bpws = []
    for text in budgets:
        b = parse_budget(text)
        if b.kind != "bpw":
            raise ConfigError(f"train needs budgets in bits per weight (e.g. 4.6bpw), got {text!r}")
        bpws.append(b.value)
    tasks = []
    qualities: dict = {}
    quality = None
    for ref in models:
        source = open_model(ref)
        with progress(f"Sensitivity {ref}") as bar:
            # The same error table `allocate` gives the knapsack: per-role KLD-calibrated.
            table = error_table(
                source, calibrate_roles=calibrate, progress=bar, ray_address=ray_address
            )
        tasks.append(make_task(source, table))
        if reward == "kld" or kld_every:
            qualities[tasks[-1].model_id] = sac.kld_quality(source)
    if qualities:

        def quality(task, types):
            return qualities[task.model_id](task, types)

    with progress("SAC") as bar:
        result = sac.train(
            tasks,
            out,
            steps=steps,
            budgets_bpw=tuple(bpws),
            resume=resume,
            seed=seed,
            checkpoint_every=checkpoint_every,
            progress=bar,
            true_quality=quality,
            true_every=1 if reward == "kld" else kld_every,
            demos=demos,
            eval_every=eval_every,
        )
    if as_json:
        emit_json(result.to_dict())
        return
    out_console.print(
        f"policy {result.path}: {result.steps:,} steps, {result.episodes} episodes in "
        f"{result.seconds:.0f} s; last episodes used {result.mean_budget_ratio:.3f} of the "
        f"budget at {result.mean_err_ratio:.3f} of the par error"
    )
