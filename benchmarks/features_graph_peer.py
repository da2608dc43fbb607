"""Attribution graphs side by side with circuit-tracer 0.5: the same transcoders, the same prompts.

    PYTHONPATH=src .venv/bin/python benchmarks/features_graph_peer.py --threads 1 --prompts 2   # the README's run
    PYTHONPATH=src .venv/bin/python benchmarks/features_graph_peer.py --tokens 20000 --prompts 3   # longer training, all prompts

1. **Transcoders.** One per block of the default model (SmolLM2-135M, 30 blocks), trained with
   ``il.features.train(kind="transcoder")`` on the built-in corpus (cached under
   ``il.cache_dir()/bench/graph-peer-*``; a rerun reuses them). circuit-tracer's per-layer transcoders
   are ReLU or JumpReLU only (``load_relu_transcoder``: a ``threshold`` key makes a JumpReLU), so each
   TopK transcoder becomes a **JumpReLU** one, its per-feature threshold set so the feature fires on
   the same share of calibration tokens as under TopK (the calibration windows come after the
   training ones). Both libraries then run that same JumpReLU dictionary: ours as a ``Dictionary``,
   circuit-tracer's written in its own layout (``config.yaml`` + ``layer_{i}.safetensors`` with
   ``W_enc [n, d]``, ``W_dec``, ``b_enc``, ``b_dec``, ``activation_function.threshold``; read by its
   ``load_transcoders_from_cache``, no hub).
2. **Graphs.** ``_ctracer_runner.py`` runs in circuit-tracer's venv (``.bench-venvs/circuittracer``:
   circuit-tracer 0.5.0, nnsight 0.6.3, transformers 4.57.3): its nnsight backend
   (``ReplacementModel.from_pretrained``) on the HF folder ``il.load()`` wrote, with a config whose
   RoPE base is spelled for transformers 4 (the folder's config is written by transformers 5, whose
   ``rope_parameters`` transformers 4.57 does not read: it would fall back to base 10000), then
   ``attribute`` with the target given as ``(token, 1.0, W_U[token])`` — the raw logit, as ours (its
   default is the logit minus the mean logit), ``prune_graph`` and ``compute_graph_scores``.
   circuit-tracer puts a special token first and drops position 0's features and error (its BOS
   convention); so both get the same ids, ``<|im_start|>`` first, and the comparison of node sets
   leaves position 0 out (ours keeps it: a difference of convention, reported).
3. **Agreement.** Wall and CPU time of each graph (ours: ``il.features.attribution_graph`` with
   ``max_ablations=0``, so no faithfulness patching is timed; theirs: ``attribute``), the ratio measured
   on the same machine one after the other; active features (the same set is expected: same weights,
   same activations); Spearman correlation of the two influence vectors over shared nodes; Jaccard of
   the pruned feature sets at the same node threshold (each library's own pruning rule, and ours
   applied to their influences); the largest difference of the direct edges between shared nodes (relative
   to the largest edge); both libraries' replacement and completeness scores, and circuit-tracer's
   ``compute_graph_scores`` applied to our adjacency (separating the definitions from the graphs).

Times are on a shared 2-core machine: noisy; the ratio is what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

import interpretlm as il
from interpretlm.features import Dictionary

sys.path.insert(0, str(Path(__file__).parent))
from _results import record  # noqa: E402

VENV = Path(os.environ.get("INTERPRETLM_BENCH_VENVS", "/work/main/.bench-venvs")) / "circuittracer" / "bin" / "python"
PROMPTS = [("The capital of France is", " Paris"), ("The opposite of hot is", " cold"),
           ("One, two, three, four,", " five")]
BOS = "<|im_start|>"
WARM_UP = "Hi"


def model_folder() -> Path:
    """The HF folder (config, safetensors, tokenizer) that ``il.load()`` wrote for the default model."""
    return next(il.cache_dir().glob("gguf/smollm2-135m-*"))


def folder_for_transformers4(src: Path, dst: Path) -> Path:
    """``src`` with a config transformers 4.57 reads as transformers 5 does (the weights are links).

    transformers 5 writes the RoPE base inside ``rope_parameters``; transformers 4.57 reads ``rope_theta``
    and ``rope_scaling`` and would silently use its default base (10000) instead of the model's.
    """
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name not in ("config.json", "tokenizer_config.json") and not (dst / f.name).exists():
            (dst / f.name).symlink_to(f)
    cfg = json.loads((src / "config.json").read_text())
    rope = cfg.pop("rope_parameters", None) or {}
    cfg["rope_theta"] = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    cfg["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else rope
    (dst / "config.json").write_text(json.dumps(cfg, indent=1))
    # transformers 5 names its fast tokenizer class ``TokenizersBackend``; transformers 4's is ``PreTrainedTokenizerFast``
    tok = json.loads((src / "tokenizer_config.json").read_text())
    if tok.get("tokenizer_class") == "TokenizersBackend":
        tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    (dst / "tokenizer_config.json").unlink(missing_ok=True)
    (dst / "tokenizer_config.json").write_text(json.dumps(tok, indent=1))
    return dst


def transcoders(lm, *, n_features: int, k: int, tokens: int, batch_tokens: int, lr: float,
                calib_windows: int, layers: list[int] | None = None) -> list[Dictionary]:
    """One TopK transcoder per block (trained once, cached), each turned into a rate-matched JumpReLU one."""
    folder = il.cache_dir() / "bench" / f"graph-peer-{n_features}-k{k}-{tokens}-b{batch_tokens}-lr{lr:g}"
    out = []
    window = 64
    train_windows = -(-tokens // (window - 1))
    eval_windows = 8
    # calibration windows: after the held-out and the training windows of every layer's run
    corpus = il.corpus("builtin")
    calib = []
    for i, ids in enumerate(corpus.windows(lm.tokenizer, window)):
        if i >= eval_windows + train_windows + calib_windows:
            break
        if i >= eval_windows + train_windows:
            calib.append(ids)
    for l in layers if layers is not None else range(lm.n_layers):
        path = folder / f"layer{l}"
        jr_path = folder / f"layer{l}-jumprelu"
        if (jr_path / "cfg.json").exists():
            out.append(il.features.load(jr_path))
            continue
        tc = il.features.load(path) if (path / "cfg.json").exists() else il.features.train(
            lm, f"blocks.{l}.mlp", kind="transcoder", n_features=n_features, k=k, tokens=tokens, window=window,
            batch_tokens=batch_tokens, lr=lr, eval_windows=eval_windows, path=str(path), progress=False)
        jr = to_jumprelu(lm, tc, calib)
        jr.save(jr_path)
        out.append(jr)
        print(f"layer {l}: TopK fvu {tc.metrics.get('fvu', float('nan')):.3f}; JumpReLU fvu {jr.metrics['fvu']:.3f}, "
              f"l0 {jr.metrics['l0']:.1f}", flush=True)
    return out


def to_jumprelu(lm, tc: Dictionary, windows: list[list[int]]) -> Dictionary:
    """A JumpReLU transcoder with ``tc``'s weights whose features fire as often as under TopK on ``windows``.

    The encoder's input shift is folded into ``b_enc`` (circuit-tracer's encoder reads ``x`` itself);
    a feature's threshold is the quantile of its pre-activations at one minus its TopK firing rate,
    at least 0 (circuit-tracer's JumpReLU passes ``x`` where ``x > threshold``, ours ``relu(x)``:
    the same for thresholds >= 0). Metrics (``fvu``, ``l0``) on the last quarter of the windows.
    """
    from interpretlm.features.train import read_activations, reconstruction_metrics

    x, y = read_activations(lm, tc.component, tc.output, windows)
    b_enc = tc.b_enc - (tc.b_dec @ tc.W_enc if tc.subtract_b_dec else 0.0)
    n_cal = x.shape[0] * 3 // 4
    pre = tc.pre_activations(x[:n_cal])
    rate = (tc.activate(pre) > 0).float().mean(0)                                    # [n_features]
    srt = pre.sort(0).values                                                         # [n, n_features] ascending
    idx = ((1 - rate) * (n_cal - 1)).round().long().clamp(0, n_cal - 1)
    thr = srt.gather(0, idx.unsqueeze(0))[0].clamp_min(0.0)
    thr = torch.where(rate > 0, thr, srt[-1] + 1.0)          # features that never fired stay off
    jr = Dictionary(tc.W_enc, b_enc, tc.W_dec, tc.b_dec, component=tc.component, output=tc.output,
                    activation="jumprelu", threshold=thr, subtract_b_dec=False, name=f"{tc.name}-jumprelu")
    jr.metrics = dict(reconstruction_metrics(jr, x[n_cal:], y[n_cal:]), topk=reconstruction_metrics(tc, x[n_cal:], y[n_cal:]),
                      trained=tc.metrics)
    return jr


def write_ctracer(tcs: list[Dictionary], folder: Path, scan: str) -> None:
    """circuit-tracer's transcoder-set layout: ``config.yaml`` and ``layer_{i}.safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    for l, tc in enumerate(tcs):
        save_file({"W_enc": tc.W_enc.T.contiguous(), "W_dec": tc.W_dec.contiguous(), "b_enc": tc.b_enc.contiguous(),
                   "b_dec": tc.b_dec.contiguous(), "activation_function.threshold": tc.threshold.contiguous()},
                  str(folder / f"layer_{l}.safetensors"))
    (folder / "config.yaml").write_text(f"model_kind: transcoder_set\nfeature_input_hook: mlp.hook_in\n"
                                        f"feature_output_hook: mlp.hook_out\nscan: {scan}\n")


def ct_order(g) -> tuple[list[int], list[tuple]]:
    """Our graph's node indices in circuit-tracer's order (features, errors layer-major, tokens, logit) and keys."""
    kinds = {"feature": 0, "error": 1, "token": 2, "logit": 3}
    keys = []
    for n in g.nodes:
        k = kinds[n["kind"]]
        keys.append((k, n["layer"], n["pos"], n["feature"]) if k < 2 else (k, n["pos"]) if k == 2 else (3,))
    order = sorted(range(len(keys)), key=lambda j: keys[j])
    return order, [keys[j] for j in order]


def their_keys(t: dict, n_pos: int) -> list[tuple]:
    """circuit-tracer's node keys, in its adjacency's order."""
    af = t["active_features"].tolist()
    return ([(0, l, p, i) for l, p, i in af] + [(1, l, p, -1) for l in range(t["n_layers"]) for p in range(n_pos)]
            + [(2, p) for p in range(n_pos)] + [(3,)])


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(len(a | b), 1)


def top_share(keys: list[tuple], infl: torch.Tensor, share: float) -> set:
    """Our pruning rule: features by influence until they hold ``share`` of the features' total."""
    feats = sorted(((float(infl[j]), keys[j]) for j in range(len(keys)) if keys[j][0] == 0), reverse=True)
    total, acc, kept = sum(v for v, _ in feats), 0.0, set()
    for v, k in feats:
        if total <= 0 or acc >= share * total:
            break
        kept.add(k)
        acc += v
    return kept


def compare(lm, tcs: list[Dictionary], args) -> None:
    if not VENV.exists():
        print(f"circuit-tracer's venv {VENV.parent.parent} is missing: comparison skipped (benchmarks/README.md "
              "says how to build it)")
        return
    tmp = Path(tempfile.mkdtemp(prefix="graph-peer-"))
    model4 = folder_for_transformers4(model_folder(), tmp / "model")
    write_ctracer(tcs, tmp / "ct" / "interpretlm" / "smollm2-plt", "interpretlm/smollm2-plt")
    chosen = PROMPTS[:args.prompts]
    prompts, ours, graphs = [], [], []
    # a short warm-up graph (first-call costs out of the timings; circuit-tracer's runner does the same)
    il.features.attribution_graph(lm, BOS + WARM_UP, 13, tcs, max_ablations=0)
    for text, target in chosen:
        ids = lm.tokenize(BOS + text).input_ids[0].tolist()
        tid = lm.tokenizer(target, add_special_tokens=False)["input_ids"]
        assert ids[0] == lm.tokenizer.convert_tokens_to_ids(BOS) and len(tid) == 1, (ids, tid)
        t, c = time.perf_counter(), time.process_time()
        g = il.features.attribution_graph(lm, BOS + text, tid[0], tcs, node_threshold=args.node_threshold,
                                          max_ablations=0)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        order, keys = ct_order(g)
        A = g.adjacency[order][:, order]
        feats = [k for k in keys if k[0] == 0]
        ours.append({"adjacency": A, "active_features": torch.tensor([k[1:] for k in feats]).reshape(-1, 3),
                     "activation_values": torch.tensor([g.nodes[j]["activation"] for j in order[:len(feats)]])})
        graphs.append((g, order, keys, (seconds, cpu)))
        prompts.append([ids, tid[0]])
    torch.save(ours, tmp / "ours.pt")
    job = {"model": str(model4), "cache_dir": str(tmp / "ct"), "ref": "interpretlm/smollm2-plt", "prompts": prompts,
           "node_threshold": args.node_threshold, "edge_threshold": 0.98, "threads": args.threads,
           "ours": str(tmp / "ours.pt"),
           "warm_up": lm.tokenize(BOS + WARM_UP).input_ids[0].tolist()}
    (tmp / "job.json").write_text(json.dumps(job))
    done = subprocess.run([str(VENV), str(Path(__file__).parent / "_ctracer_runner.py"), str(tmp / "job.json"),
                           str(tmp / "out.pt")], capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-4000:])
    theirs = torch.load(tmp / "out.pt")
    rows = []
    for (text, target), (g, order, keys, secs), t in zip(chosen, graphs, theirs):
        n_pos = len(g.tokens)
        tk = their_keys(t, n_pos)
        # circuit-tracer drops position 0 (its special token): compare the nodes both graphs have
        mine = {k: j for j, k in enumerate(keys) if not (k[0] in (0, 1) and k[2] == 0)}
        their = {k: j for j, k in enumerate(tk) if not (k[0] in (0, 1) and k[2] == 0)}
        shared = [k for k in mine if k in their]
        feats_m = {k for k in mine if k[0] == 0}
        feats_t = {k for k in their if k[0] == 0}
        im = torch.tensor([mine[k] for k in shared])
        it = torch.tensor([their[k] for k in shared])
        Am = g.adjacency[[order[j] for j in im.tolist()]][:, [order[j] for j in im.tolist()]]
        At = t["adjacency"][it][:, it]
        scale = At.abs().max().clamp_min(1e-12)
        edge_diff = float((Am - At).abs().max() / scale)
        # influences: ours (our normalisation, position 0 included) and theirs, over shared features
        infl_m = torch.tensor([g.nodes[order[mine[k]]]["influence"] for k in shared if k[0] == 0])
        infl_t = torch.tensor([float(t["influence"][their[k]]) for k in shared if k[0] == 0])
        # pruned features: each library's own rule; and our rule on both influence vectors
        kept_m = {k for k in feats_m if g.nodes[order[mine[k]]]["name"] in set(g.kept)}
        kept_t = {k for k in feats_t if bool(t["node_mask"][their[k]])}
        kept_t_ours_rule = top_share(tk, t["influence"], args.node_threshold) - {k for k in tk if k[0] == 0 and k[2] == 0}
        kept_m_ct_rule = {k for k in feats_m if bool(t["ours_node_mask"][mine[k]])}
        rows.append({
            "prompt": text, "target": target, "seconds_ours": secs[0], "seconds_theirs": t["seconds"],
            "cpu_seconds_ours": secs[1], "cpu_seconds_theirs": t["cpu_seconds"],
            "logit_ours": g.logit, "logit_theirs": t["logit"],
            "active_ours": len(feats_m), "active_theirs": len(feats_t), "active_jaccard": jaccard(feats_m, feats_t),
            "edge_max_rel_diff": edge_diff, "influence_spearman": spearman(infl_m, infl_t),
            "pruned_ours": len(kept_m), "pruned_theirs": len(kept_t), "pruned_jaccard": jaccard(kept_m, kept_t),
            "pruned_jaccard_same_rule": jaccard(top_share(keys, torch.tensor([n["influence"] for n in
                                                           [g.nodes[j] for j in order]]), args.node_threshold)
                                                 - {k for k in keys if k[0] == 0 and k[2] == 0}, kept_t_ours_rule),
            "pruned_jaccard_ct_rule": jaccard(kept_m_ct_rule, kept_t),
            "replacement_ours": g.replacement_score, "replacement_theirs": t["replacement"],
            "replacement_ct_on_ours": t["ours_replacement"],
            "completeness_ours": g.completeness_score, "completeness_theirs": t["completeness"],
            "completeness_ct_on_ours": t["ours_completeness"]})
    for r in rows:
        print(json.dumps(r))
    keys_ = [k for k in rows[0] if k not in ("prompt", "target")]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys_}
    ratio = sum(r["seconds_ours"] for r in rows) / sum(r["seconds_theirs"] for r in rows)
    cpu_ratio = sum(r["cpu_seconds_ours"] for r in rows) / sum(r["cpu_seconds_theirs"] for r in rows)
    print(f"\nover {len(rows)} prompts (means): ours {mean['seconds_ours']:.1f} s, circuit-tracer {mean['seconds_theirs']:.1f} s "
          f"(ours / theirs {ratio:.2f}; CPU time {mean['cpu_seconds_ours']:.1f} s / {mean['cpu_seconds_theirs']:.1f} s, "
          f"ratio {cpu_ratio:.2f}); active features {mean['active_ours']:.0f} / {mean['active_theirs']:.0f} "
          f"(Jaccard {mean['active_jaccard']:.3f}); edges' max relative difference {max(r['edge_max_rel_diff'] for r in rows):.1e}; "
          f"influence Spearman {mean['influence_spearman']:.3f}; pruned Jaccard {mean['pruned_jaccard']:.3f} "
          f"(same rule: ours {mean['pruned_jaccard_same_rule']:.3f}, circuit-tracer's {mean['pruned_jaccard_ct_rule']:.3f}); "
          f"replacement {mean['replacement_ours']:.3f} / {mean['replacement_theirs']:.3f} "
          f"(circuit-tracer's on our graph {mean['replacement_ct_on_ours']:.3f}); completeness "
          f"{mean['completeness_ours']:.3f} / {mean['completeness_theirs']:.3f} "
          f"(circuit-tracer's on our graph {mean['completeness_ct_on_ours']:.3f}); logit |diff| "
          f"{max(abs(r['logit_ours'] - r['logit_theirs']) for r in rows):.1e}")
    record("features_graph", "prompts", len(rows))
    record("features_graph", "time_ratio", ratio)
    record("features_graph", "cpu_time_ratio", cpu_ratio)
    for k, v in mean.items():
        record("features_graph", k, v)
    record("features_graph", "edge_max_rel_diff_max", max(r["edge_max_rel_diff"] for r in rows))
    record("features_graph", "logit_max_diff", max(abs(r["logit_ours"] - r["logit_theirs"]) for r in rows))
    fvu = [tc.metrics["fvu"] for tc in tcs]
    record("features_graph", "transcoder_fvu_mean", sum(fvu) / len(fvu))
    record("features_graph", "transcoder_l0_mean", sum(tc.metrics["l0"] for tc in tcs) / len(tcs))
    record("features_graph", "n_features", tcs[0].n_features)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-features", type=int, default=512)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=8000, help="training tokens per layer")
    ap.add_argument("--batch-tokens", type=int, default=128, help="tokens per optimizer step")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--calib-windows", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="the first N of the built-in prompts")
    ap.add_argument("--node-threshold", type=float, default=0.8)
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--layers", type=int, nargs="+", help="with --train-only: train these layers only (parallel runs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = il.load()
    tcs = transcoders(lm, n_features=args.n_features, k=args.k, tokens=args.tokens, batch_tokens=args.batch_tokens,
                      lr=args.lr, calib_windows=args.calib_windows,
                      layers=args.layers if args.train_only else None)
    if args.train_only:
        return
    compare(lm, tcs, args)


if __name__ == "__main__":
    main()
