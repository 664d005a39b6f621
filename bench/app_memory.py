"""Memory the app keeps after visitors' table fits: ``python -m bench.app_memory [--sessions N] [--steps N]``.

Each session is the table page in Streamlit's AppTest, in this process (as visitors share the app's process): it
uploads a new synthetic 1,000 x 15 CSV (``bench.fit.synthetic_frame``, another seed each time, so no fit is served
from an earlier one), fits a model on it (the app's default 400 steps), privatizes the table and is dropped. After
each session the process's resident size after ``malloc_trim`` (``bench.fused_memory.resident_mib``) is printed
relative to the first session's: what the app keeps per fit once the session that made it is gone.
"""

from __future__ import annotations

import argparse
import gc
import warnings
from pathlib import Path

from bench.fit import APP_DEFAULT_STEPS, synthetic_frame
from bench.fused_memory import growth, resident_mib

ROOT = Path(__file__).resolve().parent.parent


def session(index: int, steps: int, rows: int) -> bool:
    """One visitor on the table page: upload, fit, privatize; whether a model was fitted in the session."""
    from streamlit.testing.v1 import AppTest

    page = AppTest.from_file(str(ROOT / "views" / "tabular.py"), default_timeout=300).run()
    page.radio(key="table_source").set_value("Upload a CSV").run()
    data = synthetic_frame(rows, seed=10 + index).to_csv(index=False).encode()
    page.file_uploader(key="table_upload").set_value((f"table-{index}.csv", data, "text/csv")).run()
    page.slider(key="table_steps").set_value(steps)
    page.button[0].click().run()  # the form's "Fit a model on this table"
    page.button(key="table_privatize").click().run()
    if page.exception:
        raise RuntimeError(f"the table page failed: {[e.value for e in page.exception]}")
    return bool(page.session_state["table_fitted_models"]) if "table_fitted_models" in page.session_state else False


def measure(sessions: int = 10, steps: int = APP_DEFAULT_STEPS, rows: int = 1000) -> dict:
    """Resident MiB after each session (dropped and collected), above the first session's, and whether each fitted."""
    held, fitted, first = [], [], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (AppTest's bare-mode warnings)
        for index in range(sessions):
            fitted.append(session(index, steps, rows))
            gc.collect()
            now = resident_mib()
            first = now if first is None else first
            held.append(now - first)
    return {"sessions": sessions, "steps": steps, "rows": rows, "held_mib": held, "fitted": fitted}


def report(result: dict) -> str:
    held = result["held_mib"]
    per_session, late = growth(held)
    return (f"{result['sessions']} table-page sessions in one process, each: upload a new {result['rows']}-row "
            f"synthetic CSV, fit ({result['steps']} steps), privatize, drop the session; fitted in every session: "
            f"{all(result['fitted'])}\n\nresident MiB after malloc_trim, above the first session's: "
            + ", ".join(f"{value:.1f}" for value in held)
            + f"\nper session after the first: {per_session:.1f} MiB; "
              f"over the second half: {late:.1f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.app_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--steps", type=int, default=APP_DEFAULT_STEPS)
    args = parser.parse_args(argv)
    print(report(measure(args.sessions, args.steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
