"""Runs inside circuit-tracer's venv: attribution graphs of the given prompts with circuit-tracer 0.5.

    python _ctracer_runner.py JOB.json OUT.pt

JOB holds ``model`` (an HF folder readable by transformers 4), ``cache_dir`` and ``ref`` (a transcoder
set in circuit-tracer's cache layout: ``{cache_dir}/{ref}/config.yaml`` + ``layer_{i}.safetensors``),
``prompts`` (``[[ids, target_id], ...]``), ``node_threshold``, ``edge_threshold``, ``threads``,
``warm_up`` (ids of a short warm-up prompt) and ``ours`` (a ``torch.save`` file: per prompt,
interpretlm's adjacency in circuit-tracer's node order, its ``active_features [n, 3]`` and activations).
OUT gets, per prompt, circuit-tracer's graph tensors, pruning masks, scores and the wall and CPU time
of ``attribute`` (after a warm-up graph, as ours), and circuit-tracer's ``compute_graph_scores`` and
``prune_graph`` applied to interpretlm's graph.
"""

import json
import os
import sys
import time

import torch


def main() -> None:
    job = json.load(open(sys.argv[1]))
    torch.set_num_threads(job["threads"])
    os.environ["CIRCUIT_TRACER_CACHE_DIR"] = job["cache_dir"]
    os.environ["HF_HUB_OFFLINE"] = "1"
    from circuit_tracer import ReplacementModel, attribute
    from circuit_tracer.attribution.targets import LogitTarget
    from circuit_tracer.graph import Graph, compute_graph_scores, compute_node_influence, prune_graph

    # the set is found in circuit-tracer's own cache (no hub): {CIRCUIT_TRACER_CACHE_DIR}/{ref}/config.yaml
    model = ReplacementModel.from_pretrained(job["model"], job["ref"], backend="nnsight", device=torch.device("cpu"),
                                             dtype=torch.float32, lazy_decoder=False)
    W_U = model.unembed_weight.detach()
    ours = torch.load(job["ours"]) if job.get("ours") else [None] * len(job["prompts"])
    out = []
    for i, (ids, tid) in enumerate(job["prompts"]):
        ids_t = torch.tensor(ids)
        target = [(model.tokenizer.decode([tid]), 1.0, W_U[tid].clone())]
        if i == 0:   # a short warm-up graph, as ours gets
            attribute(torch.tensor(job["warm_up"]), model, attribution_targets=[(target[0][0], 1.0, W_U[13].clone())])
        t, c = time.perf_counter(), time.process_time()
        g = attribute(ids_t, model, attribution_targets=target)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        pr = prune_graph(g, node_threshold=job["node_threshold"], edge_threshold=job["edge_threshold"])
        replacement, completeness = compute_graph_scores(g)
        lw = torch.zeros(g.adjacency_matrix.shape[0])
        lw[-1] = 1.0
        with torch.no_grad():
            logits, _ = model.get_activations(ids_t)
        theirs_on_ours = {}
        if ours[i] is not None:
            # interpretlm's graph as a circuit-tracer Graph: its scores and pruning by circuit-tracer's definitions
            o = ours[i]
            go = Graph(input_string="", input_tokens=ids_t, active_features=o["active_features"],
                       adjacency_matrix=o["adjacency"], cfg=model.cfg,
                       selected_features=torch.arange(len(o["active_features"])),
                       activation_values=o["activation_values"],
                       logit_targets=[LogitTarget(target[0][0], tid)], logit_probabilities=torch.tensor([1.0]),
                       vocab_size=W_U.shape[0], scan="interpretlm")
            r, c = compute_graph_scores(go)
            po = prune_graph(go, node_threshold=job["node_threshold"], edge_threshold=job["edge_threshold"])
            theirs_on_ours = {"ours_replacement": r, "ours_completeness": c, "ours_node_mask": po.node_mask}
        out.append({**theirs_on_ours, "adjacency": g.adjacency_matrix, "active_features": g.active_features,
                    "activation_values": g.activation_values, "selected_features": g.selected_features,
                    "node_mask": pr.node_mask, "edge_mask": pr.edge_mask,
                    "influence": compute_node_influence(g.adjacency_matrix, lw),
                    "replacement": replacement, "completeness": completeness, "seconds": seconds, "cpu_seconds": cpu,
                    "logit": float(logits[0, -1, tid]), "n_layers": g.cfg.n_layers})
    torch.save(out, sys.argv[2])


if __name__ == "__main__":
    main()
