"""Figures on the docs site come from ``docs/*.json``, never typed by hand.

A page asks for one with a marker on a line of its own, ``<!-- figure: KIND FILE -->``, and the mkdocs
hook :func:`on_page_markdown` (``hooks:`` in ``mkdocs.yml``) replaces it with the rendered Markdown.
KIND is one of :data:`FIGURES`; FILE a JSON result under ``docs/`` (of ``streamdycoke eval`` unless said):

- ``headline``: uncompressed accuracy with its interval and per question kind, streams and questions.
- ``accuracy``: accuracy at the share of tokens read, per method (columns) and target budget (rows):
  ``acc @read% (Δ ±95% interval; seeds Δ range)``, the most accurate per row in bold.
- ``kinds``: accuracy per question kind, per method and budget.
- ``top1``: ImageNet top-1 agreement of the held state with the live frame (test streams / real clips).
- ``encoder``: ``streamdycoke bench encoder``'s table: differential against full encoding per threshold.
- ``node_loss``: every ``node_lost`` fault of ``streamdycoke bench soak`` runs (``{"runs": [...]}`` or one
  run): cameras on the node, when Ray declared it dead, when every camera stored again, and the run's
  frames lost, stored twice and questions hung.

Run as a script (``python tools/docs_figures.py KIND FILE``) it prints the figure.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

__all__ = ["FIGURES", "on_page_markdown", "render", "render_page"]

MARKER = re.compile(r"^<!-- figure: (\w+) ([\w./-]+) -->$", re.MULTILINE)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _by_target(result: dict) -> tuple[list[str], list[float], dict]:
    methods = list(dict.fromkeys(r["method"] for r in result["results"]))
    targets = sorted({r["target"] for r in result["results"]})
    cell = {(r["method"], r["target"]): r for r in result["results"]}
    return methods, targets, cell


def headline(result: dict) -> str:
    kinds = result.get("uncompressed_by_kind", {})
    by_kind = ", ".join(f"{k} {_pct(v)}" for k, v in kinds.items())
    seeds = result.get("seeds") or []
    other = "; ".join(f"seed {i}: {_pct(s['uncompressed_accuracy'])}" for i, s in enumerate(seeds) if i)
    return (f"Uncompressed **{_pct(result['uncompressed_accuracy'])} ±{_pct(result['uncompressed_ci95'])}** "
            f"({by_kind}{'; ' + other if other else ''}) on {result['streams']} test streams, "
            f"{result['questions']:,} questions.")


def accuracy(result: dict) -> str:
    methods, targets, cell = _by_target(result)
    rows = ["| target | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for t in targets:
        here = [cell.get((m, t)) for m in methods]
        best = max((r["accuracy"] for r in here if r is not None), default=None)
        out = []
        for r in here:
            if r is None:
                out.append("")
                continue
            acc = _pct(r["accuracy"])
            acc = f"**{acc}**" if r["accuracy"] == best else acc
            seeds = r.get("seed_delta_range")
            spread = f"; seeds {100 * seeds[0]:+.1f}..{100 * seeds[1]:+.1f}" if seeds else ""
            out.append(f"{acc} @{_pct(r['keep_ratio'])}% (Δ {100 * r['delta']:+.1f} ±{_pct(r['delta_ci95'])}{spread})")
        rows.append(f"| {100 * t:g}% | " + " | ".join(out) + " |")
    return "\n".join(rows)


def kinds(result: dict) -> str:
    methods, targets, cell = _by_target(result)
    names = list(result.get("uncompressed_by_kind", {}))
    unc = " / ".join(_pct(result["uncompressed_by_kind"][k]) for k in names)
    rows = [f"Per kind, {' / '.join(names)} (uncompressed {unc}):", "",
            "| target | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for t in targets:
        out = []
        for m in methods:
            r = cell.get((m, t))
            out.append(" / ".join(_pct(r["by_kind"][k]) for k in names) if r is not None else "")
        rows.append(f"| {100 * t:g}% | " + " | ".join(out) + " |")
    return "\n".join(rows)


def top1(result: dict) -> str:
    methods, targets, cell = _by_target(result)
    rows = ["| target | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for t in targets:
        out = []
        for m in methods:
            r = cell.get((m, t))
            if r is None or r.get("top1_agreement") is None:
                out.append("")
                continue
            real = r.get("real_top1_agreement")
            out.append(_pct(r["top1_agreement"]) + (f" / {_pct(real)}" if real is not None else ""))
        rows.append(f"| {100 * t:g}% | " + " | ".join(out) + " |")
    return "\n".join(rows)


def encoder(result: dict) -> str:
    """``streamdycoke bench encoder``: per threshold, over every clip, then per clip."""
    head = ("| threshold | speed-up | operations | token cosine | change error | recomputed | kept agreement | "
            "full ms | differential ms |")
    rows = [head, "|---|" + "---|" * 8]

    def line(name: str, r: dict) -> str:
        err = "" if r.get("change_error") is None else f"{r['change_error']:.3f}"
        return (f"| {name} | {r['speedup']:.2f}x | {r['ops_ratio']:.2f}x | {r['token_cosine']:.4f} | {err} | "
                f"{_pct(r['recomputed_share'])}% | {r['kept_agreement']:.3f} | {r['full_ms_per_frame']:.0f} | "
                f"{r['diff_ms_per_frame']:.0f} |")

    for r in result["results"]:
        name = f"**{r['threshold']:g}**" if r["threshold"] == result.get("default_threshold") else f"{r['threshold']:g}"
        rows.append(line(name + " (all clips)", r))
    for clip in result["clips"]:
        for th, r in clip["thresholds"].items():
            rows.append(line(f"{float(th):g}: {clip['clip']} ({clip['frames']} frames)", r))
    return "\n".join(rows)


def node_loss(result: dict) -> str:
    def sec(x: float | None) -> str:
        return "–" if x is None else f"{x:.1f} s"

    rows = ["| run | cameras | cameras on the lost node | declared dead after | every camera storing again after "
            "| frames published / lost / stored twice | questions answered / 503 / hung |",
            "|---|---|---|---|---|---|---|"]
    for i, run in enumerate(result.get("runs", [result]), 1):
        q = run["queries"]
        for f in (f for f in run["faults"] if f["kind"] == "node_lost"):
            rows.append(f"| {i} | {run['cameras']} | {len(f.get('cameras_on_node') or [])} | {sec(f.get('detected_s'))} "
                        f"| {sec(f.get('resume_s'))} | {run['frames_published']:,} / {run['frames_lost']} / "
                        f"{run['duplicates']} | {q['ok']} / {q['retryable']} / {q['hung']} |")
    return "\n".join(rows)


FIGURES = {"headline": headline, "accuracy": accuracy, "kinds": kinds, "top1": top1, "encoder": encoder,
           "node_loss": node_loss}


def render(kind: str, path: Path) -> str:
    """The Markdown of figure ``kind`` from the JSON result at ``path``."""
    if kind not in FIGURES:
        raise ValueError(f"unknown figure kind {kind!r}; known: {', '.join(FIGURES)}")
    return FIGURES[kind](json.loads(Path(path).read_text()))


def render_page(markdown: str, docs_dir: Path) -> str:
    """``markdown`` with every figure marker replaced by its figure (files relative to ``docs_dir``)."""
    return MARKER.sub(lambda m: render(m.group(1), Path(docs_dir) / m.group(2)), markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs hook
    return render_page(markdown, Path(config["docs_dir"]))


if __name__ == "__main__":
    print(render(sys.argv[1], Path(sys.argv[2])))
