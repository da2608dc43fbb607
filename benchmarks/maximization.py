"""Activation maximization on the default model: mining throughput and memory, and EPO against the corpus.

Run by hand (not a test):

    PYTHONPATH=src .venv/bin/python benchmarks/maximization.py                 # the full run (days on 2 cores)
    PYTHONPATH=src .venv/bin/python benchmarks/maximization.py --windows 128 --repeats 3 --epo-neurons 0  # mining
    PYTHONPATH=src .venv/bin/python benchmarks/maximization.py --scoring-ratio 2    # EPO scoring, cache vs whole passes
    PYTHONPATH=src .venv/bin/python benchmarks/maximization.py --iteration-ratio 3 --threads 1  # vs b25f572's code
    PYTHONPATH=src .venv/bin/python benchmarks/maximization.py --epo-only --windows 512 --mine-path mine/ --mine-only
    PYTHONPATH=src .venv/bin/python benchmarks/maximization.py --epo-only --windows 512 --mine-path mine/
        --epo-steps 16 --epo-population 8 --epo-swaps 12 --epo-restart-every 8 --threads 1 --epo-part 1/10
        # (one command; parts 1/10 .. 10/10 in parallel, each reading the one mining pass) EPO on a budget that fits

Mining: every neuron of every layer (30 × 1,536 = 46,080 units) over the first ``--windows``
windows of 64 tokens of the built-in corpus (all 15,984 by default: 1.02M tokens), against
plain forward passes of the base model over the same batches (timed before and after the
mining pass; with ``--repeats`` the passes alternate, each mining pass against the plain passes on
either side; the ratio is plain time / mining time, goal >= 0.8). Memory: the
mining state's bytes (fixed by the units and k, independent of the corpus length) and the
process's peak RSS.

EPO: ``--epo-neurons`` random neurons (seeded); for each, the corpus maximum and the median
cross-entropy of its top corpus examples (the window up to the maximum), then EPO (defaults:
12 tokens, population 8, 32 swaps, top-k 512, restarts every 50, ``--epo-steps`` iterations):
does the front reach above the corpus maximum at a cross-entropy no worse than that median? And
seconds per iteration, wall and CPU (the process's CPU time, which the machine's load does not
inflate as it does wall time). Absolute times are noisy on a shared machine; ratios are
measured in one process (``--iteration-ratio``: one published-size iteration of this code and
of an older revision's, alternated).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch

import interpretlm as il
from interpretlm.maximization.mining_state import MiningState
from interpretlm.unit_reads import fetch_windows

sys.path.insert(0, str(Path(__file__).parent))
from _results import record  # noqa: E402  (figures for run_all.py / results.json)


CPU = {"plain": 0.0}   # the last plain pass's CPU seconds (process time), beside its wall time


def plain(lm, windows, batch_size: int) -> float:
    t, c = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for s in range(0, len(windows), batch_size):
            ids = torch.tensor(windows[s:s + batch_size])
            lm.model.base_model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    CPU["plain"] = time.process_time() - c
    return time.perf_counter() - t


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def throughput(lm, corpus, units, windows, n_units: int, n_tok: int, args):
    """Mine every neuron over ``windows``, timed against plain forward passes of the same batches.

    The passes alternate: plain, mining with the fold on a background thread (``overlap``), plain, mining
    with the fold inside the hooks (``inline``), plain, ... (``--modes``); each mining pass is compared with
    the mean of the plain passes on either side, so a change of the machine's load between passes shows as a
    spread of the ratios rather than as a bias. The fold's own time is the CPU time of the thread that ran it
    (``time.thread_time``), which other processes' load does not inflate.
    """
    import threading

    import interpretlm.maximization.mining as mining_mod

    fold_cpu = {"s": 0.0}
    lock = threading.Lock()

    def timed(fn):
        def wrapper(*a, **kw):
            t0 = time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                with lock:
                    fold_cpu["s"] += time.thread_time() - t0
        return wrapper
    real = MiningState.update, MiningState.update_glu, mining_mod.unit_values
    MiningState.update, MiningState.update_glu = timed(real[0]), timed(real[1])
    mining_mod.unit_values = timed(real[2])
    modes = args.modes.split(",")
    plains = [plain(lm, windows, args.batch_size)]
    mines: dict[str, list[float]] = {m: [] for m in modes}
    ratios: dict[str, list[float]] = {m: [] for m in modes}
    cpu_share: dict[str, list[float]] = {m: [] for m in modes}
    cpu_ratios: dict[str, list[float]] = {m: [] for m in modes}   # plain CPU seconds / mining CPU seconds
    plain_cpu = [CPU["plain"]]
    rss_before = rss_mb()
    try:
        for _ in range(args.repeats):
            for mode in modes:
                mining_mod.OVERLAP = mode == "overlap"
                f0, c0 = fold_cpu["s"], time.process_time()
                t = time.perf_counter()
                mined = il.maximize(lm, units, corpus=corpus, k=args.k, window=args.window,
                                    batch_size=args.batch_size, max_windows=len(windows), detail=0, progress=False)
                mines[mode].append(time.perf_counter() - t)
                cpu = time.process_time() - c0
                cpu_share[mode].append((fold_cpu["s"] - f0) / cpu)
                plains.append(plain(lm, windows, args.batch_size))
                plain_cpu.append(CPU["plain"])
                ratios[mode].append((plains[-2] + plains[-1]) / 2 / mines[mode][-1])
                cpu_ratios[mode].append((plain_cpu[-2] + plain_cpu[-1]) / 2 / cpu)
                print(f"  {mode}: {mines[mode][-1]:.1f} s, plain passes around it {plains[-2]:.1f} / {plains[-1]:.1f} s: "
                      f"{ratios[mode][-1]:.2f}x (CPU time {cpu_ratios[mode][-1]:.2f}x); the fold's share of the CPU time "
                      f"{cpu_share[mode][-1]:.2f}; load average {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        MiningState.update, MiningState.update_glu = real[0], real[1]
        mining_mod.unit_values = real[2]
        mining_mod.OVERLAP = True
    rss_after = rss_mb()
    g = n_units if lm.family.gated_mlp else 0
    state = MiningState(n_units, g, args.k, 6, 4, 48)
    state_mb = sum(v.numel() * v.element_size() for v in state.t.values()) / 2**20
    t_plain = sum(plains) / len(plains)
    print(f"plain forward: {n_tok / t_plain:,.0f} tokens/s ({', '.join(f'{x:.1f}' for x in plains)} s)")
    med = {m: sorted(r)[len(r) // 2] for m, r in ratios.items()}
    for mode in modes:
        t_mine = sum(mines[mode]) / len(mines[mode])
        print(f"mining all neurons, fold {mode}: {n_tok / t_mine:,.0f} tokens/s; throughput "
              f"{', '.join(f'{x:.2f}' for x in ratios[mode])}x of the plain passes around each (median "
              f"{med[mode]:.2f}x; goal >= 0.8); the fold's share of CPU time "
              f"{sorted(cpu_share[mode])[len(cpu_share[mode]) // 2]:.2f}")
        record("maximization", f"mining_ratios_vs_forward_{mode}", ratios[mode])
        record("maximization", f"mining_fold_cpu_share_{mode}", sorted(cpu_share[mode])[len(cpu_share[mode]) // 2])
        record("maximization", f"mining_cpu_ratios_vs_forward_{mode}", cpu_ratios[mode])
        print(f"  CPU time: {', '.join(f'{x:.2f}' for x in cpu_ratios[mode])}x of the plain passes' CPU time")
    record("maximization", "mining_plain_seconds", plains)   # how much the machine's load moved the plain passes
    record("maximization", "mining_load_average", os.getloadavg()[0])
    record("maximization", "mining_threads", torch.get_num_threads())
    print(f"mining state: {state_mb:.1f} MB (independent of the corpus length); peak RSS {rss_after:.0f} MB "
          f"(before mining {rss_before:.0f} MB)")
    print(f"dead neurons: {len(mined.dead)}, rare (< 1e-4 of tokens): {len(mined.rare)}")
    record("maximization", "mining_tokens", n_tok)
    record("maximization", "mining_state_mb", state_mb)
    record("maximization", "peak_rss_mb", rss_after)
    return mined


def scoring_ratio(lm, unit, repeats: int, population: int, swaps: int, top_k: int, seed: int) -> None:
    """One EPO iteration's candidates scored by whole passes (``score``, as before) and on the parents' cache
    (``score_swaps``), alternated ``repeats`` times in this process: the ratio of the two is what the machine's
    load cannot skew (absolute times can)."""
    from interpretlm.maximization import optimize as O
    from interpretlm.units import bind_units

    bound = bind_units(lm, unit)
    gen = torch.Generator().manual_seed(seed)
    pool = torch.nonzero(O._allowed(lm)).flatten()
    ids = pool[torch.randint(len(pool), (population, 12), generator=gen)]
    lams = torch.cat([torch.zeros(1), torch.logspace(-2, 1, population - 1)])
    t = time.perf_counter()
    act, ce, grad, _ = O._gradients(lm, bound, ids, lams)
    t_grad = time.perf_counter() - t
    grad[..., ~O._allowed(lm)[: grad.shape[-1]]] = float("-inf")
    cand_tok = grad.topk(top_k, dim=-1).indices
    pos = torch.randint(12, (population, swaps), generator=gen)
    pick = torch.randint(top_k, (population, swaps), generator=gen)
    new_tok = cand_tok[torch.arange(population).unsqueeze(1), pos, pick]
    parent = torch.arange(population).repeat_interleave(swaps)
    cands = ids[parent].clone()
    cands[torch.arange(len(parent)), pos.flatten()] = new_tok.flatten()
    full, shared = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        a_full, c_full = O.score(lm, bound, cands, 64)
        full.append(time.perf_counter() - t)
        t = time.perf_counter()
        a_sh, c_sh = O.score_swaps(lm, bound, ids, parent, pos.flatten(), new_tok.flatten(), 64)
        shared.append(time.perf_counter() - t)
    diff = float(((a_full - a_sh).abs().max() / a_full.abs().max()).item())
    ratios = [f / s for f, s in zip(full, shared)]
    print(f"EPO scoring of {len(cands)} candidates (population {population} x {swaps} swaps), {repeats} alternated "
          f"repeats: whole passes {', '.join(f'{x:.1f}' for x in full)} s; on the parents' cache "
          f"{', '.join(f'{x:.1f}' for x in shared)} s; speed-up {', '.join(f'{r:.2f}' for r in ratios)}x "
          f"(activations equal to {diff:.1e} relative); the gradient pass took {t_grad:.1f} s", flush=True)
    record("maximization", "epo_scoring_speedup", sorted(ratios)[len(ratios) // 2])
    record("maximization", "epo_scoring_speedups", ratios)
    record("maximization", "epo_gradient_share_of_full_iteration", t_grad / (t_grad + sum(full) / len(full)))


def iteration_ratio(lm, unit, repeats: int, against: str, population: int, swaps: int, top_k: int,
                    seed: int) -> None:
    """One EPO iteration (same λ, same seed, no restart) by this tree's code and by ``optimize.py`` of git
    revision ``against``, alternated ``repeats`` times in this process: wall and CPU seconds of each, their
    ratios, and whether the two give the same population, scores and front."""
    import importlib.util
    import subprocess
    import tempfile

    import interpretlm.registry as registry
    from interpretlm.maximization import optimize as new
    from interpretlm.units import bind_units

    source = subprocess.run(["git", "show", f"{against}:src/interpretlm/maximization/optimize.py"],
                            capture_output=True, text=True, check=True, cwd=Path(__file__).parent).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    real = registry.register
    registry.register = lambda *a, **k: (lambda fn: fn)     # the old module's methods stay out of the registry
    try:
        spec = importlib.util.spec_from_file_location("interpretlm.maximization._optimize_old", f.name)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    finally:
        registry.register = real
    bound = bind_units(lm, unit)
    lams = torch.logspace(-1, 1, population)

    def run(module):
        w, c = time.perf_counter(), time.process_time()
        r = module.discrete_search(lm, bound, length=12, population=population, swaps=swaps, top_k=top_k, steps=1,
                                   lambdas=lams, seed=seed, batch_size=64, desc="ratio")
        return r, time.perf_counter() - w, time.process_time() - c

    walls, cpus = [], []
    for i in range(repeats):
        r_old, w_old, c_old = run(old)
        r_new, w_new, c_new = run(new)
        walls.append(w_old / w_new)
        cpus.append(c_old / c_new)
        print(f"old {w_old:.1f} s ({c_old:.1f} CPU s), new {w_new:.1f} s ({c_new:.1f} CPU s): "
              f"{w_old / w_new:.2f}x wall, {c_old / c_new:.2f}x CPU", flush=True)
        if i == 0:
            same_ids = torch.equal(r_old[0], r_new[0]) and torch.equal(r_old[3].ids, r_new[3].ids)
            diff = max(float(((r_old[1] - r_new[1]).abs() / r_old[1].abs().clamp_min(1e-6)).max()),
                       float(((r_old[2] - r_new[2]).abs() / r_old[2]).max()),
                       float(((r_old[3].act - r_new[3].act).abs() / r_old[3].act.abs().clamp_min(1e-6)).max()),
                       float(((r_old[3].ce - r_new[3].ce).abs() / r_old[3].ce).max()))
            print(f"same population and front: {same_ids}; scores equal to {diff:.1e} relative", flush=True)
            record("maximization", "epo_iteration_same_result", same_ids)
            record("maximization", "epo_iteration_max_relative_difference", diff)
            record("maximization", "epo_iteration_cpu_seconds", [c_old, c_new])
    import os
    print(f"load average {os.getloadavg()[0]:.1f}; median speed-up {sorted(cpus)[len(cpus) // 2]:.2f}x CPU, "
          f"{sorted(walls)[len(walls) // 2]:.2f}x wall", flush=True)
    record("maximization", "epo_iteration_speedups_cpu", cpus)
    record("maximization", "epo_iteration_speedups_wall", walls)
    record("maximization", "epo_iteration_against", against)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--windows", type=int, default=None, help="windows of the corpus to mine (default: all)")
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1, help="mining passes per mode, each between two plain passes")
    ap.add_argument("--modes", default="overlap,inline",
                    help="where the fold runs, alternated: overlap (a background thread), inline (in the hooks)")
    ap.add_argument("--epo-neurons", type=int, default=10)
    ap.add_argument("--epo-steps", type=int, default=300)
    ap.add_argument("--epo-population", type=int, default=8)
    ap.add_argument("--epo-swaps", type=int, default=32)
    ap.add_argument("--epo-top-k", type=int, default=512)
    ap.add_argument("--epo-restart-every", type=int, default=50)
    ap.add_argument("--epo-part", default="1/1", metavar="I/N",
                    help="run the I-th of N equal parts of the EPO neurons (parts run in parallel processes)")
    ap.add_argument("--epo-only", action="store_true",
                    help="skip the throughput run: mine only the EPO neurons (same windows), then run EPO")
    ap.add_argument("--mine-path", default=None, help="with --epo-only: a folder for the EPO neurons' mining pass")
    ap.add_argument("--mine-only", action="store_true", help="with --epo-only: stop after the mining pass")
    ap.add_argument("--scoring-ratio", type=int, default=0, metavar="REPEATS",
                    help="only time EPO's candidate scoring, whole passes against the parents' cache, REPEATS times")
    ap.add_argument("--iteration-ratio", type=int, default=0, metavar="REPEATS",
                    help="only time one published-size EPO iteration against the code of --against, REPEATS times")
    ap.add_argument("--against", default="b25f572", help="git revision of the reference optimize.py")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="PyTorch threads (0: the cores not busy, as the CLI)")
    args = ap.parse_args()
    from interpretlm.runtime import use_free_cores
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    else:
        use_free_cores()
    print(f"threads: {torch.get_num_threads()}")

    lm = il.load(args.model)
    if args.iteration_ratio:
        iteration_ratio(lm, il.Unit("blocks.12.mlp.neurons", 417), args.iteration_ratio, args.against,
                        args.epo_population, args.epo_swaps, args.epo_top_k, args.seed)
        return
    if args.scoring_ratio:
        scoring_ratio(lm, il.Unit("blocks.12.mlp.neurons", 417), args.scoring_ratio, args.epo_population,
                      args.epo_swaps, args.epo_top_k, args.seed)
        return
    corpus = il.corpus("builtin")
    units = il.Unit.all("mlp.neurons")
    n_units = lm.n_layers * lm.d_mlp
    # the windows the mining pass reads, for the plain reference (same batches)
    limit = args.windows
    windows = []
    for i, w in enumerate(corpus.windows(lm.tokenizer, args.window)):
        if limit is not None and i >= limit:
            break
        windows.append(w)
    n_tok = len(windows) * args.window
    print(f"{lm.name}: {n_units} neurons, {len(windows)} windows x {args.window} = {n_tok:,} tokens", flush=True)

    gen = torch.Generator().manual_seed(args.seed)
    picks = torch.randperm(n_units, generator=gen)[: args.epo_neurons].tolist()
    part, parts = (int(x) for x in args.epo_part.split("/"))
    all_units = [il.Unit(f"blocks.{col // lm.d_mlp}.mlp.neurons", col % lm.d_mlp) for col in picks]
    picks = picks[part - 1::parts]
    epo_units = [il.Unit(f"blocks.{col // lm.d_mlp}.mlp.neurons", col % lm.d_mlp) for col in picks]
    if args.epo_only:
        # the corpus maxima of the EPO neurons only: the same windows, one pass up to the deepest of them; with
        # --mine-path every part reads the one finished pass (the same request resumes at its end)
        mined = il.maximize(lm, all_units, corpus=corpus, k=args.k, window=args.window, batch_size=args.batch_size,
                            max_windows=len(windows), detail=0, progress=False, path=args.mine_path)
        if args.mine_only:
            print(f"mined {len(all_units)} neurons into {args.mine_path}")
            return
    else:
        mined = throughput(lm, corpus, units, windows, n_units, n_tok, args)

    # ---- EPO on random neurons
    wins = 0
    per_iter, cpu_per_iter = [], []
    for unit in epo_units:
        j = mined.index(unit)
        corpus_max = float(mined.top_values[j, 0])
        # cross-entropy of the top corpus examples: each window up to its maximum
        got = fetch_windows(corpus, lm.tokenizer, args.window, set(mined.top_windows[j].tolist()))
        ces = []
        with torch.inference_mode():
            for w, p in zip(mined.top_windows[j].tolist(), mined.top_positions[j].tolist()):
                ids = torch.tensor([got[w][: p + 1]])
                if ids.shape[1] < 2:
                    continue
                logp = lm.model(input_ids=ids, use_cache=False).logits.float().log_softmax(-1)
                ces.append(float(-logp[0, :-1].gather(-1, ids[0, 1:].unsqueeze(-1)).mean()))
        median_ce = float(torch.tensor(ces).median()) if ces else float("inf")
        opt = il.maximize(lm, unit, method="epo", steps=args.epo_steps, population=args.epo_population,
                          swaps=args.epo_swaps, top_k=args.epo_top_k, restart_every=args.epo_restart_every,
                          seed=args.seed, progress=False)
        s_iter = opt.diagnostics["seconds"] / opt.diagnostics["iterations"]
        cpu_iter = opt.diagnostics["cpu_seconds"] / opt.diagnostics["iterations"]
        per_iter.append(s_iter)
        cpu_per_iter.append(cpu_iter)
        fluent = [a for a, ce, _ in opt.pareto if ce <= median_ce]
        best_fluent = max(fluent) if fluent else None   # None: no front point as fluent as the median example
        ok = best_fluent is not None and best_fluent > corpus_max
        wins += ok
        a, ce, p = opt.best
        print(f"{unit.name}: corpus max {corpus_max:.3f} (median CE of its examples {median_ce:.2f}); EPO best "
              f"{a:.3f} at CE {ce:.2f} {p!r}; best at CE <= median "
              f"{best_fluent if best_fluent is None else round(best_fluent, 3)}; above the corpus max there: "
              f"{ok}; {s_iter:.2f} s/iteration, {cpu_iter:.2f} CPU s/iteration ({opt.diagnostics['evaluations']} "
              f"distinct prompts scored of {opt.diagnostics['candidates']} drawn; "
              f"{opt.diagnostics['gradient_rows']} member gradients)", flush=True)
        # the front's most fluent point, and its best point at CE <= the median (the prompt that wins, if any)
        at_median = [(a_, c_, p_) for a_, c_, p_ in opt.pareto if c_ <= median_ce]
        record("maximization", f"epo.{unit.name}", {
            "corpus_max": corpus_max, "median_ce": median_ce, "best_activation": a, "best_ce": ce, "best_prompt": p,
            "best_activation_at_median_ce": best_fluent, "wins": ok, "seconds_per_iteration": s_iter,
            "cpu_seconds_per_iteration": cpu_iter, "min_ce": min(c_ for _, c_, _ in opt.pareto),
            "prompt_at_median_ce": max(at_median)[2] if at_median else None})
    if picks:
        print(f"EPO: front above the corpus maximum at CE <= the examples' median on {wins}/{len(picks)} neurons; "
              f"{sum(per_iter) / len(per_iter):.2f} s per iteration ({args.epo_steps} iterations, population "
              f"{args.epo_population}, {args.epo_swaps} swaps, top-k {args.epo_top_k})")
        record("maximization", "epo_budget", {"iterations": args.epo_steps, "population": args.epo_population,
                                              "swaps": args.epo_swaps, "top_k": args.epo_top_k, "length": 12,
                                              "restart_every": args.epo_restart_every,
                                              "windows": len(windows), "tokens": n_tok})
        record("maximization", "epo_cpu_seconds_per_iteration", sum(cpu_per_iter) / len(cpu_per_iter))
        record("maximization", "epo_wins", wins)
        record("maximization", "epo_neurons", len(picks))
        record("maximization", "epo_seconds_per_iteration", sum(per_iter) / len(per_iter))


if __name__ == "__main__":
    main()
