"""Process-wide runtime settings (cadp.runtime)."""

import json
import subprocess
import sys

import pytest

from cadp.runtime import mmapped_bytes

PROBE = """
import json, torch
from cadp.runtime import configure_allocator, mmapped_bytes

def mmapped_by_a_40_mib_tensor():
    before = mmapped_bytes()
    tensor = torch.empty(10 * 2**20)  # 40 MiB of float32
    return mmapped_bytes() - before

default = mmapped_by_a_40_mib_tensor()
applied = configure_allocator()
print(json.dumps({"default": default, "applied": applied, "configured": mmapped_by_a_40_mib_tensor(),
                  "again": configure_allocator()}))
"""


@pytest.mark.skipif(mmapped_bytes() is None, reason="needs glibc >= 2.33 (mallinfo2)")
def test_configured_allocator_serves_large_tensors_from_the_heap():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert result["default"] >= 40 * 2**20  # glibc's default: a fresh mapping, page-faulted in on every use
    assert result["applied"] and result["again"]
    assert result["configured"] == 0
