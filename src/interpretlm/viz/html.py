"""Self-contained HTML pages: escaping, the page shell and plain tables.

Every string that came from a model, a tokenizer or a user goes through :func:`escape`
(a prompt containing ``<script>`` renders as text). Pages inline their CSS and JS, so
they work offline.
"""

from __future__ import annotations

import html
import math
import unicodedata
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .figures import Table, Text

CSS = """
:root { --fg:#1d1d1f; --muted:#5f5f66; --line:#d9d9e0; --accent:#2f6fde; }
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--fg);
       background: #fff; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; line-height: 1.45;
       overflow-wrap: anywhere; }
.il-scroll { max-width: 100%; overflow-x: auto; }
.il-subject { border-left: 3px solid var(--accent); padding: .1rem .75rem; margin: .5rem 0 1rem; }
.il-subject p { margin: .15rem 0; }
.il-pass { color: #1e6b2e; } .il-fail { color: #a4161a; font-weight: bold; }
.il-legend { display: flex; flex-wrap: wrap; align-items: center; gap: .4rem; font-size: .8rem; color: var(--muted);
             margin: .35rem 0; }
.il-legend-bar { display: inline-block; width: 160px; height: .7rem; border: 1px solid var(--line); }
.il-legend-nan { display: inline-flex; align-items: center; gap: .25rem; }
.il-swatch { display: inline-block; width: .9rem; height: .7rem; border: 1px solid var(--line); }
.il-nan-cell { background: repeating-linear-gradient(45deg, #f0f0f3 0 3px, #d5d5dc 3px 5px); }
h1 { font-size: 1.5rem; margin-bottom: .25rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.il-muted { color: var(--muted); font-size: .9rem; }
table.il-table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
table.il-table th, table.il-table td { border-bottom: 1px solid var(--line); padding: .25rem .6rem; text-align: left; }
table.il-table td.num { text-align: right; font-variant-numeric: tabular-nums; }
.il-tokens { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .9rem; line-height: 1.6;
             display: flex; flex-wrap: wrap; gap: 2px 1px; }
.il-tok { padding: .1rem .1rem; border-radius: 3px; white-space: pre; border: 1px solid transparent;
          unicode-bidi: isolate; }
.il-ctl { text-decoration: underline dotted #8a3b00; }
.il-tok.il-special { color: var(--muted); border: 1px dashed var(--line); }
.il-tok.il-boundary { border-color: var(--line); margin-right: 1px; }
.il-axis { position: relative; height: .95rem; border-top: 1px solid var(--muted); font-size: .7rem; color: var(--muted);
           margin-top: .2rem; }
.il-axis .il-tick { position: absolute; top: 0; white-space: nowrap; border-left: 1px solid var(--muted); padding: 0 2px;
                    line-height: .95rem; }
.il-axis .il-tick:last-child { border-left: 0; border-right: 1px solid var(--muted); }
.il-axis-label { font-size: .7rem; color: var(--muted); white-space: nowrap; }
.il-bar { display:inline-block; height:.7rem; background: var(--accent); border-radius:2px; vertical-align: middle; }
"""


def escape(text: Any) -> str:
    """HTML-escape any value (quotes included, so it is safe in attributes too)."""
    return html.escape(str(text), quote=True)


SPACE = "\u2423"  # ␣, how a space inside a token is drawn
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
# control, format (bidi overrides, zero-width), separators other than the space, surrogates,
# private use and unassigned code points: all invisible or able to reorder the text around them
_HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Zs", "Cs", "Co", "Cn"}


def visible(text: str, *, spaces: bool = True) -> str:
    r"""``text`` with every invisible or reordering character drawn as an escape.

    Newlines, tabs and carriage returns become ``\n`` ``\t`` ``\r``; other control and
    format characters (bidi overrides such as U+202E, zero-width spaces and joiners, the BOM),
    unusual spaces and unassigned code points become ``\u`` and four hex digits (``\U`` and eight above the BMP, e.g. ``\u202e``);
    with ``spaces`` (tokens), each plain space becomes ``␣`` so leading and trailing spaces show.

    Example:
        >>> visible(" evil\u202e\n") == "␣evil" + chr(92) + "u202e" + chr(92) + "n"
        True
        >>> visible("a b", spaces=False)
        'a b'
    """
    out = []
    for ch in str(text):
        if ch == " ":
            out.append(SPACE if spaces else " ")
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        elif unicodedata.category(ch) in _HIDDEN:
            o = ord(ch)
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(ch)
    return "".join(out)


def token_html(token: str, *, cls: str = "il-tok", hover: str = "", style: str = "") -> str:
    r"""One token as a bidi-isolated ``<bdi>`` showing :func:`visible` text; hover: its ``repr`` and ``hover``.

    Example:
        >>> print(token_html("‮ evil"))
        <bdi class="il-tok il-ctl" title="&#x27;\u202e evil&#x27;">\u202e␣evil</bdi>
    """
    shown = visible(token)
    if shown.replace(SPACE, " ") != token:  # something was escaped: mark it
        cls += " il-ctl"
    title = repr(str(token)) + (f" · {hover}" if hover else "")
    st = f' style="{style}"' if style else ""
    return f'<bdi class="{cls}" title="{escape(title)}"{st}>{escape(shown)}</bdi>'


def fmt(v: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant figures (``"NaN"``, ``"+inf"`` spelled out).

    Example:
        >>> fmt(0.000123456), fmt(1234.5), fmt(float("nan"))
        ('0.000123', '1.23e+03', 'NaN')
    """
    f = float(v)
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+inf" if f > 0 else "-inf"
    return f"{f:.{digits}g}"


def color_signed(v: float, scale: float) -> str:
    """Red for positive, blue for negative, ``alpha = 0.6 × |v| / scale``, capped so dark text keeps a
    contrast ratio above 4.5:1 on it (NaN: transparent)."""
    if not math.isfinite(v):
        return "transparent"
    a = 0.0 if scale <= 0 else min(abs(v) / scale, 1.0)
    rgb = "214,39,40" if v >= 0 else "31,119,180"  # the convention of Captum and inseq views
    return f"rgba({rgb},{a * 0.6:.3f})"


def legend(lo: float, hi: float, label: str, *, unit: str = "", signed: bool = True, clipped: bool = False,
           nan: str = "", top: str = "rgb(47,111,222)") -> str:
    """A colour bar from ``lo`` to ``hi`` with its label and unit (``nan``: explain grey NaN cells).

    The element carries ``data-min`` / ``data-max`` (the numbers drawn at its ends), so a test
    can compare them with the data.
    """
    if signed:
        grad = "linear-gradient(to right, rgba(31,119,180,.6), #fff, rgba(214,39,40,.6))"
    else:
        grad = f"linear-gradient(to right, #fff, {top})"
    what = escape(label) + (f" ({escape(unit)})" if unit else "")
    more = " (values beyond are drawn at full colour)" if clipped else ""
    nan_html = (f'<span class="il-legend-nan"><span class="il-swatch il-nan-cell"></span>NaN: {escape(nan)}</span>'
                if nan else "")
    return (f'<div class="il-legend" data-min="{lo!r}" data-max="{hi!r}">'
            f'<span class="il-legend-lo">{fmt(lo)}</span><span class="il-legend-bar" style="background:{grad}">'
            f'</span><span class="il-legend-hi">{"+" if signed and hi > 0 else ""}{fmt(hi)}</span>'
            f'<span class="il-legend-label">{what}{more}</span>{nan_html}</div>')


def page(title: str, body: str, *, css: str = "", js: str = "", subtitle: str = "") -> str:
    """A complete self-contained HTML page (inline CSS/JS, no network)."""
    sub = f'<p class="il-muted"><bdi>{escape(visible(subtitle, spaces=False))}</bdi></p>' if subtitle else ""
    script = f"<script>{js}</script>" if js else ""
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
        f"<style>{CSS}{css}</style></head><body><h1><bdi>{escape(visible(title, spaces=False))}</bdi></h1>{sub}{body}{script}</body></html>\n"
    )


def fragment(body: str, css: str = "") -> str:
    """A body fragment with its styles, for notebooks (``_repr_html_``)."""
    return f"<div class=\"il-root\"><style>{CSS}{css}</style>{body}</div>"


class Markup(str):
    """HTML drawn by a renderer of this package: :func:`table` puts it in a cell unescaped."""


def _cell(v: Any, nan: str = "not defined") -> str:
    if isinstance(v, Markup):
        return f"<td>{v}</td>"
    if isinstance(v, float) and math.isnan(v):
        return f'<td class="num il-nan-cell" title="NaN: {escape(nan)}">NaN*</td>'
    if isinstance(v, float):
        return f'<td class="num">{fmt(v, 4)}</td>'
    if isinstance(v, int) and not isinstance(v, bool):
        return f'<td class="num">{v}</td>'
    return f"<td>{escape(v)}</td>"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, raw_columns: Sequence[int] = (),
          nan: str = "not defined") -> str:
    """An HTML table in a panel that scrolls sideways when too wide; cells are escaped except in
    ``raw_columns`` (already-rendered HTML); NaN cells read ``NaN*`` with ``nan`` explained below."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body, has_nan = [], False
    for row in rows:
        cells = [f"<td>{v}</td>" if i in raw_columns else _cell(v, nan) for i, v in enumerate(row)]
        has_nan |= any(isinstance(v, float) and math.isnan(v) for i, v in enumerate(row) if i not in raw_columns)
        body.append("<tr>" + "".join(cells) + "</tr>")
    foot = f'<p class="il-muted">NaN*: {escape(nan)}.</p>' if has_nan else ""
    return (f'<div class="il-scroll"><table class="il-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{foot}')



def render_table(fig: "Table") -> str:
    """Draw a :class:`~interpretlm.viz.figures.Table`; payload cells are drawn by their own renderer."""
    from .figures import Figure
    from .render import render

    rows = [[Markup(render(c)) if isinstance(c, Figure) else ("" if c is None else c) for c in row]
            for row in fig.rows]
    return table(fig.header, rows, nan=fig.nan)


def render_text(fig: "Text") -> str:
    """Draw a :class:`~interpretlm.viz.figures.Text` paragraph."""
    return f'<p class="il-muted">{escape(fig.text)}</p>' if fig.muted else f"<p>{escape(fig.text)}</p>"


def target_text(target: Any) -> str:
    """A target (its ``to_dict``) in words, naming its tokens: ``logit(' Mary') − logit(' John')``.

    Example:
        >>> target_text({"kind": "Contrast", "a": " Mary", "b": " John"})
        "logit(' Mary') − logit(' John')"
        >>> target_text({"kind": "NextToken", "token": " Mary", "score": "logprob"})
        "log p(' Mary')"
    """
    if not target:
        return ""
    if not isinstance(target, dict):
        return str(target)

    def tok(t: Any) -> str:
        return f"token #{t}" if isinstance(t, int) else repr(str(t))

    kind = target.get("kind")
    if kind == "Contrast":
        return f"logit({tok(target.get('a'))}) − logit({tok(target.get('b'))})"
    if kind == "NextToken":
        score = target.get("score", "logprob")
        f = {"logprob": "log p", "logit": "logit", "prob": "p"}.get(score, score)
        return f"{f}({tok(target.get('token'))})"
    if kind == "Continuation":
        text = target.get("text")
        shown = repr(text) if isinstance(text, str) else f"tokens {text}"
        return f"log p({shown} | prompt) ({target.get('reduce', 'sum')} over its tokens)"
    if kind == "Label":
        return f"label {target.get('label')!r} via verbalizers {target.get('verbalizers')}"
    if kind == "FunctionTarget":
        return f"custom target {target.get('name', '')}"
    rest = ", ".join(f"{k}={v!r}" for k, v in target.items() if k != "kind" and v is not None)
    return f"{kind}({rest})"


def subject(*, model: str = "", prompt: Any = None, target: Any = None, check: Any = None,
            max_chars: int = 90) -> str:
    """The header of a result's page: model, prompt (truncated, full text on hover), target with its
    tokens, and the check figure with whether it passed. Every text is bidi-isolated and drawn
    with :func:`visible` escapes, so the page shows the text that was explained."""
    parts = []
    if model:
        parts.append(f"model <b>{escape(model)}</b>")
    if prompt is not None and prompt != "":
        if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[0], str):
            text = " | ".join(prompt) if len(prompt) <= 3 else " | ".join(prompt[:3]) + f" | … ({len(prompt)} prompts)"
        elif isinstance(prompt, (list, tuple)):
            text = f"token ids {list(prompt)[:12]}" + ("…" if len(prompt) > 12 else "")
        else:
            text = str(prompt)
        full = visible(text, spaces=False)
        short = full if len(full) <= max_chars else full[:max_chars - 1] + "…"
        parts.append(f'prompt <bdi class="il-prompt" title="{escape(full)}">“{escape(short)}”</bdi>')
    if target:
        parts.append(f'target <bdi class="il-target">{escape(visible(target_text(target), spaces=False))}</bdi>')
    lines = [f'<p>{" · ".join(parts)}</p>'] if parts else []
    if check is not None:
        passed = getattr(check, "passed", None)
        verdict = {True: ("il-pass", "passed ✓"), False: ("il-fail", "FAILED ✗"), None: ("il-muted", "not measured")}
        cls, word = verdict[passed]
        value = getattr(check, "value", None)
        sign = "≥" if getattr(check, "higher_is_better", False) else "≤"
        fig = "" if value is None else f" = {fmt(value)} (must be {sign} {fmt(check.threshold)})"
        lines.append(f'<p class="il-check {cls}">Check: {escape(check.name)}{fig}: {word}</p>')
    return f'<div class="il-subject">{"".join(lines)}</div>' if lines else ""
