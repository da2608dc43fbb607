"""Inputs optimized to make a unit fire: EPO, GCG and a continuous (embedding-space) baseline.

The activation of a prompt is the unit's value at its **last token**; its cross-entropy is the
mean next-token loss of the prompt under the model (nats per token; for encoders, the loss of
each token at its own position), the fluency the objective trades against.

* ``"epo"`` — evolutionary prompt optimization ("fluent dreaming", Thompson et al. 2024): a
  population of prompts, member ``i`` maximizing ``activation - λ_i · cross-entropy`` with its
  own ``λ_i`` (log-spaced over ``fluency``, 0.1 to 10 as in the paper); every ``restart_every``
  iterations (50) the population restarts from the pooled prompt best for a random ``λ`` in
  ``restart_fluency`` (2/3 to 6). Each iteration takes the gradient of every
  member's objective with respect to its one-hot tokens, draws ``swaps`` candidates per member
  (one position, a token among the ``top_k`` of the gradient there), scores each distinct one
  once in batches (:func:`score_swaps`: from the changed token on, on the parent's key/value
  cache), and gives each member the best candidate of the pooled set for its own ``λ``.
  Every evaluated prompt enters the Pareto front of activation against cross-entropy.
* ``"gcg"`` — greedy coordinate gradient (Zou et al. 2023) on the activation alone: one
  prompt, ``swaps`` candidates per iteration from the gradient's top-k, the best kept.
* ``"continuous"`` — the prompt's embeddings optimized directly (Adam), then each position
  projected to its nearest token embedding (cosine): the soft activation is typically far
  above what the projected tokens reach, the gap that motivates discrete search.

All three are reproducible with ``seed``.
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from typing import Any

import torch

from ..progress import track
from ..registry import CheckSpec, register
from ..units import BoundUnits, unit_values
from .prompt_scoring import OptimizationError, score, score_swaps, _allowed, _gradients, _one_unit, _prefix, _shares_prefixes
from .result import OptimizedInputs


_CHECK = CheckSpec("rescore_error", 1e-3, advice="the batched scores differ from a fresh forward pass of the best "
                   "prompt: the model is not deterministic in batches, or an intervention is active.")


class Front:
    """The non-dominated set of (activation, cross-entropy) over everything evaluated.

    Example:
        >>> f = Front()
        >>> f.add(torch.tensor([1.0, 2.0, 1.5]), torch.tensor([1.0, 3.0, 4.0]), torch.tensor([[1], [2], [3]]))
        >>> f.act.tolist(), f.ce.tolist()     # (1.5, 4.0) is dominated by (2.0, 3.0)
        ([1.0, 2.0], [1.0, 3.0])
    """

    def __init__(self, limit: int = 64) -> None:
        self.act = torch.zeros(0)
        self.ce = torch.zeros(0)
        self.ids = torch.zeros(0, 0, dtype=torch.long)
        self.limit = limit

    def add(self, act: torch.Tensor, ce: torch.Tensor, ids: torch.Tensor) -> None:
        a = torch.cat([self.act, act]) if self.act.numel() else act.clone()
        c = torch.cat([self.ce, ce]) if self.ce.numel() else ce.clone()
        x = torch.cat([self.ids, ids]) if self.ids.numel() else ids.clone()
        x, first = _unique_rows(x)
        a, c = a[first], c[first]
        # i is dominated when some j has act >= and ce <= with one strict (a [n, n] comparison)
        ge = (a.unsqueeze(0) >= a.unsqueeze(1)) & (c.unsqueeze(0) <= c.unsqueeze(1))
        gt = (a.unsqueeze(0) > a.unsqueeze(1)) | (c.unsqueeze(0) < c.unsqueeze(1))
        keep = ~(ge & gt).any(1)
        order = torch.argsort(c[keep])
        self.act, self.ce, self.ids = a[keep][order], c[keep][order], x[keep][order]
        if len(self.act) > self.limit:   # thin evenly along the front, keeping both ends
            pick = torch.linspace(0, len(self.act) - 1, self.limit).round().long().unique()
            self.act, self.ce, self.ids = self.act[pick], self.ce[pick], self.ids[pick]

    def rows(self, lm: Any, n_prefix: int) -> list[dict[str, Any]]:
        return [{"activation": float(a), "cross_entropy": float(c),
                 "prompt": lm.tokenizer.decode(i[n_prefix:].tolist()), "ids": i[n_prefix:].tolist()}
                for a, c, i in zip(self.act, self.ce, self.ids)]


def _unique_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    uniq, inverse = torch.unique(x, dim=0, return_inverse=True)
    first = torch.full((len(uniq),), len(x), dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(len(x)), reduce="amin")
    first = first.sort().values
    return x[first], first


def _check_options(**values: Any) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise OptimizationError(f"{name} must be a positive int; got {v!r}.")


def discrete_search(lm: Any, bound: BoundUnits, *, length: int, population: int, swaps: int, top_k: int,
                    steps: int, lambdas: torch.Tensor, seed: int, batch_size: int, desc: str,
                    restart_every: int = 0, restart_lambda: tuple[float, float] = (2 / 3, 6.0)
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Front, torch.Tensor, dict[str, Any]]:
    """The shared loop of EPO (a population, one λ each) and GCG (one member, λ = 0).

    Every ``restart_every`` iterations (from the first; 0: never) every member restarts from the one
    prompt of the pooled set that is best for a ``λ`` drawn uniformly in ``restart_lambda`` (EPO's
    restarts). A member that keeps its own prompt keeps its gradient, activation, cross-entropy and
    key/value cache: only members with a new prompt run the next gradient pass.

    Returns the final ids ``[m, pos]``, activations ``[m]``, cross-entropies ``[m]``, the front,
    the history ``[steps, m]`` and costs (``candidates`` drawn; ``evaluations``: the distinct ones
    scored, since a swap that keeps a token is its member and equal members draw equal candidates;
    ``gradient_rows``: members run through a gradient pass; ``restarts``).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> from interpretlm.units import Unit, bind_units
        >>> lm = tiny_lm("llama")
        >>> ids, act, ce, front, hist, costs = discrete_search(
        ...     lm, bind_units(lm, Unit("blocks.1.mlp.neurons", 3)), length=3, population=2, swaps=4, top_k=8,
        ...     steps=2, lambdas=torch.tensor([0.0, 1.0]), seed=0, batch_size=8, desc="doc")
        >>> ids.shape, hist.shape, costs["candidates"], 0 < costs["evaluations"] <= 16
        (torch.Size([2, 3]), torch.Size([2, 2]), 16, True)
    """
    gen = torch.Generator().manual_seed(seed)
    allowed = _allowed(lm)
    pool = torch.nonzero(allowed).flatten()
    if len(pool) == 0:
        raise OptimizationError("The tokenizer has no ordinary tokens to build a prompt from.")
    prefix = torch.tensor(_prefix(lm), dtype=torch.long)
    n_prefix = len(prefix)
    body = pool[torch.randint(len(pool), (population, length), generator=gen)]
    ids = torch.cat([prefix.expand(population, n_prefix), body], 1)
    front = Front()
    history = []
    evaluations = gradient_rows = restarts = 0
    share = _shares_prefixes(lm)
    k = min(top_k, int(allowed.sum()))
    start, cpu = time.perf_counter(), time.process_time()
    members = torch.arange(population)
    act = ce = grad = shared = None
    fresh = torch.ones(population, dtype=torch.bool)        # members whose prompt changed: a new gradient
    for step in track(range(steps), desc):
        if fresh.all():
            act, ce, grad, shared = _gradients(lm, bound, ids, lambdas, share=share)
            grad = grad[:, n_prefix:]                                       # [m, L, V]
            grad[..., ~allowed[: grad.shape[-1]]] = float("-inf")
        elif fresh.any():
            rows = fresh.nonzero().flatten()
            a, c, g, sh = _gradients(lm, bound, ids[rows], lambdas[rows], share=share)
            g = g[:, n_prefix:]
            g[..., ~allowed[: g.shape[-1]]] = float("-inf")
            act[rows], ce[rows], grad[rows] = a, c, g
            if shared is not None and sh is not None:
                shared.put(rows, sh)
            else:
                shared = None
        gradient_rows += int(fresh.sum())
        if step == 0:
            front.add(act, ce, ids)
        cand_tok = grad.topk(k, dim=-1).indices                             # [m, L, k]
        pos = torch.randint(length, (population, swaps), generator=gen)
        pick = torch.randint(k, (population, swaps), generator=gen)
        new_tok = cand_tok[members.unsqueeze(1), pos, pick]                 # [m, swaps]
        cands = ids.unsqueeze(1).repeat(1, swaps, 1)
        cands[members.unsqueeze(1), torch.arange(swaps).unsqueeze(0), n_prefix + pos] = new_tok
        cands = cands.reshape(population * swaps, -1)
        parent = members.repeat_interleave(swaps)
        # score each distinct prompt once: a swap that keeps the member's token is the member itself, and
        # members that became equal draw the same candidates
        c_act, c_ce = act[parent].clone(), ce[parent].clone()
        changed = (new_tok != ids[:, n_prefix:].gather(1, pos)).flatten()
        sub = cands[changed]
        if len(sub):
            uniq, inverse = torch.unique(sub, dim=0, return_inverse=True)
            first = torch.full((len(uniq),), len(sub), dtype=torch.long).scatter_reduce(
                0, inverse, torch.arange(len(sub)), reduce="amin")
            sel = changed.nonzero().flatten()[first]
            u_act, u_ce = score_swaps(lm, bound, ids, parent[sel], n_prefix + pos.flatten()[sel],
                                      new_tok.flatten()[sel], batch_size, shared)
            c_act[changed], c_ce[changed] = u_act[inverse], u_ce[inverse]
            evaluations += len(uniq)
        front.add(c_act, c_ce, cands)
        all_ids = torch.cat([ids, cands])
        all_act, all_ce = torch.cat([act, c_act]), torch.cat([ce, c_ce])
        if restart_every and step % restart_every == 0:
            # the population restarts from one prompt: the best of the pooled set for a λ drawn at random
            lo, hi = restart_lambda
            lam = lo + (hi - lo) * float(torch.rand((), generator=gen))
            best = (all_act - lam * all_ce).argmax().expand(population)
            restarts += 1
        else:
            # each member takes the best of the pooled set for its own λ ([m, pool] objective matrix)
            best = (all_act.unsqueeze(0) - lambdas.unsqueeze(1) * all_ce.unsqueeze(0)).argmax(1)
        fresh = best != members
        ids, act, ce = all_ids[best], all_act[best], all_ce[best]
        history.append(act.clone())
    seconds = time.perf_counter() - start
    # CPU seconds of the process: what the search costs whatever else the machine runs (wall time grows
    # with the load of a shared machine)
    costs = {"evaluations": evaluations, "candidates": steps * population * swaps, "seconds": seconds,
             "cpu_seconds": time.process_time() - cpu,
             "backward_passes": steps, "iterations": steps, "gradient_rows": gradient_rows, "restarts": restarts}
    return ids, act, ce, front, torch.stack(history) if history else torch.zeros(0, population), costs


def _finish(lm: Any, bound: BoundUnits, ids: torch.Tensor, act: torch.Tensor, ce: torch.Tensor, front: Front,
            history: torch.Tensor, lambdas: list[float], costs: dict[str, Any]) -> OptimizedInputs:
    n_prefix = len(_prefix(lm))
    rows = front.rows(lm, n_prefix)
    best = max(range(len(front.act)), key=lambda i: float(front.act[i]))
    again, _ = score(lm, bound, front.ids[best:best + 1], 1)
    scale = max(abs(float(front.act[best])), 1e-6)
    unit = bound.units[0]
    r = OptimizedInputs(unit=unit.name, unit_spec=unit.to_dict(),
                        prompts=[lm.tokenizer.decode(i[n_prefix:].tolist()) for i in ids],
                        token_ids=ids[:, n_prefix:].clone(), activations=act.float(), cross_entropies=ce.float(),
                        lambdas=[float(x) for x in lambdas], front=rows, history=history.float())
    r.diagnostics = dict(costs, rescore_error=abs(float(again[0]) - float(front.act[best])) / scale,
                         best_activation=float(front.act[best]), best_cross_entropy=float(front.ce[best]),
                         front_size=len(rows))
    return r


# ---------------------------------------------------------------------- registered methods
@register("epo", verb="maximize", family="maximization", takes="unit", result=OptimizedInputs, target="none",
          summary="EPO: a population with per-member fluency penalties; Pareto front of activation vs cross-entropy",
          check=_CHECK, seeded=True)
def epo(lm: Any, units: Any, *, length: int = 12, population: int = 8, swaps: int = 32, top_k: int = 512,
        steps: int = 300, fluency: tuple[float, float] = (0.1, 10.0), restart_every: int = 50,
        restart_fluency: tuple[float, float] = (2 / 3, 6.0), seed: int = 0, batch_size: int = 64) -> OptimizedInputs:
    """Evolutionary prompt optimization (Thompson et al. 2024) of one unit's activation at the last token.

    Args:
        lm: the model handle.
        units: one ``il.Unit``.
        length: optimized tokens per prompt (after the BOS the tokenizer adds, if any).
        population: members, each with its own fluency penalty ``λ``.
        swaps: candidates per member per iteration (one token changed each).
        top_k: tokens considered per position (largest gradient of the member's objective).
        steps: iterations.
        fluency: ``(λ_min, λ_max)``; members get ``λ`` log-spaced between them (the paper's 0.1 to 10:
            from nearly pure activation to nearly pure fluency).
        restart_every: every this many iterations, from the first (0: never), the whole population
            restarts from the one prompt of the pooled set best for a ``λ`` drawn uniformly in
            ``restart_fluency`` (the paper: 2 × [1/3, 3]); the front keeps everything met before.
        seed: the random initial prompts and draws.
        batch_size: candidates scored per forward pass.

    Returns:
        :class:`OptimizedInputs`: ``pareto`` ``[(activation, cross-entropy, prompt), ...]``,
        the final population and each member's activation per iteration.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> r = il.maximize(lm, il.Unit("blocks.1.mlp.neurons", 3), method="epo", length=4, population=3,
        ...                 swaps=4, steps=3, seed=0)
        >>> len(r.prompts), r.check.passed
        (3, True)
    """
    _check_options(length=length, population=population, swaps=swaps, top_k=top_k, steps=steps,
                   batch_size=batch_size)
    if isinstance(restart_every, bool) or not isinstance(restart_every, int) or restart_every < 0:
        raise OptimizationError(f"restart_every must be an int >= 0 (0: no restarts); got {restart_every!r}.")
    lo, hi = (float(x) for x in fluency)
    if not (0 < lo <= hi) or not math.isfinite(hi):
        raise OptimizationError(f"fluency=(λ_min, λ_max) needs 0 < λ_min <= λ_max; got {fluency!r}.")
    r_lo, r_hi = (float(x) for x in restart_fluency)
    if not (0 <= r_lo <= r_hi) or not math.isfinite(r_hi):
        raise OptimizationError(f"restart_fluency=(λ_min, λ_max) needs 0 <= λ_min <= λ_max; got {restart_fluency!r}.")
    bound = _one_unit(lm, units)
    lams = torch.logspace(math.log10(lo), math.log10(hi), population)
    ids, act, ce, front, history, costs = discrete_search(
        lm, bound, length=length, population=population, swaps=swaps, top_k=top_k, steps=steps, lambdas=lams,
        seed=seed, batch_size=batch_size, desc="epo", restart_every=restart_every, restart_lambda=(r_lo, r_hi))
    return _finish(lm, bound, ids, act, ce, front, history, lams.tolist(), costs)


@register("gcg", verb="maximize", family="maximization", takes="unit", result=OptimizedInputs, target="none",
          summary="GCG: greedy coordinate gradient token swaps on the activation alone", check=_CHECK, seeded=True)
def gcg(lm: Any, units: Any, *, length: int = 12, swaps: int = 128, top_k: int = 256, steps: int = 100,
        seed: int = 0, batch_size: int = 64) -> OptimizedInputs:
    """Greedy coordinate gradient (Zou et al. 2023) on one unit's activation at the last token.

    Args:
        lm: the model handle.
        units: one ``il.Unit``.
        length: optimized tokens; swaps: candidates per iteration; top_k: tokens per position.
        steps: iterations; seed: the initial prompt and draws; batch_size: candidates per pass.

    Returns:
        :class:`OptimizedInputs` (one member; the front still holds every trade-off met on the way).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> r = il.maximize(lm, il.Unit("blocks.1.mlp.neurons", 3), method="gcg", length=4, swaps=8, steps=3)
        >>> r.best[0] >= float(r.history[0, 0])
        True
    """
    _check_options(length=length, swaps=swaps, top_k=top_k, steps=steps, batch_size=batch_size)
    bound = _one_unit(lm, units)
    lams = torch.zeros(1)
    ids, act, ce, front, history, costs = discrete_search(
        lm, bound, length=length, population=1, swaps=swaps, top_k=top_k, steps=steps, lambdas=lams, seed=seed,
        batch_size=batch_size, desc="gcg")
    return _finish(lm, bound, ids, act, ce, front, history, [0.0], costs)


@register("continuous", verb="maximize", family="maximization", takes="unit", result=OptimizedInputs,
          target="none", summary="soft prompt: embeddings optimized by Adam, then projected to the nearest tokens",
          check=_CHECK, seeded=True)
def continuous(lm: Any, units: Any, *, length: int = 12, steps: int = 200, lr: float = 0.05,
               seed: int = 0) -> OptimizedInputs:
    """Optimize the prompt's embeddings directly, then project each position to its nearest token.

    Args:
        lm: the model handle.
        units: one ``il.Unit``.
        length: soft positions; steps: Adam steps; lr: its learning rate; seed: the initial tokens.

    Returns:
        :class:`OptimizedInputs` whose ``projected`` holds the soft prompt's activation and the
        projected tokens' (``soft_activation``, ``projected_activation``); the front holds the
        projected prompt of every step.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> r = il.maximize(lm, il.Unit("blocks.1.mlp.neurons", 3), method="continuous", length=4, steps=5)
        >>> sorted(r.projected)
        ['projected_activation', 'soft_activation']
    """
    _check_options(length=length, steps=steps)
    if not (lr > 0 and math.isfinite(lr)):
        raise OptimizationError(f"lr must be a positive number; got {lr!r}.")
    bound = _one_unit(lm, units)
    gen = torch.Generator().manual_seed(seed)
    allowed = _allowed(lm)
    pool = torch.nonzero(allowed).flatten()
    prefix = torch.tensor(_prefix(lm), dtype=torch.long)
    n_prefix = len(prefix)
    ids = torch.cat([prefix, pool[torch.randint(len(pool), (length,), generator=gen)]]).unsqueeze(0)
    seen: dict[str, torch.Tensor] = {}
    with lm.hook("embed", read=lambda v: seen.__setitem__("e", v.detach().clone())), torch.no_grad():
        lm.forward(ids.tolist())
    base = seen["e"][0].float()                                       # [pos, d] what the embedding layer gives
    soft = base[n_prefix:].clone().requires_grad_(True)
    # the token embeddings in the same space (Gemma scales them): the ratio of the layer's output to the table
    table = lm.model.get_input_embeddings().weight.detach().float()
    scale = (base[n_prefix:].norm(dim=-1) / table[ids[0, n_prefix:]].norm(dim=-1).clamp_min(1e-12)).mean()
    keys = torch.nn.functional.normalize(table * scale, dim=-1)
    opt = torch.optim.Adam([soft], lr=lr)
    front = Front()
    history = []
    start = time.perf_counter()

    def edit(value: torch.Tensor) -> torch.Tensor:
        return torch.cat([value[:, :n_prefix], soft.to(value.dtype).unsqueeze(0)], 1)

    def project() -> torch.Tensor:
        sims = torch.nn.functional.normalize(soft.detach(), dim=-1) @ keys.T
        sims[:, ~allowed[: sims.shape[1]]] = float("-inf")
        return torch.cat([prefix, sims.argmax(-1)]).unsqueeze(0)

    soft_act = float("nan")
    for _ in track(range(steps), "continuous"):
        with ExitStack() as stack, torch.enable_grad():
            stack.enter_context(lm.hook("embed", edit=edit))
            cache = stack.enter_context(lm.capture(bound.components, grad=True))
            lm.forward(ids.tolist(), grad=True)
            act = unit_values(lm, bound, cache)[0, -1, 0]
            opt.zero_grad()
            (-act).backward()
            opt.step()
        soft_act = float(act.detach())
        proj = project()
        p_act, p_ce = score(lm, bound, proj, 1)
        front.add(p_act, p_ce, proj)
        history.append(p_act.clone())
    with ExitStack() as stack, torch.no_grad():
        stack.enter_context(lm.hook("embed", edit=edit))
        cache = stack.enter_context(lm.capture(bound.components))
        lm.forward(ids.tolist())
        soft_act = float(unit_values(lm, bound, cache)[0, -1, 0])
    proj = project()
    p_act, p_ce = score(lm, bound, proj, 1)
    seconds = time.perf_counter() - start
    r = _finish(lm, bound, proj, p_act, p_ce, front, torch.stack(history) if history else torch.zeros(0, 1),
                [0.0], {"seconds": seconds, "backward_passes": steps, "iterations": steps,
                        "evaluations": steps})
    r.projected = {"soft_activation": soft_act, "projected_activation": float(p_act[0])}
    return r


__all__ = ["Front", "OptimizationError", "continuous", "discrete_search", "epo", "gcg", "score", "score_swaps"]
