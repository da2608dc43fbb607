"""The ``interpretlm`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .errors import InterpretLMError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Explain what large language models do. Models: 'smollm2-135m' (default), "
                       "'minilm-l6', a Hugging Face id or folder, or a .gguf file.")


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
