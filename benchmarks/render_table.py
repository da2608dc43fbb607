"""Render the README's "Benchmarks at a glance" table (and the chain-of-thought figures) from benchmarks/results.json.

    python benchmarks/render_table.py [--json benchmarks/results.json] [--readme README.md] [--check]

The table sits between ``<!-- bench-table:start -->`` and ``<!-- bench-table:end -->`` in the
README and is replaced as a whole, so every figure in it comes from the JSON that
``run_all.py`` wrote. A figure the JSON lacks (its benchmark or peer was not run) is shown as
"not measured" with the command that measures it. ``--check`` exits non-zero when the README
differs from what the JSON renders (for CI).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
COT_START, COT_END = "<!-- cot-table:start -->", "<!-- cot-table:end -->"
COT_MODELS = [("smollm2", "SmolLM2-135M (default)"), ("qwen2", "Qwen2.5-Coder-0.5B (`make qwen`)")]
COT_METRICS = [("early_answering.aoc", "early answering, AOC"), ("adding_mistakes.aoc", "added mistakes, AOC"),
               ("paraphrase.accuracy_change", "paraphrase, accuracy change"),
               ("filler.accuracy_change", "filler, accuracy change"),
               ("biased_context.accuracy_drop", "biased context, accuracy drop"),
               ("biased_context.verbalization", "biased context, verbalization (among switched)"),
               ("hint.accuracy_drop", "hint, accuracy drop"), ("hint.verbalization", "hint, verbalization (among switched)"),
               ("step_necessity.max", "step necessity, largest Δp per sample")]


def _range(vals: list[float], fmt: str) -> str:
    lo, hi = min(vals), max(vals)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"


def ig(d: dict[str, Any]) -> str:
    s = d["ig"]
    captum = sorted((int(k.split(".")[1]), v) for k, v in s.items() if k.startswith("captum."))
    return (f"{s['interpretlm.completeness_error']:.2%} (adaptive, {s['interpretlm.evaluations']:.0f} evaluations); "
            f"Captum {_range([v for _, v in captum], '{:.1%}')} at {captum[0][0]}–{captum[-1][0]:,} steps")


def shapley(d: dict[str, Any]) -> str:
    s = d["shapley"]

    def n(name: str) -> str:
        v = s.get(f"{name}.evaluations_to_0.95")
        return "not run" if v is None else ("never" if v == "never" else f"{v:,.0f}")
    return (f"{n('interpretlm kernel_shap')} (Captum ShapleyValueSampling {n('captum ShapleyValueSampling')}; "
            f"Captum KernelShap {n('captum KernelShap')}; shap Partition {n('shap Partition')})")


def lime(d: dict[str, Any]) -> str:
    s = d["shapley"]
    return f"{s['lime.interpretlm.spearman']:.3f} (Captum Lime {s['lime.captum.spearman']:.3f})"


def continuation(d: dict[str, Any]) -> str:
    s = d["continuation"]
    return f"{_range(list(s.values()), '{:.2f}×')} (saliency, input×gradient, IG, KernelSHAP)"


def lrp_conservation(d: dict[str, Any]) -> str:
    s = d["lrp"]
    lxt = s.get("lxt.ioi.conservation_error")
    return f"{s['ioi.conservation_error']:.4%} error" + (f" (LXT 2.1: {lxt:.1%})" if lxt is not None else "")


def patching(d: dict[str, Any]) -> str:
    s = d["patching"]
    parts = []
    for peer in ("TransformerLens", "nnsight"):
        if f"{peer}.resid_pre.speedup" in s:
            parts.append(f"vs {peer} {s[f'{peer}.resid_pre.speedup']:.1f}× / {s[f'{peer}.heads.speedup']:.1f}× faster, "
                         f"grids equal to {max(s[f'{peer}.resid_pre.max_diff'], s[f'{peer}.heads.max_diff']):.0e}")
    if not parts:
        raise KeyError("no peer measured")
    return "; ".join(parts) + f" (resid_pre [layer, pos] / heads [layer, head], {s['threads']:.0f} thread)"


def atp(d: dict[str, Any]) -> str:
    s = d["patching"]
    return (f"Pearson {s['attribution.resid_pre.pearson']:.3f} / {s['attribution.heads.pearson']:.3f} (plain AtP), "
            f"{s['eap_ig.resid_pre.pearson']:.3f} / {s['eap_ig.heads.pearson']:.3f} (EAP-IG) on resid_pre / heads")


ESTIMATOR_LABELS = {"attribution": "AtP", "atp_star_qk": "AtP* (QK fix)", "atp_star": "AtP* (QK fix + GradDrop)",
                    "eap_ig": "EAP-IG (5 steps)", "eap_ig_tok": "EAP-IG along token paths (5 steps)",
                    "eap_ig_act": "EAP-IG over activations (5 steps)"}


def estimators(d: dict[str, Any]) -> str:
    s = d["estimators"]
    lowest: dict[str, float] = {}
    cells: dict[str, int] = {}
    for k, v in s.items():
        if k.endswith(".pearson"):
            est = k.split(".")[-2]
            lowest[est] = min(lowest.get(est, 1.0), v)
            cells[est] = cells.get(est, 0) + 1
    # the default ("auto") runs eap_ig_act on heads and eap_ig_tok on residual grids
    auto = [v for k, v in s.items() if k.endswith(".pearson") and (".heads.eap_ig_act." in k or
                                                                   ".resid_pre.eap_ig_tok." in k)]
    # an estimator not measured on all 6 set × grid cells says over how many its lowest is
    return (f"lowest Pearson r over {s['prompts_per_set']:.0f}-prompt IOI swap / IOI ABC / induction sets × "
            "resid_pre / heads: " + ", ".join(f"{ESTIMATOR_LABELS[k]} {v:.3f}" + ("" if cells[k] >= 6 else
                                                                             f" ({cells[k]} of 6 measured)")
                                              for k, v in lowest.items())
            + f"; the default (over activations on heads, along token paths on resid_pre) {min(auto):.3f}"
            + ("" if len(auto) >= 6 else f" ({len(auto)} of 6 measured)"))


def app_latency(d: dict[str, Any]) -> str:
    s = {k.split(".", 1)[1]: v for k, v in d["app_latency"].items()}
    return (f"page interactive {s['page_interactive_ms']:.0f} ms; cached views {s['cached_view_attribution_ms']:.0f} / "
            f"{s['cached_view_attention_ms']:.0f} / {s['cached_view_patching_ms']:.0f} ms (attribution / attention / "
            f"patching); a round trip adds {s['overhead_vs_server_compute_ms']:.0f} ms to the compute")


def probing(d: dict[str, Any]) -> str:
    return f"{_range(list(d['probing'].values()), '{:.2f}×')} throughput"


def attention_memory(d: dict[str, Any]) -> str:
    s = d["attention_memory"]
    one, every = s.get("2048.0.peak_rss_increase_mb"), s.get("2048.all.peak_rss_increase_mb")
    return f"{one:,.0f} MB for 1 layer, {every:,.0f} MB for all 30"


def engine(d: dict[str, Any]) -> str:
    s = d["engine"]
    sizes = sorted(int(k[1:].split("_")[0]) for k in s if k.startswith("t") and k.endswith("_ratio_median"))
    parts = [f"{s[f't{n}_tokens']:,.0f} tokens {s[f't{n}_ratio_median']:.2f}× "
             f"({s[f't{n}_ratio_min']:.2f}–{s[f't{n}_ratio_max']:.2f})" for n in sizes]
    be = s["break_even_tokens"]
    where = f"≤ 1.25× above ≈ {be:,.0f} tokens" if be else "≤ 1.25× at every size"
    return (f"whole process, median (range) of alternating pairs: {', '.join(parts)}; fixed overhead "
            f"{s['fixed_overhead_s']:.1f} s (a second interpreter importing torch, Ray's connection, the store read "
            f"back), so {where} (2 CPUs, load average {s['load_average']:.0f})")


def cf_peer(d: dict[str, Any]) -> str:
    s = d["counterfactuals"]
    parts = []
    for task in ("sentiment", "topic"):
        k = f"peer_{task}_interpretlm_"
        if k + "examples" not in s:
            continue
        ta = f"peer_{task}_textattack-embedding_"
        parts.append(
            f"{task} ({s[k + 'examples']:.0f} examples): flip rate {s[k + 'flip_rate']:.2f} vs {s[ta + 'flip_rate']:.2f}, "
            f"minimality {s[k + 'minimality']:.3f} vs {s[ta + 'minimality']:.3f}, queries {s[k + 'queries']:.0f} vs "
            f"{s[ta + 'queries']:.0f} (TextAttack {s[ta + 'query_ratio']:.2f}× ours), seconds per example TextAttack "
            f"{s[ta + 'time_ratio']:.2f}× ours")
    if not parts:
        raise KeyError("no peer run")
    return "; ".join(parts) + " (ours vs TextAttack; one process, a machine loaded ~10× over its 2 cores)"


def _per_task(s: dict[str, Any], ours: str, peer: str, line: Callable[[str, str], str], run: str) -> list[str]:
    """One phrase per task that has a peer run: ``line(our key prefix, TextAttack's key prefix)``."""
    parts = [f"{task} ({s[ours.format(task) + 'examples']:.0f} examples): " + line(ours.format(task), peer.format(task))
             for task in ("sentiment", "topic") if ours.format(task) + "examples" in s]
    if not parts:
        raise KeyError(f"no {run} peer run")
    return parts


def cf_guided(d: dict[str, Any]) -> str:
    s = d["counterfactuals"]
    parts = _per_task(s, "guided_peer_{}_interpretlm-guided_", "guided_peer_{}_textattack-embedding_", lambda k, ta: (
        f"flip rate {s[k + 'flip_rate']:.2f} vs {s[ta + 'flip_rate']:.2f}, "
        f"minimality {s[k + 'minimality']:.3f} vs {s[ta + 'minimality']:.3f}, Δ perplexity "
        f"{s[k + 'delta_ppl']:+.0f}, queries {s[k + 'queries']:.0f} vs {s[ta + 'queries']:.0f} (TextAttack "
        f"{s[ta + 'query_ratio_guided']:.2f}× ours), seconds per example TextAttack "
        f"{s[ta + 'time_ratio_guided']:.2f}× ours"), "guided")
    return ("; ".join(parts) + " (ours vs TextAttack; queries: every row the model scores, the prompt's one included; "
            "ours adds one backward pass; one process, load average ~28 on 2 cores)")


FRUGAL = "frugal_peer_"


def cf_frugal(d: dict[str, Any]) -> str:
    s = d["counterfactuals"]
    parts = _per_task(s, FRUGAL + "{}_interpretlm-frugal_", FRUGAL + "{}_textattack-embedding_", lambda k, ta: (
        f"flip rate {s[k + 'flip_rate']:.2f} vs {s[ta + 'flip_rate']:.2f}, "
        f"minimality {s[k + 'minimality']:.3f} vs {s[ta + 'minimality']:.3f}, queries {s[k + 'queries']:.1f} vs "
        f"{s[ta + 'queries']:.1f} (TextAttack {s[ta + 'query_ratio_frugal']:.2f}× ours), seconds per example "
        f"TextAttack {s[ta + 'time_ratio_frugal']:.2f}× ours"), "frugal")
    return ("; ".join(parts) + f" (ours vs TextAttack; queries: every row the model scores, ours = the prompt + one row "
            f"per label cue + the rows scored, plus one backward pass; load average "
            f"{s[FRUGAL + 'load_average']:.0f} on 2 cores; table and examples in the counterfactual section)")


def render_cf(data: dict[str, Any]) -> str:
    """The frugal search against TextAttack per task and method, the ratios and three example edits."""
    s = data.get("counterfactuals", {})
    lines = ["| task | method | examples | flip rate | minimality | Δ perplexity (mean / median) | queries | "
             "seconds per example |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes = []
    for task in ("sentiment", "topic"):
        for method, name in (("interpretlm-frugal", 'interpretlm `search="frugal"` (1 candidate a round, default)'),
                             ("interpretlm-frugal-4", 'interpretlm `search="frugal", per_round=4` (the earlier search, '
                              f"load {s.get(FRUGAL + 'load_average_per_round_4', float('nan')):.0f})"),
                             ("textattack-embedding", "TextAttack 0.3.11 greedy WIR, model-embedding swaps")):
            k = f"{FRUGAL}{task}_{method}_"
            if k + "examples" not in s:
                lines.append(f"| {task} | {name} | not measured | | | | | |")
                continue
            lines.append(f"| {task} | {name} | {s[k + 'examples']:.0f} | {s[k + 'flip_rate']:.3f} | "
                         f"{s[k + 'minimality']:.3f} | {s[k + 'delta_ppl']:+.0f} / {s[k + 'median_delta_ppl']:+.0f} | "
                         f"{s[k + 'queries']:.1f} | {s[k + 'seconds_per_example']:.2f} |")
        ta = f"{FRUGAL}{task}_textattack-embedding_"
        if ta + "query_ratio_frugal" in s:
            notes.append(f"{task}: TextAttack uses {s[ta + 'query_ratio_frugal']:.2f}× our queries and "
                         f"{s[ta + 'time_ratio_frugal']:.2f}× our seconds per example")
    out = "\n".join(lines)
    if notes:
        out += "\n\n" + "; ".join(notes) + f" (one process, interleaved per example, load average " \
               f"{s.get(FRUGAL + 'load_average', float('nan')):.0f} on 2 cores). Three edits (original → ours / TextAttack's):\n"
        out += "\n".join(f"- {e}" for e in s.get(FRUGAL + "example_edits", []))
    return out


def cf_fluency(d: dict[str, Any]) -> str:
    s = d["counterfactuals"]
    a, b = "sentiment_fluency0_", "peer_sentiment_interpretlm_"
    return (f"first {s[a + 'examples']:.0f} / {s[b + 'examples']:.0f} sentiment examples, fluency 0 → 1: flip rate "
            f"{s[a + 'flip_rate']:.2f} → {s[b + 'flip_rate']:.2f}, minimality {s[a + 'minimality']:.3f} → "
            f"{s[b + 'minimality']:.3f}, Δ perplexity mean {s[a + 'delta_ppl']:+.0f} → {s[b + 'delta_ppl']:+.0f}, "
            f"median {s[a + 'median_delta_ppl']:+.0f} → {s[b + 'median_delta_ppl']:+.0f}, queries "
            f"{s[a + 'queries']:.0f} → {s[b + 'queries']:.0f}")


def cf_cache(d: dict[str, Any]) -> str:
    s = d["counterfactuals"]
    return (f"{1 - s['cache_token_ratio']:.0%} fewer token positions, wall time × {s['cache_time_ratio']:.2f} "
            f"({s['cache_examples']:.0f} examples, interleaved)")


def features(d: dict[str, Any]) -> str:
    s = {k.split(".", 1)[1]: v for k, v in d["features"].items()}
    return (f"{s['n_features']:,.0f} features (k = {s['k']:.0f}) at {s['component']} on {s['tokens']:,.0f} tokens in "
            f"{s['cpu_seconds']:.0f} s of CPU: FVU {s['fvu']:.3f}, CE loss recovered {s['ce_loss_recovered']:.3f}, "
            f"dead {s['dead_fraction']:.1%}")


def feature_graph(d: dict[str, Any]) -> str:
    s = d["features_units"]
    return (f"{s['graph_active_features']:.0f} active features, {s['graph_cpu_seconds']:.1f} s of CPU; linearity error "
            f"{s['graph_linearity_error']:.1e}, replacement {s['graph_replacement']:.3f}, completeness "
            f"{s['graph_completeness']:.3f}; edge error {s['graph_edge_error']:.2f} (10 strongest edges patched; check ≤ 0.2)")


def feature_steer(d: dict[str, Any]) -> str:
    s = d["features_units"]
    return (f"best concept rate: feature {s['steer_feature_best_rate']:.3f}, difference-in-means "
            f"{s['steer_diff_in_means_best_rate']:.3f}; mining every feature, dense / sparse fold CPU "
            f"{s['mining_cpu_ratio_dense_over_sparse']:.2f}× (identical states)")


def graph_peer(d: dict[str, Any]) -> str:
    s = d["features_graph"]
    return (f"{s['prompts']:.0f} prompts, 30 JumpReLU transcoders of {s['n_features']:.0f} features (mean FVU "
            f"{s['transcoder_fvu_mean']:.2f}): CPU time × {s['cpu_time_ratio']:.2f} of circuit-tracer's (wall × "
            f"{s['time_ratio']:.2f}, loaded machine); active features Jaccard "
            f"{s['active_jaccard']:.2f}, edges within {s['edge_max_rel_diff_max']:.0e}, influence Spearman "
            f"{s['influence_spearman']:.2f}, pruned features Jaccard {s['pruned_jaccard']:.2f} (same rule "
            f"{s['pruned_jaccard_ct_rule']:.2f}); replacement {s['replacement_ours']:.2f} vs {s['replacement_theirs']:.2f}, "
            f"completeness {s['completeness_ours']:.2f} vs {s['completeness_theirs']:.2f}")


def influence_lds(d: dict[str, Any]) -> str:
    s = d["influence"]
    label = {"ekfac_proj16": "ekfac (proj. 16)", "ekfac_no_embed": "ekfac (no embedding)",
             "ekfac_blocks": "ekfac (blocks only)"}
    names = sorted({k.split(".", 1)[1] for k in s if k.startswith("lds.")}, key=lambda m: -s[f"lds.{m}"])
    out = ", ".join(f"{label.get(m, m)} {s[f'lds.{m}']:.2f} ± {s[f'lds_se.{m}']:.2f}" for m in names)
    out += (f"; paired per query, ekfac − bm25 {s['paired.bm25']:+.3f} ± {s['paired_se.bm25']:.3f}, "
            f"ekfac − trackstar {s['paired.trackstar']:+.3f} ± {s['paired_se.trackstar']:.3f}")
    if "peer_lds.kronfluence_empirical" in s:
        out += (f"; Kronfluence 1.0.1 EK-FAC {s['peer_lds.kronfluence_empirical']:.2f} ± "
                f"{s['peer_lds_se.kronfluence_empirical']:.2f} (empirical Fisher; ours on its layers − it, paired: "
                f"{s['peer_paired.kronfluence_empirical']:+.3f} ± {s['peer_paired_se.kronfluence_empirical']:.3f}; with "
                f"its default sampled Fisher {s['peer_lds.kronfluence_sampled']:.2f}) in "
                f"{s['peer_seconds.kronfluence_empirical']:.0f} s, ours {s['seconds.ekfac_no_embed']:.1f} s")
    if "peer_lds.bergson" in s:
        out += (f"; bergson 2.5.1 EK-FAC {s['peer_lds.bergson']:.2f} ± {s['peer_lds_se.bergson']:.2f} (ours on its "
                f"layers − it, paired: {s['peer_paired.bergson']:+.3f} ± {s['peer_paired_se.bergson']:.3f}) in "
                f"{s['peer_seconds.bergson']:.0f} s, ours {s['seconds.ekfac_blocks']:.1f} s (loaded machine)")
    if "scratch.lds.ekfac" in s:
        diff, se = s["scratch.paired.bm25"], s["scratch.paired_se.bm25"]
        verb = "ties" if abs(diff) <= 2 * se else ("beats" if diff > 0 else "trails")
        out += (f"; trained from scratch on 32 verses instead, ekfac {s['scratch.lds.ekfac']:.2f} ± "
                f"{s['scratch.lds_se.ekfac']:.2f} {verb} bm25 {s['scratch.lds.bm25']:.2f} ± {s['scratch.lds_se.bm25']:.2f} "
                f"(paired {s['scratch.paired.bm25']:+.3f} ± {s['scratch.paired_se.bm25']:.3f})")
    return out


def influence_default(d: dict[str, Any]) -> str:
    s = d["influence"]
    ours = (f"{s['default_model.seconds']:.0f} s, {s['default_model.peak_rss_mb']:,.0f} MB peak RSS, "
            f"{s['default_model.disk_mb']:.1f} MB on disk")
    if "kronfluence.seconds" not in s:
        return ours + " (Kronfluence not run)"
    return (ours + f"; Kronfluence 1.0.1 {s['kronfluence.seconds']:.0f} s, {s['kronfluence.peak_rss_mb']:,.0f} MB, "
            f"{s['kronfluence.disk_mb']:,.0f} MB (time {s['default_model.seconds'] / s['kronfluence.seconds']:.2f}×, "
            f"memory {s['default_model.peak_rss_mb'] / s['kronfluence.peak_rss_mb']:.2f}×); top-10 proponents shared "
            f"{s['kronfluence.top10_overlap']:.2f}, Spearman {s['kronfluence.spearman']:.2f} (shared, loaded machine)")


def _planted_unit(e: dict[str, Any], pre: str, name: str, tag: str = "") -> tuple[str, bool]:
    """One planted neuron's true rule against its best wrong rule (keys ``{pre}_..._{scorer}{tag}``), and
    whether it clears the bar (true >= 0.9, wrong <= 0.6 on detection and fuzzing)."""
    wrong = sorted({k[len(pre) + 7:-len("_detection" + tag)] for k in e
                    if k.startswith(pre + "_wrong_") and k.endswith("_detection" + tag)})
    w = {m: max(e[f"{pre}_wrong_{x}_{m}{tag}"] for x in wrong) for m in ("detection", "fuzzing", "embedding")}
    t = {m: e[f"{pre}_true_{m}{tag}"] for m in ("detection", "fuzzing", "embedding")}
    met = min(t["detection"], t["fuzzing"]) >= 0.9 and max(w["detection"], w["fuzzing"]) <= 0.6
    return (f"{name}: true rule detection {t['detection']:.2f}, fuzzing {t['fuzzing']:.2f}, "
            f"embedding AUROC {t['embedding']:.2f}; best of {len(wrong)} wrong rules "
            f"{w['detection']:.2f}, {w['fuzzing']:.2f}, {w['embedding']:.2f}"), met


def _planted_units(e: dict[str, Any], corpus: str, tag: str = "") -> tuple[str, bool]:
    """Both planted neurons (digits, names) measured on ``corpus`` (key infix: ``""`` the tiny corpus,
    ``"_balanced"``, ``"_balanced_w50"``) by the scorer ``tag``; neurons not run are left out, and none
    run is a KeyError (the row reads "not measured")."""
    got = [_planted_unit(e, pre, name, tag) for pre, name in ((f"planted{corpus}", "digit neuron"),
                                                             (f"planted_names{corpus}", "name neuron"))
           if f"{pre}_true_detection{tag}" in e]
    if not got:
        raise KeyError(f"planted{corpus}_true_detection{tag}")
    return "; ".join(text for text, _ in got), all(met for _, met in got)


def explanations(d: dict[str, Any]) -> str:
    e = d["explanations"]
    tiny, met = _planted_units(e, "")
    try:
        balanced, met_balanced = _planted_units(e, "_balanced")
    except KeyError:
        balanced, met_balanced = "", True
    verdict = "met" if met and met_balanced else "not met by the 135M scorer"
    return ("word questions against 12 reference descriptions, threshold 0; tiny corpus: " + tiny
            + ("; balanced corpus (wrong rules' words on their own coins): " + balanced if balanced else "")
            + f" (goal ≥ 0.9 vs ≤ 0.6: {verdict})")


def explanations_qwen(d: dict[str, Any]) -> str:
    e = d["explanations"]
    balanced, met = _planted_units(e, "_balanced_w50", "_qwen25")
    out = ("the same word questions and reference descriptions; balanced corpus, 50 + 50 windows: " + balanced
           + f" (goal ≥ 0.9 vs ≤ 0.6: {'met' if met else 'not met'})")
    try:   # the 135M scorer on the same windows, when all its rules were run
        out += " [the 135M scorer on the same windows: " + _planted_units(e, "_balanced_w50")[0] + "]"
    except (KeyError, ValueError):
        pass
    try:
        tiny, met_tiny = _planted_units(e, "", "_qwen25")
        out += (f"; tiny corpus, 20 + 20 windows (food words in 40 % of the name windows): {tiny} (goal: "
                f"{'met' if met_tiny else 'not met'})")
    except KeyError:
        pass
    return out


def explanation_cost(d: dict[str, Any]) -> str:
    e = d["explanations"]
    out = (f"detection / fuzzing / simulation {e['cost_detection_passes']:.0f} / {e['cost_fuzzing_passes']:.0f} / "
           f"{e['cost_simulation_passes']:.0f} batched passes, {e['cost_detection_tokens']:,.0f} / "
           f"{e['cost_fuzzing_tokens']:,.0f} / {e['cost_simulation_tokens']:,.0f} tokens (word questions, reference "
           "descriptions asked anew)")
    if "cost_detection_shared_tokens" in e:
        out += (f"; with the references shared by an earlier unit {e['cost_detection_shared_tokens']:,.0f} / "
                f"{e['cost_fuzzing_shared_tokens']:,.0f} tokens; whole-window questions "
                f"{e['cost_detection_window_tokens']:,.0f} / {e['cost_fuzzing_window_tokens']:,.0f}")
    out += (f"; simulation takes {e['simulation_over_detection_time']:.2f}× detection's time and "
            f"{e['simulation_over_fuzzing_time']:.2f}× fuzzing's (interleaved; goal ≥ 10×: not met)")
    if "two_threads_over_one_time" in e:
        out += f"; 2 torch threads take {e['two_threads_over_one_time']:.1f}× 1 thread's time on the loaded machine"
    return out


def explanation_distribution(d: dict[str, Any], tag: str = "",
                             how: str = "whole-window questions, the default then; 1 torch thread, load 5–22 on "
                                        "2 cores") -> str:
    e = {k[len(tag):]: v for k, v in d["explanations"].items() if k.startswith(tag)}
    keys = ("detection", "fuzzing", "simulation", "embedding")
    means = ", ".join(f"{k} {e['mean_' + k]:+.2f}" if k == "simulation" else f"{k} {e['mean_' + k]:.2f}"
                      for k in keys if "mean_" + k in e)
    rho = ", ".join(f"{a[:3]}~{b[:3]} {e[f'spearman_{a}_{b}']:+.2f}" for i, a in enumerate(keys) for b in keys[i + 1:]
                    if f"spearman_{a}_{b}" in e)
    secs = " / ".join(f"{e[f'dist_{k}_seconds_per_unit']:.0f}" for k in keys if f"dist_{k}_seconds_per_unit" in e)
    return (f"{e['units']:.0f} neurons: means {means}; Spearman {rho}; seconds per unit (det / fuzz / sim / emb) "
            f"{secs}, whole unit {e['dist_unit_seconds']:.0f} ({how})")


def explanation_distribution_words(d: dict[str, Any]) -> str:
    return explanation_distribution(d, "words_", "word questions against the reference descriptions, the default "
                                    "now; the 51 neurons drawn as above, the reference descriptions' answers kept "
                                    "across the units of each process; 2 processes of 1 torch thread on 2 cores")


def explanation_npd(d: dict[str, Any], tag: str = "") -> str:
    e = {k[:len(k) - len(tag)]: v for k, v in d["explanations_npd"].items() if k.endswith(tag)} if tag \
        else d["explanations_npd"]
    out = (f"{e['units_both']:.0f}/{e['units']:.0f} neurons; explain + simulate {e['ours_seconds_per_unit']:.0f} s per "
           f"unit ours, {e['theirs_seconds_per_unit']:.0f} s theirs (theirs/ours {e['theirs_over_ours_time']:.1f}× "
           f"per unit, median; simulation {e['theirs_over_ours_sim_time']:.1f}× the time, "
           f"{e['theirs_over_ours_sim_tokens']:.1f}× the tokens); simulation r means ours {e['ours_mean_score']:+.2f}, "
           f"theirs {e['theirs_mean_score']:+.2f}")
    if "own_explanations_spearman" in e:
        out += f"; agreement per unit Spearman {e['own_explanations_spearman']:+.2f}"
    if "same_explanation_spearman" in e:
        out += (f", same explanation scored by both Pearson {e['same_explanation_pearson']:+.2f} / Spearman "
                f"{e['same_explanation_spearman']:+.2f} (n={e['same_explanation_n']:.0f})")
    if max(abs(e["ours_mean_score"]), abs(e["theirs_mean_score"])) < 0.05:
        out += "; both sides' scores sit at chance with the 135M explainer, so the agreement ranks noise"
    return out + f" (load {e['load_average']:.0f} on 2 cores)"


def explanation_npd_qwen(d: dict[str, Any]) -> str:
    return explanation_npd(d, "_qwen25")


def mining(d: dict[str, Any]) -> str:
    m = d["maximization"]
    cpu_o, cpu_i = m["mining_cpu_ratios_vs_forward_overlap"], m["mining_cpu_ratios_vs_forward_inline"]
    return (f"{_range(m['mining_ratios_vs_forward_overlap'], '{:.2f}×')} of plain forward passes' throughput with the "
            f"fold on a second thread (the default), {_range(m['mining_ratios_vs_forward_inline'], '{:.2f}×')} inline "
            f"({len(cpu_o)} + {len(cpu_i)} passes alternated with plain ones, {m['mining_tokens']:,.0f} tokens each, "
            f"one torch thread, load average ≈ {m['mining_load_average']:.0f}, plain passes "
            f"{_range(m['mining_plain_seconds'], '{:.0f}')} s); CPU time {_range(cpu_o, '{:.2f}×')} / "
            f"{_range(cpu_i, '{:.2f}×')}; the fold is {m['mining_fold_cpu_share_overlap']:.2f} of the CPU time; "
            f"state {m['mining_state_mb']:.0f} MB for 46,080 neurons, any corpus length; peak RSS "
            f"{m['peak_rss_mb'] / 1024:.1f} GB")


def epo_scoring(d: dict[str, Any]) -> str:
    m = d["maximization"]
    return (f"{_range(m['epo_scoring_speedups'], '{:.2f}×')} faster than whole passes "
            "(256 candidates of one iteration at the published population 8 × 32 swaps)")


def epo_iteration(d: dict[str, Any]) -> str:
    m = d["maximization"]
    old, new = m["epo_iteration_cpu_seconds"]
    same = "same population and front" if m["epo_iteration_same_result"] else "scores"
    return (f"{_range(m['epo_iteration_speedups_cpu'], '{:.2f}×')} less CPU time per published-size iteration "
            f"(population 8 × 32 swaps, one thread: {old:.1f} → {new:.1f} CPU s; {same}, scores equal to "
            f"{m['epo_iteration_max_relative_difference']:.0e} relative)")


def epo(d: dict[str, Any]) -> str:
    m = d["maximization"]
    b = m["epo_budget"]
    units = [v for k, v in m.items() if k.startswith("epo.")]
    beat = sum(u["best_activation"] > u["corpus_max"] for u in units)
    return (f"front above the corpus maximum at a cross-entropy ≤ its examples' median on {m['epo_wins']:.0f}/"
            f"{m['epo_neurons']:.0f} neurons (above it at any cross-entropy on {beat}/{len(units)}); budget "
            f"{b['iterations']} iterations × population {b['population']} × {b['swaps']} swaps, restarts every "
            f"{b['restart_every']} (published: 300 × 8 × 32, every 50); corpus maximum over the first "
            f"{b['windows']} windows ({b['tokens']:,} tokens); {m['epo_cpu_seconds_per_iteration']:.1f} CPU s/iteration "
            f"({m['epo_seconds_per_iteration']:.0f} s wall on the shared machine)")



def epo_published(d: dict[str, Any]) -> str:
    m = d["maximization"]["epo_published"]
    b, units = m["budget"], m["units"]
    wins = sum(bool(u["wins"]) for u in units.values())
    beat = sum(u["best_activation"] > u["corpus_max"] for u in units.values())
    cpu = sorted(u["cpu_seconds_per_iteration"] for u in units.values())
    each = "; ".join(f"{k[4:]} {u['best_activation']:.2f} at CE {u['best_ce']:.1f} vs corpus max "
                     f"{u['corpus_max']:.2f} (examples' median CE {u['median_ce']:.2f})" for k, u in sorted(units.items()))
    run = "all 10 neurons" if len(units) == 10 else f"{len(units)} of the 10 neurons run so far"
    return (f"{run}: front above the corpus maximum at a cross-entropy ≤ its "
            f"examples' median on {wins}/{len(units)}, at any cross-entropy on {beat}/{len(units)}; "
            f"{b['iterations']} iterations × population {b['population']} × {b['swaps']} swaps, top-k {b['top_k']}, "
            f"restarts every {b['restart_every']}; {_range(cpu, '{:.1f}')} CPU s/iteration (one thread); {each}")

ROWS: list[tuple[str, Callable[[dict[str, Any]], str], str]] = [
    ("Integrated Gradients, completeness on the IOI prompt", ig, "attribution.py --only ig"),
    ("Shapley estimates, evaluations to Spearman 0.95 vs exact", shapley, "attribution.py --only shapley"),
    ("LIME at 256 samples, Spearman vs exact Shapley (mean of seeds)", lime, "attribution.py --only shapley"),
    ("10-token continuation vs one next token, batched passes", continuation, "attribution.py --only continuation"),
    ("LRP conservation on the IOI prompt (conserving rule `attnlrp`; the default absorbs 61.6%, booked in its check)",
     lrp_conservation, "lrp.py"),
    ("LRP cost over one forward + backward", lambda d: f"{d['lrp']['cost_ratio']:.2f}×", "lrp.py"),
    ("activation patching sweeps vs TransformerLens 4.3 / nnsight 0.8", patching, "patching.py"),
    ("attribution patching / EAP-IG vs exact patching", atp, "patching.py"),
    ("attribution patching estimators on 30 prompts vs exact patching", estimators, "patching.py --estimators"),
    ("activation extraction vs a plain forward pass", probing, "probing_activations.py"),
    ("attention patterns, peak memory at 2,048 tokens", attention_memory, "attention_memory.py --tokens 2048"),
    ("web app latency on the default model", app_latency, "app_latency.py"),
    ("Ray engine over the local engine, same activation job (goal ≤ 1.25×)", engine,
     "engine.py --texts 48,384 --pairs 4"),
    ("counterfactuals vs TextAttack 0.3.11 (greedy word-importance search, model-embedding swaps), same examples",
     cf_peer, "counterfactuals.py --peer textattack --tasks sentiment,topic"),
    ("counterfactuals, search=\"guided\" (first-order estimates, 4 candidates a round) vs TextAttack 0.3.11 "
     "(the same recipe), same examples", cf_guided,
     "counterfactuals.py --peer textattack --search guided --tasks sentiment,topic"),
    ("counterfactuals, search=\"frugal\" (label-conditioned evidence, 1 candidate a round) vs TextAttack 0.3.11 "
     "(the same recipe), same examples", cf_frugal,
     "counterfactuals.py --peer textattack --search frugal --tasks sentiment,topic --n 50 --threads 1"),
    ("counterfactual fluency ranking, before → after (after: the TextAttack run's interpretlm rows)", cf_fluency,
     "counterfactuals.py --tasks sentiment --n 6 --fluency 0 --cache-compare 2"),
    ("counterfactual search (fluency 0), prefix key/value cache vs plain passes", cf_cache,
     "counterfactuals.py --tasks sentiment --n 6 --fluency 0 --cache-compare 2"),
    ("TopK SAE trained on the built-in corpus (default model)", features, "features.py --tokens 100000 --threads 1"),
    ("attribution graph on the default model, transcoders at blocks 0–3 (6,000 tokens each; other MLPs error nodes)",
     feature_graph, "features_units_graph.py"),
    ("a 1,024-feature SAE's best sea feature steered beside difference-in-means (default model)", feature_steer,
     "features_units_graph.py"),
    ("influence functions, LDS on a pretrained tiny model fine-tuned on 128 KJV verses (50 retrained half-subsets, "
     "64 held-out queries)",
     influence_lds, "influence.py --peers"),
    ("attribution graphs vs circuit-tracer 0.5 (nnsight backend), same transcoders and prompts", graph_peer,
     "features_graph_peer.py --threads 1 --prompts 2"),
    ("influence (EK-FAC) on the default model: 90 MLP layers, 32 texts × 4 queries of 16 tokens", influence_default,
     "influence.py --workload default-model"),
    ("unit explanations of planted neurons, the default model scoring (balanced accuracy)", explanations,
     "explanations.py --ground-truth --gt-scorers detection,fuzzing,embedding [--gt-corpus balanced]"),
    ("the same planted neurons, Qwen2.5-Coder-0.5B (`make qwen`) scoring", explanations_qwen,
     "explanations.py --ground-truth --scorer qwen2.5-coder-0.5b --gt-scorers detection,fuzzing,embedding --threads 2 "
     "[--gt-corpus balanced --windows 50]"),
    ("detection / fuzzing / simulation on 40 windows (20 activating)", explanation_cost,
     "explanations.py --cost --planted"),
    ("mining every neuron of all 30 layers (46,080 units), throughput (goal ≥ 0.8×)", mining,
     "maximization.py --windows 128 --repeats 2 --epo-neurons 0"),
    ("EPO candidate scoring on the parents' key/value cache", epo_scoring, "maximization.py --scoring-ratio 2"),
    ("EPO iteration against the previous code, alternated in one process", epo_iteration,
     "maximization.py --iteration-ratio 3 --threads 1"),
    ("EPO on 10 random neurons of the default model vs their corpus maximum", epo,
     "maximization.py --epo-only --windows 512 --mine-path mine/ --epo-steps 16 --epo-swaps 12 --epo-restart-every 8 "
     "--threads 1 --epo-part i/10 (i = 1..10, after --mine-only)"),
    ("EPO at the published budget on the same 10 neurons (best of the front per neuron)", epo_published,
     "maximization.py --epo-only --windows 512 --mine-path mine/ --threads 1 --epo-part i/10"),
    ("explanations of neurons of layers 4, 14, 24 of the default model, explained and scored by it (10 + 10 windows)",
     explanation_distribution, "explanations.py --units 17 --windows 10 --max-windows 400"),
    ("the same, scored with the word questions (the default scorers now)", explanation_distribution_words,
     "explanations.py --units 17 --windows 10 --max-windows 400 --log pI.jsonl --part I/2 (I = 1, 2), then "
     "--summarize p1.jsonl,p2.jsonl --dist-tag words_"),
    ("unit explanations vs Neuronpedia automated-interpretability 0.0.24 (OpenAI's pipeline), same neurons, records "
     "and explainer (the default model, through an OpenAI shim on 127.0.0.1)", explanation_npd,
     "explanations_neuronpedia.py --units 5"),
    ("the same side by side, Qwen2.5-Coder-0.5B (`make qwen`) explaining and simulating on both sides",
     explanation_npd_qwen, "explanations_neuronpedia.py --units 5 --explainer qwen2.5-coder-0.5b"),
]


def render(data: dict[str, Any]) -> str:
    lines = ["| what | figure | command |", "| --- | --- | --- |"]
    for what, fn, cmd in ROWS:
        try:
            fig = fn(data)
        except (KeyError, TypeError, ValueError):
            name = cmd.split(".py")[0]
            name = {"probing_activations": "probing", "patching": "estimators" if "--estimators" in cmd else name,
                    "influence": "influence_default" if "default-model" in cmd else name,
                    "features_units_graph": "features_units", "features_graph_peer": "features_graph"}.get(name, name)
            fig = f"not measured (`python benchmarks/run_all.py --only {name}`)"
            if name == "counterfactuals":
                fig = f"not measured (`python benchmarks/{cmd}`)"
        lines.append(f"| {what} | {fig} | `benchmarks/{cmd}` |")
    return "\n".join(lines)


def _pm(s: dict[str, Any], key: str) -> str:
    v, se = s.get(key), s.get(f"{key}_se")
    if v is None or v != v:
        return "n/a"
    return f"{v:.2f}" + (f" ± {se:.2f}" if se is not None and se == se else "")


def _shots(n: float | None) -> str:
    """The prompt the figures were measured with (runs before the worked examples recorded no shots)."""
    return "zero-shot prompt" if not n else f"{n:.0f} worked examples"


def _above(s: dict[str, Any], key: str, chance: float) -> str:
    """Whether accuracy exceeds chance by more than 2 standard errors over questions."""
    v, se = s.get(key), s.get(f"{key}_se")
    if v is None or v != v:
        return "n/a"
    return "yes" if v - chance > 2 * (se if se is not None and se == se else 0.0) else "no"


def _samples(n: float | None) -> str:
    return "" if n is None else f" × {n:.0f} sample" + ("s" if n != 1 else "")


def render_cot(data: dict[str, Any]) -> str:
    """The chain-of-thought figures of both built-in models (accuracy per set, each test's metric), ± s.e."""
    s = data.get("reasoning", {})
    lines = ["| model | set | questions × samples, prompt | with CoT | without CoT (standard few-shot) "
             "| without CoT (zero-shot cloze) | chance | above chance by > 2 s.e. (with / without CoT) "
             "| answers read from the text |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for tag, label in COT_MODELS:
        for name in ("arithmetic", "commonsense", "dates"):
            if f"{tag}.{name}.n" not in s:
                lines.append(f"| {label} | {name} | not measured | | | | | | |")
                continue
            read, chance = s.get(f"{tag}.{name}.extracted"), s[f"{tag}.{name}.chance"]
            temperature = s.get(f"{tag}.{name}.temperature")
            decoding = "" if temperature is None else " greedy" if temperature == 0 else f" at T={temperature:g}"
            lines.append(f"| {label} | {name} | {s[f'{tag}.{name}.n']:.0f} × {s.get(f'{tag}.{name}.samples', 2):.0f}"
                         f"{decoding}, {_shots(s.get(f'{tag}.{name}.shots'))} "
                         f"| {_pm(s, f'{tag}.{name}.accuracy')} | {_pm(s, f'{tag}.{name}.accuracy_no_cot')} "
                         f"| {_pm(s, f'{tag}.{name}.accuracy_no_cot_cloze')} "
                         f"| {chance:.2f} | {_above(s, f'{tag}.{name}.accuracy', chance)} / "
                         f"{_above(s, f'{tag}.{name}.accuracy_no_cot', chance)} | "
                         f"{'n/a' if read is None else f'{read:.0%}'} |")
    lines += ["", "| test, metric | " + " | ".join(
        f"{label}, {s[f'{tag}.tests.n']:.0f} questions ({s.get(f'{tag}.tests.sets', 'arithmetic')})"
        f"{_samples(s.get(f'{tag}.tests.samples'))}, "
        f"{_shots(s.get(f'{tag}.tests.shots'))}" if f"{tag}.tests.n" in s else f"{label}"
        for tag, label in COT_MODELS) + " |", "| --- |" + " --- |" * len(COT_MODELS)]
    for key, label in COT_METRICS:
        lines.append(f"| {label} | " + " | ".join(
            _pm(s, f"{tag}.tests.{key}") if f"{tag}.tests.n" in s else "not measured" for tag, _ in COT_MODELS) + " |")
    return "\n".join(lines)


EST_START, EST_END = "<!-- estimators-table:start -->", "<!-- estimators-table:end -->"
CF_START, CF_END = "<!-- cf-table:start -->", "<!-- cf-table:end -->"
# passes per prompt of the estimators whose count does not depend on the prompts
# (resid_pre; heads: the check node's own gradient pass on top for AtP*)
EST_PASSES = {"attribution": "2 F + 1 B", "atp_star_qk": "2 F + 1 B; heads 4 F + 2 B",
              "atp_star": "2 F + 31 B; heads 4 F + 32 B", "eap_ig": "7 F + 5 B"}


def render_estimators(data: dict[str, Any]) -> str:
    """Pearson r of every estimator against exact patching per data set and grid, with the
    passes per prompt where they depend on the prompts; r >= 0.9 in bold."""
    s = data.get("estimators", {})
    ests = [k for k in ESTIMATOR_LABELS if any(key.endswith(f".{k}.pearson") for key in s)]
    lines = ["| data, grid | " + " | ".join(f"{ESTIMATOR_LABELS[k]}" + (f" ({EST_PASSES[k]})" if k in EST_PASSES else "")
                                        for k in ests) + " |", "| --- |" + " --- |" * len(ests)]
    for data_set in ("IOI swap", "IOI ABC", "induction"):
        for grid, label in (("resid_pre", "resid_pre `[layer, pos]`"), ("heads", "heads `[layer, head]`")):
            cells = []
            for k in ests:
                key = f"{data_set}.{grid}.{k}"
                r = s.get(f"{key}.pearson")
                if r is None:
                    cells.append("not measured")
                    continue
                cell = f"**{r:.3f}**" if r >= 0.9 else f"{r:.3f}"
                if k not in EST_PASSES and f"{key}.forward_passes" in s:
                    cell += f" ({s[f'{key}.forward_passes']:.0f} F + {s[f'{key}.backward_passes']:.0f} B)"
                cells.append(cell)
            lines.append(f"| {data_set}, {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _replace(text: str, start: str, end: str, body: str) -> str:
    if start not in text:
        return text
    i, j = text.index(start) + len(start), text.index(end)
    return text[:i] + "\n" + body + "\n" + text[j:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=str(HERE / "results.json"))
    ap.add_argument("--readme", default=str(HERE.parent / "README.md"))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    data = json.loads(Path(args.json).read_text())
    readme = Path(args.readme)
    text = readme.read_text()
    new = _replace(_replace(text, START, END, render(data)), COT_START, COT_END, render_cot(data))
    new = _replace(new, EST_START, EST_END, render_estimators(data))
    new = _replace(new, CF_START, CF_END, render_cf(data))
    if args.check:
        sys.exit(0 if new == text else "README table differs from benchmarks/results.json: run benchmarks/render_table.py")
    readme.write_text(new)
    print(f"{readme}: table rendered from {args.json}")


if __name__ == "__main__":
    main()
