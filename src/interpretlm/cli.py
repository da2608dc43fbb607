"""The ``interpretlm`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .errors import InterpretLMError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Explain what large language models do. Models: 'smollm2-135m' (default), "
                       "'minilm-l6', a Hugging Face id or folder, or a .gguf file.")


@app.callback()
def _setup(threads: int = typer.Option(0, help="PyTorch CPU threads (0: the cores not busy with other work).")) -> None:
    import torch

    from .runtime import use_free_cores
    if threads > 0:
        torch.set_num_threads(threads)
    else:
        use_free_cores()


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def info(model: str = typer.Argument("smollm2-135m", help="Model name, Hugging Face id, folder or .gguf file."),
         dtype: str = typer.Option("float32", help="float32, bfloat16, float16 or float64."),
         device: str = typer.Option("cpu")) -> None:
    """Print a model's family, sizes and canonical component names."""
    from .loading import load
    try:
        print(load(model, dtype=dtype, device=device).info())
    except InterpretLMError as exc:
        _fail(exc)


@app.command()
def demo(model: Optional[str] = typer.Option(None, help="Model (default: smollm2-135m)."),
         out: Path = typer.Option(Path("interpretlm-demo.html"), help="Where to write the HTML report.")) -> None:
    """Run the main job on the default model: predictions and explanations, written to one HTML report."""
    from .demo import run_demo
    try:
        run_demo(model, out)
    except InterpretLMError as exc:
        _fail(exc)


@app.command()
def attention(prompt: str = typer.Argument(..., help="The text whose attention is shown."),
              model: str = typer.Option("smollm2-135m", help="Model name, Hugging Face id, folder or .gguf file."),
              layers: Optional[str] = typer.Option(None, help="Comma-separated layers (default: all)."),
              out: Path = typer.Option(Path("attention.html"), help="Where to write the head and model view.")) -> None:
    """Attention patterns of a prompt: top heads by kind, and an interactive HTML view."""
    from .attention_maps import attention as run_attention
    from .loading import load
    try:
        chosen = [int(x) for x in layers.split(",")] if layers else None
        att = run_attention(load(model), prompt, layers=chosen)
        s = att.heads_summary()
        for metric in ("previous_token", "induction", "first_token", "self"):
            top = [t for t in s.top(metric, 3) if t[2] == t[2]]
            if top:
                print(f"{metric:>15}: " + ", ".join(f"L{l}H{h} {v:.2f}" for l, h, v in top))
        print(f"wrote {att.save_html(out)}")
    except (InterpretLMError, ValueError) as exc:
        _fail(exc)


@app.command()
def probe(task: str = typer.Argument(..., help="pos, dependency, depth, trees, sentiment, agreement, ioi, or a .jsonl file."),
          model: str = typer.Option("smollm2-135m", help="Model name, Hugging Face id, folder or .gguf file."),
          layers: str = typer.Option("all", help="'all' or comma-separated layer indices."),
          probe_kind: str = typer.Option("auto", "--probe", help="auto, logistic, ridge or mlp."),
          n: int = typer.Option(300, help="Examples generated for built-in tasks."),
          control: bool = typer.Option(True, help="Control task and selectivity."),
          mdl: bool = typer.Option(True, help="MDL online codelength."),
          seed: int = typer.Option(0),
          acts: Optional[Path] = typer.Option(None, help="Folder for a resumable activation store."),
          out: Path = typer.Option(Path("probe.html"), help="Where to write the HTML report.")) -> None:
    """Probe every layer for a task; print the per-layer table and write the layer curves."""
    from .loading import load
    from .probing import probe as run_probe
    from .probing import tasks
    try:
        if task.endswith(".jsonl"):
            t = tasks.from_jsonl(task)
        elif task in ("pos", "dependency", "depth", "trees"):
            t = getattr(tasks, task)(n=n, seed=seed)
        elif task in ("sentiment", "agreement", "ioi"):
            t = getattr(tasks, task)(n, seed=seed)
        else:
            raise typer.BadParameter(f"unknown task {task!r}")
        lm = load(model)
        chosen = "all" if layers == "all" else [int(x) for x in layers.split(",")]
        rep = run_probe(lm, t, layers=chosen, probe=probe_kind, control=control, mdl=mdl, seed=seed, path=acts)
        print(rep.summary())
        print(rep.table)
        rep.save_html(out)
        print(f"wrote {out}")
    except InterpretLMError as exc:
        _fail(exc)


@app.command()
def patch(clean: str = typer.Argument(..., help="The clean prompt."),
          corrupted: str = typer.Argument(..., help="The corrupted prompt (same number of tokens)."),
          answer: str = typer.Option(..., help="The clean answer token, e.g. ' Mary'."),
          wrong: Optional[str] = typer.Option(None, help="A competing token: the metric becomes a logit difference."),
          over: str = typer.Option("heads", help="resid_pre, resid_post, attn, mlp or heads."),
          model: str = typer.Option("smollm2-135m", help="Model name, Hugging Face id, folder or .gguf file."),
          out: Path = typer.Option(Path("interpretlm-patch.html"), help="Where to write the HTML result.")) -> None:
    """Activation patching of the clean prompt into the corrupted one, for every layer (and head / position)."""
    from .circuits import patch as run_patch
    from .loading import load
    from .targets import Contrast, NextToken
    try:
        lm = load(model)
        target = Contrast(answer, wrong) if wrong else NextToken(answer)
        result = run_patch(lm, clean, corrupted, target, over=over)
        for label, value in result.top(8):
            print(f"{label:24s} {value:+.3f}")
        result.save_html(out)
        print(f"Wrote {out}")
    except InterpretLMError as exc:
        _fail(exc)


@app.command()
def attribute(prompt: str = typer.Argument(..., help="The prompt to explain."),
              target: str = typer.Option(..., help="The next token to explain, e.g. ' Mary' (mind the space)."),
              contrast: Optional[str] = typer.Option(None, help="Explain logit(target) - logit(contrast) instead."),
              continuation: bool = typer.Option(False, help="Treat --target as a multi-token continuation."),
              method: str = typer.Option("integrated_gradients", help="saliency, input_x_gradient, "
                                         "integrated_gradients, occlusion, lime, kernel_shap, exact_shap, "
                                         "partition_shap."),
              granularity: str = typer.Option("token", help="token or word."),
              n_samples: Optional[int] = typer.Option(None, help="Samples (lime, kernel_shap)."),
              seed: int = typer.Option(0, help="Seed of stochastic methods."),
              model: str = typer.Option("smollm2-135m", help="Model name, Hugging Face id or folder."),
              out: Optional[Path] = typer.Option(None, help="Write the HTML heatmap here."),
              json_out: Optional[Path] = typer.Option(None, "--json", help="Save the result (JSON + safetensors).")) -> None:
    """Attribute a target to the prompt's tokens and print the top features, the check and the passes."""
    import interpretlm as il
    try:
        lm = il.load(model)
        tgt = (il.Continuation(target) if continuation else il.Contrast(target, contrast) if contrast
               else il.NextToken(target))
        opts: dict = {"granularity": granularity}
        if method in ("lime", "kernel_shap"):
            opts["seed"] = seed
            if n_samples:
                opts["n_samples"] = n_samples
        a = il.attribute(lm, prompt, tgt, method=method, **opts)
    except InterpretLMError as exc:
        _fail(exc)
        return
    print(a.summary())
    for feat, score in a.top(10):
        print(f"  {feat!r:>20} {score:+.4f}")
    d = a.diagnostics
    print(f"passes: {d.get('forward_passes', 0)} forward, {d.get('backward_passes', 0)} backward "
          f"({d.get('model_evaluations', 0)} sequences)")
    if out:
        print(f"wrote {a.save_html(out)}")
    if json_out:
        print(f"wrote {a.save(json_out)}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
