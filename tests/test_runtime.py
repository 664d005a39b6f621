"""Process-wide runtime settings (cadp.runtime)."""

import json
import os
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


BLAS_PROBE = """
import json, os
import numpy, torch
from threadpoolctl import threadpool_info
from cadp.runtime import configure_blas_threads

def threads():
    return {info["filepath"]: (info["internal_api"], info["num_threads"]) for info in threadpool_info()}

torch_threads = torch.get_num_threads()
before = threads()
limited = configure_blas_threads()
import scipy.linalg  # its OpenBLAS loads after the call
print(json.dumps({"before": before, "limited": limited, "after": threads(), "env": os.environ["OPENBLAS_NUM_THREADS"],
                  "once": configure_blas_threads() is limited,
                  "torch": [torch_threads, torch.get_num_threads()]}))
"""


def test_blas_threads_limit_openblas_only():
    env = {key: value for key, value in os.environ.items() if not key.endswith("_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", BLAS_PROBE], capture_output=True, text=True, check=True, env=env)
    result = json.loads(done.stdout)
    openblas = [path for path, (api, _) in result["after"].items() if api == "openblas"]
    assert len(openblas) >= 2 and result["limited"]  # NumPy's, limited by the call, and SciPy's, loaded after
    assert all(result["after"][path][1] == 1 for path in openblas)
    assert any(result["before"][path][1] > 1 for path in result["limited"]) or os.cpu_count() == 1
    assert result["env"] == "1" and result["torch"][0] == result["torch"][1] and result["once"]
    assert all(threads == result["before"][path][1] for path, (api, threads) in result["after"].items()
               if api != "openblas" and path in result["before"])


def test_the_sidebar_names_the_cpu_threads_in_good_english(monkeypatch):
    import torch

    from cadp import ui

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert ui.device_in_use() == "CPU (1 thread)"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert ui.device_in_use() == "CPU (2 threads)"
