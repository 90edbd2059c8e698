"""The import contracts of `.importlinter`: product layers import only downward (deployments -> actors ->
streamdycoke), `tools` sits above them all, and no package's modules import each other in a circle."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_imports_keep_the_layers_and_no_circle(monkeypatch, capsys):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    code = lint_imports(config_filename=str(ROOT / ".importlinter"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 kept, 0 broken" in out


def _code_lines(source: str) -> int:
    """Lines of ``source`` that are neither blank, comments nor docstrings."""
    import ast

    docs: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            docs.update(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(1 for i, line in enumerate(source.splitlines(), 1)
               if line.strip() and not line.strip().startswith("#") and i not in docs)


def test_a_module_over_300_lines_says_why_and_its_claim_holds():
    """Every module of the four packages over 300 lines says why in a ``Size:`` paragraph of its docstring;
    one that says its code is under 300 lines has under 300 lines of code."""
    import ast
    import re

    long, wrong = [], []
    for pkg in ("streamdycoke", "actors", "deployments", "tools"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            source = path.read_text()
            if len(source.splitlines()) <= 300:
                continue
            doc = " ".join((ast.get_docstring(ast.parse(source)) or "").split())
            size = re.search(r"Size: (.*)", doc)
            if size is None:
                long.append(str(path.relative_to(ROOT)))
            elif "code" in size[1] and "under 300" in size[1] and _code_lines(source) >= 300:
                wrong.append((str(path.relative_to(ROOT)), _code_lines(source)))
    assert not long, f"over 300 lines without a reason in their docstring: {long}"
    assert not wrong, f"say their code is under 300 lines, and it is not: {wrong}"
