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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
