"""The heatmap renderer: a :class:`Heatmap` as a table of coloured cells (hover shows each value),
and a :class:`TokenGrid` (tokens in cells, shaded by a probability: the logit lens).

Red is positive, blue negative, hatched grey NaN (explained in the legend); the colour bar
gives the range and unit. Labels are bidi-isolated and drawn with visible escapes. The grid
sits in a panel that scrolls sideways when it is wider than the page. Inline styles, no script.
"""

from __future__ import annotations

import math

from .figures import Heatmap, TokenGrid
from .html import color_signed, escape, fmt, legend, visible


def _color(v: float, scale: float) -> str:
    return color_signed(v, scale)


def _label(text: str, cls: str, spaces: bool = False) -> str:
    return f'<th class="{cls}"><bdi title="{escape(repr(text))}">{escape(visible(text, spaces=spaces))}</bdi></th>'


HEAT_CSS = """
table.il-heat { border-collapse: collapse; font-size: .75rem; }
table.il-heat th { font-weight: normal; padding: 0 .25rem; white-space: nowrap; }
table.il-heat th.il-col { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; vertical-align: bottom;
                          padding: .25rem 0; }
table.il-heat th.il-row { text-align: right; }
table.il-heat td { min-width: 1.4rem; height: 1.1rem; padding: 0; border: 1px solid #fff; }
table.il-grid td { padding: .1rem .3rem; text-align: center; font-family: ui-monospace, Menlo, Consolas, monospace;
                   white-space: pre; line-height: 1.2; }
table.il-grid td small { display: block; font-size: .65rem; }
"""


def render_heatmap(fig: Heatmap) -> str:
    """Draw a :class:`Heatmap`."""
    finite = [abs(v) for row in fig.values for v in row if math.isfinite(v)]
    top = max(finite, default=0.0)
    scale = fig.scale if fig.scale is not None else (top or 1.0)
    head = "".join(_label(c, "il-col") for c in fig.cols)
    body = []
    for lab, vals in zip(fig.rows, fig.values):
        cells = "".join(
            f'<td class="il-nan-cell" title="{escape(lab)} / {escape(col)}: NaN ({escape(fig.nan)})"></td>'
            if math.isnan(v) else
            f'<td title="{escape(lab)} / {escape(col)}: {escape(fig.label)} {fmt(v)}" '
            f'style="background:{_color(v, scale)}"></td>'
            for col, v in zip(fig.cols, vals))
        body.append(f"<tr>{_label(lab, 'il-row')}{cells}</tr>")
    has_nan = any(math.isnan(v) for row in fig.values for v in row)
    return (f'<style>{HEAT_CSS}</style><div class="il-scroll"><table class="il-heat"><thead><tr><th></th>{head}'
            f'</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
            + legend(-scale, scale, fig.label, unit=fig.unit, clipped=top > scale * (1 + 1e-9),
                     nan=fig.nan if has_nan else ""))


def _shade(p: float) -> str:
    # white to blue; alpha capped at 0.45 so the dark token text keeps a contrast above 4.5:1
    if not math.isfinite(p):
        return "transparent"
    return f"rgba(47,111,222,{0.45 * min(max(p, 0.0), 1.0):.3f})"


def render_token_grid(fig: TokenGrid) -> str:
    """Draw a :class:`TokenGrid`: one column per position (its token on top), one row per layer."""
    head = "".join(_label(c, "il-col", spaces=True) for c in fig.cols)
    body = []
    for i, lab in enumerate(fig.rows):
        cells = []
        for j, col in enumerate(fig.cols):
            tok, v = fig.cells[i][j], fig.values[i][j]
            mark = fig.marks[i][j] if fig.marks is not None else ""
            hover = f"{lab}, position {j} ({col!r}): {tok!r}, {fig.label} {fmt(v)}"
            if mark:
                hover += f"; {fig.marks_label} {mark}"
            extra = f"<small>{escape(mark)}</small>" if mark else ""
            cells.append(f'<td title="{escape(hover)}" style="background:{_shade(v)}"><bdi class="il-tok">'
                         f'{escape(visible(tok))}</bdi><small>{fmt(v, 2)}</small>{extra}</td>')
        body.append(f"<tr>{_label(lab, 'il-row')}{''.join(cells)}</tr>")
    note = (f'<span class="il-muted">{escape(fig.marks_label)} shown under the probability where known; '
            "␣ marks a space</span>" if fig.marks_label else '<span class="il-muted">␣ marks a space</span>')
    return (f'<style>{HEAT_CSS}</style><div class="il-scroll"><table class="il-heat il-grid"><thead><tr><th></th>'
            f'{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
            + legend(0.0, 1.0, fig.label, signed=False, top="rgba(47,111,222,.45)")
            + note)
