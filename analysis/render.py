"""A small table model (sections of labelled rows of cells) and its Markdown, LaTeX and CSV writers.

Output is a pure function of the table: the same runs give byte-identical text.

Cell text:
- ``25.49 ± 0.31 (3)``: mean ± sample std over 3 seeds, in percent; ``25.49 (1)`` for one seed;
- ``—``: no finished run (a footnote lists the override to run);
- a trailing ``†``: from a smoke sweep on synthetic data, not a COCO/Cityscapes number;
- bold (``**…**`` / ``\\textbf``): the best CNN result of its group, as in the paper;
- rows ``↳ random init`` and ``↳ raw colours``: the floors (``eval.baselines``) of the result above,
  from the same runs; never bold, no paper value and no Δ.

With ``compare=True`` every numeric column becomes ``paper | ours | Δ`` (Δ = ours - paper, in points).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence

from analysis.cells import Summary

#: The floors that ``eval.baselines`` logs beside every model metric: (row label, metric prefix after
#: ``eval/``, as in :mod:`vice.evaluate.run`).
FLOORS = (("↳ random init", "baseline_random_"), ("↳ raw colours", "baseline_rgb_"))
MISSING = "—"
SMOKE_MARK = "†"
NO_PAPER = "n/a"
SMOKE_FOOTNOTE = (
    f"{SMOKE_MARK} smoke sweep on synthetic data: a pipeline check, not a COCO or Cityscapes result."
)


@dataclasses.dataclass(frozen=True)
class Stat:
    """One numeric cell: ours (``summary`` is None when missing) and the paper's value, in display units.

    ``kind`` is ``"pct"`` (percent, two decimals) or ``"duration"`` (seconds, printed ``5h 31min``).
    ``floor`` marks a baseline (random init, raw colours): it is never bold, never competes for the
    best, and has no paper value or Δ.
    """

    summary: Summary | None
    paper: float | None = None
    paper_text: str | None = None
    kind: str = "pct"
    smoke: bool = False
    bold: bool = False
    floor: bool = False

    def ours(self) -> str:
        """Our value as printed (without bold)."""
        if self.summary is None:
            return MISSING
        s = self.summary
        if self.kind == "duration":
            text = f"{format_duration(s.mean)} ({s.n})"
        elif s.n > 1:
            text = f"{s.mean:.2f} ± {s.std:.2f} ({s.n})"
        else:
            text = f"{s.mean:.2f} ({s.n})"
        return text + (SMOKE_MARK if self.smoke else "")

    def paper_str(self) -> str:
        """The paper's value as printed, ``n/a``, or empty for a floor (the paper prints none)."""
        if self.floor:
            return ""
        if self.paper_text is not None:
            return self.paper_text
        if self.paper is None:
            return NO_PAPER
        return format_duration(self.paper) if self.kind == "duration" else f"{self.paper:.2f}"

    def delta(self) -> str:
        """Ours - paper, or empty when either side is missing, the cell is synthetic or a floor."""
        if self.summary is None or self.paper is None or self.smoke or self.floor:
            return ""
        diff = self.summary.mean - self.paper
        if self.kind == "duration":
            sign = "-" if diff < 0 else "+"
            return sign + format_duration(abs(diff))
        return f"{diff:+.2f}"


Value = Stat | str


@dataclasses.dataclass(frozen=True)
class Section:
    """A block of rows under one title; ``labels`` head the label columns, ``columns`` the value columns."""

    title: str
    labels: tuple[str, ...]
    columns: tuple[str, ...]
    rows: tuple[tuple[tuple[str, ...], tuple[Value, ...]], ...]


@dataclasses.dataclass(frozen=True)
class Table:
    """A regenerated paper table: title, sections and footnotes."""

    name: str
    title: str
    sections: tuple[Section, ...]
    footnotes: tuple[str, ...] = ()


def format_duration(seconds: float) -> str:
    """``19860`` -> ``"5h 31min"`` (as the paper prints, to the minute); ``"12min"``; under a minute ``"42s"``."""
    if seconds < 59.5:
        return f"{round(seconds)}s"
    minutes = round(seconds / 60.0)
    return f"{minutes // 60}h {minutes % 60}min" if minutes >= 60 else f"{minutes}min"


def best_marks(values: Sequence[float | None]) -> list[bool]:
    """Mark the maximum (ties as printed, two decimals); nothing when fewer than two values compete."""
    present = [round(v, 2) for v in values if v is not None]
    if len(present) < 2:
        return [False] * len(values)
    top = max(present)
    return [v is not None and round(v, 2) == top for v in values]


def _numeric_columns(section: Section) -> list[bool]:
    return [
        any(isinstance(values[i], Stat) for _, values in section.rows) for i in range(len(section.columns))
    ]


def _header(section: Section, compare: bool) -> list[str]:
    header = list(section.labels)
    for name, numeric in zip(section.columns, _numeric_columns(section), strict=True):
        header += [f"{name} paper", f"{name} ours", "Δ"] if compare and numeric else [name]
    return header


def _shown_labels(labels: tuple[str, ...], previous: tuple[str, ...]) -> list[str]:
    """Blank each leading label that repeats the row above, as the paper prints sub-rows."""
    return ["" if labels[: i + 1] == previous[: i + 1] else label for i, label in enumerate(labels)]


def _cells(section: Section, compare: bool, bold: tuple[str, str]) -> list[list[str]]:
    numeric = _numeric_columns(section)
    rows = []
    previous: tuple[str, ...] = ()
    for labels, values in section.rows:
        row = _shown_labels(labels, previous)
        previous = labels
        for value, is_numeric in zip(values, numeric, strict=True):
            if isinstance(value, Stat):
                ours = value.ours()
                ours = f"{bold[0]}{ours}{bold[1]}" if value.bold and not value.floor else ours
                row += [value.paper_str(), ours, value.delta()] if compare else [ours]
            else:
                row += [value, "", ""] if compare and is_numeric else [value]
        rows.append(row)
    return rows


def to_markdown(table: Table, compare: bool = False) -> str:
    """Render GitHub Markdown: a bold title, one pipe table per section (aligned), then footnotes."""
    lines = [f"**{table.title}**", ""]
    for section in table.sections:
        header = _header(section, compare)
        rows = _cells(section, compare, ("**", "**"))
        widths = [max(3, *(len(r[i]) for r in [header, *rows])) for i in range(len(header))]
        numeric_from = len(section.labels)
        if section.title:
            lines += [f"*{section.title}*", ""]
        lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
        rule = [("-" * (w - 1) + ":") if i >= numeric_from else "-" * w for i, w in enumerate(widths)]
        lines.append("| " + " | ".join(rule) + " |")
        for row in rows:
            cells = [
                c.rjust(w) if i >= numeric_from else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"- {note}" for note in table.footnotes]
    return "\n".join(lines).rstrip("\n") + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "#": r"\#",
    "_": r"\_",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "◇": r"$^\diamond$",
    "⋆": r"$^\star$",
    "†": r"$^\dagger$",
    "Δ": r"$\Delta$",
    "—": "---",
    "→": r"$\to$",
    "↳": r"$\hookrightarrow$",
}


#: Where a line may break inside `code` (the overrides of the footnotes hold long ``key=value`` runs).
_CODE_BREAKS = ("=", "/", ",")


def latex_escape(text: str) -> str:
    """Escape LaTeX specials, map the table symbols (±, ◇, ⋆, †, Δ, —, →, ↳) and set `code` in ``\\texttt``.

    Code may break after ``=``, ``/`` and ``,`` as well as at spaces, so a long override wraps.
    """
    parts = text.split("`")
    escaped = ["".join(_LATEX_ESCAPES.get(ch, ch) for ch in part) for part in parts]
    if len(parts) % 2 == 0:  # an unpaired backtick: keep it literal
        return "`".join(escaped)
    code = ["".join(ch + r"\allowbreak{}" if ch in _CODE_BREAKS else ch for ch in p) for p in escaped]
    return "".join(rf"\texttt{{{code[i]}}}" if i % 2 else p for i, p in enumerate(escaped))


#: The packages :func:`to_latex`'s output needs in the document's preamble.
LATEX_PACKAGES = r"\usepackage{booktabs,graphicx}"
#: Each section's tabular is typeset in this box, then scaled down to ``\linewidth`` only if wider.
_LATEX_BOX = r"\vicetablebox"


def _latex_header(section: Section, compare: bool) -> list[str]:
    """The header rows: one; with ``compare`` each numeric column's name spans its paper | ours | Δ."""
    if not compare:
        return [" & ".join(latex_escape(h) for h in _header(section, compare)) + r" \\"]
    top, rules, bottom = [""] * len(section.labels), [], list(section.labels)
    for name, numeric in zip(section.columns, _numeric_columns(section), strict=True):
        if numeric:
            first = len(bottom) + 1  # 1-based column of "paper"
            top.append(rf"\multicolumn{{3}}{{c}}{{{latex_escape(name)}}}")
            rules.append(rf"\cmidrule(lr){{{first}-{first + 2}}}")
            bottom += ["paper", "ours", "Δ"]
        else:
            top.append("")
            bottom.append(name)
    return [
        " & ".join(top) + r" \\",
        "".join(rules),
        " & ".join(latex_escape(h) for h in bottom) + r" \\",
    ]


def to_latex(table: Table, compare: bool = False) -> str:
    """Render a ``table`` environment, one booktabs ``tabular`` per section (:data:`LATEX_PACKAGES`).

    The tables fit the column: ``\\small`` with narrower column gaps, compared columns under one name,
    and a section still wider than ``\\linewidth`` is scaled down to it (never up).
    """
    box = _LATEX_BOX
    lines = [
        f"% {LATEX_PACKAGES}",
        r"\begin{table}",
        r"\centering",
        rf"\caption{{{latex_escape(table.title)}}}",
        rf"\ifdefined{box}\else\newsavebox{{{box}}}\fi",
        r"\small\setlength{\tabcolsep}{4pt}",
    ]
    for section in table.sections:
        header = _header(section, compare)
        rows = _cells(section, compare, ("\x00", "\x01"))
        spec = "l" * len(section.labels) + "r" * (len(header) - len(section.labels))
        lines += [rf"\sbox{{{box}}}{{\begin{{tabular}}{{{spec}}}", r"\toprule"]
        if section.title:
            lines.append(rf"\multicolumn{{{len(header)}}}{{l}}{{\emph{{{latex_escape(section.title)}}}}} \\")
            lines.append(r"\midrule")
        lines += _latex_header(section, compare)
        lines.append(r"\midrule")
        for row in rows:
            cells = [latex_escape(c).replace("\x00", r"\textbf{").replace("\x01", "}") for c in row]
            lines.append(" & ".join(cells) + r" \\")
        lines += [
            r"\bottomrule",
            r"\end{tabular}}%",
            rf"\ifdim\wd{box}>\linewidth\resizebox{{\linewidth}}{{!}}{{\usebox{{{box}}}}}"
            rf"\else\usebox{{{box}}}\fi",
            r"\par\medskip",
        ]
    if table.footnotes:
        lines.append(r"\begin{flushleft}\footnotesize")
        lines += [latex_escape(note) + r"\\" for note in table.footnotes]
        lines.append(r"\end{flushleft}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


TABLE_CSV_COLUMNS = (
    "table",
    "section",
    "row",
    "column",
    "mean",
    "std",
    "n",
    "text",
    "bold",
    "smoke",
    "paper",
    "delta",
)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def to_csv(table: Table) -> str:
    """Render one line per cell (long format): numbers to four decimals, empty where missing."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TABLE_CSV_COLUMNS)
    for section in table.sections:
        for labels, values in section.rows:
            for column, value in zip(section.columns, values, strict=True):
                base = [table.name, section.title, " / ".join(labels), column]
                if isinstance(value, Stat):
                    s = value.summary
                    writer.writerow(
                        [
                            *base,
                            _number(s.mean if s else None),
                            _number(s.std if s else None),
                            s.n if s else 0,
                            value.ours(),
                            int(value.bold and not value.floor),
                            int(value.smoke),
                            _number(None if value.floor else value.paper),
                            value.delta(),
                        ]
                    )
                else:
                    writer.writerow([*base, "", "", "", value, 0, 0, "", ""])
    return buffer.getvalue()


def render(table: Table, fmt: str = "markdown", compare: bool = False) -> str:
    """Render a table as ``markdown``, ``latex`` or ``csv`` (CSV always carries paper and Δ)."""
    if fmt == "markdown":
        return to_markdown(table, compare)
    if fmt == "latex":
        return to_latex(table, compare)
    if fmt == "csv":
        return to_csv(table)
    raise ValueError(f"unknown table format {fmt!r}: use markdown, latex or csv")
