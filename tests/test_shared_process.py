"""A hosted app's visitors share one process and its CPU: fits on uploads run one at a time."""

from __future__ import annotations

import threading
import time

from cadp import train, ui


def test_fits_of_several_sessions_run_one_at_a_time(monkeypatch):
    running, most = [0], [0]
    lock = threading.Lock()

    def slow_fit(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return object()

    monkeypatch.setattr(train, "fit_tabular", slow_fit)
    stores = threading.local()
    monkeypatch.setattr(ui, "fitted_models", lambda: stores.__dict__.setdefault("store", {}))
    monkeypatch.setattr(ui.st, "empty", lambda: type("Box", (), {"info": lambda self, text: None,
                                                                  "empty": lambda self: None})())
    results = []
    threads = [threading.Thread(target=lambda n=n: results.append(ui.fitted_model((n, (), (), 10), None)))
               for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 3 and most[0] == 1
