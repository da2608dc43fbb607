"""The ``interpretlm`` command line, generated from the method registry.

Besides ``info``, ``methods`` and ``demo``, every registered verb is a command
(``interpretlm attribute``, ``interpretlm patch``...) with the same shape:

* its inputs, by what the method takes: ``PROMPT`` (or ``--prompts FILE``, one prompt a
  line: a list, following the calling convention; ``WORD PROMPT`` for a prompt method whose
  ``cli_input`` turns the word into options, e.g. ``interpretlm influence train.jsonl "query"``), ``CLEAN CORRUPTED`` (or ``--pairs FILE``
  / ``--dataset NAME``), ``TASK`` (a built-in task or a ``.jsonl`` file), ``RESULT`` (a
  saved result), ``COMPONENT INDEX`` (a unit: ``blocks.12.mlp.neurons 417``, or ``all``);
* the target: ``--target TOKEN``, ``--contrast TOKEN`` (with ``--target``: a logit
  difference), ``--continuation TEXT``, ``--label NAME=TOKEN`` (repeated: a label through
  verbalizer tokens; ``--target`` then names the label explained);
* every option of the method as ``--name VALUE`` (Python literals, or comma lists), and
  ``--method`` for verbs shared by several methods;
* ``--model``, ``--device``, ``--dtype``, ``--chat``, ``--json PATH`` (save the result),
  ``--out PATH`` (its HTML page), ``--progress/--no-progress``.

A new family's commands appear without touching this file.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

import click

from .errors import InterpretLMError
from .registry import REQUIRED

MODEL_HELP = ("Model: 'smollm2-135m' (default), 'minilm-l6', 'gemma3-270m', 'qwen2.5-coder-0.5b' (after `make qwen`), "
              "a Hugging Face id or folder, or a .gguf file.")


def _version() -> str:
    from . import __version__
    return __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(_version(), "--version", prog_name="interpretlm")
@click.option("--threads", type=int, default=0, show_default=True,
              help="PyTorch CPU threads (0: the cores not busy with other work).")
def app(threads: int) -> None:
    """Explain what large language models do. Every method below is one command."""
    import torch

    from .runtime import use_free_cores
    if threads > 0:
        torch.set_num_threads(threads)
    else:
        use_free_cores()


def _fail(exc: Exception) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(2)


def _load(model: str, dtype: str, device: str):
    import interpretlm  # through the package, so that a test (or a plug-in) may replace il.load
    return interpretlm.load(model, dtype=dtype, device=device)


@app.command()
@click.argument("model", default="smollm2-135m")
@click.option("--dtype", default="float32", show_default=True, help="float32, bfloat16, float16 or float64.")
@click.option("--device", default="cpu", show_default=True)
def info(model: str, dtype: str, device: str) -> None:
    """Print a model's family, sizes and canonical component names."""
    try:
        print(_load(model, dtype, device).info())
    except InterpretLMError as exc:
        _fail(exc)


@app.command("methods")
def list_methods() -> None:
    """List every registered method: verb, name, what it takes, its check figure."""
    from .registry import methods
    print(methods())


@app.command()
@click.option("--model", default=None, help=MODEL_HELP)
@click.option("--out", type=click.Path(path_type=Path), default=Path("interpretlm-demo.html"), show_default=True,
              help="Where to write the HTML report.")
def demo(model: str | None, out: Path) -> None:
    """Run the main job on the default model: predictions and explanations, written to one HTML report."""
    from .demo import run_demo
    try:
        run_demo(model, out)
    except InterpretLMError as exc:
        _fail(exc)


@app.command()
@click.option("--model", "models", multiple=True, help=MODEL_HELP + " Repeat to serve several; the first is the default.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("interpretlm-runs"), show_default=True,
              help="Where results are saved and read (nothing outside it is served).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--allow-remote", is_flag=True, help="Allow a --host other than loopback (the app has no login).")
def serve(models: tuple[str, ...], data_dir: Path, host: str, port: int, allow_remote: bool) -> None:
    """The local web app: every method in one page at http://127.0.0.1:8000."""
    try:
        from .app.serving import serve as run_server
    except ImportError as exc:
        _fail(InterpretLMError(f"the app needs its extra: pip install 'interpretlm[app]' ({exc})"))
        return
    try:
        run_server(list(models) or None, data_dir, host=host, port=port, allow_remote=allow_remote)
    except InterpretLMError as exc:
        _fail(exc)


# ---------------------------------------------------------------------- generated commands
def parse_value(text: str) -> Any:
    """A command-line option value: a Python literal (``3``, ``0.5``, ``None``, ``[0, 1]``),
    a comma list of literals (``0,1,2``) or a plain string.

    Example:
        >>> parse_value("3"), parse_value("0,5"), parse_value("heads"), parse_value("None")
        (3, [0, 5], 'heads', None)
    """
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    else:  # "0,5" is a list on the command line, not a tuple
        return list(value) if isinstance(value, tuple) and not text.lstrip().startswith("(") else value
    if "," in text:
        return [parse_value(x.strip()) for x in text.split(",")]
    return text


def _target(target: str | None, contrast: str | None, continuation: str | None, labels: tuple[str, ...] = ()):
    from .targets import Continuation, Contrast, Label, NextToken

    if labels:  # --label name=" token" (repeated; a name given twice collects several verbalizers)
        verbalizers: dict[str, list[str]] = {}
        for spec in labels:
            name, eq, token = spec.partition("=")
            if not eq or not name.strip() or not token:
                raise click.UsageError(f"--label takes NAME=TOKEN (e.g. positive=' positive'); got {spec!r}.")
            verbalizers.setdefault(name.strip(), []).append(token)
        return Label(verbalizers, label=target)
    if continuation is not None:
        return Continuation(continuation)
    if target is None:
        return None
    if contrast is not None:
        return Contrast(target, contrast)
    return NextToken(parse_value(target) if target.lstrip("-").isdigit() else target)


def _read_lines(path: Path) -> list[str]:
    # one prompt per line; "\n" inside a line stands for a newline of the prompt
    return [line.replace("\\n", "\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _resolve(spec: str) -> Any:
    import importlib
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _inputs(m: Any, words: tuple[str, ...], prompts: Path | None, pairs: Path | None, dataset: str | None,
            lm: Any, n: int | None = None) -> tuple[list[Any], Any]:
    """The method's positional inputs from the command line, and a target the inputs carry (data sets)."""
    from .results import Result

    if m.takes == "prompt":
        if prompts is not None:
            return [_read_lines(prompts)], None
        if len(words) != 1:
            raise click.UsageError(f"{m.name} takes one PROMPT (or --prompts FILE).")
        return [words[0]], None
    if m.takes == "item":
        if len(words) != 1:
            raise click.UsageError(f"{m.name} takes one ITEM (e.g. a question in quotes).")
        return [_resolve(m.cli_input)(words[0], lm) if m.cli_input else words[0]], None
    if m.takes == "dataset":
        items = _read_lines(prompts) if prompts is not None else list(words)
        if not items:
            raise click.UsageError(f"{m.name} takes PROMPTS (or --prompts FILE).")
        return [items], None
    if m.takes == "result":
        if len(words) != 1:
            raise click.UsageError(f"{m.name} takes the path of a saved result (RESULT.json).")
        return [Result.load(words[0])], None
    if m.takes == "unit":   # COMPONENT INDEX (or COMPONENT all): one unit, or every unit of the component
        from .units import parse_unit
        try:
            if m.cli_input:     # the method reads more kinds of unit (a dictionary's folder and a feature)
                return [_resolve(m.cli_input)(" ".join(words), lm)], None
            return [parse_unit(" ".join(words))], None
        except InterpretLMError as e:
            raise click.UsageError(f"{m.name} takes a unit: {e}") from None
    spec = dataset or (str(pairs) if pairs is not None else None)
    if m.takes == "pairs" and spec is None:
        if m.inputs == ("clean", "corrupted") and len(words) == 2:
            return list(words), None
        raise click.UsageError(f"{m.name} takes CLEAN CORRUPTED prompts, --pairs FILE.jsonl or --dataset NAME.")
    if m.takes == "task":
        if len(words) != 1:
            raise click.UsageError(f"{m.name} takes a TASK (a built-in name or a .jsonl file).")
        spec = words[0]
    if m.cli_input is None:
        raise click.UsageError(f"{m.name} cannot build its input from {spec!r} on the command line.")
    obj = _resolve(m.cli_input)(spec, lm, **({"n": n} if n is not None else {}))
    if m.inputs == ("clean", "corrupted"):
        return [obj.clean, obj.corrupted], getattr(obj, "target", None)
    return [obj], None


def _print(result: Any, echo=print) -> None:
    echo(result.summary())
    if getattr(result, "check", None) is not None:
        echo(f"check: {result.check}")
    top = getattr(result, "top", None)
    if callable(top):
        try:
            rows = top(10)
        except TypeError:
            rows = []
        for label, value in rows:
            echo(f"  {str(label)!r:>24} {float(value):+.4f}")
    d = result.diagnostics
    if "forward_passes" in d:
        echo(f"passes: {d.get('forward_passes', 0):g} forward, {d.get('backward_passes', 0):g} backward")
    for w in result.warnings:
        echo(f"warning ({w['category']}): {w['message']}")


def _save(result: Any, json_out: Path | None, out: Path | None, index: int | None) -> None:
    def where(path: Path) -> Path:
        return path if index is None else path.with_name(f"{path.stem}-{index}{path.suffix}")
    if json_out is not None:
        print(f"wrote {result.save(where(json_out))}")
    if out is not None:
        print(f"wrote {result.save_html(where(out))}")


RESERVED = {"method", "model", "device", "dtype", "chat", "target", "contrast", "continuation", "prompts", "pairs",
            "dataset", "json", "out", "progress", "words", "label"}


def _flag(name: str, shared: bool) -> str:
    """The command-line flag of a method option (``--n-samples``; ``--method-option`` where a
    verb's own flag already has the name)."""
    if name in RESERVED and (shared or name != "method"):
        return f"--{name.replace('_', '-')}-option"
    return f"--{name.replace('_', '-')}"


def _command(verb: str, group: list[Any]) -> click.Command:
    """One command for ``verb``: the union of its methods' options."""
    import inspect

    from .registry import verbs

    shared = len(group) > 1
    default = inspect.signature(verbs()[verb]).parameters.get("method") if shared else None
    names = [m.name for m in group]
    first = group[names.index(default.default)] if default is not None and default.default in names else group[0]
    options: dict[str, Any] = {}
    for m in group:
        for o in m.options.values():
            if o.name not in ("chat", "progress"):
                options.setdefault(o.name, o)
    takes = {m.takes for m in group}

    def run(words: tuple[str, ...], model: str, device: str, dtype: str, chat: bool,
            target: str | None, contrast: str | None, continuation: str | None, label: tuple[str, ...],
            prompts: Path | None,
            pairs: Path | None, dataset: str | None, json_out: Path | None, out: Path | None,
            progress: bool | None, **given: Any) -> None:
        method = given.pop("method") if shared else None
        n_examples = given.pop("n_examples", None)
        from .registry import call
        from .registry import method as get_method

        name = method if shared else first.name
        try:
            m = get_method(name)
            if m.verb != verb:
                raise InterpretLMError(f"{name!r} is not a method of {verb}; choose one of "
                                       f"{', '.join(x.name for x in group)}.")
            opts = {k: parse_value(v) for k, v in given.items() if v is not None}
            if chat:
                if "chat" not in m.options:
                    raise InterpretLMError(f"{m.name} does not take chat-formatted prompts.")
                opts["chat"] = True
            if progress is not None:
                opts["progress"] = progress
            lm = _load(model, dtype, device)
            if m.takes == "prompt" and m.cli_input and len(words) == 2:
                # a prompt method with a ``cli_input`` takes a leading word it turns into options
                # (``interpretlm influence train.jsonl "query"``: the training file)
                opts = {**_resolve(m.cli_input)(words[0], lm), **opts}
                words = words[1:]
            inputs, carried = _inputs(m, words, prompts, pairs, dataset, lm, n_examples)
            tgt = _target(target, contrast, continuation, label) or carried
            args = inputs + ([tgt] if tgt is not None and m.target != "none" else [])
            result = call(m.name, lm, *args, **opts)
        except InterpretLMError as exc:
            _fail(exc)
            return
        results = result if isinstance(result, list) else [result]
        for i, r in enumerate(results):
            if len(results) > 1:
                print(f"[{i}]")
            _print(r)
            _save(r, json_out, out, i if len(results) > 1 else None)

    params: list[click.Parameter] = [click.Argument(["words"], nargs=-1)]
    if shared:
        params.append(click.Option(["--method"], type=click.Choice(names), default=first.name,
                                   show_default=True, help="Which method of this verb."))
    params += [
        click.Option(["--model"], default="smollm2-135m", show_default=True, help=MODEL_HELP),
        click.Option(["--device"], default="cpu", show_default=True, help="cpu, cuda, mps..."),
        click.Option(["--dtype"], default="float32", show_default=True, help="float32, bfloat16, float16, float64."),
        click.Option(["--chat"], is_flag=True, help="Format prompts with the model's chat template."),
        click.Option(["--target"], default=None, help="The next token to explain, e.g. ' Mary' (mind the space)."),
        click.Option(["--contrast"], default=None, help="With --target: explain logit(target) - logit(contrast)."),
        click.Option(["--continuation"], default=None, help="Explain the log-probability of this continuation."),
        click.Option(["--label"], multiple=True, help="NAME=TOKEN, repeated: a label target through verbalizer "
                     "tokens, e.g. --label positive=' positive' --label negative=' negative' (--target names "
                     "the label explained)."),
        click.Option(["--prompts"], type=click.Path(exists=True, path_type=Path), default=None,
                     help="A file of prompts, one a line (a list of inputs)."),
        click.Option(["--pairs"], type=click.Path(exists=True, path_type=Path), default=None,
                     help="A .jsonl file of clean / corrupted pairs."),
        click.Option(["--dataset"], default=None, help="A built-in data set (ioi, induction, greater_than)."),
        click.Option(["--json", "json_out"], type=click.Path(path_type=Path), default=None,
                     help="Save the result here (JSON + safetensors)."),
        click.Option(["--out"], type=click.Path(path_type=Path), default=None, help="Write the HTML page here."),
        click.Option(["--progress/--no-progress"], default=None, help="Progress bars (default: in terminals)."),
    ]
    if any(m.cli_input for m in group):
        params.append(click.Option(["--n", "n_examples"], type=int, default=None,
                                   help="Examples generated for a built-in task or data set."))
    for o in options.values():
        default = "required" if o.default is REQUIRED else repr(o.default)
        params.append(click.Option([_flag(o.name, shared), o.name], default=None,
                                   help=f"[{o.annotation}] default: {default}"))
    inputs = " | ".join(sorted(takes))
    summary = "; ".join(f"{m.name}: {m.summary}" for m in group)
    return click.Command(verb, params=params, callback=run, help=f"[{inputs}] {summary}",
                         short_help=first.summary if len(group) == 1 else f"{len(group)} methods: "
                         + ", ".join(m.name for m in group))


# Short command names for long verbs (the verb's own name works too).
ALIASES = {"chain_of_thought": "cot"}


def _add_generated() -> None:
    from .registry import methods

    by_verb: dict[str, list[Any]] = {}
    for m in methods():
        by_verb.setdefault(m.verb, []).append(m)
    for verb, group in by_verb.items():
        if verb not in app.commands:
            cmd = _command(verb, group)
            app.add_command(cmd)
            if verb in ALIASES and ALIASES[verb] not in app.commands:
                app.add_command(cmd, name=ALIASES[verb])
            # a plural verb (``counterfactuals``) also answers to its singular, as people type it
            if verb.endswith("s") and verb[:-1] not in app.commands:
                app.add_command(click.Command(verb[:-1], params=cmd.params, callback=cmd.callback, help=cmd.help,
                                              short_help=cmd.short_help, hidden=True))
    # verbs sharing a first word (``explain_unit``, ``explain_in_words``) are also the subcommands of a group
    # of that word (``interpretlm explain unit ...``, ``interpretlm explain in-words ...``)
    heads: dict[str, list[str]] = {}
    for verb in by_verb:
        head, _, rest = verb.partition("_")
        if rest:
            heads.setdefault(head, []).append(verb)
    for head, verbs_ in heads.items():
        if len(verbs_) < 2 or head in app.commands:
            continue
        group = click.Group(head, help=f"{head}: " + ", ".join(verbs_) + " (the same commands, grouped).")
        for verb in verbs_:
            cmd = app.commands[verb]
            sub = verb.partition("_")[2].replace("_", "-")
            group.add_command(click.Command(sub, params=cmd.params, callback=cmd.callback, help=cmd.help,
                                            short_help=cmd.short_help))
        app.add_command(group)


_add_generated()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
