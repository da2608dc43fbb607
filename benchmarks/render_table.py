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
                    "eap_ig": "EAP-IG (5 steps)"}


def estimators(d: dict[str, Any]) -> str:
    s = d["estimators"]
    lowest: dict[str, float] = {}
    for k, v in s.items():
        if k.endswith(".pearson"):
            est = k.split(".")[-2]
            lowest[est] = min(lowest.get(est, 1.0), v)
    return (f"lowest Pearson r over {s['prompts_per_set']:.0f}-prompt IOI swap / IOI ABC / induction sets × "
            "resid_pre / heads: " + ", ".join(f"{ESTIMATOR_LABELS[k]} {v:.2f}" for k, v in lowest.items()))


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
    return (f"cold {s['ray_over_local_cold']:.2f}× (a worker imports interpretlm and torch in "
            f"{s['worker_import_s']:.1f} s, then `il.load` imports transformers and loads in {s['worker_load_s']:.1f} s), "
            "workers kept "
            f"{s['ray_over_local_warm']:.2f}×, whole process {s['whole_ray_over_local']:.2f}× "
            f"({s['tokens']:,.0f} tokens, 2 CPUs, load average {s['load_average']:.0f})")


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


def influence_lds(d: dict[str, Any]) -> str:
    s = d["influence"]
    names = sorted({k.split(".", 1)[1] for k in s if k.startswith("lds.")}, key=lambda m: -s[f"lds.{m}"])
    return ", ".join(f"{m.replace('_proj16', ' (proj. 16)')} {s[f'lds.{m}']:.2f} ± {s[f'lds_se.{m}']:.2f}"
                     for m in names)


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


def explanations(d: dict[str, Any]) -> str:
    e = d["explanations"]
    wrong = [k.split("_")[2] for k in e if k.startswith("planted_wrong_") and k.endswith("_detection")]
    w = {m: max(e[f"planted_wrong_{x}_{m}"] for x in wrong) for m in ("detection", "fuzzing", "embedding")}
    return (f"true rule detection {e['planted_true_detection']:.2f}, fuzzing {e['planted_true_fuzzing']:.2f}, "
            f"embedding AUROC {e['planted_true_embedding']:.2f}; best wrong rule {w['detection']:.2f}, "
            f"{w['fuzzing']:.2f}, {w['embedding']:.2f} (goal ≥ 0.9 vs ≤ 0.6: not met by the 135M scorer)")


def explanation_cost(d: dict[str, Any]) -> str:
    e = d["explanations"]
    return (f"{e['cost_detection_passes']:.0f} / {e['cost_fuzzing_passes']:.0f} / {e['cost_simulation_passes']:.0f} "
            f"batched passes; simulation takes {e['simulation_over_detection_time']:.2f}× detection's time "
            "(goal ≥ 10×: not met; all-at-once simulation is one pass per window too)")


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
    ("Ray engine over the local engine, same activation job (goal ≤ 1.25×)", engine, "engine.py --texts 192"),
    ("counterfactuals vs TextAttack 0.3.11 (greedy word-importance search, model-embedding swaps), same examples",
     cf_peer, "counterfactuals.py --peer textattack --tasks sentiment,topic"),
    ("counterfactual fluency ranking, before → after (after: the TextAttack run's interpretlm rows)", cf_fluency,
     "counterfactuals.py --tasks sentiment --n 6 --fluency 0 --cache-compare 2"),
    ("counterfactual search (fluency 0), prefix key/value cache vs plain passes", cf_cache,
     "counterfactuals.py --tasks sentiment --n 6 --fluency 0 --cache-compare 2"),
    ("TopK SAE trained on the built-in corpus (default model)", features, "features.py --tokens 100000 --threads 1"),
    ("influence functions, LDS on a tiny model (50 retrained half-subsets of 32 KJV verses, 8 queries)",
     influence_lds, "influence.py"),
    ("influence (EK-FAC) on the default model: 90 MLP layers, 32 texts × 4 queries of 16 tokens", influence_default,
     "influence.py --workload default-model"),
    ("unit explanations of a planted digit neuron, the default model scoring (balanced accuracy)", explanations,
     "explanations.py --ground-truth"),
    ("detection / fuzzing / simulation on 40 windows (20 activating)", explanation_cost,
     "explanations.py --cost --planted"),
]


def render(data: dict[str, Any]) -> str:
    lines = ["| what | figure | command |", "| --- | --- | --- |"]
    for what, fn, cmd in ROWS:
        try:
            fig = fn(data)
        except (KeyError, TypeError, ValueError):
            name = cmd.split(".py")[0]
            name = {"probing_activations": "probing", "patching": "estimators" if "--estimators" in cmd else name,
                    "influence": "influence_default" if "default-model" in cmd else name}.get(name, name)
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


def render_cot(data: dict[str, Any]) -> str:
    """The chain-of-thought figures of both built-in models (accuracy per set, each test's metric), ± s.e."""
    s = data.get("reasoning", {})
    lines = ["| model | set | questions × samples, prompt | with CoT | without CoT (cloze) | chance | above chance by > 2 s.e. "
             "(with / without CoT) | answers read from the text |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for tag, label in COT_MODELS:
        for name in ("arithmetic", "commonsense", "dates"):
            if f"{tag}.{name}.n" not in s:
                lines.append(f"| {label} | {name} | not measured | | | | | |")
                continue
            read, chance = s.get(f"{tag}.{name}.extracted"), s[f"{tag}.{name}.chance"]
            lines.append(f"| {label} | {name} | {s[f'{tag}.{name}.n']:.0f} × {s.get(f'{tag}.{name}.samples', 2):.0f}, "
                         f"{_shots(s.get(f'{tag}.{name}.shots'))} "
                         f"| {_pm(s, f'{tag}.{name}.accuracy')} | {_pm(s, f'{tag}.{name}.accuracy_no_cot')} "
                         f"| {chance:.2f} | {_above(s, f'{tag}.{name}.accuracy', chance)} / "
                         f"{_above(s, f'{tag}.{name}.accuracy_no_cot', chance)} | "
                         f"{'n/a' if read is None else f'{read:.0%}'} |")
    lines += ["", "| test, metric | " + " | ".join(
        f"{label}, {s[f'{tag}.tests.n']:.0f} arithmetic questions, "
        f"{_shots(s.get(f'{tag}.tests.shots'))}" if f"{tag}.tests.n" in s else f"{label}"
        for tag, label in COT_MODELS) + " |", "| --- |" + " --- |" * len(COT_MODELS)]
    for key, label in COT_METRICS:
        lines.append(f"| {label} | " + " | ".join(
            _pm(s, f"{tag}.tests.{key}") if f"{tag}.tests.n" in s else "not measured" for tag, _ in COT_MODELS) + " |")
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
    if args.check:
        sys.exit(0 if new == text else "README table differs from benchmarks/results.json: run benchmarks/render_table.py")
    readme.write_text(new)
    print(f"{readme}: table rendered from {args.json}")


if __name__ == "__main__":
    main()
