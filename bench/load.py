"""Cold model load: a fresh process imports the library, loads a bundled model and privatizes one record.

``python -m bench.load '{"model": "mnist-cinn"}'`` prints one JSON object: seconds of the imports
(torch and cadp), of ``cadp.hub.load_model`` (read, build, load weights) and of the first three privatize
calls of one record after it, without warm-up (the app runs one in a background thread when it loads a
model). ``bench.__main__`` adds the wall time of the whole process, interpreter start included. The warm
figures (``load_folder_s``, ``load_model_s``) come from bench.compute, in a process that loaded the model
before.
"""

from __future__ import annotations

import json
import sys
import time


def cold_load(model: str, threads: int | None = None) -> dict:
    start = time.perf_counter()
    import torch  # timed: the first import is most of a cold start

    from bench.compute import privatize_call
    from cadp import hub
    from cadp.runtime import configure_allocator

    configure_allocator()  # as the app and the CLIs run
    if threads:
        torch.set_num_threads(threads)
    imported = time.perf_counter()
    loaded = hub.load_model(model)
    load_done = time.perf_counter()
    call, _source = privatize_call(loaded, 1)  # inputs prepared outside the timing
    calls = []
    for _ in range(3):  # traced passes: traced on the first call, optimized by TorchScript on the second
        started = time.perf_counter()
        call()
        calls.append(time.perf_counter() - started)
    return {"import_s": imported - start, "load_model_s": load_done - imported,
            "first_privatize_s": calls[0], "second_privatize_s": calls[1], "third_privatize_s": calls[2],
            "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(cold_load(**json.loads((argv or sys.argv[1:])[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
