"""Policy sketches (Andreas, Klein & Levine 2017): modular multitask RL where each task's sketch
(a sequence of sub-task symbols) fixes the routing through a shared inventory of sub-policies.

- Modules: one per sketch symbol, ``1076 → 128 ReLU → 5 actions + STOP`` (a ``PolicyInventory``
  with STOP as an action; STOP bias initialised to −3, P(STOP) ≈ 1%).
- Routing: a ``SketchRouter`` pointer into the current task's sketch, advanced on STOP; the
  ``CallAndReturn`` controller forces a STOP at the 15th step of a sub-task (the original's
  forced advance), and forced STOPs are not trained on.
- Learning rule (the original ``modular_ac.py``): REINFORCE on the Monte-Carlo discounted return
  to go (γ = 0.9, STOP steps included) minus a per-task critic linear in the state features;
  entropy bonus 0.001; RMSProp 1e-3; the summed gradients rescaled by min(1, 1/Σg²) (the original's
  sum-of-squares rule; ``grad_scaling: norm`` clips the norm to 1 instead). ``update: ppo`` trains
  the same modular agent with PPO's clipped surrogate (Schulman et al. 2017, eq. 7) instead.
- Curriculum (``modrl.curriculum.LengthCurriculum``): tasks with sketch length ≤ ℓ_max; a round is
  ``updates_per_round`` updates; the first round at a new ℓ_max samples tasks uniformly, later
  rounds ∝ 1 − success + 0.01; ℓ_max grows when every current task's success exceeds 0.8.

Each update runs ``num_envs`` episodes side by side, one per env, to their ends (at most 100 steps),
so returns are exact Monte-Carlo returns; or, with ``rollout_steps: N``, ``N`` ticks of every env
with episodes carried over between updates and the critic bootstrapping the cut (no env steps
wasted on finished episodes; the REINFORCE update then reuses the modules' first-layer products
computed while acting, instead of recomputing its widest matmul). Zero-shot recombination needs nothing else: evaluating
on held-out sketches (``modrl eval RUN --split heldout``) chains the trained modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from modrl.algorithm import OnPolicyAlgorithm, check_finite
from modrl.controller import CallAndReturn
from modrl.curriculum import LengthCurriculum
from modrl.graphs import CapturedRegion
from modrl.halting import Halting
from modrl.inventory import Grouping, PolicyInventory, StackedMLP, ValueHeads, rows_by_module
from modrl.metrics import ModularityMetrics, SubgoalMetrics
from modrl.optim import ModuleAdam, RunAdam, inventory_param_groups
from modrl.rollout import discounted_returns, generalized_advantages
from modrl.routing import SketchRouter
from modrl.sparse import SparseRows

RELU_SCALE = 1.43
"""The original's weight-init factor (``models/net.py``): TF's uniform unit scaling, ±1.43·√(3/fan_in)."""


@dataclass
class SketchConfig:
    gamma: float = 0.9
    learning_rate: float = 1e-3
    optimizer: Literal["rmsprop", "adam", "adam_per_module"] = "rmsprop"
    """``rmsprop``: the original's (TF 1 RMSProp); ``adam``: torch's Adam; ``adam_per_module``: Adam
    with one step count and moments per module (``modrl/optim.py``), as if each module, critic
    head and router had its own optimiser — not in the paper."""
    entropy_coef: float = 0.001
    new_module_entropy: float | None = None
    """Not in the paper. With the curriculum: the entropy coefficient of the modules a promotion
    brings in (symbols first used by the new level's sketches; none at the first level), until the
    next promotion; ``None``: ``entropy_coef`` for every module. A module entering beside trained
    ones is pushed to STOP at once by the discount (stopping skips its random walk while the
    trained modules sometimes finish the task anyway); if the trained modules then learn its job,
    it stays a no-op (docs/results.md, "get_iron"). More entropy keeps it exploring meanwhile."""
    new_module_prior: Literal["uniform", "stop_bias"] = "uniform"
    """Not in the paper. What ``new_module_entropy`` pulls an entering module towards. The entropy
    bonus is, up to a constant, −KL(π‖uniform): with no reward yet it drives the module to STOP
    with probability 1/6 per tick, walks of ~5 ticks (docs/results.md: get_gem, never reaching its
    gem). ``stop_bias``: −KL(π‖π₀) instead, π₀ the policy of the initial biases (moves uniform,
    STOP with probability e^b / (A + e^b), b = ``stop_bias``: 1% on Craft)."""
    new_module_first_level: bool = False
    """Not in the paper. With ``new_module_entropy``: the first level's modules count as entering too
    (until the first promotion). On Maze every module enters at the first level, where the no-op
    module (one that STOPs at once while a neighbour does its job) appears: with coefficient 0.003 and
    ``new_module_prior: stop_bias`` five runs reach 0.743 ± 0.039 against 0.543 ± 0.068 without it;
    0.01 stops learning (``configs/maze_sketch_prior.yaml``, docs/results.md)."""
    hidden_size: int = 128
    stop_bias: float = -3.0
    max_subtask_steps: int = 15
    """The 15th step of a sub-task is a forced STOP (not trained on)."""
    grad_scaling: Literal["sum_of_squares", "norm", "none"] = "sum_of_squares"
    max_episodes: int = 0
    """Stop after this many training episodes (the paper's budget is 3M); 0: only ``total_steps``."""
    curriculum: bool = True
    updates_per_round: int = 500
    promote_threshold: float = 0.8
    """Promote when every current task's success over the round is above this (a negative value:
    after every round, for tests and debugging)."""
    restart_optimizer: bool = False
    """Not in the paper. Clear the optimiser's state at each promotion of the curriculum. With Adam,
    a module (or critic) first used at a later level has zero moments but the stacked tensor's old
    step count, so bias correction no longer offsets the zero start: its first few hundred steps
    are 2–5× the learning rate, which can drive a new module to STOP at once before it ever reaches
    its sub-goal (docs/results.md). A restart gives every slice a bias-corrected start."""
    critic_coef: float = 1.0
    routing: Literal["sketch", "learned"] = "sketch"
    """``sketch``: the task's sketch fixes the routing (policy sketches); ``learned``: no sketch — a
    per-task controller, linear in the features, picks a module or TERMINATE whenever the previous
    module STOPs, trained from task reward only by REINFORCE (the paper's adaptation protocol and
    its option-critic-style baseline). Needs the env's ``terminate_action``."""
    router_entropy_coef: float = 0.01
    router_gamma: float = 1.0
    """Per-tick discount of the learned controller's returns. The task reward comes only at the
    episode's end, so with 1 every choice of an episode is credited with its success; the
    controller's baseline is its own per-task linear critic on these returns."""
    init_modules: str = ""
    """A run directory or checkpoint whose sub-policies start this run (adaptation from a trained
    inventory); empty: fresh modules."""
    finetune_modules: bool = True
    """With ``init_modules``: keep training the loaded modules (the paper's adaptation) or freeze them."""
    modules: Literal["per_symbol", "joint"] = "per_symbol"
    """``per_symbol``: one sub-policy per sketch symbol (the modular agent); ``joint``: the paper's
    joint baseline, one shared policy whose input also holds a one-hot encoding of the whole sketch
    (the original's ``featurize_plan``), same STOP mechanism and critics."""
    init: Literal["torch", "unit_scaling"] = "torch"
    """Initial weights of the sub-policies and critics: ``torch``'s default (uniform ±1/√fan_in) or
    the original's ``unit_scaling`` (TF's uniform unit scaling, factor 1.43: ±1.43·√(3/fan_in));
    biases 0 and the STOP bias ``stop_bias`` in both."""
    critic: Literal["task", "task_step"] = "task"
    """The original's critic is linear in the features, one per task; ``task_step`` keeps one per
    (task, sketch step), so the baseline knows how far along the sketch the episode is."""
    advantage: Literal["mc", "gae"] = "mc"
    """``mc``: the original's Monte-Carlo return minus the critic; ``gae``: generalised advantage
    estimation (Schulman et al. 2016) with ``gae_lambda``, the critic regressing λ-returns."""
    gae_lambda: float = 0.95
    update: Literal["reinforce", "ppo"] = "reinforce"
    """The original REINFORCE step, or PPO's clipped surrogate on the same modular agent."""
    ppo_epochs: int = 4
    ppo_minibatches: int = 4
    clip_coef: float = 0.2
    rollout_steps: int = 0
    """``0``: each update runs one whole episode per env (the original; exact Monte-Carlo returns,
    but envs whose episode ended keep stepping until the longest one ends). ``N > 0``: every env
    steps ``N`` ticks per update, episodes continue across updates and reset as they end, and the
    critic bootstraps the cut (sketch routing only)."""
    num_runs: int = 1
    """Not in the paper. ``R > 1`` trains R independent runs side by side in one batch, as R seeds
    would train apart: row i of the env belongs to run i mod R, and each run has its own modules,
    critics, optimiser state (per-run Adam step counts), loss normalisation, gradient clipping,
    curriculum, task weights and episode budget — nothing is shared but the batched env and the
    stacked matmuls, which run R× the rows per op (fewer, wider ops: one process keeps every core
    busy until the last run ends, docs/results.md). Needs ``env.num_envs`` divisible by R (``num_envs / R`` envs per run),
    ``env.kwargs.task_groups: R`` (each run samples its own tasks), continuing rollouts, the
    REINFORCE update and sketch routing. ``total_steps`` and ``max_episodes`` are budgets per run
    (env steps and progress are counted over the batch). When run r reaches ``max_episodes`` the trainer writes it
    to ``<run dir>/run_<r>/`` as an ordinary run directory (``modrl eval`` it there)."""
    sparse_features: bool = False
    """Not in the paper; speed only. On the CPU, with continuing rollouts and the REINFORCE update
    of the modular agent (eager, not with ``rollout_graph``; ignored elsewhere), each tick's observations
    are kept as their non-zero features (Craft: ~29 of 1,076; ``modrl.sparse.SparseRows``), and the
    modules' and critics' first layers run on those alone, acting and in the update (forward and
    weight gradient), instead of dense matmuls over the whole rows: the same policy and gradients
    up to float rounding, so runs are other draws than without it. Reads each tick's non-zero
    count on the host. (Before session 23 it covered the acting pass's modules only.)"""
    rollout_graph: Literal["eager", "cuda", "emulate"] = "eager"
    """With ``rollout_steps``: ``eager`` runs the ticks as Python code; ``cuda`` captures them in a
    CUDA graph after one eager update and replays it at every later update (``modrl/graphs.py``;
    needs a CUDA device and the env's ``static_shapes``); ``emulate`` replays the recorded ops on
    any device, a graph's semantics without a GPU (slow; to check that a change keeps the rollout
    capturable)."""
    subgoal_metrics: bool = True
    """Log each module run's subgoal success (``subgoals/*`` in TensorBoard; ``SubgoalMetrics``).
    Metrics only; off saves ~2–3% of a Craft iteration on the 2-core CPU."""

    RANGES: ClassVar[dict[str, str]] = {
        "gamma": "[0, 1]", "router_gamma": "[0, 1]", "gae_lambda": "[0, 1]", "entropy_coef": ">= 0",
        "new_module_entropy": ">= 0", "router_entropy_coef": ">= 0", "critic_coef": ">= 0", "hidden_size": ">= 1",
        "max_subtask_steps": ">= 1", "max_episodes": ">= 0", "updates_per_round": ">= 1", "promote_threshold": "[-1, 1]",
        "ppo_epochs": ">= 1", "ppo_minibatches": ">= 1", "clip_coef": ">= 0", "rollout_steps": ">= 0", "num_runs": ">= 1"}
    """Bounds of the numeric keys (``modrl.config.check_ranges``)."""


class PolicySketches(OnPolicyAlgorithm):
    def __init__(self, cfg: SketchConfig, env, total_steps: int):
        super().__init__(env, total_steps, env.num_envs * (cfg.rollout_steps or env.max_episode_steps))
        for attr in ("sketches", "sketch_lengths", "task_names", "set_task_distribution", "stop_action"):
            if not hasattr(env, attr):
                raise ValueError(f"the policy-sketch agent needs an env with sketches (e.g. modrl/Craft-v0); {type(env).__name__} has no {attr!r}")
        R = cfg.num_runs
        if not (isinstance(R, int) and R >= 1):
            raise ValueError(f"num_runs must be an integer >= 1, got {R!r}")
        if getattr(env, "task_groups", 1) != R:
            raise ValueError(f"num_runs: {R} needs the env's task_groups = {R} (env.kwargs.task_groups: {R}: each run "
                             f"samples its own tasks); the env has task_groups = {getattr(env, 'task_groups', 1)}")
        if env.num_envs % R:
            raise ValueError(f"num_runs: {R} needs env.num_envs divisible by {R} (the same envs per run), got {env.num_envs}")
        if R > 1 and (not cfg.rollout_steps or cfg.update != "reinforce" or cfg.routing != "sketch" or cfg.modules != "per_symbol"
                      or cfg.optimizer == "adam_per_module" or cfg.init_modules):
            raise ValueError("num_runs > 1 supports rollout_steps > 0, update: reinforce, routing: sketch, modules: per_symbol, "
                             "optimizer: adam or rmsprop and no init_modules")
        self.cfg = cfg
        self.num_runs = R
        n, dev = env.num_envs, self.device
        self.num_symbols = int(env.sketches.max()) + 1
        self.num_tasks = len(env.task_names)
        self.max_sketch = int(env.sketch_lengths.max())
        critic_heads = self.num_tasks * (self.max_sketch if cfg.critic == "task_step" else 1)
        self.critic_heads = critic_heads  # per run
        # run r owns modules [r·M, (r+1)·M) and critic heads [r·H, (r+1)·H); env row i is run i mod R
        self.run_of_row = torch.arange(n, device=dev) % R
        self._module_offset = self.run_of_row * self.num_symbols
        self._head_offset = self.run_of_row * critic_heads
        features = env.single_observation_space.shape[0]
        # the joint baseline sees the task's whole sketch: one-hot [sketch step, symbol]
        code = torch.zeros(self.num_tasks, self.max_sketch, self.num_symbols, device=dev)
        for t in range(self.num_tasks):
            for k in range(int(env.sketch_lengths[t])):
                code[t, k, int(env.sketches[t, k])] = 1.0
        self.sketch_code = code.flatten(1)
        self.joint = cfg.modules == "joint"
        policy_in = features + (self.sketch_code.shape[1] if self.joint else 0)
        self.learned = cfg.routing == "learned"
        terminate = bool(getattr(env, "terminate_action", False))
        if self.learned != terminate:
            raise ValueError("routing: learned needs the env's TERMINATE action (env.kwargs.terminate_action: true), and "
                             "routing: sketch needs it off")
        if self.learned and (cfg.update != "reinforce" or self.joint or cfg.critic != "task" or cfg.rollout_steps):
            raise ValueError("routing: learned supports update: reinforce, modules: per_symbol, critic: task and rollout_steps: 0")
        if cfg.new_module_entropy is not None and (self.joint or not cfg.curriculum):
            raise ValueError("new_module_entropy needs modules: per_symbol and curriculum: true (it applies to the "
                             "modules each promotion brings in)")
        if cfg.new_module_first_level and cfg.new_module_entropy is None:
            raise ValueError("new_module_first_level needs new_module_entropy (its coefficient)")
        if cfg.new_module_prior != "uniform" and cfg.new_module_entropy is None:
            raise ValueError(f"new_module_prior: {cfg.new_module_prior} needs new_module_entropy (its coefficient)")
        if cfg.rollout_steps < 0:
            raise ValueError(f"rollout_steps must be >= 0 (0: one whole episode per env), got {cfg.rollout_steps}")
        if cfg.rollout_graph not in ("eager", "cuda", "emulate"):
            raise ValueError(f"rollout_graph must be eager, cuda or emulate, got {cfg.rollout_graph!r}")
        if cfg.rollout_graph != "eager":
            if not cfg.rollout_steps:
                raise ValueError("rollout_graph needs rollout_steps > 0 (the continuing rollout's ticks are captured)")
            if not getattr(env, "static_shapes", False):
                raise ValueError("rollout_graph needs the env's static_shapes: true (resets without host reads)")
            if cfg.rollout_graph == "cuda" and dev.type != "cuda":
                raise ValueError(f"rollout_graph: cuda needs a CUDA device, the env is on {dev} "
                                 "(rollout_graph: emulate replays on any device)")
        self.stop_action = env.stop_action  # the world's actions, then STOP (then TERMINATE, if any)
        self.halt_choice = self.num_symbols  # the learned controller's TERMINATE choice
        self.policy = torch.nn.ModuleDict({
            "subpolicies": PolicyInventory(1 if self.joint else R * self.num_symbols, policy_in, self.stop_action, cfg.hidden_size, 2, "relu", "action", cfg.stop_bias),
            "critics": ValueHeads(R * critic_heads, features),
        })
        if cfg.init == "unit_scaling":
            self.policy["subpolicies"].reset_parameters(unit_scaling=RELU_SCALE)
            self.policy["critics"].net.reset_parameters(unit_scaling=RELU_SCALE)
        if self.learned:  # per-task linear controller over the modules + TERMINATE, starting uniform
            router = StackedMLP(self.num_tasks, features, self.num_symbols + 1, features, 1, "relu")
            for p in router.parameters():
                torch.nn.init.zeros_(p)
            self.policy["router"] = router
            self.policy["router_critic"] = ValueHeads(self.num_tasks, features)
        # (it reads each observation's non-zero count on the host: not inside a captured rollout; on a GPU
        # the dense matmuls are cheap and the sparse path is unmeasured)
        self.sparse = (cfg.sparse_features and dev.type == "cpu" and cfg.rollout_graph == "eager" and cfg.rollout_steps > 0
                       and cfg.update == "reinforce" and not self.joint)
        if cfg.init_modules:
            self._load_modules(cfg.init_modules)
            self.policy["subpolicies"].requires_grad_(cfg.finetune_modules)
        self.policy.to(dev)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if cfg.optimizer == "rmsprop":
            # TensorFlow 1's RMSPropOptimizer, as the original used: decay 0.9, epsilon 1e-10, and the
            # mean-square accumulator starting at ones (torch starts it at zeros, which makes the
            # first steps ~3× lr in every coordinate)
            self.optimizer = torch.optim.RMSprop(params, lr=cfg.learning_rate, alpha=0.9, eps=1e-10)
            for p in params:
                self.optimizer.state[p] = {"step": torch.tensor(0.0), "square_avg": torch.ones_like(p)}
        elif cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=cfg.learning_rate) if R == 1 else RunAdam(params, R, lr=cfg.learning_rate)
        else:
            self.optimizer = ModuleAdam(inventory_param_groups(self.policy), lr=cfg.learning_rate)
        if cfg.restart_optimizer and cfg.optimizer == "rmsprop":
            raise ValueError("restart_optimizer: true needs an Adam optimizer (the rmsprop accumulators start at 1, as in TF)")
        self.sketch_lists = [
            [int(m) for m in env.sketches[t, : int(env.sketch_lengths[t])].tolist()] for t in range(self.num_tasks)
        ]
        # the length curriculum, per run (the properties below read run 0's: the only one unless num_runs > 1);
        # it starts each run at the split's shortest sketches
        self.curriculum = LengthCurriculum(env, R, enabled=cfg.curriculum, updates_per_round=cfg.updates_per_round,
                                           promote_threshold=cfg.promote_threshold)
        self.run_episodes = [0] * R
        self.run_done = [False] * R  # reached max_episodes (and handed to the trainer, see pop_finished_runs)
        self._finished_runs: list[int] = []
        self._milestones: list[str | tuple[int, str]] = []
        self._steps = 0
        self.total_env_steps = total_steps * R  # total_steps, like max_episodes, is a budget per run
        self.metrics = ModularityMetrics(self.num_tasks, self.num_symbols, max_duration=cfg.max_subtask_steps, device=dev,
                                         module_names=getattr(env, "symbols", None))
        # subgoal success per symbol and per (task, sketch step), judged on the world's state (envs/sketch_tasks.py);
        # not for a learned router over fresh modules (the option-critic-style baseline): no sketch ever binds a
        # module to its symbol there, so "get_wood" is a name only (its runs were seen making sticks and shears)
        self.subgoals = self.subgoal_metrics(env) if cfg.subgoal_metrics and self.binds_symbols else None
        # with rollout_steps: the episodes in progress, carried from one update to the next
        self.router = SketchRouter(self.sketch_lists, n, self.num_symbols, dev)
        self.controller = CallAndReturn(n, Halting(cfg.max_subtask_steps), cfg.gamma, dev)
        self._entropy_coef: torch.Tensor | None = None  # per module, with new_module_entropy
        self._entering: torch.Tensor | None = None  # per module, with new_module_prior: stop_bias
        # π₀ of new_module_prior: stop_bias, log-probabilities of the world actions and STOP
        self._prior_log_probs = torch.tensor([0.0] * self.stop_action + [cfg.stop_bias], device=dev).log_softmax(-1)
        self._graph = None  # the captured rollout (rollout_graph), made at the first update
        self._set_entropy_coefs()

    def _load_modules(self, source: str) -> None:
        from pathlib import Path

        from modrl.checkpoint import latest_checkpoint, load_checkpoint

        path = Path(source)
        state = load_checkpoint(latest_checkpoint(path) if path.is_dir() else path)["agent"]["policy"]
        modules = {k.removeprefix("subpolicies."): v for k, v in state.items() if k.startswith("subpolicies.")}
        try:
            self.policy["subpolicies"].load_state_dict(modules)
        except RuntimeError as e:
            raise ValueError(f"init_modules {source!r}: its sub-policies do not fit this agent's inventory ({e})") from None

    # ------------------------------------------------------------------ bookkeeping
    @property
    def global_step(self) -> int:
        return self._steps

    @property
    def total_steps(self) -> int:
        return self.total_env_steps

    # run 0's curriculum state, under the names of a single run
    @property
    def max_length(self) -> int:
        return self.curriculum.max_length[0]

    @property
    def allowed_tasks(self) -> torch.Tensor:
        return self.curriculum.allowed[0]

    @property
    def round_updates(self) -> int:
        return self.curriculum.round_updates[0]

    @property
    def round_success(self) -> torch.Tensor:
        """[2, tasks]: the current round's successes and episodes per task (run 0's; a view)."""
        return self.curriculum.success[0]

    @property
    def last_round_success(self) -> torch.Tensor | None:
        return self.curriculum.last_success[0]

    @property
    def episodes(self) -> int:
        """Training episodes that ended, summed over the runs."""
        return sum(self.run_episodes)

    @property
    def finished(self) -> bool:
        return self._steps >= self.total_env_steps or (self.cfg.max_episodes > 0 and all(self.run_done))

    @property
    def progress(self) -> tuple[int, int, str]:
        if self.cfg.max_episodes > 0:  # the paper's budget is in episodes (of the run furthest from it)
            return min(self.run_episodes), self.cfg.max_episodes, "episode"
        return self._steps, self.total_env_steps, "step"

    def _promoted(self, run: int) -> None:
        """What a promotion of run ``run``'s curriculum changes besides its tasks."""
        self._milestones.append(f"length_{self.curriculum.max_length[run]}" if self.num_runs == 1
                                else (run, f"length_{self.curriculum.max_length[run]}"))
        self._set_entropy_coefs()
        if self.cfg.restart_optimizer:  # moments and step counts start again (bias-corrected)
            if self.num_runs == 1:
                self.optimizer.state.clear()
            else:
                self.optimizer.restart(run)

    def entering_modules(self, run: int = 0) -> torch.Tensor:
        """Bool per module of run ``run``: used by the current level's sketches and by no shorter
        allowed one (all False at the first level, where no module has been trained yet)."""
        return self.curriculum.entering(run, self.num_symbols, first_level=self.cfg.new_module_first_level)

    def _set_entropy_coefs(self) -> None:
        cfg = self.cfg
        if cfg.new_module_entropy is not None:  # per module of every run
            entering = torch.cat([self.entering_modules(r) for r in range(self.num_runs)])
            self._entropy_coef = torch.where(entering, cfg.new_module_entropy, cfg.entropy_coef)
            self._entering = entering if cfg.new_module_prior == "stop_bias" else None

    def pop_milestone(self) -> str | tuple[int, str] | None:
        """``length_<ℓ>`` once after each promotion of the curriculum (the original wrote a
        checkpoint at each), so a run can be evaluated or traced as it was when ℓ_max rose; with
        ``num_runs`` > 1, ``(r, "length_<ℓ>")``: the trainer keeps run r's state alone, in its run
        directory (:meth:`run_state_dict`)."""
        return self._milestones.pop(0) if self._milestones else None

    def pop_finished_runs(self) -> list[int]:
        """The runs that reached ``max_episodes`` since the last call (with ``num_runs`` > 1 the
        trainer writes each to its own run directory then, see :meth:`run_state_dict`)."""
        runs, self._finished_runs = self._finished_runs, []
        return runs

    def end_runs(self) -> None:
        """Training stopped before every run reached ``max_episodes`` (``total_steps``): hand the
        remaining runs over as they are (:meth:`pop_finished_runs`)."""
        self._hand_over(lambda r: True)

    def _hand_over(self, done) -> None:
        """Mark the runs not yet handed over for which ``done(r)`` holds, for :meth:`pop_finished_runs`."""
        for r in range(self.num_runs):
            if not self.run_done[r] and done(r):
                self.run_done[r] = True
                self._finished_runs.append(r)

    def _curriculum_step(self) -> dict[str, float]:
        for r in range(self.num_runs):
            if self.curriculum.end_update(r):
                self._promoted(r)
        if self.num_runs == 1:
            return {"curriculum/max_length": float(self.max_length)} if self.cfg.curriculum and self.round_updates == 0 else {}
        return {f"curriculum/run_{r}/max_length": float(m) for r, m in enumerate(self.curriculum.max_length)}

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def sample_action(self, obs, active, task, forced, deterministic: bool = False) -> torch.Tensor:
        """Each env's active module acts (5 world actions + STOP); at the cap the action is a forced STOP."""
        return self._sample(self._log_probs(obs, active.clamp(max=self.num_symbols - 1), task), forced, deterministic)

    def _sample(self, log_probs, forced, deterministic: bool = False) -> torch.Tensor:
        probs = log_probs.exp()
        action = probs.argmax(-1) if deterministic else torch.multinomial(probs, 1).squeeze(-1)
        return torch.where(forced, self.stop_action, action)  # the forced advance: STOP, not trained on

    def _router_log_probs(self, obs, task) -> torch.Tensor:
        """The learned controller's log-probabilities over the modules + TERMINATE."""
        return self.policy["router"](obs, task).log_softmax(-1)

    @torch.no_grad()
    def route(self, router: SketchRouter | None, obs, task, deterministic: bool = False) -> torch.Tensor:
        """Each env's next module: the sketch's, or the learned controller's choice (``halt_choice``
        = TERMINATE)."""
        if not self.learned:
            return router.route().choice
        log_probs = self._router_log_probs(obs, task)
        return log_probs.argmax(-1) if deterministic else torch.multinomial(log_probs.exp(), 1).squeeze(-1)

    def env_action(self, obs, active, task, forced, deterministic: bool = False) -> torch.Tensor:
        """The env action of each env's active module, or TERMINATE where the controller chose it."""
        action = self.sample_action(obs, active, task, forced, deterministic)
        if self.learned:
            action = torch.where(active == self.halt_choice, self.stop_action + 1, action)
        return action

    # ------------------------------------------------------------------ subgoal success (metrics only)
    @staticmethod
    def subgoal_metrics(env) -> SubgoalMetrics | None:
        """Subgoal counters for ``env`` (None if it defines no subgoals): one slot per (task, sketch
        step), ``task · L + k``, then one per symbol for a learned router, which follows no sketch."""
        if not hasattr(env, "subgoal_targets"):
            return None
        symbols = torch.arange(len(env.symbols), device=env.sketches.device)
        slot_symbol = torch.cat([env.sketches.flatten().clamp(min=0), symbols])
        return SubgoalMetrics(env.subgoal_targets, env.subgoal_defined, slot_symbol, env.num_envs)

    @property
    def binds_symbols(self) -> bool:
        """Whether module k does symbol k's job by construction: a sketch routes to it, or the modules
        come from a sketch-trained inventory (``init_modules``, e.g. adaptation)."""
        return not self.learned or bool(self.cfg.init_modules)

    def subgoal_slot(self, env, task, pointer, symbol) -> torch.Tensor:
        """The slot of modules of ``symbol`` starting at sketch step ``pointer`` of ``task``."""
        T, L = env.sketches.shape
        if self.learned:
            return T * L + symbol.clamp(0, len(env.symbols) - 1)
        return task * L + pointer.clamp(max=L - 1)

    def subgoal_slots(self, env) -> dict[int, str]:
        """The (task, sketch step) slots named ``<task>/<k>_<symbol>`` (none with a learned router)."""
        if self.learned:
            return {}
        L = env.sketches.shape[1]
        return {t * L + k: f"{task}/{k}_{env.symbols[sym]}" for t, task in enumerate(env.task_names)
                for k, sym in enumerate(env.sketches[t].tolist()) if sym >= 0}

    def _begin_subgoals(self, mask, task, pointer, symbol) -> None:
        """Modules of ``symbol`` start where ``mask``: note the world's state and the slot they serve."""
        if self.subgoals is not None:
            self.subgoals.begin(mask, self.subgoal_slot(self.env, task, pointer, symbol), symbol, self.env.subgoal_features())

    def _end_subgoals(self, completed, symbol, info) -> None:
        """Module runs of ``symbol`` ended where ``completed``: did they do their job (``info`` of the step)?"""
        if self.subgoals is not None:
            self.subgoals.end(completed, symbol, info["subgoal_features"])

    # ------------------------------------------------------------------ rollouts: one episode per env, or continuing
    def start(self, seed: int) -> None:
        self.obs, info = self.env.reset(seed=seed)
        self.router.start(torch.ones(self.env.num_envs, dtype=torch.bool, device=self.device), info["task"])

    @torch.no_grad()
    def _rollout(self) -> dict[str, torch.Tensor]:
        env, n, T = self.env, self.env.num_envs, self.env.max_episode_steps
        obs, _ = env.reset(options={"reset_mask": torch.ones(n, dtype=torch.bool, device=self.device)})
        task = env.task.clone()
        router = SketchRouter(self.sketch_lists, n, self.num_symbols, self.device)
        router.start(torch.ones(n, dtype=torch.bool, device=self.device), task)
        ctrl = CallAndReturn(n, Halting(self.cfg.max_subtask_steps), self.cfg.gamma, self.device)
        buf = {
            "obs": torch.empty(T, n, obs.shape[1], device=self.device),  # only rows [:length] are read
            "critic": torch.zeros(T, n, dtype=torch.long, device=self.device),
            "decision": torch.zeros(T, n, dtype=torch.bool, device=self.device),
            "module": torch.zeros(T, n, dtype=torch.long, device=self.device),
            "action": torch.zeros(T, n, dtype=torch.long, device=self.device),
            "reward": torch.zeros(T, n, device=self.device),
            "trainable": torch.zeros(T, n, dtype=torch.bool, device=self.device),
            "alive": torch.zeros(T, n, dtype=torch.bool, device=self.device),
        }
        alive = torch.ones(n, dtype=torch.bool, device=self.device)
        success = torch.zeros(n, dtype=torch.bool, device=self.device)
        for t in range(T):
            need = ctrl.needs_decision & alive
            ctrl.decide(self.route(router, obs, task))
            halting = ctrl.active == self.halt_choice  # only the learned controller chooses it
            self.metrics.record_decisions(task, ctrl.active, need & ~halting)
            self._begin_subgoals(need & ~halting, task, router.pointer, ctrl.active)
            forced = ctrl.halting.at_cap(ctrl.steps_in_module)
            if bool(alive.all()):
                action = self.env_action(obs, ctrl.active, task, forced)
            else:  # the policies run only for the episodes still going (finished ones step with action 0)
                rows = torch.nonzero(alive).squeeze(-1)
                action = torch.zeros(n, dtype=torch.long, device=self.device).index_copy_(
                    0, rows, self.env_action(obs[rows], ctrl.active[rows], task[rows], forced[rows]))
            step_before = router.pointer
            next_obs, reward, terminated, truncated, info = env.step(action)
            transition, halt, _ = ctrl.step(action == self.stop_action, reward, terminated, truncated)
            router.advance(halt)
            self.metrics.record_step(transition)
            self._end_subgoals(transition.completed & alive, transition.choice, info)
            buf["obs"][t], buf["module"][t], buf["action"][t] = obs, ctrl.active, action
            buf["critic"][t] = self._critic_index(task, step_before)
            buf["decision"][t] = need
            buf["reward"][t] = reward
            buf["trainable"][t] = alive & ~forced & ~halting
            buf["alive"][t] = alive
            done = terminated | truncated
            success |= alive & info["episode"]["success"]
            alive = alive & ~done
            obs = next_obs
            if not bool(alive.any()):
                break
        self._steps += int(buf["alive"].sum())  # env steps of the episodes that were running
        self.run_episodes[0] += n
        self.curriculum.count(task, torch.ones(n, dtype=torch.bool, device=self.device), success)
        # one episode per env: count, return (= success: reward 1 only on success), length, success
        self.stats.add(n, success.double().sum(), buf["alive"].double().sum(), success.double().sum())
        length = t + 1
        alive = buf["alive"][:length]
        buf["ended"] = alive & ~torch.cat([alive[1:], torch.zeros_like(alive[:1])])  # each env's last alive step
        buf["task"] = task.expand(length, n)
        buf["next_value"] = torch.zeros(n, device=self.device)  # every episode ended: nothing to bootstrap
        buf["length"] = length
        return buf

    def _rollout_continuing(self) -> dict[str, torch.Tensor]:
        """``rollout_steps`` ticks of every env; episodes carry over between updates and reset as
        they end (SAME_STEP autoreset), so no env steps are spent on finished episodes."""
        if self.cfg.rollout_graph == "eager":
            buf = self._ticks()
        else:
            if self._graph is None:  # the state the ticks carry from one update to the next
                holders = [self.env, self.router, self.controller, self.metrics, self.stats, (self, ("obs",)), (self.curriculum, ("success",)),
                           *([self.subgoals] if self.subgoals is not None else [])]
                self._graph = CapturedRegion(self._ticks, holders, [self.env.generator], emulate=self.cfg.rollout_graph == "emulate")
            buf = self._graph()
        n, T, R = self.env.num_envs, self.cfg.rollout_steps, self.num_runs
        self._steps += n * T
        if R == 1:
            self.run_episodes[0] += int(buf["ended"].sum())
        else:  # row i is run i mod R
            for r, k in enumerate(buf["ended"].view(T, n // R, R).sum((0, 1)).tolist()):
                self.run_episodes[r] += k
        return buf

    @torch.no_grad()
    def _ticks(self) -> dict[str, Any]:
        """The continuing rollout's ticks: tensor code only, no host read (what a CUDA graph replays;
        ``sparse_features`` reads each tick's non-zero count, and keeps the ticks' observations as
        ``buf["obs_rows"]``, a list of :class:`SparseRows`, instead of ``buf["obs"]``)."""
        env, n, T, dev = self.env, self.env.num_envs, self.cfg.rollout_steps, self.device
        router, ctrl, obs = self.router, self.controller, self.obs
        buf = {
            "critic": torch.zeros(T, n, dtype=torch.long, device=dev),
            "module": torch.zeros(T, n, dtype=torch.long, device=dev),
            "action": torch.zeros(T, n, dtype=torch.long, device=dev),
            "reward": torch.zeros(T, n, device=dev),
            "trainable": torch.zeros(T, n, dtype=torch.bool, device=dev),
            "ended": torch.zeros(T, n, dtype=torch.bool, device=dev),
            "task": torch.zeros(T, n, dtype=torch.long, device=dev),
        }
        # the REINFORCE update runs the modules on these very rows with these very parameters: the
        # first layer's product computed here to act is kept for it (StackedMLP.forward_keeping_product)
        keep = (not self.sparse and self.cfg.update == "reinforce"
                and self.policy["subpolicies"].net.keeps_product(obs))  # by device and dtype
        if keep:
            buf["product"] = torch.empty(T, n, self.cfg.hidden_size, device=dev)
        if self.sparse:
            buf["obs_rows"] = []
        else:
            buf["obs"] = torch.empty(T, n, obs.shape[1], device=dev)
        for t in range(T):
            task = router.task
            need = ctrl.decide(router.route().choice)
            self.metrics.record_decisions(task, ctrl.active, need)
            self._begin_subgoals(need, task, router.pointer, ctrl.active)
            forced = ctrl.halting.at_cap(ctrl.steps_in_module)
            module = self._module_index(ctrl.active)
            if self.sparse:
                buf["obs_rows"].append(SparseRows.of(obs))
                log_probs = self._log_probs(buf["obs_rows"][-1], module, task)
            elif keep:
                log_probs, buf["product"][t] = self._log_probs_keeping_product(obs, module, task)
            else:
                log_probs = self._log_probs(obs, module, task)
            action = self._sample(log_probs, forced)
            if not self.sparse:
                buf["obs"][t] = obs
            buf["module"][t], buf["action"][t], buf["task"][t] = module, action, task
            buf["critic"][t] = self._critic_index(task, router.pointer)
            buf["trainable"][t] = ~forced
            obs, reward, terminated, truncated, info = env.step(action)
            transition, halt, _ = ctrl.step(action == self.stop_action, reward, terminated, truncated)
            router.advance(halt)
            self.metrics.record_step(transition)
            self._end_subgoals(transition.completed, transition.choice, info)
            done = terminated | truncated
            buf["reward"][t], buf["ended"][t] = reward, done
            self.stats.update(info)
            ep = info["episode"]
            self.curriculum.count(ep["task"], done, ep["success"], self.run_of_row if self.num_runs > 1 else None)
            router.start(done, info["task"])  # the next episodes (autoreset) start their sketches
        self.obs = obs
        buf["next_value"] = self.policy["critics"](obs, self._critic_index(router.task, router.pointer))
        buf["length"] = T
        return buf

    # ------------------------------------------------------------------ update
    def train_iteration(self) -> dict[str, float]:
        cfg = self.cfg
        buf = self._rollout_continuing() if cfg.rollout_steps else self._rollout()
        T = buf["length"]
        rewards, ended, next_value = buf["reward"][:T], buf["ended"], buf["next_value"]  # γ per tick, STOP ticks included
        tasks = buf["task"].flatten()
        sparse = "obs_rows" in buf  # sparse_features: the ticks' observations as their non-zero entries
        all_obs = SparseRows.cat(buf["obs_rows"]) if sparse else buf["obs"][:T].flatten(0, 1)
        critic = buf["critic"][:T].flatten()
        modules = buf["module"][:T].flatten()
        # The wide observation rows are gathered once per network, already in the order its
        # inventory groups them (a copy of every tick's 1076 features dominated the update):
        # the critic reads the ticks of running episodes by head, the policy the trainable ticks
        # by module. The episodic rollout also steps envs whose episode has ended: not read.
        # Sparse rows are not gathered for the critic: their first layer is read off the entries.
        with torch.set_grad_enabled(cfg.update == "reinforce"):  # PPO re-evaluates the critic per minibatch
            if sparse:  # continuing rollouts: every tick is live
                value_all = self.policy["critics"](all_obs, critic)
            else:
                live = buf["alive"][:T].flatten() if "alive" in buf else torch.ones_like(critic, dtype=torch.bool)
                live_rows = rows_by_module(torch.nonzero(live).squeeze(-1), critic)
                live_head = critic.index_select(0, live_rows)
                value_live = self.policy["critics"](all_obs.index_select(0, live_rows), live_head,
                                                    Grouping.presorted(live_head, self.policy["critics"].num_heads))
                value_all = torch.zeros(critic.numel(), device=self.device).index_copy(0, live_rows, value_live)
        idx = rows_by_module(torch.nonzero(buf["trainable"][:T].flatten()).squeeze(-1), modules)
        value = value_all.index_select(0, idx)  # trainable ticks are live
        if cfg.advantage == "mc":  # the original: Monte-Carlo return to go − critic
            returns = discounted_returns(rewards, ended, next_value, cfg.gamma)
            advantage = None
        else:  # GAE over every tick (forced STOPs included; not live: 0), then only trainable ticks are used
            advantages, returns = generalized_advantages(rewards, value_all.detach().view(T, -1), ended, next_value,
                                                         cfg.gamma, cfg.gae_lambda)
            advantage = advantages.flatten().index_select(0, idx)
        obs = all_obs.select(idx) if sparse else all_obs.index_select(0, idx)
        product = buf["product"][:T].flatten(0, 1).index_select(0, idx) if "product" in buf else None
        module = modules.index_select(0, idx)
        grouping = Grouping.presorted(torch.zeros_like(module) if self.joint else module,  # joint: one policy
                                      self.policy["subpolicies"].num_modules)
        action = buf["action"][:T].flatten().index_select(0, idx)
        ret = returns.flatten().index_select(0, idx)
        head = critic.index_select(0, idx)
        task = tasks.index_select(0, idx)

        router_loss = torch.zeros((), device=self.device)
        if self.learned:  # REINFORCE for the controller's choices: its own returns and baseline
            ridx = torch.nonzero(buf["decision"][:T].flatten()).squeeze(-1)
            r_obs, r_task = all_obs.index_select(0, ridx), tasks.index_select(0, ridx)
            r_ret = discounted_returns(rewards, ended, torch.zeros_like(rewards[0]), cfg.router_gamma).flatten().index_select(0, ridx)
            r_base = self.policy["router_critic"](r_obs, r_task)
            r_adv = (r_ret - r_base).detach()
            log_pi = self._router_log_probs(r_obs, r_task)
            chosen = log_pi.gather(-1, buf["module"][:T].flatten().index_select(0, ridx)[:, None]).squeeze(-1)
            router_loss = (-chosen * r_adv + cfg.router_entropy_coef * (log_pi.exp() * log_pi).sum(-1)
                           + cfg.critic_coef * (r_ret - r_base) ** 2).mean()

        if cfg.update == "reinforce":
            actor_loss, critic_loss, neg_entropy, clipfrac = self._losses(
                obs, module, task, action, ret, head, advantage=advantage, value=value, grouping=grouping, product=product,
                weight=self._sample_weights(module))
            sq = self._apply(actor_loss + cfg.critic_coef * critic_loss + router_loss)
        else:  # PPO on the same samples: clipped ratio against the rollout policy, several epochs
            with torch.no_grad():
                old_log_prob = self._log_probs(obs, module, task, grouping).gather(-1, action[:, None]).squeeze(-1)
                if advantage is None:
                    advantage = ret - value.detach()
            n = idx.numel()
            size = max(1, n // cfg.ppo_minibatches)
            for _ in range(cfg.ppo_epochs):
                perm = torch.randperm(n, device=self.device)
                for start in range(0, n, size):
                    mb = perm[start : start + size]
                    actor_loss, critic_loss, neg_entropy, clipfrac = self._losses(
                        obs.index_select(0, mb), module[mb], task[mb], action[mb], ret[mb], head[mb],
                        old_log_prob=old_log_prob[mb], advantage=advantage[mb],
                    )
                    sq = self._apply(actor_loss + cfg.critic_coef * critic_loss)
        self.iteration += 1
        self._hand_over(lambda r: 0 < cfg.max_episodes <= self.run_episodes[r])  # the trainer saves each
        per_run = 1.0 / self.num_runs  # the losses below are summed over runs: report their mean
        out = {
            "losses/policy_loss": actor_loss.detach() * per_run,
            "losses/value_loss": critic_loss.detach() * per_run,
            "losses/entropy": -neg_entropy.mean().detach(),
            "losses/grad_sq_sum": sq.detach(),
            "losses/clipfrac": clipfrac.detach().float(),
            "losses/router_loss": router_loss.detach(),
        }
        metrics = dict(zip(out, torch.stack(list(out.values())).tolist()))
        metrics["charts/episodes_total"] = float(self.episodes)
        metrics.update(self._curriculum_step())
        return metrics

    def _critic_index(self, task: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """The critic head of each env row: its task, or its (task, sketch step) with ``critic:
        task_step`` (with ``num_runs`` > 1: among its run's heads; rows of the whole batch)."""
        head = task if self.cfg.critic == "task" else task * self.max_sketch + step.clamp(max=self.max_sketch - 1)
        return head if self.num_runs == 1 else head + self._head_offset

    def _module_index(self, active: torch.Tensor) -> torch.Tensor:
        """The module of each env row's active sketch symbol (with ``num_runs`` > 1: its run's copy)."""
        module = active.clamp(max=self.num_symbols - 1)
        return module if self.num_runs == 1 else module + self._module_offset

    def _sample_weights(self, module: torch.Tensor) -> torch.Tensor | None:
        """With ``num_runs`` > 1: each sample's weight 1 / (its run's sample count), so that every
        run's loss is its own mean, as if it trained alone; None (a plain mean) with one run."""
        if self.num_runs == 1:
            return None
        run = torch.div(module, self.num_symbols, rounding_mode="floor")
        counts = torch.bincount(run, minlength=self.num_runs).clamp_min(1)
        return counts.reciprocal().index_select(0, run)

    def _policy_input(self, obs, task, module):
        """The modules' input and module index: the joint policy is told the task's sketch and is
        module 0 for every symbol."""
        if self.joint:
            return torch.cat([obs, self.sketch_code[task]], -1), torch.zeros_like(module)
        return obs, module

    def _log_probs(self, obs, module, task, grouping: Grouping | None = None, product=None) -> torch.Tensor:
        """Log-probabilities of the 5 world actions + STOP under each sample's module
        (``grouping``: the rows' module order, when they are already sorted; ``product``: the rows'
        first-layer product kept while acting, see :meth:`_log_probs_keeping_product`)."""
        x, module = self._policy_input(obs, task, module)
        logits, stop_logit = self.policy["subpolicies"](x, module, grouping, product)
        return torch.cat([logits, stop_logit[:, None]], -1).log_softmax(-1)

    def _log_probs_keeping_product(self, obs, module, task) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_log_probs` and each row's first-layer product, for the update to reuse."""
        x, module = self._policy_input(obs, task, module)
        logits, stop_logit, product = self.policy["subpolicies"].forward_keeping_product(x, module)
        return torch.cat([logits, stop_logit[:, None]], -1).log_softmax(-1), product

    def _losses(self, obs, module, task, action, ret, critic, old_log_prob=None, advantage=None, value=None, grouping=None,
                product=None, weight=None):
        """Actor loss (REINFORCE, or PPO's clipped surrogate when ``old_log_prob`` is given), critic
        loss, negative entropy and the clipped fraction, averaged over the samples (``weight``: a
        weighted sum instead, see :meth:`_sample_weights`); ``critic`` is each sample's critic head
        (``value``: the critic's output on these samples, if computed)."""
        cfg = self.cfg
        log_probs = self._log_probs(obs, module, task, grouping, product)
        log_prob = log_probs.gather(-1, action[:, None]).squeeze(-1)
        if value is None:
            value = self.policy["critics"](obs, critic)
        if advantage is None:
            advantage = (ret - value).detach()
        neg_entropy = (log_probs.exp() * log_probs).sum(-1)
        regulariser = neg_entropy  # −H(π); entering modules with new_module_prior: stop_bias: KL(π‖π₀)
        if self._entering is not None:
            cross = (log_probs.exp() * self._prior_log_probs).sum(-1)
            regulariser = neg_entropy - torch.where(self._entering.index_select(0, module), cross, torch.zeros_like(cross))
        if old_log_prob is None:
            surrogate = log_prob * advantage
            clipfrac = torch.zeros((), device=obs.device)
        else:
            ratio = (log_prob - old_log_prob).exp()
            clipped = ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
            surrogate = torch.min(ratio * advantage, clipped * advantage)
            clipfrac = ((ratio - 1).abs() > cfg.clip_coef).float().mean()
        count = max(1, obs.shape[0])
        entropy_coef = cfg.entropy_coef if self._entropy_coef is None else self._entropy_coef.index_select(0, module)
        if weight is None:
            actor_loss = (-surrogate + entropy_coef * regulariser).sum() / count
            critic_loss = ((ret - value) ** 2).sum() / count
        else:
            actor_loss = ((-surrogate + entropy_coef * regulariser) * weight).sum()
            critic_loss = ((ret - value) ** 2 * weight).sum()
        check_finite({"policy_loss": actor_loss, "value_loss": critic_loss}, self.global_step)
        return actor_loss, critic_loss, neg_entropy, clipfrac

    def _apply(self, loss: torch.Tensor) -> torch.Tensor:
        """One optimiser step with the configured gradient rescaling; returns Σg² before rescaling."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
        if self.num_runs > 1:
            return self._apply_per_run(grads)
        sq = torch.stack([g.pow(2).sum() for g in grads]).sum()
        if self.cfg.grad_scaling == "sum_of_squares":  # the original: scale by min(1, 1/Σg²)
            scale = torch.clamp(1.0 / sq.clamp_min(1e-12), max=1.0)
            for g in grads:
                g.mul_(scale)
        elif self.cfg.grad_scaling == "norm":
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
        self.optimizer.step()
        return sq

    def _apply_per_run(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`_apply`'s rescaling run by run (each run's slice of every stacked tensor, see
        ``num_runs``), then the step; returns the runs' mean Σg² before rescaling."""
        R = self.num_runs
        by_run = [g.view(R, -1) for g in grads]  # dim 0 stacks the runs' modules, run-major
        sq = torch.stack([g.pow(2).sum(1) for g in by_run]).sum(0)  # [R]
        if self.cfg.grad_scaling == "sum_of_squares":
            scale = torch.clamp(1.0 / sq.clamp_min(1e-12), max=1.0)
        elif self.cfg.grad_scaling == "norm":  # clip_grad_norm_(…, 1.0) per run
            scale = torch.clamp(1.0 / (sq.sqrt() + 1e-6), max=1.0)
        else:
            scale = None
        if scale is not None:
            for g in by_run:
                g.mul_(scale[:, None])
        self.optimizer.step()
        return sq.mean()

    def log_extras(self) -> dict[str, Any]:
        summary = self.metrics.summary()
        out: dict[str, Any] = {k: v for k, v in summary.items() if isinstance(v, float)}
        out["router/usage_matrix"] = self.metrics.usage_heatmap(summary, self.env.task_names)
        if self.subgoals is not None:  # per symbol, and with sketches per (task, step): subgoals/make[bed]/3_make1/…
            out.update(self.subgoals.summary(self.env.symbols, self.subgoal_slots(self.env)))
        round_success = self.curriculum.success
        successes, episodes = round_success.sum(0)  # the current rounds, over the runs
        for t, name in enumerate(self.env.task_names):
            if float(episodes[t]) > 0:
                out[f"tasks/{name}/success_rate"] = float(successes[t] / episodes[t])
        if self.num_runs > 1:  # and each run's
            rates = (round_success[:, 0] / round_success[:, 1].clamp_min(1)).tolist()
            counts = round_success[:, 1].tolist()
            for r in range(self.num_runs):
                for t, name in enumerate(self.env.task_names):
                    if counts[r][t] > 0:
                        out[f"tasks/run_{r}/{name}/success_rate"] = rates[r][t]
            out.update({f"curriculum/run_{r}/max_length": float(m) for r, m in enumerate(self.curriculum.max_length)})
        out["curriculum/max_length"] = float(min(self.curriculum.max_length))  # of the run furthest behind
        return out

    # ------------------------------------------------------------------ evaluation and checkpoints
    def make_actor(self, num_envs: int) -> SketchActor:
        if self.num_runs > 1:
            raise ValueError(f"this agent holds {self.num_runs} runs (num_runs); evaluate each from its own run "
                             "directory (<run dir>/run_<r>/, written when the run reaches max_episodes)")
        return SketchActor(self, num_envs)

    def state_dict(self) -> dict[str, Any]:
        """With one run, each curriculum entry is that run's (``max_length`` an int, ``round_success``
        [2, tasks], ...); with ``num_runs`` > 1, one per run (lists, tensors with a leading run dim)."""
        state = super().state_dict()
        one = self.num_runs == 1
        state.update(
            **self.curriculum.state_dict(),
            episodes=self.episodes if one else list(self.run_episodes), steps=self._steps,
            env_task_weights=self.env.task_weights.clone(),
            episodes_in_progress={"pointer": self.router.pointer.clone(), "task": self.router.task.clone(),
                                  "controller": self.controller.state_dict()},
        )
        if not one:
            state["runs_saved"] = list(self.run_done)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        R = self.num_runs
        per_run = (lambda v: [int(x) for x in v]) if R > 1 else (lambda v: [int(v)])
        self.curriculum.load_state_dict(state)
        self.run_episodes = per_run(state["episodes"])
        # a run saved at its budget stays saved, unless the budget was raised since (it is saved again there)
        saved = state["runs_saved"] if R > 1 else [False]
        self.run_done = [bool(x) and 0 < self.cfg.max_episodes <= e for x, e in zip(saved, self.run_episodes)]
        self._steps = int(state["steps"])
        self.env.set_task_distribution(state["env_task_weights"].to(self.device))
        self._set_entropy_coefs()
        if "episodes_in_progress" in state:  # checkpoints before rollout_steps have none (and need none)
            live = state["episodes_in_progress"]
            self.router.pointer, self.router.task = live["pointer"].to(self.device), live["task"].to(self.device)
            self.controller.load_state_dict(live["controller"])

    def run_state_dict(self, run: int) -> dict[str, Any]:
        """Run ``run`` of a ``num_runs`` > 1 agent as the state of a one-run agent (its modules,
        critics and curriculum): what ``modrl eval`` and ``init_modules`` read from a checkpoint.
        Evaluation only: the optimiser state and the episodes in progress are not included."""
        R = self.num_runs
        sizes = {"subpolicies.": self.num_symbols, "critics.": self.critic_heads}
        policy = {}
        for key, value in self.policy.state_dict().items():
            size = next(n for prefix, n in sizes.items() if key.startswith(prefix))
            policy[key] = value[run * size : (run + 1) * size].clone()
        weights = self.env.task_weights[run].clone()
        return {
            "policy": policy, "iteration": self.iteration, **self.curriculum.run_state_dict(run),
            "episodes": self.run_episodes[run], "steps": self._steps // R,
            "env_task_weights": weights, "num_runs": R, "run": run,
        }


class SketchActor:
    """Executes trained modules along each env's task sketch (zero-shot on held-out sketches), or
    as the learned controller chooses them (``routing: learned``)."""

    def __init__(self, agent: PolicySketches, num_envs: int):
        self.agent = agent
        self.num_envs = num_envs
        self.router = SketchRouter(agent.sketch_lists, num_envs, agent.num_symbols, agent.device)
        self.controller = CallAndReturn(num_envs, Halting(agent.cfg.max_subtask_steps), agent.cfg.gamma, agent.device)
        self.env, self.subgoals = None, None

    def watch(self, env) -> None:
        """Judge each module run's subgoal on ``env``, the evaluation's env (``subgoal_table``)."""
        self.env, self.subgoals = env, self.agent.subgoal_metrics(env) if self.agent.binds_symbols else None

    def subgoal_table(self) -> dict[str, dict[str, float]]:
        """Subgoal success over the module runs so far, per symbol and per ``<task>/<k>_<symbol>``."""
        if self.subgoals is None:
            return {}
        return self.subgoals.table(self.env.symbols, self.agent.subgoal_slots(self.env))

    def start(self, info: dict) -> None:
        """Called with the evaluation env's reset info: point every env at its task's sketch."""
        self.router.start(torch.ones(self.num_envs, dtype=torch.bool, device=self.agent.device), info["task"])

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        a = self.agent
        task = self.router.task
        need = self.controller.decide(a.route(self.router, obs, task, deterministic))
        if self.subgoals is not None:
            active = self.controller.active
            slot = a.subgoal_slot(self.env, task, self.router.pointer, active)
            self.subgoals.begin(need, slot, active, self.env.subgoal_features())
        forced = self.controller.halting.at_cap(self.controller.steps_in_module)
        self.last_action = a.env_action(obs, self.controller.active, task, forced, deterministic)
        return self.last_action

    @torch.no_grad()
    def observe(self, next_obs, reward, terminated, truncated, info) -> None:
        transition, halt, _ = self.controller.step(self.last_action == self.agent.stop_action, reward, terminated, truncated)
        self.router.advance(halt)
        if self.subgoals is not None:
            self.subgoals.end(transition.completed, transition.choice, info["subgoal_features"])
        done = terminated | truncated
        self.router.start(done, info["task"])  # new episodes after the autoreset

