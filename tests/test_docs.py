"""The docs: the site builds with no warning, README links resolve, and figures come from docs/*.json."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from tools import docs_figures


@pytest.mark.slow  # mkdocs, in a process of its own
def test_the_docs_site_builds_strict(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    page = (tmp_path / "site" / "accuracy" / "index.html").read_text()
    assert "<!-- figure:" not in page and "<table>" in page


def test_readme_links_resolve_and_it_stays_short():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert links and all((ROOT / link).exists() for link in links), [x for x in links if not (ROOT / x).exists()]
    assert len(readme.splitlines()) <= 150


def test_the_readmes_node_loss_figure_is_the_soaks():
    """The README's recovery range after a lost node is the span of every ``node_lost`` fault in
    docs/soak_nodes.json (GitHub shows the README as written, so it cannot take a figure marker)."""
    runs = json.loads((ROOT / "docs" / "soak_nodes.json").read_text())["runs"]
    resumed = [f["resume_s"] for r in runs for f in r["faults"] if f["kind"] == "node_lost"]
    assert resumed
    assert f"storing again {min(resumed):.0f}–{max(resumed):.0f} s later" in (ROOT / "README.md").read_text()


def _result():
    row = lambda m, t, a, d: {"method": m, "target": t, "keep_ratio": t, "accuracy": a, "ci95": 0.01, "delta": d,
                              "delta_ci95": 0.005, "by_kind": {"present": a, "appeared": a - 0.1},
                              "top1_agreement": 0.5, "seed_delta_range": [d, d + 0.01]}
    return {"uncompressed_accuracy": 0.9, "uncompressed_ci95": 0.02, "streams": 3, "questions": 1200,
            "uncompressed_by_kind": {"present": 0.95, "appeared": 0.85},
            "results": [row("uniform", 0.1, 0.8, -0.1), row("stream", 0.1, 0.88, -0.02),
                        row("uniform", 0.5, 0.89, -0.01), row("stream", 0.5, 0.87, -0.03)]}


def test_figures_are_rendered_from_the_json_with_the_best_per_budget_in_bold(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(_result()))
    page = "before\n<!-- figure: accuracy r.json -->\n<!-- figure: headline r.json -->\nafter"
    md = docs_figures.render_page(page, tmp_path)
    lines = md.splitlines()
    assert lines[0] == "before" and lines[-1] == "after" and "<!--" not in md
    assert lines[1] == "| target | uniform | stream |"
    assert lines[3] == ("| 10% | 80.0 @10.0% (Δ -10.0 ±0.5; seeds -10.0..-9.0) | **88.0** @10.0% "
                        "(Δ -2.0 ±0.5; seeds -2.0..-1.0) |")
    assert lines[4].startswith("| 50% | **89.0** @50.0%")
    assert "Uncompressed **90.0 ±2.0** (present 95.0, appeared 85.0) on 3 test streams, 1,200 questions." in md
    kinds = docs_figures.render("kinds", tmp_path / "r.json")
    assert "| 10% | 80.0 / 70.0 | 88.0 / 78.0 |" in kinds
    with pytest.raises(ValueError, match="unknown figure kind"):
        docs_figures.render("nope", tmp_path / "r.json")


def test_the_node_loss_table_lists_every_node_lost_fault_of_every_run(tmp_path):
    run = {"cameras": 2, "frames_published": 1200, "frames_lost": 0, "duplicates": 0,
           "queries": {"ok": 40, "retryable": 1, "hung": 0},
           "faults": [{"kind": "redis_kill", "resume_s": 1.0},
                      {"kind": "node_lost", "cameras_on_node": ["a"], "detected_s": 12.94, "resume_s": 23.04}]}
    (tmp_path / "n.json").write_text(json.dumps({"runs": [run, {**run, "faults": run["faults"][1:]}]}))
    rows = docs_figures.render("node_loss", tmp_path / "n.json").splitlines()[2:]
    assert rows == ["| 1 | 2 | 1 | 12.9 s | 23.0 s | 1,200 / 0 / 0 | 40 / 1 / 0 |",
                    "| 2 | 2 | 1 | 12.9 s | 23.0 s | 1,200 / 0 / 0 | 40 / 1 / 0 |"]
