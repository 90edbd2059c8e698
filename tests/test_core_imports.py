import subprocess
import sys

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


def test_core_imports_with_ray_kafka_and_redis_absent():
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
