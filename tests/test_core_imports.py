import subprocess
import sys

import pytest

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'ray', 'kafka', 'redis', 'valkey', 'prometheus_client'}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import streamdycoke, streamdycoke.cli, streamdycoke.compress, streamdycoke.train, streamdycoke.bench
from streamdycoke import StreamCompressor, dycoke_ttm
print('ok')
"""


@pytest.mark.slow  # a fresh interpreter, in a subprocess
def test_core_imports_with_ray_kafka_and_redis_absent():
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_core_imports_nothing_of_the_pipeline():
    """``streamdycoke/`` never imports ``actors``, ``deployments`` or ``tools`` (the pipeline registers its commands
    through an entry point instead), checked on every import statement of every core file."""
    import ast
    from pathlib import Path

    core = Path(__file__).resolve().parents[1] / "streamdycoke"
    offenders = []
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(core.parent)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in ("actors", "deployments", "tools")]
    assert not offenders, offenders


def test_pipeline_commands_come_from_the_entry_point():
    from importlib.metadata import entry_points

    from streamdycoke.cli import ENTRY_POINT_GROUP, build_parser

    (ep,) = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "pipeline"]
    assert ep.value == "deployments.cli:register"
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"ingest", "demo", "run"} <= set(sub.choices)


def test_an_entry_point_whose_package_is_not_installed_is_left_out(monkeypatch):
    """The image ships the product without ``tools/``: its commands are left out, the rest still work."""
    from importlib.metadata import EntryPoint

    import streamdycoke.cli as cli

    real = list(cli.entry_points(group=cli.ENTRY_POINT_GROUP))
    absent = EntryPoint(name="absent", value="no_such_package_here.cli:register", group=cli.ENTRY_POINT_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [*real, absent])
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert {"ingest", "run", "demo"} <= set(sub.choices)
