"""Batch privatization of a folder, a ZIP or a CSV: the CLI behind ``python -m cadp.privatize``.

    python -m cadp.privatize --model weights/mnist-cinn --mechanism laplace --epsilon 1 INPUT OUTPUT

INPUT is a folder of images (labels from class sub-folders named like the
model's classes, or from a labels CSV with columns file,label), a ZIP of such a
folder, or a CSV of rows for a tabular model. OUTPUT is a new folder that gets
the privatized PNGs and labels.csv (each PNG's released label), or
privatized.csv, plus manifest.csv with one row per input file or row, and
guarantee.txt. Work is streamed in batches: files, ZIP members
and CSV chunks are read one batch at a time. An unusable file is listed in the
manifest with its error and the run goes on.
"""

# ruff: noqa: E402 (the command line's Ctrl-C handler comes before the libraries it loads)
from __future__ import annotations

if __name__ == "__main__":  # the command line: Ctrl-C while its libraries load is noted (cadp.startup), never lost
    from cadp.startup import note_stop_signals

    note_stop_signals()

import argparse
import array
import bisect
import codecs
import collections
import csv
import errno
import hashlib
import io
import math
import os
import random
import re
import signal
import sys
import threading
import time
import unicodedata
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cadp.compare import counted, plural, released_description
from cadp.data import (
    LOOP,
    NOT_AN_IMAGE,
    case_hint,
    category_texts,
    folder_files,
    image_folder_name,
    numeric_cells,
    read_image_file,
    text_category_columns,
)
from cadp.errors import CadpError, InputError
from cadp.hub import write_text_whole
from cadp.mechanisms import (
    DEFAULT_TEMPERATURE,
    MECHANISMS,
    PAPER_LABEL,
    ConditionHandling,
    Mechanism,
    exact,
    make_mechanism,
    new_generator,
    seed_option,
    total_epsilon,
    written_up,
)
from cadp.models import ClassIndices
from cadp.privatize import NOT_PRIVATE_SEED, privatize, release_guarantee, repeated_cost_note
from cadp.runtime import configure_allocator
from cadp.startup import (
    STOPPED_STARTING,
    STOPPING_WHILE_STARTING,
    StartupStop,
    exit_while_starting,
    stopped_while_starting,
)
from cadp.train import (
    held_out_caution,
    row_record_keys,
    table_rows_known,
    training_name_caution,
    training_rows_caution,
)
from cadp.uploads import (
    CSV_MISSING,
    DELIMITER_NAMES,
    ENCODING_NAMES,
    FIRST_FRAME,
    FORMULA_PREFIXES,
    INVERT_CHOICES,
    INVERTED_BACK,
    INVERTED_NOT_BACK,
    ONE_DOT,
    UNCLOSED_QUOTE,
    cell_number,
    csv_format_words,
    decimal_comma_columns,
    declared_encoding,
    decode_text,
    default_invert,
    escape_cell,
    escaped_cells_note,
    escaped_csv,
    format_change_reason,
    image_record_key,
    in_input_polarity,
    line_feeds,
    png_bytes,
    release_decimal,
    release_encoding,
    rows_against_header,
    separator_line,
    several_frames_note,
    sniff_delimiter,
    three_digit_commas_note,
    to_model_input,
    unclosed_quote,
    written_back,
)

DEFAULT_BATCH = 64
DEFAULT_TABLE_BATCH = 1024
MANIFEST_NAME = "manifest.csv"
PRIVATIZED_CSV_NAME = "privatized.csv"
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")  # a table of rows, whatever its separator
GUARANTEE_NAME = "guarantee.txt"
CAUTIONS_NAME = "cautions.txt"  # what this run's inputs made worth saying to whoever ran it: not part of the release
LABELS_NAME = "labels.csv"
MANIFEST_COLUMNS = ["file", "condition", "released_condition", "mechanism", "epsilon", "delta",
                    "releases_of_record", "epsilon_record_total", "delta_record_total", "seed",
                    "status", "error", "output", "preprocessing"]
EXIT_OK, EXIT_NOTHING_PRIVATIZED, EXIT_USAGE, EXIT_WRITE_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = ("exit codes: 0 at least one input was privatized; 1 nothing was privatized (no usable "
              "input, or stopped before the first release); 2 unusable arguments or input, nothing released; 3 "
              "stopped by an error of the file system (disk full, file too large) after privatizing some inputs, a "
              f"partial run, or a run whose {MANIFEST_NAME} could not be completed; "
              "130 stopped by Ctrl-C (SIGINT), 128 + N by signal N (143 SIGTERM, 129 SIGHUP), a partial run")
# writing the output failed for the whole run, not for one file (a name too long is one file's error)
RUN_WRITE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EFBIG", "EDQUOT", "EIO", "EROFS")
                             if hasattr(errno, name))


class UsageError(CadpError):
    """The arguments cannot be used (exit code 2)."""


# --------------------------------------------------------------------------- stopping a run

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal (Ctrl-C, ``kill``, ``timeout``, a closed terminal): handled as Ctrl-C is."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StopRequests:
    """SIGINT, SIGTERM and SIGHUP turned into one clean stop at the next batch boundary.

    A stop that landed anywhere (between writing a batch's files and listing them in the manifest) would leave
    an output that disagrees with its manifest: the handler only notes the signal, and the batch loops call
    ``check`` where files and manifest agree. Signals after the first are ignored, so the stop's cleanup (the
    manifest's totals, the terms' "Partial run" line, the cautions) completes; SIGKILL still ends a run at once."""

    def __init__(self):
        self.signum: int | None = None
        self.raised = False
        self.started = False  # whether the run has begun writing (before: a stop ends it with nothing written)
        self.may_exit_at_once = True  # nothing written yet: a second signal ends the process at once
        self.exiting = False  # the command line (its process ends after main): only then may a signal end it
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        """Handle the stop signals in this process (main thread only; an ignored signal stays ignored: nohup),
        before anything is written: a signal noted while the command line started (``cadp.startup``) counts."""
        self.signum, self.raised, self.started, self.may_exit_at_once = None, False, False, True
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            current = signal.getsignal(signum)
            if current != signal.SIG_IGN:
                self.previous[signum] = signal.signal(signum, self._handle)
                if isinstance(current, StartupStop) and current.signum is not None and self.signum is None:
                    self.signum = current.signum

    def restore(self, ignore: bool = False) -> None:
        """Put the previous handlers back, or (``ignore``: the command line, which exits next) ignore the signals, so
        that one more Ctrl-C while Python shuts down prints no traceback."""
        for signum, handler in self.previous.items():
            signal.signal(signum, signal.SIG_IGN if ignore else handler)
        self.previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            if self.exiting and self.may_exit_at_once and not self.started:  # a second stop while loading: a load that
                exit_while_starting(signum)  # hangs can be left, and nothing is written yet
            return
        self.signum = signum
        if not self.started:
            _say(STOPPING_WHILE_STARTING)
            return
        _say(f"stopping ({signal.Signals(signum).name}): finishing the current batch so that the output agrees with "
             f"{MANIFEST_NAME}")

    def stopped_starting(self) -> bool:
        """Whether a stop was asked for before the run began writing (the run then ends, nothing written)."""
        return self.signum is not None and not self.started

    def check(self) -> None:
        """Raise RunInterrupted once a stop was asked for (call it where the output and the manifest agree)."""
        if self.signum is not None and not self.raised:
            self.raised = True
            raise RunInterrupted(self.signum)


_stop_requests = StopRequests()  # signal handlers belong to the process: one instance, installed by main()


# --------------------------------------------------------------------------- settings and manifest

@dataclass
class RunSettings:
    """What every batch of one run shares: one mechanism and one generator (never one noise draw twice)."""

    mechanism: Mechanism
    generator: torch.Generator
    seed: int | None
    batch_size: int
    invert: str
    handlings: dict[str, ConditionHandling] = field(default_factory=dict)
    neutral_names: bool = False  # numbered files in folders of the released label, no input path copied
    first_number: int = 1  # the first numbered file's number (after an earlier run's: --skip-privatized)
    model_line: str = ""  # which model made the releases, as the terms say it (LoadedModel.terms_line)

    @property
    def label_kept(self) -> bool:
        return self.handlings.get("label", ConditionHandling()).handling == "kept"

    @property
    def names_copied(self) -> bool:
        """Whether output paths copy input names (only with a kept label and without --neutral-names):
        names and folders often carry the label, so a randomized or resampled one must not keep them."""
        return self.label_kept and not self.neutral_names

    @property
    def epsilon(self) -> str:
        """Total epsilon of one release (basic composition), as the manifest writes it."""
        return self.epsilon_of(1)

    def epsilon_of(self, releases: int) -> str:
        """Total epsilon of ``releases`` releases of one record (basic composition: each adds its epsilon), as the
        manifest writes it: one number for laplace and gaussian; metric's per-unit epsilon and the conditions'
        epsilon named apart (two units); paper's nominal epsilon marked as such; with a fixed seed, marked not
        private (the cost column is read alone)."""
        conditions = releases * sum(h.cost for h in self.handlings.values())
        latent = releases * self.mechanism.epsilon
        if self.mechanism.name == "metric":
            # the two units named apart, as the ledger and the terms write them ("1 ... + 2" read as 3 per unit)
            text = f"{_total(latent)} per unit of latent L1 distance" + (
                f" + epsilon = {_total(conditions)} for conditions" if conditions else "")
        elif not self.mechanism.formal:
            text = f"{_total(latent)} nominal (paper: {PAPER_LABEL})" + (
                f" + epsilon = {_total(conditions)} for conditions" if conditions else "")
        else:
            text = _total(releases * total_epsilon(self.mechanism, self.handlings))
        return text if self.seed is None else f"{text} ({NOT_PRIVATE_SEED})"

    def delta_of(self, releases: int) -> str:
        """Total delta of ``releases`` releases of one record (gaussian; deltas add up too), or "" without one; a total
        of 1 or more is no guarantee at all, and said so."""
        delta = getattr(self.mechanism, "delta", None)
        if delta is None:
            return ""
        total = releases * delta
        return written_up(total, 2) if total < 1 else f">= 1: no guarantee ({releases} x {delta:g})"

    @property
    def noise_source(self) -> str:
        return "OS entropy" if self.seed is None else f"{self.seed} ({NOT_PRIVATE_SEED})"

    @property
    def mechanism_label(self) -> str:
        name = self.mechanism.name
        if name == "paper":
            return f"paper ({PAPER_LABEL})"
        if name == "metric":
            return "metric (epsilon per unit of L1 latent distance)"
        return name


def _total(epsilon: float) -> str:
    """An epsilon total as written: a sum too large for a float (1e308 twice) is said as such, not as 'inf'."""
    return written_up(epsilon) if math.isfinite(epsilon) else f"more than {sys.float_info.max:.2g} (too large to write)"


# a CSV's released rows are written at the run's end: until then their manifest rows say PENDING; the end says
# "privatized" (with the output row) or NOT_WRITTEN (the run stopped, e.g. on a full disk, before writing the row)
PENDING = "pending"
NOT_WRITTEN = "not written"
SKIPPED = "skipped"  # an input an earlier run privatized (--skip-privatized): not released again
NOT_WRITTEN_ERROR = f"the run stopped before writing this row to {PRIVATIZED_CSV_NAME}: not released"


class Manifest:
    """manifest.csv, written row by row (flushed per batch); every cell formula-escaped.

    A record can come again later in the input, so each released record's total cost (how often this run released
    it, times one release's epsilon and delta) is known only at the end: ``close`` fills those columns in."""

    def __init__(self, path: Path, settings: RunSettings):
        self.path = path
        self.handle = path.open("w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.handle)
        self.writer.writerow(MANIFEST_COLUMNS)
        self.settings = settings
        self.privatized = 0
        self.failed = 0
        self.skipped = 0  # inputs an earlier run privatized (--skip-privatized)
        self.reasons: collections.Counter = collections.Counter()  # why inputs were unusable, for the summary
        # the released records, compact for a CSV of millions of rows: each one's manifest row (from 0) and a 64-bit
        # digest of its key (ledger key: the same record has the same); counted at the end (``_release_counts``)
        self._released_at = array.array("q")
        self._digests = array.array("Q")
        # a CSV's released rows are written in an order drawn at the end: each manifest row's released row (-1:
        # none), counted from 0 in the input's order, and where the run wrote it (``set_output_rows``), filled in
        # by close() as the totals are
        self.released_rows = array.array("q")
        self._privatized_rows = array.array("b")  # per manifest row: 1 a privatized input, 2 a skipped one, else 0
        self._output_rows: np.ndarray | None = None
        self._output_file = ""
        self.write_error: OSError | None = None  # why the file could not be completed (disk full), if it could not
        self.incomplete: dict[str, OSError] = {}  # the run's other files that could not be completed, and why
        self.first_frames: list[str] = []  # released inputs of several frames (a series, a stack): the first only

    def row(self, file: str, *, status: str, condition: str = "", released: str = "", error: str = "",
            output: str = "", preprocessing: str = "", batch: int | None = None, record: str | None = None,
            released_row: int | None = None) -> None:
        """One input's row; ``record`` is the released record's key (ledger key: the same record has the same);
        ``released_row``: a CSV's released row (from 0, in the input's order), whose place in the output
        ``set_output_rows`` gives at the end."""
        mechanism = self.settings.mechanism
        delta = getattr(mechanism, "delta", None)
        label = self.settings.mechanism_label
        if mechanism.name == "paper" and batch is not None:  # its output depends on the batch: record it
            label = f"{label[:-1]}; batch of {batch})"
        pending = status == "privatized" and released_row is not None  # written at the run's end: close() says
        values = [file, condition, released, label, self.settings.epsilon,
                  "" if delta is None else exact(delta), "", "", "",  # the record's total: filled in by close()
                  self.settings.noise_source, PENDING if pending else status, error, output, preprocessing]
        if status == SKIPPED:  # released by an earlier run, with its own settings: none of this run's stated
            values[3:10] = [""] * 7
        try:
            self.writer.writerow([escape_cell(readable(str(value))) for value in values])
        except OSError as error:  # the file may hold part of this row: close() leaves it as it is
            self.write_error = self.write_error or error
            raise
        if status == "privatized" and record is not None:
            self._released_at.append(len(self.released_rows))
            self._digests.append(int.from_bytes(hashlib.blake2b(record.encode(), digest_size=8).digest(), "little"))
        self.released_rows.append(-1 if released_row is None or status != "privatized" else released_row)
        self._privatized_rows.append(1 if status == "privatized" else 2 if status == SKIPPED else 0)
        if status == "privatized":
            self.privatized += 1
            if preprocessing.startswith(FIRST_FRAME) or f"; {FIRST_FRAME}" in preprocessing:
                self.first_frames.append(readable(str(file)))
        elif status == SKIPPED:
            self.skipped += 1
        else:
            self.failed += 1
            self.reasons[error] += 1

    def error(self, file: str, error: Exception | str, **cells) -> None:
        self.row(file, status="error", error=str(error), **cells)

    def flush(self) -> None:
        try:
            self.handle.flush()
        except OSError as error:
            self.write_error = self.write_error or error
            raise

    def keep_complete_rows(self) -> int:
        """After a write of the manifest failed (a full disk, a file too large): cut manifest.csv back to its
        complete rows, forget the rows it could not hold, and return how many rows it keeps. Only the outputs
        those rows list may stay (a CSV's released rows written, an image run's files kept), or an output would be
        in no manifest row and released again by a rerun of the inputs the manifest does not list."""
        try:
            self.handle.buffer.raw.close()  # what the buffer still holds is dropped: it would follow a cut row
        except (OSError, AttributeError, ValueError):
            pass
        self.handle = open(os.devnull, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self.writer = csv.writer(self.handle)
        try:
            data = self.path.read_bytes()
            size, rows = _complete_csv_rows(data, len(MANIFEST_COLUMNS))
            if size < len(data):
                os.truncate(self.path, size)
        except OSError:
            rows = 0
        rows = min(rows, len(self.released_rows))
        self.released_rows = self.released_rows[:rows]
        self._privatized_rows = self._privatized_rows[:rows]
        kept = bisect.bisect_left(self._released_at, rows)  # (manifest rows, in the order they were written)
        self._released_at, self._digests = self._released_at[:kept], self._digests[:kept]
        self.privatized = self._privatized_rows.count(1)
        self.skipped = self._privatized_rows.count(2)
        self.failed = rows - self.privatized - self.skipped
        return rows

    def listed_released_rows(self) -> int:
        """How many of a CSV's released rows (counted from 0 in the input's order) the manifest's rows list."""
        return sum(1 for released in self.released_rows if released >= 0)

    def set_output_rows(self, file: str, rows: np.ndarray) -> None:
        """Where each released row was written: ``rows[k]`` is the row number (from 1) of released row k in
        ``file``, 0 while it is not written; close() writes it in the output column of the manifest row that
        released it, and its status: "privatized", or ``NOT_WRITTEN`` for 0 (or without this call)."""
        self._output_file, self._output_rows = file, rows

    def _written(self) -> np.ndarray:
        """Per manifest row, whether its released row was written (True for rows of other kinds)."""
        released = np.frombuffer(self.released_rows, dtype=np.int64) if self.released_rows else np.zeros(0, np.int64)
        written = released < 0
        if self._output_rows is not None:
            inside = (released >= 0) & (released < len(self._output_rows))
            written[inside] = self._output_rows[released[inside]] > 0
        return written

    @property
    def released(self) -> int:
        """Inputs released: privatized and written (a CSV's rows are written at the run's end)."""
        return self.privatized - self.not_written

    @property
    def not_written(self) -> int:
        """A CSV's released rows that the run has not written (all of them until it writes them at its end)."""
        return int((~self._written()).sum())

    def repeated(self) -> collections.Counter:
        """{k: how many records this run released k > 1 times}."""
        if not self._digests:
            return collections.Counter()
        _, counts = np.unique(np.frombuffer(self._digests, dtype=np.uint64), return_counts=True)
        return collections.Counter(int(count) for count in counts[counts > 1])

    def _release_counts(self) -> np.ndarray:
        """Per manifest row, how often this run released its record (0: the row released nothing; a CSV's row that
        was not written is not a release)."""
        per_row = np.zeros(len(self.released_rows), dtype=np.int64)
        if self._digests:
            at = np.frombuffer(self._released_at, dtype=np.int64)
            kept = self._written()[at]
            _, inverse, counts = np.unique(np.frombuffer(self._digests, dtype=np.uint64)[kept], return_inverse=True,
                                           return_counts=True)
            per_row[at[kept]] = counts[inverse]
        return per_row

    def close(self) -> None:
        """Close the file and fill in each released record's total cost (once; a second call does nothing)."""
        if self.handle.closed:
            return
        try:
            self.handle.close()  # closed even when its last write fails (disk full): said, not raised again
        except OSError as error:
            self.write_error = self.write_error or error
        if not self.privatized or self.write_error:  # a write failed: the file's rows may not be the rows kept here
            return
        first = MANIFEST_COLUMNS.index("releases_of_record")
        columns = {name: MANIFEST_COLUMNS.index(name) for name in ("status", "error", "output")}
        rows_out = self._output_rows
        written = self._written().tolist()
        completed = self.path.with_name(self.path.name + ".part")
        try:
            with self.path.open(newline="", encoding="utf-8") as source, \
                    completed.open("w", newline="", encoding="utf-8") as target:
                reader, writer = csv.reader(source), csv.writer(target)
                writer.writerow(next(reader))
                for releases, released_row, was_written, row in zip(self._release_counts().tolist(),
                                                                    self.released_rows, written, reader, strict=True):
                    if releases:
                        row[first:first + 3] = [escape_cell(value) for value in (
                            str(releases), self.settings.epsilon_of(releases), self.settings.delta_of(releases))]
                    if released_row >= 0 and was_written:
                        row[columns["status"]] = "privatized"
                        row[columns["output"]] = escape_cell(f"{self._output_file} row {rows_out[released_row]}")
                    elif released_row >= 0:
                        row[columns["status"]], row[columns["error"]] = NOT_WRITTEN, NOT_WRITTEN_ERROR
                    writer.writerow(row)
            os.replace(completed, self.path)
        except OSError as error:  # the manifest stays as written, without the totals
            self.write_error = error
            try:
                completed.unlink(missing_ok=True)
            except OSError:
                pass


def _complete_csv_rows(data: bytes, fields: int) -> tuple[int, int]:
    """(bytes, data rows) of the complete rows at the start of a CSV cut anywhere (a row of ``fields`` cells ended by
    its line break; the header counts in the bytes, not in the rows)."""
    text = data.decode("utf-8", errors="ignore")  # (only a cut character at the very end is not whole)
    consumed, quotes = 0, 0

    def lines():
        nonlocal consumed, quotes
        for line in io.StringIO(text, newline=""):
            consumed += len(line)
            quotes += line.count('"')
            yield line

    complete_chars, rows = 0, -1
    try:
        for row in csv.reader(lines()):
            # an odd count of quotes: the text ends inside a quoted cell (the reader gives it as a row at the end);
            # csv.writer ends a row with \r\n: a row cut after its \r is cut too
            if len(row) != fields or text[consumed - 1] != "\n" or quotes % 2:
                break
            complete_chars, rows = consumed, rows + 1
    except csv.Error:  # a quoted cell cut before its closing quote
        pass
    return len(text[:complete_chars].encode("utf-8")), max(rows, 0)


# --------------------------------------------------------------------------- labels

def _composed(name: str) -> str:
    """A class name without leading and trailing spaces, in Unicode's composed form (NFC)."""
    return unicodedata.normalize("NFC", name.strip())


def _normalize(name: str) -> str:
    """Class names compared without case, spaces or punctuation: 'T-shirt/top' matches folder 't_shirt_top'; in
    one Unicode form (macOS writes folder names decomposed: 'ü' as 'u' and a combining diaeresis)."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    # digits on both sides of punctuation or spaces stay apart ('1.0' or '1_0' is not the class '10'): a NUL
    # between them, which no name of a file or folder holds; letters and digits of every script are kept
    # ('Группа 1' is not '1')
    folded = re.sub(r"(?<=\d)[\W_]+(?=\d)", "\x00", folded)
    return re.sub(r"[^\w\x00]|_", "", folded)


# characters no folder name may hold on some system (a "/" would nest T-shirt/top), and Windows' device names
_UNSAFE_IN_FOLDER_NAMES = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_WINDOWS_DEVICE_NAMES = {"con", "prn", "aux", "nul", *(f"com{n}" for n in range(1, 10)),
                         *(f"lpt{n}" for n in range(1, 10))}


def class_folder_name(class_name: str) -> str:
    """The folder a released class's images are written to: the class name with each character that cannot be in a
    folder name replaced by "_" ('T-shirt/top' -> 'T-shirt_top'), which ``LabelResolver`` reads back as the class."""
    folder = _UNSAFE_IN_FOLDER_NAMES.sub("_", str(class_name)).strip(" .")  # Windows drops trailing dots and spaces
    if folder.split(".")[0].strip().casefold() in _WINDOWS_DEVICE_NAMES:  # 'aux' and 'aux.x' alike
        folder = "_" + folder
    return folder or "_"


class LabelResolver:
    """Find each image's class: from the labels CSV first, else from the folders in its path named like a class.

    A file the labels CSV does not list by its path takes the label of a row naming it by a shorter or longer path
    with the same end ('x.png' for 'set/x.png'), where only one row and, with ``input_names`` (the inputs' names),
    only one input have its bare name: a kept label is released exactly, never another file's. The rows' paths start
    at ``root`` (a ZIP's single top folder, where its labels.csv is; "": the top of the input), as the files' are
    compared with them: a ZIP of a folder is labelled as the folder is."""

    def __init__(self, class_names: list[str], labels: dict[str, str] | None = None,
                 input_names: list[str] | None = None, root: str = ""):
        self.class_names = list(class_names)
        self.exact: dict[str, int] = {}
        # a name without leading and trailing spaces, in Unicode's composed form: macOS writes folder names
        # decomposed ('ü' as 'u' and a combining diaeresis); several classes can share one ('Café' both ways)
        self.composed: dict[str, list[int]] = {}
        self.normalized: dict[str, list[int]] = {}  # several classes can share one ('-1' and '+1': '1')
        for index, name in enumerate(class_names):
            self.exact.setdefault(name, index)
            self.composed.setdefault(_composed(name), []).append(index)
            if _normalize(name):
                self.normalized.setdefault(_normalize(name), []).append(index)
        # file names in one Unicode form: macOS writes 'café' decomposed, a spreadsheet's cell holds it composed
        self.labels = {_label_path(k): v for k, v in (labels or {}).items()}
        self.root = _label_path(root)
        basenames: dict[str, list[str]] = {}
        for key in self.labels:
            basenames.setdefault(PurePosixPath(key).name, []).append(key)
        self.by_basename = {name: keys[0] for name, keys in basenames.items() if len(keys) == 1}
        self.input_names = None if input_names is None else [_label_path(name) for name in input_names]
        if self.input_names is not None:  # a bare name two inputs have names neither of them
            counts = collections.Counter(PurePosixPath(name).name for name in self.input_names)
            self.by_basename = {name: key for name, key in self.by_basename.items() if counts[name] == 1}

    def class_index(self, value: str) -> int | None:
        """The class a labels-CSV cell names: a class name (any case or punctuation) or a class index. Where some
        class names are numbers not at their own index (class folders 1, 2, 10 give "1", "10", "2"), a number is a
        name only: read as an index where it is none, "0" would be the class "1" beside a cell "1" naming it too."""
        index = self.folder_class_index(value)
        value = str(value).strip()
        if index is None and value.isdecimal() and int(value) < len(self.class_names):
            if self.names_are_numbers:
                raise InputError(f"{value!r} is not a class name, and this model's class names are numbers that are "
                                 f"not their own index ({self._classes()}): a number is read as a name, never as an "
                                 "index (a file of indices would have the others read as names); write the class name")
            if int(value) in self.numbers_in_names:
                raise InputError(f"{value!r} is not a class name, and a class name holds that number, in digits "
                                 f"or Roman numerals ({self._classes()}): a number is read as a class index only "
                                 "where no class name holds it; write the class name")
            return int(value)
        return index

    @property
    def names_are_indices(self) -> bool:
        return all(name.strip() == str(index) for index, name in enumerate(self.class_names))  # MNIST's "0".."9"

    @property
    def names_are_numbers(self) -> bool:
        """Whether some class name is a number ('1', '+1', '1.0': class folders 1, 2, 10) and the names are not the
        indices themselves: then no number is an index (cells 0, 1, 2 were read as index 0, then as names)."""
        return not self.names_are_indices and any(
            re.fullmatch(r"\s*[+-]?\d+(?:[.,]\d+)?\s*", unicodedata.normalize("NFKC", name))
            for name in self.class_names)

    @property
    def numbers_in_names(self) -> set[int]:
        """The numbers the class names hold ('class 1', 'Группа 2': a cell "1" could mean two classes), none where
        the names are the indices themselves."""
        if self.names_are_indices:
            return set()
        numbers = set()
        for name in self.class_names:
            text = unicodedata.normalize("NFKC", name)  # (also turns the numeral signs Ⅲ, ⅳ into letters)
            numbers.update(int(group) for group in re.findall(r"\d+", text))
            # Roman numerals after a word ('Stage II', 'Grade IV', 'Type I'): a cell "2" could be that class, or the
            # class at index 2; a name's first word is a word ('I', 'V', 'X-ray', 'CD': letters and acronyms)
            numbers.update(roman_value(word) for word in re.findall(r"[A-Za-z]+", text)[1:] if roman_value(word))
        return numbers

    def folder_class_index(self, folder: str) -> int | None:
        """The class a folder is named after, by name only: numbered folders (patients/1, normal/2) are not
        class indices (a model whose class names are digits, as MNIST's, still matches folders 0..9 by name)."""
        value = str(folder)
        if value in self.exact:  # an exact name first: '-1' is the class '-1' even where '+1' is a class too
            return self.exact[value]
        matches = self.composed.get(_composed(value), [])
        if len(matches) > 1:  # a kept label is released exactly: never pick one of two classes
            names = " and ".join(ascii(self.class_names[index]) for index in matches)
            raise InputError(f"{ascii(value)} could be the class {names}, whose names differ only in Unicode "
                             "normalization (an accent composed or decomposed) or in leading or trailing spaces; "
                             "write the class name exactly")
        if matches:
            return matches[0]
        value = value.strip()
        matches = self.normalized.get(_normalize(value), []) if _normalize(value) else []
        if len(matches) > 1:  # a kept label is released exactly: never pick one of two classes
            names = " and ".join(repr(self.class_names[index]) for index in matches)
            raise InputError(f"{value!r} could be the class {names} (case, spaces and punctuation aside); write the "
                             "class name exactly")
        return matches[0] if matches else None

    def labels_key(self, name: str) -> str | None:
        """The labels CSV's row (its file cell, cleaned, in Unicode's composed form) for the input ``name``, or None."""
        key = _label_path(name)
        if self.root:  # a file outside the rows' folder is named by none of them
            if not key.startswith(self.root + "/"):
                return None
            key = key[len(self.root) + 1:]
        if key in self.labels:
            return key
        other = self.by_basename.get(PurePosixPath(key).name)
        if other is None:
            return None
        short, long = sorted((PurePosixPath(key).parts, PurePosixPath(other).parts), key=len)
        return other if long[len(long) - len(short):] == short else None  # 'x.png' for 'set/x.png', not 'a/x.png'

    def unused_labels(self) -> list[str]:
        """The labels CSV's rows that name no input (known with ``input_names``), in its order."""
        if self.input_names is None:
            return []
        used = {self.labels_key(name) for name in self.input_names}
        return [key for key in self.labels if key not in used]

    def unlisted_inputs(self) -> list[str]:
        """The inputs a labels CSV does not list (known with ``input_names``): they take their folders' labels."""
        if not self.labels or self.input_names is None:
            return []
        return [name for name in self.input_names if self.labels_key(_clean_path(name)) is None]

    def inputs_of_bare_name(self, row: str) -> list[str]:
        """The inputs whose file name is the labels CSV's bare ``row`` ('x.png'), where several are (none is its
        file then: which one the row meant cannot be told), else []."""
        if self.input_names is None or "/" in row:
            return []
        named = [name for name in self.input_names if PurePosixPath(name).name == row
                 and (not self.root or name.startswith(self.root + "/"))]
        return named if len(named) > 1 else []

    def resolve(self, name: str) -> int:
        key = _clean_path(name)
        if self.labels:
            row = self.labels_key(key)
            listed = None if row is None else self.labels[row]
            if listed is not None:
                index = self.class_index(listed)
                if index is None:
                    raise InputError(f"label {listed!r} in the labels CSV is not one of the model's classes "
                                     f"({self._classes()})")
                return index
        named = {}  # class index -> the first folder in the path named after it
        for folder in PurePosixPath(key).parts[:-1]:
            index = self.folder_class_index(folder)
            if index is not None:
                named.setdefault(index, folder)
        if len(named) > 1:  # a kept label is released exactly: never guess which folder is right
            folders = " and ".join(f"{folder!r} ({self.class_names[index]})" for index, folder in named.items())
            raise InputError(f"two labels: the folders {folders} in its path name different classes; move the file "
                             "or list it in a labels CSV")
        if named:
            return next(iter(named))
        raise InputError(f"no label: the file is not in a sub-folder named like a class ({self._classes()}) "
                         "and not listed in a labels CSV")

    def _classes(self) -> str:
        shown = ", ".join(self.class_names[:10])
        return shown + (", ..." if len(self.class_names) > 10 else "")


ROMAN = re.compile(r"M{0,3}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})")
ROMAN_VALUES = {"M": 1000, "D": 500, "C": 100, "L": 50, "X": 10, "V": 5, "I": 1}


def roman_value(word: str) -> int | None:
    """The number a word in capitals writes as a Roman numeral ('IV' -> 4), else None (lower case, as in 'mild'
    or 'civil', is a word: only 'I'-'MMMCMXCIX' in capitals count, and the numeral signs NFKC turns into them)."""
    if not word or not ROMAN.fullmatch(word):
        return None
    values = [ROMAN_VALUES[letter] for letter in word]
    return sum(-value if later > value else value for value, later in zip(values, values[1:] + [0]))


def readable(text: str) -> str:
    """``text`` as valid UTF-8 that still tells names apart: the bytes of a file name that is not UTF-8 (b'M\\xfcller',
    read as 'M\\udcfc...' by Python) written as escapes ('M\\\\xfcller'), as Python shows them."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _clean_path(name: str) -> str:
    parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def _label_path(name: str) -> str:
    """``_clean_path`` in Unicode's composed form (NFC), as file names are matched to a labels CSV's rows."""
    return unicodedata.normalize("NFC", _clean_path(name))


def read_labels_csv(data: bytes) -> dict[str, str]:
    """{file: label} from a CSV with columns 'file' and 'label' (any case, any sniffed delimiter)."""
    text, _ = decode_text(data)
    if not text.strip():
        raise InputError("the labels CSV is empty")
    rows = csv.reader(text.splitlines(), delimiter=sniff_delimiter(text))
    labels, lines, line = {}, {}, 1
    try:
        header = [cell.strip().casefold() for cell in next(rows)]
        if "file" not in header or "label" not in header:
            raise InputError(f"the labels CSV needs the columns 'file' and 'label'; it has {header[:10]}")
        file_column, label_column = header.index("file"), header.index("label")
        for line, row in enumerate(rows, start=2):
            if len(row) > max(file_column, label_column) and row[file_column].strip():
                name, label = row[file_column].strip(), row[label_column].strip()
                key = _label_path(name)  # one file however its name is written (./a.png, a decomposed 'é')
                if labels.get(key, label) != label:  # a kept label is released exactly: never guess which is right
                    raise InputError(f"the labels CSV gives {name!r} two labels: {labels[key]!r} (line "
                                     f"{lines[key]}) and {label!r} (line {line}); keep the right one")
                labels[key], lines[key] = label, line
    except csv.Error as error:  # a cell over the csv module's limit (131,072 characters), say
        raise InputError(f"the labels CSV cannot be read after line {line} ({error})") from None
    if not labels:
        raise InputError("the labels CSV lists no files")
    return labels


# --------------------------------------------------------------------------- image sources

def iter_folder_files(root: Path, shuffle: random.Random | None = None,
                      labels_file: Path | None = None) -> Iterator[tuple[str, bytes | InputError]]:
    """(relative name, bytes or InputError) for the files under root, one at a time: in sorted order, or in an
    order drawn with ``shuffle`` (the names are listed first; the contents are still read one at a time).
    ``labels_file`` (--labels, where it lies in the folder) is the run's labels, not an input: left out."""
    unlisted: list[tuple[str, str]] = []
    skipped: list[tuple[str, str | None]] = []
    paths = _folder_files(root, skipped, unlisted, labels_file)
    for name, reason in unlisted:  # a manifest row each: their files are not silently missing
        yield f"{name}/", InputError(f"the folder cannot be listed ({reason}); its files are left out")
    for name, first in skipped:  # links to what the run reads anyway: one record, released once
        if first == LOOP:
            yield name, InputError("a link to a folder that holds the input (a loop): its files are released under "
                                   "their own names; skipped")
        elif first is not None and name.endswith("/"):
            yield name, InputError(f"the same folder as {first} (a link to it): its files are released once, under "
                                   f"{first}; skipped")
        elif first is not None:
            yield name, InputError(f"the same file as {first} (a link to it): released once, as {first}; skipped")
    if shuffle is not None:
        shuffle.shuffle(paths)
    for name, path in paths:
        if _is_labels_name(name):  # one in a subfolder (the top one is not an input)
            yield name, InputError(DEEPER_LABELS.format(where=f"the folder's own {LABELS_NAME}"))
            continue
        if PurePosixPath(name).suffix.lower() == ".csv":  # labels under another name, perhaps: say how to use them
            yield name, InputError(OTHER_CSV.format(where=f"the folder's own {LABELS_NAME}"))
            continue
        try:
            data = read_image_file(path)
        except InputError as error:
            yield name, error
            continue
        yield name, data if data is not None else InputError(f"{NOT_AN_IMAGE}; skipped")


DEEPER_LABELS = ("a labels CSV in a subfolder, not read: the labels of a run come from --labels or from {where}; "
                 "not an image; skipped")


def _resolved(path: Path) -> Path | None:
    """``path`` with its links resolved, or None where it cannot be (a loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


OTHER_CSV = "a CSV file, not an image: labels are read from --labels or from {where}; skipped"


def _is_labels_name(name: str) -> bool:
    """Whether a file or member (by its name relative to the input) is named like a labels CSV, at any depth."""
    return PurePosixPath(name).name.casefold() == LABELS_NAME


def _is_labels_file(name: str) -> bool:
    """Whether a folder's file (by its name relative to the folder) is its labels CSV: labels.csv at its top, in any
    case (Labels.csv), as a ZIP's is read."""
    return name.casefold() == LABELS_NAME


def folder_labels_files(root: Path) -> list[Path]:
    """The labels CSVs at the top of the folder (labels.csv in any case), labels.csv itself first: the one read."""
    try:
        return sorted((path for path in root.iterdir() if _is_labels_file(path.name) and path.is_file()),
                      key=lambda path: (path.name != LABELS_NAME, path.name))
    except OSError:
        return []


def _folder_files(root: Path, skipped: list[tuple[str, str | None]] | None = None,
                  unlisted: list[tuple[str, str]] | None = None,
                  labels_file: Path | None = None) -> list[tuple[str, Path]]:
    """(relative name, path) of the files under root that are inputs, in sorted order, as training lists them
    (linked folders followed, each folder and file once): not its labels.csv, nor ``labels_file`` (--labels, where
    it lies in the folder: the run's labels); ``skipped``, ``unlisted``: see ``folder_files``."""
    given = _resolved(labels_file) if labels_file is not None else None
    return [(name, path) for name, path in folder_files(root, unlisted, skipped) if not _is_labels_file(name)
            and (given is None or _resolved(path) != given)]


def outside_links_note(root: Path) -> str | None:
    """The input files that links lead to from outside the folder (a linked file, or a file in a linked folder),
    said with where they are, or None: they are read as inputs like the others, which their owner may not know."""
    top = root.resolve()
    outside = []
    for name, path in _folder_files(root):
        target = _resolved(path)
        if target is not None and top not in target.parents:
            outside.append((name, target))
    if not outside:
        return None
    name, target = outside[0]
    one = len(outside) == 1
    return (f"{counted(len(outside), 'input file')} {'lies' if one else 'lie'} outside {root} and "
            f"{'is' if one else 'are'} reached through links, e.g. {readable(name)} "
            f"-> {readable(str(target))}: they are read and privatized as inputs")


def _input_names(source: Path, input_kind: str, hidden: list[str] | None = None,
                 labels_file: Path | None = None) -> list[str]:
    """The names of the folder's or ZIP's files, as the run reads them (ZIP: folder metadata too, unsafe names
    not; a folder: without
    ``labels_file``, --labels where it lies in it, as ``iter_folder_files`` leaves it out); ``hidden`` receives the
    names of the hidden files and folders and the folder metadata that the run leaves out."""
    hidden = [] if hidden is None else hidden
    if input_kind == "folder":
        skipped: list[tuple[str, str | None]] = []
        names = [name for name, _ in _folder_files(source, skipped, labels_file=labels_file)]
        hidden += [name for name, first in skipped if first is None]
        return names
    from cadp.uploads import is_folder_metadata, sanitize_member_name

    try:
        with zipfile.ZipFile(source) as archive:
            members = [info.filename for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError):
        return []  # reading the members says what is wrong
    hidden += [sanitize_member_name(name)[0] for name in members if is_folder_metadata(name)]
    # an unsafe member ('/set/a.png', 'set/../x.png') is never an input: its cleaned name would be another's
    return [name for name, unsafe in map(sanitize_member_name, members) if not unsafe]


def hidden_files_note(hidden: list[str]) -> str | None:
    """How many hidden files and folders and folder metadata files a run left out, with one of them, or None."""
    if not hidden:
        return None
    return (f"{counted(len(hidden), 'hidden or system file')} or {plural('folder', len(hidden))} "
            f"{'was' if len(hidden) == 1 else 'were'} skipped, e.g. {readable(hidden[0])} (names "
            "starting with '.', and folder metadata such as __MACOSX/, Thumbs.db, desktop.ini: usually written by "
            "the operating system); rename a file that is an input")


def _png_names(names: list[str]) -> dict[str, str]:
    """The .png files among ``names``: the name as output paths compare it (``name_key``) -> the input that keeps
    it. Where several share one (b.png and b.PNG), the one written exactly as its output will be (b.png) keeps it:
    the other's release written as b.png would pass for that input's."""
    owners: dict[str, str] = {}
    for name in names:
        if name.casefold().endswith(".png"):
            clean = _clean_path(name)
            key = name_key(clean)
            if key not in owners or (clean.endswith(".png") and not owners[key].endswith(".png")):
                owners[key] = clean
    return owners


def name_key(name: str) -> str:
    """A path as the least strict file systems compare names (macOS, Windows): without case, in one Unicode form
    ('é' composed or as 'e' and a combining accent)."""
    return unicodedata.normalize("NFC", name).casefold()


def unused_labels_note(unused: list[str], resolver: LabelResolver | None = None) -> str | None:
    """The labels CSV's rows that name no input file, said with a few of them, or None; with ``resolver``, a bare
    name that several inputs have is said apart (it names each of them, so it is used for none)."""
    if not unused:
        return None
    several = {row: resolver.inputs_of_bare_name(row) for row in unused} if resolver is not None else {}
    several = {row: names for row, names in several.items() if names}
    notes = []
    if several:
        row, names = next(iter(several.items()))
        notes.append(f"{counted(len(several), 'row')} of the labels CSV {'gives' if len(several) == 1 else 'give'} "
                     "a bare file name that several inputs have, e.g. "
                     f"{readable(row)} ({', '.join(readable(name) for name in names[:3])}"
                     f"{' and more' if len(names) > 3 else ''}): such a row is used for none of them; write the "
                     "file's path (from the top of INPUT) in its place")
    unused = [row for row in unused if row not in several]
    if unused:
        shown = ", ".join(readable(name) for name in unused[:3]) + (f" and {len(unused) - 3} more"
                                                                  if len(unused) > 3 else "")
        notes.append(f"{counted(len(unused), 'row')} of the labels CSV {'names' if len(unused) == 1 else 'name'} "
                     f"no file of the input ({shown}): check their paths "
                     "(relative to the top of INPUT, or to the ZIP's top folder that holds its labels.csv; or bare file "
                     "names that one input file has)")
    return "; ".join(notes)


def _zip_labels(path: Path) -> tuple[dict[str, str] | None, str | None]:
    """The first labels CSV of the ZIP that can be read (``_zip_labels_candidates``), if any: {file: label}, the
    paths as its rows write them (they start at its folder: ``LabelResolver``'s root), and its name."""
    with zipfile.ZipFile(path) as archive:
        for info, name, why_not in _zip_labels_candidates(archive):
            if not why_not:
                return read_labels_csv(archive.read(info)), name
    return None, None


def given_labels_root(labels: dict[str, str], top: str, members: list[str]) -> str:
    """Where the paths of a labels CSV given with --labels start in a ZIP whose single top folder is ``top``
    (``members``: its files' names): at the ZIP's top where every row's path names that folder first
    (``set/3/x.png``), else in that folder (``3/x.png``, as for the folder unzipped). One or the other for all rows;
    a row that names a file either way is refused (UsageError): which one it means cannot be told."""
    paths = [_label_path(row) for row in labels]
    if not top:
        return ""
    names = {_label_path(name) for name in members}
    both = next((path for path in paths if path in names and f"{top}/{path}" in names), None)
    if both is not None:
        raise UsageError(f"--labels: the row {readable(both)!r} names {readable(both)} from the ZIP's top and "
                         f"{readable(top + '/' + both)} from its folder {readable(top)}/: write its path from the ZIP's "
                         f"top ({readable(top + '/' + both)}, or the other file's)")
    slashed = [path for path in paths if "/" in path]
    return "" if slashed and all(path.startswith(top + "/") for path in slashed) else top


def _is_zip_labels_member(name: str) -> bool:
    """Whether a ZIP member is a labels CSV (labels.csv in any case, at the top or in a top folder): not an input."""
    parts = _clean_path(name).split("/")
    return parts[-1].casefold() == LABELS_NAME and len(parts) <= 2


def _zip_labels_candidates(archive: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, str, str]]:
    """The ZIP's labels CSVs (``_is_zip_labels_member``; hidden ones and folder metadata aside) in its order, each with
    its name as the run lists it and why it cannot be read ("" where it can). As a folder's labels.csv is read at its
    top only, a ZIP's is read at its top or in its single top folder: the one folder that holds all of its files, as
    a zipped folder's does (hidden files, folder metadata such as __MACOSX/ and empty folders aside)."""
    files = _zip_files(archive)
    tops = {name.partition("/")[0] if "/" in name else "" for _, name in files}  # "": a file at the top
    folder = _zip_top_folder(archive)
    spread = "it holds files at its top too" if "" in tops else f"its files lie in {len(tops)} folders at its top"
    outside = f"the ZIP has no single top folder: {spread}; only a {LABELS_NAME} at its top is read"
    candidates = [(info, name, outside if name.rpartition("/")[0] != folder else
                   "over 16 MB" if info.file_size >= 16 * 2**20 else "")
                  for info, name in files if _is_zip_labels_member(name)]
    # labels.csv itself before Labels.csv and the like, as in a folder (folder_labels_files)
    return sorted(candidates, key=lambda candidate: PurePosixPath(candidate[1]).name != LABELS_NAME)


def _zip_files(archive: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, str]]:
    """The ZIP's files (folder metadata such as __MACOSX/ aside), each with its name as the run lists it."""
    from cadp.uploads import is_folder_metadata, sanitize_member_name

    # (an unsafe member, '/set/labels.csv', is never one: its cleaned name would be another's)
    return [(info, name) for info in archive.infolist() if not info.is_dir() and not is_folder_metadata(info.filename)
            for name, unsafe in [sanitize_member_name(info.filename)] if not unsafe]


def _zip_top_folder(archive: zipfile.ZipFile) -> str:
    """The ZIP's single top folder (the one folder that holds all of its files, as a zipped folder's does), or ""."""
    tops = {name.partition("/")[0] if "/" in name else "" for _, name in _zip_files(archive)}
    return next(iter(tops)) if len(tops) == 1 else ""


def _zip_labels_members(path: Path) -> dict[str, str]:
    """The ZIP's labels CSVs (``_zip_labels_candidates``) in its order: {name: why it cannot be read, "" where it
    can}."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {name: why_not for _, name, why_not in _zip_labels_candidates(archive)}
    except (zipfile.BadZipFile, OSError):
        return {}


def unread_labels_note(names: list[str] | dict[str, str], read: str | None, given: bool) -> str | None:
    """The labels CSVs of the input that the run does not read, and why, or None. ``names``: all of them, or (a
    ZIP's, ``_zip_labels_members``) {name: why it cannot be read, "" where it can}; ``read``: the one it reads;
    ``given``: --labels is."""
    why_not = names if isinstance(names, dict) else {}
    unread: dict[str, list[str]] = {}  # why -> the names not read for it
    for name in names:
        if name != read:
            why = ("--labels gives the labels" if given else why_not.get(name) or
                   (f"only the first, {readable(read)}, is read" if read else "over 16 MB"))
            unread.setdefault(why, []).append(name)
    return "; ".join(f"{counted(len(group), 'labels CSV')} in the input {'is' if len(group) == 1 else 'are'} "
                     f"not read ({why}): "
                     f"{', '.join(readable(name) for name in group[:3])}{' and more' if len(group) > 3 else ''}"
                     for why, group in unread.items()) or None


# --------------------------------------------------------------------------- image runs

def polarity_step(item: PendingImage, settings: RunSettings) -> list[str]:
    """What the manifest's preprocessing column says of an inverted input's release: inverted back, or not (auto)."""
    if not item.inverted:
        return []
    return [INVERTED_BACK if written_back(item.inverted, settings.invert) else INVERTED_NOT_BACK]


@dataclass
class PendingImage:
    name: str
    pixels: np.ndarray
    label: int
    steps: list[str]
    inverted: bool = False  # read as its negative for the model (written back only under --invert always)


MANIFEST_NOTE = (f"{MANIFEST_NAME} (and {CAUTIONS_NAME}, where a run has cautions) are this run's record for whoever "
                 "ran it: they name inputs, their true conditions and facts about them, so they are not part of the "
                 "release. Share the privatized files and this file only.")
IMAGE_MANIFEST_NOTE = MANIFEST_NOTE.replace("the privatized files and", f"the privatized files, {LABELS_NAME} and")
LABELS_NOTE = (f"{LABELS_NAME} is part of the release: it gives each privatized file (column file) the label released "
               "with it (column label), the released condition these terms are about, never a true label that was "
               "randomized or resampled. Its cells are the exact file paths and class names, not escaped against "
               "spreadsheet formulas (a name starting with =, +, - or @): import it as text to open it in a "
               "spreadsheet.")


COPIED_NAMES_NOTE = ("File and folder names are copied from the input: they are not covered by the guarantee. "
                     "Rename any that identify a person, or run again with --neutral-names.")
SHUFFLED_ROWS_NOTE = (f"Rows are written in an order drawn at random (the input's order would show through: a file "
                      f"sorted by a column, privatized or not, would tell each row's rank in it); {MANIFEST_NAME} "
                      "maps them to the inputs.")


def _order_from_seed(seed: int | None) -> str:
    return "" if seed is None else (f" With --seed {seed} the order is drawn from the seed: anyone with it can "
                                    "reproduce it (not private: reproducible seed).")


NEUTRAL_NAMES_NOTE = (f"Files are numbered, in an order drawn at random, in folders named by the released label; "
                      f"{MANIFEST_NAME} maps them to the inputs.")


def repeated_releases_note(mechanism: Mechanism) -> str:
    """What a second release of a record costs (PRIVACY.md: n releases cost n * eps_total)."""
    return repeated_cost_note(mechanism.describe(), "in another run, or as another copy in one input")


SHOWN_REPEATS = 5  # how many counts of repeated records the caution lists (the largest)


def repeated_records_caution(manifest: Manifest, what: str) -> str | None:
    """Records this run released more than once, and what they cost (basic composition), or None.

    ``what`` is the kind of record, "row" or "image"; the text says how such a record is recognized."""
    repeated = manifest.repeated()
    if not repeated:
        return None
    records = sum(repeated.values())
    groups = sorted(repeated.items(), reverse=True)
    how_often = ", ".join(f"{number:,} {what}{'s' * (number > 1)} {k:,} times" for k, number in groups[:SHOWN_REPEATS])
    if len(groups) > SHOWN_REPEATS:  # (a file of millions of rows can have thousands of counts)
        rest = sum(number for _, number in groups[SHOWN_REPEATS:])
        fewest, most_left = groups[-1][0], groups[SHOWN_REPEATS][0]
        how_often += (f" and {rest:,} more {what}{'s' * (rest > 1)} "
                      f"{f'{most_left:,}' if fewest == most_left else f'{fewest:,} to {most_left:,}'} times")
    most = max(repeated)
    delta = manifest.settings.delta_of(most)
    same = ("the same values in the model's columns" if what == "row"
            else "the same pixels after preprocessing, or their negative")
    head = (f"{records:,} {what}{'s' * (records > 1)} of the input occur{'s' * (records == 1)} more than once "
            f"({how_often}; {same}): each copy was released separately, with its own noise, so ")
    if not manifest.settings.mechanism.formal:  # as guarantee.txt says it: nothing to add up
        return (head + f"a record that occurs k times was released k times (here up to {most}); this mechanism "
                f"({manifest.settings.mechanism_label}) gives no formal guarantee, so there is no epsilon to add up "
                f"for it (the columns releases_of_record and epsilon_record_total of {MANIFEST_NAME} count its "
                "nominal epsilon, marked as such).")
    return (head + f"a record that occurs k times costs k times the epsilon of one release (basic composition), "
            f"here up to epsilon {manifest.settings.epsilon_of(most)}{f' and delta {delta}' if delta else ''}; the "
            f"columns releases_of_record and epsilon_record_total of {MANIFEST_NAME} give each input's total in this "
            "run (releases of the same record in other runs add to it).")


RUN_IN_PROGRESS = ("Incomplete run: the run writing these files had not finished (it is still running, or it was "
                   "killed or failed before its end). The terms below hold for its releases; "
                   f"{MANIFEST_NAME} may not list the last files written (for a CSV, {PRIVATIZED_CSV_NAME} is "
                   f"written when the run ends, and until then the rows of {MANIFEST_NAME} say '{PENDING}': a run "
                   "killed before that leaves no released rows).")


def paper_batch_terms(settings: RunSettings) -> str:
    """For paper, whose output depends on the batch (PRIVACY.md: record the batch size with every result), the
    batches this run makes, said in the terms as the app's are: "" for every other mechanism."""
    if settings.mechanism.name != "paper":
        return ""
    return (f" This run ran it on batches of at most {settings.batch_size:,} record"
            f"{'s' * (settings.batch_size != 1)} (--batch-size); the batch of each is in {MANIFEST_NAME}.")


UNREAD_ROWS_NOTE = (f"A row the model cannot read (a category it does not know in any column, such as an empty cell or "
                    "a new code, a randomized or resampled condition included) is not released and is listed as "
                    f"unusable in {MANIFEST_NAME}: these terms are for rows the model can read, and whether a row was "
                    "released shows whether it could be read.")
UNREAD_FILES_NOTE = (f"An input the model cannot take (a file that cannot be read as an image, a label that is none of "
                     f"the model's classes, a randomized or resampled one included) is not released and is listed as "
                     f"unusable in {MANIFEST_NAME}: these terms are for inputs the model can take, and whether an "
                     "input was released shows whether it could be taken.")


def write_guarantee(output: Path, guarantee: str, names_note: str = "", repeat_note: str = "",
                    labels_file: bool = False, model_line: str = "") -> None:
    """The terms, the model that made the release (``model_line``), then notes on repeats, inputs not released
    (said whatever this run's inputs hold: a count would tell of them), names and (images) the released labels
    file; marked as an unfinished run's until ``finish_guarantee`` says how the run ended."""
    release = (LABELS_NOTE, IMAGE_MANIFEST_NOTE) if labels_file else (MANIFEST_NOTE,)
    unread = UNREAD_FILES_NOTE if labels_file else UNREAD_ROWS_NOTE
    text = "\n\n".join(part for part in (RUN_IN_PROGRESS, guarantee, model_line, repeat_note, unread, names_note,
                                         *release) if part)
    _write_terms(output, text + "\n")


def finish_guarantee(output: Path, status: str = "") -> None:
    """Drop the terms' in-progress line: the run ended; ``status`` (a "Partial run" line) goes on top if it stopped
    early."""
    path = output / GUARANTEE_NAME
    if not path.exists():
        return
    terms = path.read_text(encoding="utf-8").replace(RUN_IN_PROGRESS + "\n\n", "", 1)
    _write_terms(output, f"{status}\n\n{terms}" if status else terms)


def _write_terms(output: Path, text: str) -> None:
    """guarantee.txt replaced whole: a run killed while writing it leaves the old terms, not half of them."""
    write_text_whole(output / GUARANTEE_NAME, text)


_SURROGATES = re.compile("[\ud800-\udfff]")


class OutputNames:
    """Unique output paths under OUTPUT that mirror the input names, always ending in .png.

    ``own_names`` are the names (``name_key``) of the inputs that are PNGs already, each with the input it is kept
    for (``_png_names``), so an input converted to PNG (a.bmp) gets a number (a-2.png) rather than the name of
    another (a.png), and so does b.PNG beside b.png.
    Names are compared as the file systems that compare them least strictly do (macOS, Windows: without case, in
    one Unicode form), and written as Windows can store them (``class_folder_name``)."""

    def __init__(self, root: Path, own_names: dict[str, str] | None = None):
        self.root = root.resolve()
        self.used: set[str] = set()
        self.own_names = own_names or {}
        self.renamed: list[tuple[str, str]] = []  # (input, output) of the outputs that got a number
        self.shortened: list[tuple[str, str]] = []  # (input, output) of the outputs whose name was too long
        self.folders: set[str] = set()  # the folders (name_key) outputs were given: no file may take their name
        self.cleaned: list[tuple[str, str]] = []  # (input, output) of the outputs whose name some system cannot store

    def take(self, name: str, suffix: str = ".png") -> Path:
        # bytes of a name that are not UTF-8 (an old Windows share's b'M\\xfcller'): "_" in the output's name
        relative = PurePosixPath(_clean_path(_SURROGATES.sub("_", name)) or "image")
        stem = relative.stem if relative.stem else "image"
        # 'a:b?.png' and 'con.png' cannot be written on Windows: cleaned as class folders are ('a_b_.png', '_con.png')
        safe_folders = [class_folder_name(folder) for folder in relative.parts[:-1]]
        safe_stem = class_folder_name(stem)
        fitted = PurePosixPath(*[_fit_name(folder) for folder in safe_folders], _fit_name(safe_stem, suffix))
        own = _clean_path(name)
        candidate, counter = fitted, 2
        # a name another output has, or a folder another output is in (3/a.png/x.png: 3/a.bmp is not 3/a.png)
        while (key := name_key(candidate.as_posix())) in self.used or key in self.folders \
                or (key in self.own_names and self.own_names[key] != own):
            candidate = fitted.with_name(_fit_name(safe_stem, f"-{counter}{suffix}"))
            counter += 1
        self.used.add(key)
        self.folders.update(name_key(parent.as_posix()) for parent in candidate.parents if parent.parts)
        path = (self.root / candidate).resolve()
        if self.root not in path.parents:
            raise InputError("unsafe file name; skipped")
        safe = PurePosixPath(*safe_folders, safe_stem + suffix)
        written = PurePosixPath(_clean_path(name) or "image")  # as the input has it, bytes that are not UTF-8 too
        if safe != written.with_name((written.stem or "image") + suffix):
            self.cleaned.append((name, candidate.as_posix()))
        if fitted != safe:
            self.shortened.append((name, candidate.as_posix()))
        if candidate != fitted:
            self.renamed.append((name, candidate.as_posix()))
        return path

    @staticmethod
    def _names_note(pairs: list[tuple[str, str]], said: str) -> str | None:
        """``said`` (which starts with their count) of the (input name, output path) ``pairs``, with the first as an
        example, or None."""
        if not pairs:
            return None
        return (f"{said}, e.g. {readable(pairs[0][0])} -> {pairs[0][1]}; the output column of "
                f"{MANIFEST_NAME} maps each input to its file")

    def renamed_note(self) -> str | None:
        """Which outputs got a number because their name was taken, or None."""
        one = len(self.renamed) == 1
        return self._names_note(self.renamed, f"{counted(len(self.renamed), 'input')} could not keep "
                                f"{'its' if one else 'their'} name as a PNG, another input has it (a.bmp, a.gif and "
                                f"a.png all make a.png; a.png keeps it), and {'it' if one else 'they'} got a number")

    def cleaned_note(self) -> str | None:
        """Which outputs got a name cleaned of what some system cannot store in a name, or None."""
        one = len(self.cleaned) == 1
        return self._names_note(self.cleaned, f"{counted(len(self.cleaned), 'input name')} "
                                f"{'holds' if one else 'hold'} bytes that are not UTF-8, characters Windows "
                                "cannot store in a file name (\\ : * ? \" < > | or control characters) or a name it "
                                "reserves (con, nul, com1, ...), replaced by '_'")

    def shortened_note(self) -> str | None:
        """Which outputs got a shorter name than their input's (a name has at most 255 bytes), or None."""
        one = len(self.shortened) == 1
        return self._names_note(self.shortened, f"{counted(len(self.shortened), 'input name')} "
                                f"{'is' if one else 'are'} longer than a file name can be ({NAME_MAX_BYTES} "
                                f"bytes) and {'was' if one else 'were'} shortened")


NAME_MAX_BYTES = 255  # of one file or folder name, in UTF-8, on most file systems


def _fit_name(stem: str, suffix: str = "") -> str:
    """``stem + suffix``, the stem cut (at a character) so that the name has at most ``NAME_MAX_BYTES`` bytes."""
    room = NAME_MAX_BYTES - len(suffix.encode("utf-8", "surrogateescape"))
    encoded = stem.encode("utf-8", "surrogateescape")
    if len(encoded) > room:
        stem = encoded[:room].decode("utf-8", "ignore").rstrip(" .")  # a cut character is dropped whole
    return stem + suffix


_UNKNOWN_START = -1  # ReleasedLabels.batch_start where it could not be taken


class ReleasedLabels:
    """labels.csv of an image release: each privatized file (as written under OUTPUT) and its released label, in the
    --labels format (file,label), so the release reads back as an input. Opened at the first row, flushed per batch.

    Cells are written exactly, not formula-escaped as the manifest's are: a machine-readable file must name the files
    it lists ('-scan.png', not "'-scan.png") and the classes ('+1'); guarantee.txt and the README say so."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = None
        self.writer = None
        self.write_error: OSError | None = None  # why the file could not be completed (disk full), if it could not
        self.batch: list[tuple[str, str]] = []  # this batch's rows
        self.batch_start: int | None = None  # the file's size before them (None: the file is new in this batch)

    def start_batch(self) -> None:
        """Mark where this batch's rows begin: a batch whose files are removed (a write error) takes its rows too.
        Where the mark cannot be taken (the flush of the rows before fails: a full disk), no row is taken back."""
        self.batch, self.batch_start = [], _UNKNOWN_START
        if self.handle is None:
            self.batch_start = None
            return
        self.handle.flush()
        self.batch_start = self.path.stat().st_size

    def row(self, file: str, label: str) -> None:
        if self.handle is None:
            self.handle = self.path.open("w", newline="", encoding="utf-8")
            self.writer = csv.writer(self.handle)
            self.writer.writerow(["file", "label"])
        self.writer.writerow([file, label])
        self.batch.append((file, label))

    def keep_batch_rows(self, kept: set[str]) -> None:
        """After a write error stopped the run: keep of this batch's rows only those of the files ``kept`` (the
        others were removed), so that labels.csv lists the files the manifest lists and no label released with none."""
        if self.handle is None or self.batch_start == _UNKNOWN_START or all(file in kept for file, _ in self.batch):
            return
        try:
            self.handle.buffer.raw.close()  # what the buffer still holds is dropped: it is rewritten below
        except (OSError, AttributeError, ValueError):
            pass
        self.handle = self.writer = None
        rows = [row for row in self.batch if row[0] in kept]
        try:
            if self.batch_start is None and not rows:  # a labels.csv of no file
                self.path.unlink(missing_ok=True)
                return
            if self.batch_start is None:
                os.truncate(self.path, 0)
                rows.insert(0, ("file", "label"))
            else:
                os.truncate(self.path, self.batch_start)
            with self.path.open("a", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows(rows)
        except OSError as error:
            self.write_error = self.write_error or error

    def flush(self) -> None:
        if self.handle is not None:
            self.handle.flush()

    def close(self) -> None:
        """Close the file; a last write that fails (disk full) is kept in ``write_error``, not raised."""
        if self.handle is not None:
            try:
                self.handle.close()
            except OSError as error:
                self.write_error = self.write_error or error


class Skipped(str):
    """Why an input is left out of the run: an earlier run privatized it (``--skip-privatized``); ``where``: the file
    that released it, in that run's folder (the skipped row's output)."""

    where = ""


@dataclass
class EarlierRun:
    """An earlier run's output (``--skip-privatized``): the inputs its manifest lists as privatized there or skipped
    (privatized by a run before it: a chain of continuations), as the manifest writes names; its settings as its
    rows state them; and its files that no manifest row lists."""

    folder: Path
    done: dict[str, str]  # input (as manifest.csv writes it) -> the file that released it, in its run's folder
    settings: tuple[str, str, str] | None  # (mechanism, epsilon, delta) of its first privatized row
    unlisted: list[str]
    highest_number: int = 0  # the chain's numbered outputs' highest number: this run's go on from it
    numbered: bool = False  # whether its outputs are numbered (--neutral-names) rather than copied names
    seeds: frozenset[int] = frozenset()  # the fixed seeds (--seed) its chain of runs drew noise from

    def released_as(self, name: str) -> str:
        return self.done.get(manifest_text(name), "")

    def reason(self, name: str = "") -> Skipped:
        skipped = Skipped(f"an input of this name was privatized by the run in {self.folder} or one it continued "
                          f"({MANIFEST_NAME} there): not released again (matched by name, not by content)")
        skipped.where = self.released_as(name)
        return skipped

    def has(self, name: str) -> bool:
        return manifest_text(name) in self.done


def manifest_text(name: str) -> str:
    """A name as manifest.csv writes it (readable, formula-escaped): what an earlier run's rows are matched by."""
    return escape_cell(readable(name))


_CSV_ROW_NAME = re.compile(r"row \d+")


def read_earlier_run(folder: Path) -> EarlierRun:
    """The earlier image run in ``folder`` (its manifest.csv); UsageError, in words, for anything else."""
    path = folder / MANIFEST_NAME
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise UsageError(f"--skip-privatized {folder}: there is no {MANIFEST_NAME} there (give the OUTPUT folder "
                         "of the earlier run)") from None
    except (OSError, UnicodeError, csv.Error) as error:
        raise UsageError(f"--skip-privatized {folder}: its {MANIFEST_NAME} cannot be read ({error})") from None
    if not rows or rows[0] != MANIFEST_COLUMNS:
        raise UsageError(f"--skip-privatized {folder}: its {MANIFEST_NAME} is not one this command wrote (its columns "
                         "differ)")
    column = {name: index for index, name in enumerate(MANIFEST_COLUMNS)}
    rows = [row for row in rows[1:] if len(row) == len(MANIFEST_COLUMNS)]
    if rows and all(_CSV_ROW_NAME.fullmatch(row[column["file"]]) for row in rows):
        raise UsageError(f"--skip-privatized {folder}: that run privatized a CSV's rows; this option is for image "
                         "inputs (for a CSV, give the rows its manifest does not list as privatized)")
    privatized = [row for row in rows if row[column["status"]] == "privatized"]
    listed = {row[column["output"]] for row in privatized}
    own = {MANIFEST_NAME, GUARANTEE_NAME, LABELS_NAME, CAUTIONS_NAME}
    files = _run_files(folder)
    unlisted = sorted(name for name in files if name not in own and manifest_text(name) not in listed)
    first = privatized[0] if privatized else None
    settings = (first[column["mechanism"]], first[column["epsilon"]], first[column["delta"]]) if first else None
    # each done input's release, as a full path: its file here, or (skipped here) the file an earlier run wrote
    done = {row[column["file"]]: (str((folder / _unescaped(row[column["output"]])).absolute())
                                  if row[column["status"]] == "privatized" else row[column["output"]])
            for row in rows if row[column["status"]] in ("privatized", SKIPPED)}
    numbered = _numbered_run(folder)
    highest = _highest_number(rows, files if numbered else [], {folder.resolve()})
    return EarlierRun(folder, done, settings, unlisted, highest, numbered, _chain_seeds(rows, {folder.resolve()}))


_SEED_CELL = re.compile(r"(\d+) \(")  # the manifest's seed cell of a fixed seed: "7 (not private: ...)"


def _chain_seeds(rows: list[list[str]], visited: set[Path]) -> frozenset[int]:
    """The fixed seeds of a run's privatized manifest ``rows`` and of every run before it in a chain of
    continuations: a continuation with one of them would draw that run's noise again, for other records."""
    seed, status = MANIFEST_COLUMNS.index("seed"), MANIFEST_COLUMNS.index("status")
    seeds = {int(match.group(1)) for row in rows
             if row[status] == "privatized" and (match := _SEED_CELL.match(row[seed]))}
    for earlier in _earlier_folders(rows):
        try:
            key = earlier.resolve()
            if key in visited or len(visited) > 100:
                continue
            visited.add(key)
            with (earlier / MANIFEST_NAME).open(encoding="utf-8", newline="") as handle:
                earlier_rows = [row for row in csv.reader(handle) if len(row) == len(MANIFEST_COLUMNS)][1:]
        except (OSError, UnicodeError, csv.Error, RuntimeError):
            continue
        seeds |= _chain_seeds(earlier_rows, visited)
    return frozenset(seeds)


_NUMBERED = re.compile(r"(?:^|/)(\d{1,18})\.png$")  # a numbered output's number (--neutral-names writes 00017.png)


def _numbered_run(folder: Path) -> bool:
    """Whether the run in ``folder`` numbered its outputs, as its terms say (NEUTRAL_NAMES_NOTE); False where it
    has no terms (it released nothing)."""
    try:
        return NEUTRAL_NAMES_NOTE in (folder / GUARANTEE_NAME).read_text(encoding="utf-8")
    except (OSError, UnicodeError):
        return False


def _run_files(folder: Path) -> list[str]:
    """The files of a run's folder (a file being written, ``.part``, aside), named from the folder."""
    return [path.relative_to(folder).as_posix() for path in folder.rglob("*")
            if path.is_file() and not path.name.endswith(".part")]


def _chain_highest(folder: Path, visited: set[Path]) -> int:
    """The highest number of the numbered files of the run in ``folder`` (listed or not) and of every run before
    it in a chain of continuations (``_highest_number``); 0 for a folder that cannot be read or was seen."""
    try:
        key = folder.resolve()
        if key in visited or len(visited) > 100:
            return 0
        visited.add(key)
        with (folder / MANIFEST_NAME).open(encoding="utf-8", newline="") as handle:
            rows = [row for row in csv.reader(handle) if len(row) == len(MANIFEST_COLUMNS)][1:]
        files = _run_files(folder) if _numbered_run(folder) else []
    except (OSError, UnicodeError, csv.Error, RuntimeError):
        return 0
    return _highest_number(rows, files, visited)


def _highest_number(rows: list[list[str]], files: list[str], visited: set[Path]) -> int:
    """The highest number of a run's numbered ``files`` (its folder's files, [] where it copied names) and of every
    run before it in a chain of continuations, reached through its manifest ``rows``' skipped ones (which name the
    files that released them): a continuation's numbers go on after it, so that merging the folders never puts
    two releases under one name."""
    highest = max((int(match.group(1)) for name in files if (match := _NUMBERED.search(name))), default=0)
    return max([highest, *(_chain_highest(earlier, visited) for earlier in _earlier_folders(rows))])


def _earlier_folders(rows: list[list[str]]) -> set[Path]:
    """The folders of the runs a run's manifest ``rows`` continued: those holding the files its skipped rows name."""
    status, output = MANIFEST_COLUMNS.index("status"), MANIFEST_COLUMNS.index("output")
    folders = set()
    for row in rows:
        if row[status] == SKIPPED and row[output]:
            for parent in list(Path(_unescaped(row[output])).parents)[:8]:  # the run folder holding that file
                if (parent / MANIFEST_NAME).is_file():
                    folders.add(parent)
                    break
    return folders


def _unescaped(cell: str) -> str:
    """A manifest cell as it was before ``escape_cell`` (its apostrophe before a formula's first character)."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_PREFIXES) else cell


def check_earlier_names(earlier: EarlierRun, input_names: list[str]) -> str | None:
    """Refuse (UsageError) what cannot be matched safely: no input named as the earlier run's done ones (another
    INPUT: everything would be released again), or two inputs written alike in its manifest (which was released
    cannot be told). Returns a note for the earlier run's inputs that INPUT no longer has, or None."""
    by_text: dict[str, list[str]] = {}
    for name in input_names:
        by_text.setdefault(manifest_text(name), []).append(name)
    alike = next((names for text, names in by_text.items() if len(names) > 1 and text in earlier.done), None)
    if alike:
        raise UsageError(f"--skip-privatized {earlier.folder}: the inputs {readable(alike[0])!r} and "
                         f"{readable(alike[1])!r} are written alike in {MANIFEST_NAME} ({manifest_text(alike[0])!r}), "
                         "so which of them the earlier run released cannot be told; rename one and privatize it "
                         "alone")
    found = sum(1 for text in earlier.done if text in by_text)
    if earlier.done and not found:
        example = readable(next(iter(sorted(earlier.done))))
        raise UsageError(f"--skip-privatized {earlier.folder}: none of the {len(earlier.done)} inputs its "
                         f"{MANIFEST_NAME} lists as done (e.g. {example}) is in INPUT by that name, so every "
                         "input would be released again: give the INPUT of the earlier run (a ZIP of a folder names "
                         "its files with the folder, the folder without it)")
    missing = len(earlier.done) - found
    if missing:
        return (f"{missing} of the {len(earlier.done)} inputs the run in {earlier.folder} (or one it continued) "
                "released are not in INPUT by that name: an input renamed or moved since is released again here")
    return None


def skipping(source: Iterator[tuple[str, bytes | InputError]], earlier: EarlierRun | None):
    """``source`` with the inputs the earlier run privatized marked ``Skipped`` (their contents are not used)."""
    for name, content in source:
        yield (name, earlier.reason(name)) if earlier is not None and earlier.has(name) else (name, content)


def earlier_run_notes(earlier: EarlierRun, settings: RunSettings) -> list[str]:
    """What to know of the earlier run before this one: its files no manifest row lists, other settings."""
    notes = []
    if earlier.unlisted:
        notes.append(f"{earlier.folder} holds {counted(len(earlier.unlisted), 'file')} its {MANIFEST_NAME} does not "
                     "list (a run "
                     f"killed while it wrote them), e.g. {readable(earlier.unlisted[0])}: their inputs are privatized "
                     f"again here; delete those files before sharing {earlier.folder}")
    if earlier.settings is not None and earlier.numbered == settings.names_copied:  # (it released some itself)
        then, now_named = (("numbered its outputs", "copies input names") if earlier.numbered
                           else ("copied input names", "numbers its outputs"))
        notes.append(f"the run in {earlier.folder} {then} and this one {now_named}: merging the two folders may put "
                     "two releases under one name")
    delta = getattr(settings.mechanism, "delta", None)
    now = (settings.mechanism_label.split(" ")[0], manifest_text(settings.epsilon),
           "" if delta is None else exact(delta))
    if earlier.settings is not None and (earlier.settings[0].split(" ")[0], *earlier.settings[1:]) != now:
        mechanism, epsilon, delta_then = earlier.settings
        notes.append(f"the run in {earlier.folder} released with {mechanism}, epsilon {epsilon} per release"
                     f"{f' and delta {delta_then}' if delta_then else ''}; this one with {settings.mechanism_label}, "
                     f"epsilon {settings.epsilon}{f' and delta {exact(delta)}' if delta is not None else ''}: each output folder's "
                     f"{GUARANTEE_NAME} states its own terms")
    return notes


def other_class_folders_caution(mismatched: list[tuple[str, str, str]]) -> str | None:
    """The outputs that keep (copied from the input) a folder named after another class than their released label,
    as (output, folder, released label), said as a caution, or None."""
    if not mismatched:
        return None
    output, folder, label = mismatched[0]
    return (f"{counted(len(mismatched), 'privatized file')} {'keeps' if len(mismatched) == 1 else 'keep'} a folder "
            "named after another class than the label released "
            f"with them, e.g. {output} (folder {folder!r}, released as {label!r}): the names are copied from the "
            f"input, and the released label is the one in {LABELS_NAME}. Rename or move them before sharing, or run "
            "again with --neutral-names.")


def privatize_images(model, class_names: list[str], source: Iterator[tuple[str, bytes | InputError]],
                     resolver: LabelResolver, settings: RunSettings, output: Path, manifest: Manifest,
                     progress: tqdm, source_name: str, own_png_names: dict[str, str] | None = None) -> None:
    """Decode, label and privatize images batch by batch; write PNGs, manifest rows and labels.csv rows (each
    PNG's released label) as each batch ends. ``own_png_names``: see ``OutputNames``."""
    names = OutputNames(output, own_png_names)
    released_labels = ReleasedLabels(output / LABELS_NAME)
    mismatched: list[tuple[str, str, str]] = []  # outputs in a copied folder named after another class
    try:
        _privatize_images(model, class_names, source, resolver, settings, output, manifest, progress, source_name,
                          names, released_labels, mismatched)
    finally:  # an interrupted run's too: its labels.csv lists the files it kept
        released_labels.close()
        if released_labels.write_error is not None:
            manifest.incomplete[LABELS_NAME] = released_labels.write_error
        add_caution(output, other_class_folders_caution(mismatched))
        for note in (names.renamed_note(), names.shortened_note(), names.cleaned_note()):
            if note:
                _say(f"note: {note}")


def _privatize_images(model, class_names: list[str], source: Iterator[tuple[str, bytes | InputError]],
                      resolver: LabelResolver, settings: RunSettings, output: Path, manifest: Manifest,
                      progress: tqdm, source_name: str, names: OutputNames, released_labels: ReleasedLabels,
                      mismatched: list[tuple[str, str, str]]) -> None:
    config = model.config
    numbered = [settings.first_number - 1]  # neutral names: a running number over the run's releases
    pending: list[PendingImage | tuple[str, InputError]] = []
    # the terms before the first file: a run killed outright (SIGKILL) leaves files with terms marked incomplete
    write_guarantee(output, release_guarantee(model, settings.mechanism, settings.generator, seed=settings.seed,
                                              condition_handling=settings.handlings) + paper_batch_terms(settings),
                    COPIED_NAMES_NOTE if settings.names_copied else NEUTRAL_NAMES_NOTE + _order_from_seed(settings.seed),
                    repeated_releases_note(settings.mechanism), labels_file=True, model_line=settings.model_line)

    def flush():
        written_now: list[Path] = []  # this batch's files: removed if the run stops before the manifest lists them
        listed: list[Path | None] = []  # this batch's manifest rows, in order: the file each lists (None: none)
        rows_before = len(manifest.released_rows)
        try:
            write_batch(written_now, listed)
        except (KeyboardInterrupt, OSError):  # a stop, or a write error (disk full) that stops the run
            for file in (manifest, released_labels):
                try:
                    file.flush()
                except OSError as error:  # said when the run stops: which files lack their last rows
                    file.write_error = file.write_error or error
            if manifest.write_error:  # the files of rows the manifest could not hold go too
                listed[:] = listed[:max(0, manifest.keep_complete_rows() - rows_before)]
            kept = {path for path in listed if path is not None}
            for path in written_now:
                if path in kept:
                    continue
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
            released_labels.keep_batch_rows({path.relative_to(names.root).as_posix() for path in kept})
            raise

    def write_batch(written_now: list[Path], listed: list[Path | None]):
        released_labels.start_batch()
        # rows go to the manifest in reading order: unusable files wait with the batch they arrived in
        images = [item for item in pending if isinstance(item, PendingImage)]
        outcome: dict[int, tuple[str, str, str]] = {}
        if images:
            pixels = torch.from_numpy(np.stack([item.pixels for item in images]))
            labels = torch.tensor([item.label for item in images], dtype=torch.int64)
            try:
                result = privatize(model, pixels, ClassIndices(labels), settings.mechanism, settings.generator,
                                   seed=settings.seed, batch_size=settings.batch_size,
                                   condition_handling=settings.handlings, reconstruct=False)
            except CadpError as error:
                outcome = {id(item): ("", str(error), "") for item in images}
            else:
                released = result.released_condition["label"].tolist()
                label_handling = settings.handlings.get("label", ConditionHandling()).handling
                # paper's output depends on the batch: each file names its own, as the app's downloads do
                file_terms = result.guarantee + (f" This release ran it on {result.batch_text}."
                                                 if settings.mechanism.name == "paper" else "")
                for index, item in enumerate(images):
                    path = None
                    try:
                        if settings.names_copied:
                            name = item.name
                        else:  # nothing of the input's name or place: they often carry the true label
                            numbered[0] += 1
                            name = f"{class_folder_name(class_names[released[index]])}/{numbered[0]:05d}.png"
                        path = names.take(name)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        written_now.append(path)
                        released_pixels = result.privatized[index].numpy()
                        # inverted back under --invert always only (auto: the input's pixels chose; written_back);
                        # the file carries its terms and released label, as the app's downloads do
                        path.write_bytes(png_bytes(in_input_polarity(released_pixels,
                                                                     written_back(item.inverted, settings.invert)),
                                                   released_description(file_terms, class_names[released[index]],
                                                                        label_handling)))
                        outcome[id(item)] = (class_names[released[index]], "",
                                             path.relative_to(names.root).as_posix())
                    except InputError as error:
                        outcome[id(item)] = ("", str(error), "")
                    except OSError as error:
                        if error.errno in RUN_WRITE_ERRNOS:  # disk full: every file after it would fail too
                            raise
                        if path is not None:  # one file's error (a name too long): no part of it is kept
                            try:
                                path.unlink(missing_ok=True)
                            except OSError:  # the path is a folder, or under a file: nothing of this input is there
                                pass
                        where = path.relative_to(names.root).as_posix() if path is not None else item.name
                        outcome[id(item)] = ("", f"the output file {where} cannot be written "
                                                 f"({error.strerror or error}); skipped", "")
        for item in pending:
            if not isinstance(item, PendingImage):
                name, problem = item
                if isinstance(problem, Skipped):
                    manifest.row(name, status=SKIPPED, error=str(problem), output=problem.where)
                else:
                    manifest.error(name, problem)
                listed.append(None)
                continue
            released_name, error, written = outcome[id(item)]
            condition = class_names[item.label]
            if error:
                manifest.error(item.name, error, condition=condition)
                listed.append(None)
            else:
                # an image is the record whatever its label, as in the app's ledger: the same model-input pixels
                # (or their negative) in two files, or in two class folders, are one record released twice
                manifest.row(item.name, status="privatized", condition=condition, released=released_name,
                             output=written, preprocessing="; ".join(item.steps + polarity_step(item, settings)),
                             batch=len(images),
                             record=image_record_key(item.pixels))
                listed.append(names.root / written)
                released_labels.row(written, released_name)
                for folder in PurePosixPath(written).parts[:-1] if settings.names_copied else ():  # the input's
                    try:
                        index = resolver.folder_class_index(folder)
                    except InputError:  # a folder that could name two classes names another one than released
                        index = -1
                    if index is not None and (index < 0 or class_names[index] != released_name):
                        mismatched.append((written, folder, released_name))
                        break
        pending.clear()
        manifest.flush()
        released_labels.flush()
        written_now.clear()  # listed, and the list is on disk: kept whatever happens next

    try:
        waiting = 0
        for name, content in source:
            _stop_requests.check()  # between batches or files: every file written is listed
            progress.update(1)
            if isinstance(content, (InputError, Skipped)):
                pending.append((name, content))
                continue
            try:
                label = resolver.resolve(name)
                prepared = to_model_input(content, image_size=config.image_size, channels=config.channels,
                                          invert=settings.invert, filename=name)
            except InputError as error:
                pending.append((name, error))
                continue
            pending.append(PendingImage(name, prepared.pixels, label, prepared.steps, prepared.inverted))
            waiting += 1
            if waiting >= settings.batch_size:
                flush()
                waiting = 0
    except InputError as error:  # the archive itself failed (damaged, zip bomb): keep what was done
        flush()
        manifest.error(source_name, f"stopped reading the input: {error}")
    flush()
    manifest.flush()


# --------------------------------------------------------------------------- table runs

def _file_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM) or UTF-16 by BOM, else Windows-1252, else Latin-1 (as ``uploads.decode_text``);
    checked by streaming, not loading the file."""
    with path.open("rb") as handle:
        head = handle.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        handle.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while chunk := handle.read(2**20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            handle.seek(0)
            decoder = codecs.getincrementaldecoder("cp1252")()
            try:
                while chunk := handle.read(2**20):
                    decoder.decode(chunk)
            except UnicodeDecodeError:  # one of the five bytes Windows-1252 leaves undefined
                return "latin-1"
            return "cp1252"
    return "utf-8"


def privatize_table(model, path: Path, settings: RunSettings, output: Path, manifest: Manifest,
                    progress: tqdm) -> None:
    """Privatize a CSV chunk by chunk into privatized.csv; rows that cannot be used are listed and skipped."""
    config = model.config
    encoding = _file_encoding(path)
    with path.open("rb") as handle:
        head = handle.read(65536)
    if encoding == "utf-16":
        text = head.decode("utf-16", errors="ignore")
    else:
        try:
            text, found = decode_text(head)
            encoding = found if found in ("utf-16-le", "utf-16-be") else encoding  # UTF-16 without a BOM
        except InputError as error:
            raise UsageError(f"{path.name}: {error}") from None
    try:
        _, hinted = separator_line(line_feeds(text))  # Excel's "sep=;" first line: the separator, not the header
    except InputError as error:
        raise UsageError(f"{path.name}: {error}") from None
    delimiter, skip = (hinted, 1) if hinted else (sniff_delimiter(text), 0)
    needed = config.data_columns + config.condition_columns
    try:
        header = pd.read_csv(path, sep=delimiter, encoding=encoding, nrows=0, skipinitialspace=True, skiprows=skip)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, UnicodeError) as error:
        raise UsageError(f"{path} is not a readable CSV" + (f": {UNCLOSED_QUOTE}" if unclosed_quote(error) else "")) \
            from None
    columns = [str(c).strip() for c in header.columns]
    # the header row as written: pandas renames a second 'sex' to 'sex.1', which would pass for another column
    rows = csv.reader(io.StringIO(line_feeds(text)), delimiter=delimiter)
    for _ in range(skip):  # the "sep=" line
        next(rows, None)
    written = [cell.strip() for cell in next(rows, [])]
    # (empty names, as Excel writes after the last column, are not names: pandas calls them "Unnamed: 4")
    repeated = sorted({c for c in columns if columns.count(c) > 1}
                      | {c for c in written if c and written.count(c) > 1})
    if repeated:
        raise UsageError(f"{path.name} names {plural('column', len(repeated))} {repeated} more than once (spaces "
                         "around names are ignored)")
    missing = [c for c in needed if c not in columns]
    if missing:
        raise UsageError(f"{path.name} lacks the model's {plural('column', len(missing))} {missing}"
                         f"{case_hint(missing, columns, needed)}; the model "
                         f"needs {needed}")
    numeric = [spec["name"] for spec in config.data_encoder["columns"] if spec["kind"] == "numeric"]
    _read_whole_file(path, delimiter, encoding, columns, skip)
    extra = [c for c in columns if c not in needed]
    if extra:
        one = len(extra) == 1
        _say(f"note: {plural('column', len(extra))} {extra} {'is' if one else 'are'} not the model's and "
             f"{'is' if one else 'are'} left out of {PRIVATIZED_CSV_NAME}")
    text = text_category_columns(config)
    # "None" is a gap in the model's number columns (numbers and number categories: all but its text categories),
    # as the app reads it, and a value in its text columns
    listed = CSV_MISSING["na_values"]
    missing = {"keep_default_na": False, "na_values": {raw: listed if str(raw).strip() in text else [*listed, "None"]
                                                       for raw in header.columns}}
    # chosen by the separator and the header, never by the rows: a decimal comma or a letter of Windows-1252 in a
    # cell is a fact about its record, and a release's format would tell it (uploads.release_decimal)
    decimal = release_decimal(delimiter)  # the file's own mark (read_decimal) only for reading it
    read_decimal, comma_notes = _decimal_mark(path, delimiter, encoding, columns, numeric, skip, missing)
    for note in comma_notes:  # 1,234 in every cell with a comma: thousands, read as decimals?
        _say(f"note: {readable(note)}")
    declared = declared_encoding(head, encoding)
    out_encoding = release_encoding(declared, texts=[*needed, *category_texts(config)])
    words = csv_format_words(delimiter, decimal, out_encoding)
    if declared is not None and out_encoding != declared:
        _say(f"note: {PRIVATIZED_CSV_NAME} is written {words}: a released value cannot be written in "
             f"{ENCODING_NAMES[declared]}, the encoding of {path.name}")
    elif reason := format_change_reason(delimiter, read_decimal, decimal, encoding, out_encoding, path.name, declared):
        _say(f"note: {PRIVATIZED_CSV_NAME} is written {words}: {reason}")
    elif delimiter != "," or out_encoding != "utf-8":
        _say(f"note: {PRIVATIZED_CSV_NAME} is written {words}, as {path.name} is")
    target = output / PRIVATIZED_CSV_NAME
    row_number, seen, held, filled_rows = 0, 0, 0, 0
    dotted: dict[str, list] = {}  # cells such as 12.500 in a file of decimal commas, per column
    # the input's row order (a file sorted by a column, privatized or not) would show through the output's: the
    # released rows are held and written at the end in an order drawn at random; the manifest's rows are written as
    # they come, and each released row's place in the output is filled in at the end (Manifest.set_output_rows)
    held_frames: list[pd.DataFrame] = []
    held_count = 0  # released rows with a manifest row
    reader = pd.read_csv(path, sep=delimiter, encoding=encoding, chunksize=settings.batch_size, skiprows=skip,
                         **missing, skipinitialspace=True, decimal=read_decimal, index_col=False,
                         dtype={raw: str for raw in header.columns if str(raw).strip() in text})
    # the terms before the first row: a run killed outright (SIGKILL) leaves rows with terms marked incomplete
    write_guarantee(output, release_guarantee(model, settings.mechanism, settings.generator, seed=settings.seed,
                                              condition_handling=settings.handlings) + paper_batch_terms(settings),
                    SHUFFLED_ROWS_NOTE + _order_from_seed(settings.seed),
                    repeated_releases_note(settings.mechanism), model_line=settings.model_line)
    # rows that end with a separator (an empty field after the last column) are read without it; pandas' warning
    # about that field ("loss of data") would be printed raw, with its source line (a longer row is refused)
    with target.open("wb", buffering=0) as out, warnings.catch_warnings():  # unbuffered: _append cuts back
        warnings.simplefilter("ignore", pd.errors.ParserWarning)
        try:
            for chunk in reader:
                _stop_requests.check()  # between chunks: privatized.csv holds the rows the manifest lists
                chunk.columns = columns
                chunk = chunk[[c for c in columns if c in needed]].reset_index(drop=True)  # the input's order
                for name in text & set(chunk.columns):  # "02134 " is the code 02134
                    chunk[name] = chunk[name].str.strip()
                if delimiter != ",":  # decimal commas, wherever in the file they start
                    chunk = _dot_decimals(chunk, numeric, dotted if read_decimal == "," else None)
                chunk = _numeric_categories(model, chunk)
                numbers = list(range(row_number + 1, row_number + len(chunk) + 1))
                row_number += len(chunk)
                progress.update(len(chunk))
                good, errors = _usable_rows(model, chunk)
                filled = _filled_cells(model, chunk)
                released: dict[int, str] = {}
                records: dict[int, str] = {}  # row position -> the released row's ledger key
                result = None
                if good:
                    part = chunk.iloc[good].reset_index(drop=True)
                    try:
                        result = privatize(model, part, None, settings.mechanism, settings.generator,
                                           seed=settings.seed, batch_size=settings.batch_size,
                                           condition_handling=settings.handlings, reconstruct=False)
                    except CadpError as error:  # a ValueError too: catch it before the parser's errors
                        errors.update({position: error for position in good})
                if result is not None:
                    frame = result.privatized_frame
                    held_frames.append(frame)
                    released = dict(zip(good, _condition_texts(frame, config.condition_columns), strict=True))
                    # a row is recognized by its values in the model's columns, as the app's ledger does
                    records = dict(zip(good, row_record_keys(result.original_frame), strict=True))
                conditions = _condition_texts(chunk, config.condition_columns)
                for position, number in enumerate(numbers):
                    condition = conditions[position]
                    if position in errors:
                        manifest.row(f"row {number}", status="error", error=str(errors[position]), condition=condition)
                        continue
                    filled_rows += position in filled  # the warning points at the manifest: count only rows it notes
                    manifest.row(f"row {number}", status="privatized", condition=condition,
                                 released=released[position], preprocessing=filled.get(position, ""),
                                 batch=len(good), record=records[position], released_row=held_count)
                    held_count += 1
                if good:
                    training, held_out = table_rows_known(config, chunk.iloc[good]) or (0, 0)
                    seen, held = seen + training, held + held_out
                manifest.flush()
        except (pd.errors.ParserError, ValueError, UnicodeError):
            manifest.row(f"row {row_number + 1}", status="error",
                         error=f"stopped reading {path.name}: the CSV cannot be parsed after row {row_number} (a row "
                               "with more fields than the header?)")
        finally:
            try:
                manifest.flush()
            except OSError:  # the manifest's disk is full or its file too large (write_error): the rows may still fit
                pass
            if manifest.write_error:  # only rows that the manifest lists are written
                manifest.keep_complete_rows()
                held_count = manifest.listed_released_rows()
            try:  # an interrupted run's too
                add_caution(output, training_data_caution(config, path.name, seen))
                add_caution(output, held_out_caution(config, held))
                add_caution(output, repeated_records_caution(manifest, "row"))
            finally:
                if held_count:  # an interrupted run's too: the rows released so far are not lost
                    _write_held_rows(out, held_frames, held_count, settings.seed, manifest, delimiter, decimal,
                                     out_encoding)
            if manifest.write_error:  # the rows were written: now say that the manifest could not be
                raise manifest.write_error
    if note := dotted_cells_note(dotted, path.name):
        _say(f"note: {readable(note)}")
    if filled_rows:
        _say(f"warning: {counted(filled_rows, 'row')} had empty cells or cells that are not numbers, read as the "
             "training mean, or numbers outside the range the model knows, read as its nearer end: the preprocessing "
             f"column of {MANIFEST_NAME} names them")


def _append(out, data: bytes) -> None:
    """Write all of ``data`` at the end of the unbuffered file ``out``, or none of it: a write that fails (disk full)
    is cut back, so that the file holds the rows the manifest lists and no part of another."""
    start = out.tell()
    try:
        view = memoryview(data)
        while view:
            view = view[out.write(view):]
    except OSError:
        try:
            os.ftruncate(out.fileno(), start)
            out.seek(start)
        except OSError:
            pass
        raise


SHIFTED_ROWS = ("Nothing was privatized: quote text cells that hold the separator, or fix or remove these rows, and "
                "run again")


def _read_whole_file(path: Path, delimiter: str, encoding: str, columns: list[str], skip: int = 0) -> None:
    """Read the whole CSV once, as the run will, and refuse it (UsageError, nothing released) if a row has more
    fields than the header or fewer (``rows_against_header``, naming data rows as the manifest numbers them), as
    the app refuses such an upload; then once more through pandas, which names a longer row it finds by its line.

    Which cell of such a row is which cannot be known (an unquoted separator in a text cell shifts the rest), and
    it cannot be listed as one unusable row while the others are numbered right. Without index_col=False pandas
    would silently read a first row with an extra field (every row ending in a separator) as an index column,
    shifting every value one column to the left."""
    kind = f"({len(columns)} columns, {DELIMITER_NAMES[delimiter]}-separated)"
    with path.open(encoding=encoding, newline="") as handle:
        for _ in range(skip):
            handle.readline()
        try:
            short_count, too_short, long_count, too_long_rows = rows_against_header(handle, delimiter, skip)
        except InputError as error:
            raise UsageError(f"{path.name}: {error}; nothing was privatized") from None
    if too_long_rows:  # pandas says nothing of a row whose extra field is empty or NA: shifted all the same
        shown = ", ".join(f"data row {row} (line {skip + line}, {fields} fields)" for row, line, fields in too_long_rows)
        raise UsageError(f"{path.name} has rows with more fields than its header {kind}: {shown}"
                         + (f" and {long_count - len(too_long_rows):,} more" if long_count > len(too_long_rows) else "")
                         + " (counting data rows from 1, blank lines not counted; an empty field after the last "
                         f"column is read as no field only where more than half of the rows have one). {SHIFTED_ROWS}")
    if too_short:  # a row broken in two: its first part would be released as a record of training means
        raise UsageError(f"{path.name} has rows with fewer fields than its header {kind}: data "
                         f"{plural('row', short_count)} "
                         f"{', '.join(map(str, too_short))}"
                         + (f" and {short_count - len(too_short):,} more" if short_count > len(too_short) else "")
                         + " (counting data rows from 1, blank lines not counted). Nothing was privatized: a row "
                         "cut short (e.g. by a line break in a cell) would be released with made-up values; give "
                         "every row all its fields (an empty cell is written as nothing between two separators), "
                         "and run again")
    too_long: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            # every chunk parsed and dropped: the parser counts each row's fields (its warnings below)
            collections.deque(pd.read_csv(path, sep=delimiter, encoding=encoding, chunksize=2**16, skipinitialspace=True,
                                          skiprows=skip, index_col=False, on_bad_lines="warn", dtype=str), maxlen=0)
        except (pd.errors.ParserError, ValueError, UnicodeError) as error:
            raise UsageError(f"{path.name} cannot be parsed ({str(error).strip()}); nothing was privatized") from None
    for warning in caught:
        message = str(warning.message)
        if not issubclass(warning.category, pd.errors.ParserWarning):
            continue
        if message.startswith("Length of header"):  # a first data row longer than the header
            too_long.insert(0, "the first data row")
        too_long += [f"line {line} ({fields} fields)"
                     for line, fields in re.findall(r"Skipping line (\d+): expected \d+ fields, saw (\d+)", message)]
    if too_long:
        shown = ", ".join(too_long[:5]) + (f" and {len(too_long) - 5} more" if len(too_long) > 5 else "")
        raise UsageError(f"{path.name} has rows with more fields than its header {kind}: {shown}. {SHIFTED_ROWS}")


# released rows written per block of the drawn order: the CSV text of a whole file of millions of rows is not held
WRITE_BLOCK_ROWS = 2 ** 16


def _write_held_rows(out, frames: list[pd.DataFrame], count: int, seed: int | None, manifest: Manifest,
                     delimiter: str, decimal: str, encoding: str = "utf-8") -> None:
    """Write the first ``count`` held released rows (those with a manifest row, in the input's order) in an order
    drawn at random, and tell the manifest where each went.

    A run stopped inside a chunk may hold a frame whose manifest rows were not all written: only the rows that
    have one are written (a chunk's released rows and its manifest rows are in the same order)."""
    order = np.random.default_rng(seed).permutation(count)  # seed None: fresh entropy from the OS
    rows = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    frames.clear()  # the joined frame is the one copy kept
    output_rows = np.zeros(count, dtype=np.int64)  # 0 until written (a failed write stops the run)
    manifest.set_output_rows(PRIVATIZED_CSV_NAME, output_rows)
    escaped = 0
    for start in range(0, count, WRITE_BLOCK_ROWS):
        taken = order[start:start + WRITE_BLOCK_ROWS]
        data, count_escaped = escaped_csv(rows.iloc[taken], header=start == 0, delimiter=delimiter, decimal=decimal,
                                          encoding=encoding)
        _append(out, data)
        output_rows[taken] = np.arange(start + 1, start + len(taken) + 1)  # released row order[i]: row i + 1
        escaped += count_escaped
    note = escaped_cells_note(escaped)
    if note:
        _say(f"note: in {PRIVATIZED_CSV_NAME}, {note[0].lower()}{note[1:]}")


def _decimal_mark(path: Path, delimiter: str, encoding: str, columns: list[str], numeric: list[str],
                  skip: int = 0, missing: dict = CSV_MISSING) -> tuple[str, list[str]]:
    """(",", when the model's numeric columns are written with decimal commas in the file's first rows, else "." (for
    pandas' reading and the run's note; each number cell is still read alone, ``_dot_decimals``); notes on columns
    whose every cell with a comma there has three digits after it (``three_digit_commas_note``))."""
    if delimiter == ",":
        return ".", []
    try:
        with warnings.catch_warnings():  # a row's trailing separator: read without it (the rows' reading says more)
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            head = pd.read_csv(path, sep=delimiter, encoding=encoding, nrows=1000, skipinitialspace=True,
                               skiprows=skip, index_col=False, **missing)  # (a trailing separator shifted columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, UnicodeError):
        return ".", []  # reading the chunks says what is wrong
    head.columns = columns
    numbers = head[[c for c in columns if c in numeric]]
    notes = []
    for name in numbers.columns:
        if not pd.api.types.is_numeric_dtype(numbers[name]):
            text = numbers[name].dropna().astype(str).str.strip()
            notes.append(three_digit_commas_note(name, text[text.str.contains(",", regex=False)],
                                                 f" (in the first 1,000 rows of {path.name})"))
    return ("," if decimal_comma_columns(numbers, numeric) else "."), [note for note in notes if note]


def _numeric_categories(model, chunk: pd.DataFrame) -> pd.DataFrame:
    """Cells of category columns (data or condition) that are numbers written as text, as numbers, where the model's
    categories are numbers: one text cell ('?') makes pandas read a chunk's whole column as text, and '2' is not the
    category 2 (the other rows of the chunk would be unusable, and the result would depend on --batch-size). Whole
    numbers read as floats (a column with an empty cell) are ints again: the manifest says sex=1, not sex=1.0."""
    for spec in [*model.data_encoder.columns, *model.condition_encoder.columns]:
        known = [c for c in spec.categories or [] if c is not None]  # None: a category of empty cells
        numeric = spec.kind == "categorical" and bool(known) and all(
            isinstance(c, int | float) and not isinstance(c, bool) for c in known)
        if numeric and spec.name in chunk.columns and not pd.api.types.is_integer_dtype(chunk[spec.name]) \
                and not pd.api.types.is_bool_dtype(chunk[spec.name]):
            # (not Series.map: it would make ints and an empty cell floats again)
            chunk[spec.name] = pd.Series([_number_or_text(cell) for cell in chunk[spec.name].tolist()],
                                         index=chunk.index, dtype=object)
    return chunk


def _number_or_text(value):
    """A number written as text as the number; a whole float (1.0) as an int."""
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    return value


def _dot_decimals(chunk: pd.DataFrame, numeric: list[str], dotted: dict[str, list] | None = None) -> pd.DataFrame:
    """Text cells of numeric columns that are numbers, each read alone (``cell_number``: 25.125 and 25,125 alike,
    whatever the file's other cells hold), as numbers (other text stays for the row checks to name). A text cell
    beside them (None, ?, a decimal comma) makes pandas read a chunk's column as text: 4.625 was then read as 4625.
    ``dotted`` (for a file of decimal commas) counts per column the cells such as 12.500, read as 12.5: [count,
    first such cell]."""
    for name in numeric:
        if name in chunk.columns and not pd.api.types.is_numeric_dtype(chunk[name]):
            cells = chunk[name].astype(object)
            if dotted is not None:
                text = cells[cells.map(lambda cell: isinstance(cell, str))].str.strip()
                found = text[text.str.fullmatch(ONE_DOT)]
                if len(found):
                    entry = dotted.setdefault(name, [0, found.iloc[0]])
                    entry[0] += len(found)
            chunk[name] = cells.map(cell_number)
    return chunk


def dotted_cells_note(dotted: dict[str, list], name: str) -> str | None:
    """What the run says of cells such as 12.500 in a file of decimal commas (``_dot_decimals``), or None."""
    if not dotted:
        return None
    count = sum(entry[0] for entry in dotted.values())
    column, (_, example) = next(iter(dotted.items()))
    return (f"{counted(count, 'cell')} of {name} such as {example!r} (column {column!r}"
            + (f" and {counted(len(dotted) - 1, 'more column')}" if len(dotted) > 1 else "")
            + f"), with one dot and no comma in a file of decimal commas, {'was' if count == 1 else 'were'} read "
            "with a decimal point "
            f"({float(example):g}), each cell alone; if the dot separates thousands, write "
            f"{example.replace('.', '')} (or {example},0) and run again")


def first_frames_caution(manifest: Manifest) -> str | None:
    """Inputs of several frames (a DICOM series, a TIFF stack, an animation) of which only the first was released,
    or None: a clinician expects every slice, and the manifest's preprocessing column alone was easy to miss."""
    return several_frames_note(manifest.first_frames, f"; the {MANIFEST_NAME} column preprocessing says how many each "
                                                      "held")


def add_caution(output: Path, caution: str | None) -> None:
    """Say ``caution`` on stderr and in cautions.txt (when the run released anything), never in guarantee.txt:
    a caution states facts about the inputs (rows the model was trained on, repeated records), and the shared
    terms must not depend on the records released (their general sentences say what these cautions count)."""
    if caution and (output / GUARANTEE_NAME).exists():
        caution = readable(caution)  # it may name an input whose name is not UTF-8
        try:
            with (output / CAUTIONS_NAME).open("a", encoding="utf-8") as handle:  # first: a closed terminal cannot
                handle.write(f"Caution: {caution}\n\n")
        except OSError as error:  # a full disk: the caution is still said
            _say(f"warning: {caution} ({CAUTIONS_NAME} could not be written: {error.strerror or error})")
            return
        _say(f"warning: {caution}")


def training_data_caution(config, input_name: str, seen_rows: int) -> str | None:
    """Why a release's guarantee does not fully apply to this input: rows the model was trained on, or an input
    named like the (non-public) data the model was trained on."""
    if seen_rows:
        return training_rows_caution(config.name, seen_rows)
    return training_name_caution(config, input_name)


def _condition_texts(frame: pd.DataFrame, names: list[str]) -> list[str]:
    """Each row's conditions as the manifest writes them ("sex=2; group=a"; an empty cell "(empty)", not nan), for
    the whole frame at once (a row at a time took a fifth of a large CSV's run)."""
    texts = None
    for name in names:
        column = frame[name].astype(object)
        part = name + "=" + column.where(column.notna(), "(empty)").astype(str)
        texts = part if texts is None else texts + "; " + part
    return [""] * len(frame) if texts is None else texts.tolist()


def _filled_cells(model, chunk: pd.DataFrame) -> dict[int, str]:
    """Per row position, a note on each numeric cell that is empty or not a number, or outside the range the model
    knows: the encoder reads it as the column's mean stored in the model or the range's nearer end, and the manifest says so."""
    notes: dict[int, list[str]] = {}
    for spec in model.data_encoder.columns:
        if spec.kind != "numeric":
            continue
        raw = chunk[spec.name]
        numbers = numeric_cells(raw)
        for position in np.flatnonzero(~np.isfinite(numbers)):
            cell = raw.iloc[position]
            what = ("empty" if pd.isna(cell) or str(cell).strip() == "" else "infinite" if np.isinf(numbers[position])
                    else f"{str(cell)[:40]!r} is not a number")
            notes.setdefault(int(position), []).append(f"{spec.name}: {what}, read as the model's stored mean "
                                                       f"{spec.mean:.4g}")
        if spec.low is None:
            continue
        for position in np.flatnonzero(np.isfinite(numbers) & ((numbers < spec.low) | (numbers > spec.high))):
            edge = spec.low if numbers[position] < spec.low else spec.high
            notes.setdefault(int(position), []).append(
                f"{spec.name}: {numbers[position]:.6g} is outside the range the model knows ({spec.low:.4g} to "
                f"{spec.high:.4g}), read as {edge:.4g}")
    return {position: "; ".join(parts) for position, parts in notes.items()}


def _usable_rows(model, chunk: pd.DataFrame) -> tuple[list[int], dict[int, InputError]]:
    """Positions of the rows the model can encode, and the error of each other row."""
    try:
        model.data_encoder.transform(chunk)
        model.condition_encoder.transform(chunk)
        return list(range(len(chunk))), {}
    except InputError:
        pass
    good, errors = [], {}
    for position in range(len(chunk)):
        row = chunk.iloc[[position]]
        try:
            model.data_encoder.transform(row)
            model.condition_encoder.transform(row)
        except InputError as error:
            errors[position] = error
            continue
        good.append(position)
    return good, errors


# --------------------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cadp.privatize",
        description="Privatize a folder of images, a ZIP of one, or a CSV of rows with a CADP model. "
                    "Guarantees are local (per record); see docs/PRIVACY.md.",
        epilog=EXIT_CODES[0].upper() + EXIT_CODES[1:] + ".")
    parser.add_argument("--model", required=True, help="model folder (or Hub id when supported)")
    parser.add_argument("--mechanism", required=True, choices=MECHANISMS)
    parser.add_argument("--epsilon", required=True, type=float,
                        help="privacy budget per record and release (metric: per unit of L1 latent distance; paper: "
                             "nominal, no formal guarantee); "
                             "releasing the same record again (another run, another copy in INPUT) costs epsilon "
                             "again (basic composition)")
    parser.add_argument("--delta", type=float, help="gaussian only, and required there: in (0, 1), e.g. 1e-5")
    radius = parser.add_mutually_exclusive_group()
    radius.add_argument("--temperature", type=float,
                        help=f"constant-temperature clip policy (laplace/gaussian; default {DEFAULT_TEMPERATURE})")
    radius.add_argument("--clip-radius", type=float, help="fixed clip radius (laplace/gaussian)")
    parser.add_argument("--seed", type=seed_option,
                        help=f"fixed noise seed: reproducible, hence {NOT_PRIVATE_SEED}; default OS entropy")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"records per pass (default {DEFAULT_BATCH}; {DEFAULT_TABLE_BATCH} for a CSV's rows "
                             "with another mechanism than paper, where it changes only the speed); the paper "
                             "mechanism's output depends on it")
    parser.add_argument("--labels", type=Path,
                        help=f"CSV with columns file,label (overrides class folders); without it, a {LABELS_NAME} "
                             "at the top of INPUT (or of a ZIP's single top folder) is read so")
    parser.add_argument("--invert", choices=INVERT_CHOICES, default=None,
                        help="invert images for the model (auto: those whose border is brighter than their "
                             "centre, dark on light; their releases are left light on dark, as the model reads them, "
                             "since one written back would release the input's polarity; always: every image, each "
                             "release inverted back, dark on light as its input). Default: "
                             "auto for models of MNIST-style data (light on dark), never for a model trained on an "
                             "image folder (it learned its images as they are)")
    parser.add_argument("--condition", action="append", default=[], metavar="NAME=HANDLING",
                        help="how a condition is released: NAME=kept (default), NAME=randomized:EPSILON "
                             "(randomized response, adds EPSILON) or NAME=resampled (public prior, costs 0); "
                             "images have one condition, 'label'")
    parser.add_argument("--neutral-names", action="store_true",
                        help="images: name outputs by number, in an order drawn at random, in folders of the released "
                             "label instead of copying the input's names (always so when the label is randomized "
                             "or resampled); a CSV's rows are always written in an order drawn at random")
    parser.add_argument("--skip-privatized", type=Path, metavar="EARLIER_OUTPUT",
                        help="images: leave out the inputs that EARLIER_OUTPUT's manifest.csv lists as privatized "
                             "(the OUTPUT of an interrupted run of the same INPUT, matched by file name), so that they "
                             "are not released again; OUTPUT lists them as skipped")
    parser.add_argument("input", type=Path, metavar="INPUT",
                        help="folder of images, .zip of one, or .csv (or .tsv, .txt) of rows")
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="new (or empty) folder for the results")
    return parser.parse_args(argv)


def model_line(loaded) -> str:
    """The terms' line on the model that made the release (``LoadedModel.terms_line``; "" for a loader without it)."""
    line = getattr(loaded, "terms_line", None)
    return line() if callable(line) else ""


def _load_model(source: str):
    from cadp import hub

    loader = getattr(hub, "load_model", None) or hub.load_folder
    return loader(source)


def _mechanism(args) -> Mechanism:
    if args.mechanism == "laplace" and args.delta is not None:
        raise UsageError("--delta applies to gaussian only, not laplace (pure epsilon-DP has no delta)")
    if args.mechanism in ("laplace", "gaussian"):
        for option, value in (("--clip-radius", args.clip_radius), ("--temperature", args.temperature)):
            if value is not None and not value > 0:  # said with the option's name, not the library's
                raise UsageError(f"{option} must be a number > 0, got {value:g}")
        # neither given: the library's default, constant temperature 0.7 (PRIVACY.md)
        return make_mechanism(args.mechanism, args.epsilon, delta=args.delta, clip_radius=args.clip_radius,
                              temperature=args.temperature)
    if args.temperature is not None or args.clip_radius is not None:
        raise UsageError(f"--temperature and --clip-radius apply to laplace and gaussian, not {args.mechanism}")
    if args.delta is not None:
        raise UsageError(f"--delta applies to gaussian only, not {args.mechanism}")
    return make_mechanism(args.mechanism, args.epsilon)


def _check_paths(args, kind: str) -> str:
    """'folder', 'zip' or 'csv', after checking INPUT and OUTPUT."""
    source: Path = args.input
    if str(args.output) == "-":  # (not standard output: a folder named '-' was made in the working folder)
        raise UsageError("OUTPUT '-' is not standard output: a run writes a folder of files (the privatized files, "
                         f"{GUARANTEE_NAME}, {MANIFEST_NAME}); give the folder's name, e.g. ./released")
    for index, part in enumerate(args.output.parts):  # new/.. is the folder above, whose files no check would see
        before = Path(*args.output.parts[:index]) if index else Path(".")
        if part == ".." and not before.is_dir():
            what = "a file, not a folder" if before.exists() else "a folder that does not exist"
            raise UsageError(f"OUTPUT {args.output} goes through '..' after {what}: give the output folder's own path")
    if not source.exists():
        raise UsageError(f"INPUT {source} does not exist")
    if source.is_dir():
        input_kind = "folder"
    elif source.suffix.lower() == ".zip":
        input_kind = "zip"
    elif source.suffix.lower() in TABLE_SUFFIXES:  # (the separator is read from the text: comma, semicolon, tab...)
        input_kind = "csv"
    else:
        raise UsageError(f"INPUT must be a folder of images, a .zip or a .csv (or .tsv, .txt) of rows, got {source}")
    if kind == "tabular" and input_kind != "csv":
        raise UsageError("the model is a tabular model: INPUT must be a .csv (or .tsv, .txt) of rows")
    if kind == "image" and input_kind == "csv":
        raise UsageError("the model is an image model: INPUT must be a folder of images or a .zip of one")
    output: Path = args.output
    if output.exists() and not output.is_dir():
        raise UsageError(f"OUTPUT {output} is a file, not a folder; choose a new folder (it is created)")
    if output.exists() and any(output.iterdir()):
        if (output / MANIFEST_NAME).is_file():  # an earlier run's output, perhaps a partial one: never written over
            if _released_in(output / MANIFEST_NAME) == 0:  # (killed before its rows were written: all pending)
                raise UsageError(f"OUTPUT {output} holds an earlier run that released nothing ({MANIFEST_NAME} lists "
                                 "no input as privatized: it was stopped before any release was written); remove "
                                 "that folder or choose a new one, and run again on the same INPUT")
            raise UsageError(f"OUTPUT {output} holds an earlier run ({MANIFEST_NAME} lists what it privatized); "
                             f"choose a new folder. {_RESTART}")
        raise UsageError(f"OUTPUT {output} exists and is not an empty folder; choose a new folder")
    resolved = _resolved(output)
    if resolved is None:  # a loop of links
        raise UsageError(f"OUTPUT {output} goes through a loop of links: choose a folder the path reaches")
    if input_kind == "folder" and (resolved == source.resolve() or source.resolve() in resolved.parents):
        raise UsageError("OUTPUT must not be inside INPUT")
    if args.batch_size is None:  # table rows cost little each: a pass's own overhead ruled at 64
        args.batch_size = DEFAULT_TABLE_BATCH if input_kind == "csv" and args.mechanism != "paper" else DEFAULT_BATCH
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.labels is not None and input_kind == "csv":
        raise UsageError("--labels applies to images; a CSV's conditions are its own columns")
    if args.invert is not None and input_kind == "csv":
        raise UsageError("--invert applies to images (dark-on-light scans); a CSV's rows are read as they are")
    if args.labels is not None and not args.labels.is_file():
        raise UsageError(f"--labels {args.labels} is not a file")
    return input_kind


def _released_in(manifest: Path) -> int | None:
    """How many inputs an earlier run's manifest lists as privatized, or as skipped (a --skip-privatized run's:
    released by the run it continues, whose advice it needs), read a row at a time; None where it cannot be read as
    one."""
    try:
        with manifest.open(newline="", encoding="utf-8") as handle:
            rows = csv.DictReader(handle)
            if "status" not in (rows.fieldnames or []):
                return None
            return sum(row["status"] in ("privatized", SKIPPED) for row in rows)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def parse_conditions(items: list[str], config) -> dict[str, ConditionHandling]:
    """``NAME=kept|randomized:EPSILON|resampled`` options -> handling per condition of the model."""
    names = ["label"] if config.kind == "image" else config.condition_columns
    handlings = {}
    for item in items:
        name, _, spec = item.partition("=")
        if name not in names:
            raise UsageError(f"--condition {item!r}: the model's conditions are {', '.join(names) or 'none'}")
        if name in handlings:
            raise UsageError(f"--condition {name} is given twice: give each condition once")
        handling, _, epsilon = spec.partition(":")
        if handling == "randomized" and not epsilon:
            raise UsageError(f"--condition {item!r}: write {name}=randomized:EPSILON")
        try:
            epsilon = float(epsilon) if epsilon else None
        except ValueError:
            raise UsageError(f"--condition {item!r}: the epsilon {epsilon!r} is not a number") from None
        try:
            handlings[name] = ConditionHandling(handling, epsilon)
        except InputError as error:
            raise UsageError(f"--condition {item!r}: {error}") from None
    return handlings


def main(argv=None, *, exiting: bool = False) -> int:
    """Run the CLI and return its exit code (``EXIT_CODES``): 0 when at least one file or row was privatized, 1 when
    none was, 2 on unusable arguments, 3 when a write error stopped a run that privatized some, 130 or 128 + N when
    a signal stopped it. Signals after a stop's first stay ignored until this returns (its cleanup completes), and
    ``exiting`` (the command line, whose process ends next) ignores them from then on."""
    _stop_requests.exiting = exiting  # (a program calling main() is never ended by its signals' handler)
    try:
        return _main(argv)
    finally:
        _stop_requests.restore(ignore=exiting)


def _stopped_starting() -> int:
    """Say that a signal ended the run before it began writing, and return its exit code (130 for Ctrl-C)."""
    text, code = stopped_while_starting(_stop_requests.signum or signal.SIGINT)
    _say(text)
    return code


def _main(argv=None) -> int:
    _stop_requests.install()  # first: a stop while the model loads is noted, and ends the run before any release
    args = parse_args(argv)
    configure_allocator()
    try:
        mechanism = _mechanism(args)
        loaded = _load_model(str(args.model))
        handlings = parse_conditions(args.condition, loaded.config)
        total_epsilon(mechanism, handlings)  # a total that overflows to infinity is refused before any release
        kind = loaded.config.kind
        input_kind = _check_paths(args, kind)
        earlier = _earlier_run(args, kind)
        labels = read_labels_csv(args.labels.read_bytes()) if args.labels is not None else None
        labels_files = folder_labels_files(args.input) if input_kind == "folder" else []
        if labels is None and labels_files:
            labels = read_labels_csv(labels_files[0].read_bytes())
            _say(f"note: labels from {labels_files[0]} (they override class folders)")
        if labels_files and (args.labels is not None or len(labels_files) > 1):  # Labels.csv beside labels.csv too
            unread = unread_labels_note([path.name for path in labels_files],
                                        None if args.labels is not None else labels_files[0].name,
                                        args.labels is not None)
            _say(f"note: {unread}")
        read = None  # a ZIP's labels CSV, when it gives the labels: its rows' paths start at its folder
        labels_root = ""  # where the labels CSV's paths start, in a ZIP (also from its top: LabelResolver)
        if input_kind == "zip":
            if labels is None:
                labels, read = _zip_labels(args.input)
                if labels is not None:
                    labels_root = read.rpartition("/")[0]
                    _say(f"note: labels from {readable(read)} in {args.input} (they override class folders)")
            elif args.labels is not None:  # --labels with a zipped folder: its paths may start in that folder
                with zipfile.ZipFile(args.input) as opened:
                    labels_root = given_labels_root(labels, _zip_top_folder(opened),
                                                    [name for _, name in _zip_files(opened)])
            unread = unread_labels_note(_zip_labels_members(args.input), read, args.labels is not None)
            if unread:
                _say(f"note: {unread}")
    except (CadpError, zipfile.BadZipFile, OSError) as error:
        unreadable = getattr(error, "filename", None) or args.input  # the labels file, say, rather than INPUT
        message = str(error) if isinstance(error, CadpError) else f"{unreadable} cannot be read ({error})"
        _say(f"error: {message}")
        return EXIT_USAGE
    except KeyboardInterrupt:  # loading the model (a run outside the main thread): nothing was written yet
        _say(STOPPED_STARTING)
        return EXIT_INTERRUPTED
    if _stop_requests.stopped_starting():
        return _stopped_starting()
    # which weights: a Hub id may have fallen back to the bundled copy, and only this line would say so
    _say(f"note: model {loaded.config.name}, {loaded.origin}")
    invert = args.invert or default_invert(loaded.config.dataset)
    settings = RunSettings(mechanism, new_generator(args.seed), args.seed, args.batch_size, invert, handlings,
                           args.neutral_names, earlier.highest_number + 1 if earlier is not None else 1,
                           model_line(loaded))
    # the folders this run makes (OUTPUT and any missing parents, deepest first): removed again if it releases nothing
    created: list[Path] = []
    _stop_requests.may_exit_at_once = False  # from here a second signal waits for the clean-up too
    try:
        _make_folders(args.output, created)
        manifest = Manifest(args.output / MANIFEST_NAME, settings)
    except OSError as error:
        try:
            _remove_run_files(args.output, created)
        except OSError:
            pass
        where = f": {error.filename}" if getattr(error, "filename", None) else ""
        _say(f"error: cannot write the output folder {args.output} ({error.strerror or error}{where})")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _remove_run_files(args.output, created)
        _say(STOPPED_STARTING)
        return EXIT_INTERRUPTED
    if _stop_requests.stopped_starting():
        _remove_run_files(args.output, created)
        return _stopped_starting()
    hidden: list[str] = []  # (images) the input's hidden files and folder metadata, left out
    _stop_requests.started = True  # from here a signal stops the run cleanly at the next batch boundary
    try:
        if kind == "tabular":
            with progress_bar("rows", "row") as progress:
                privatize_table(loaded.model, args.input, settings, args.output, manifest, progress)
        else:
            input_names = _input_names(args.input, input_kind, hidden, args.labels)
            if hidden_files_note(hidden):
                _say(f"note: {hidden_files_note(hidden)}")
            if input_kind == "folder" and (outside := outside_links_note(args.input)):
                _say(f"note: {outside}")
            resolver = LabelResolver(loaded.config.class_names, labels, input_names, root=labels_root)
            unused = unused_labels_note(resolver.unused_labels(), resolver)
            if unused:
                _say(f"note: {unused}")
            unlisted = resolver.unlisted_inputs()
            if unlisted:  # (the CSV overrides the folders only for the files it lists)
                _say(f"note: {counted(len(unlisted), 'input file')} {'is' if len(unlisted) == 1 else 'are'} not "
                     "listed in the labels CSV, e.g. "
                     f"{readable(unlisted[0])}: each takes the class of its folder, or is listed as unusable "
                     "where no folder names a class")
            # numbered outputs are written in a random order: numbers, file times and the manifest's rows in input
            # order would tell which inputs they are (and inputs sorted into class folders, their true labels)
            shuffle = None if settings.names_copied else random.Random(args.seed) if args.seed is not None \
                else random.SystemRandom()
            if input_kind == "folder":
                source, total = iter_folder_files(args.input, shuffle, args.labels), len(input_names)
            else:
                from cadp.uploads import iter_zip_images

                source, total = _zip_source(args.input, partial(iter_zip_images, shuffle=shuffle))
            if earlier is not None:
                source = skipping(source, earlier)
                for note in earlier_run_notes(earlier, settings):
                    _say(f"note: {note}")
                if missing := check_earlier_names(earlier, input_names):
                    _say(f"note: {missing}")
            # a copied .png name stays its input's: a.bmp, converted to PNG, does not take a.png from a.png
            own_png_names = _png_names(input_names) if settings.names_copied else None
            try:
                with progress_bar("images", "file", total) as progress:
                    privatize_images(loaded.model, loaded.config.class_names, source, resolver, settings,
                                     args.output, manifest, progress, args.input.name, own_png_names)
            finally:  # an interrupted run gets its cautions too (stderr, cautions.txt)
                add_caution(args.output, repeated_records_caution(manifest, "image"))
                add_caution(args.output, first_frames_caution(manifest))
                if input_kind == "folder":
                    add_caution(args.output, training_data_caution(loaded.config, image_folder_name(args.input), 0))
    except UsageError as error:
        manifest.close()
        _no_terms_without_releases(args.output, manifest)
        if not manifest.released:  # refused before any release: leave OUTPUT as it was, so a retry can use it
            _remove_run_files(args.output, created)
        _say(f"error: {error}")
        return EXIT_USAGE
    except CadpError as error:
        manifest.close()
        _finish_stopped(args.output, manifest, "Partial run: stopped by an error after "
                                               f"{counted(manifest.released, 'privatized input')} ({error}); the "
                                               "terms below hold for those.")
        _say(f"error: {error}{_not_completed(manifest, kind, '; ')}")
        return EXIT_OK if manifest.released else EXIT_NOTHING_PRIVATIZED
    except OSError as error:  # writing the output failed (disk full, file too large): the run stops as on Ctrl-C
        manifest.close()
        reason = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
        if not manifest.released:
            _say(f"error: the run stopped ({reason}) {_NOTHING_RELEASED}{_left_as_it_was(args.output, created)}")
            return EXIT_NOTHING_PRIVATIZED
        _finish_stopped(args.output, manifest, f"Partial run: stopped by an error ({reason}) after "
                                               f"{counted(manifest.released, 'privatized input')}; the terms below "
                                               "hold for those.")
        incomplete = {**({MANIFEST_NAME: manifest.write_error} if manifest.write_error else {}), **manifest.incomplete}
        unfinished = "".join(f"; {name} could not be completed ({failed.strerror or failed}): its last rows"
                             f"{' or its totals and outputs' if name == MANIFEST_NAME else ''} may be missing"
                             for name, failed in incomplete.items())
        lost = (f" (and {manifest.not_written:,} not written to {PRIVATIZED_CSV_NAME}, hence not released"
                + ("" if manifest.write_error else f": {MANIFEST_NAME} marks them '{NOT_WRITTEN}'") + ")"
                if manifest.not_written else "")
        _say(f"error: the run stopped ({reason}) after {manifest.released} privatized{lost}; {args.output} holds a "
             f"partial run, the files kept are the ones {MANIFEST_NAME} lists{unfinished}. {_RESTART}")
        return EXIT_WRITE_ERROR if manifest.released else EXIT_NOTHING_PRIVATIZED
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM / SIGHUP turned into RunInterrupted
        signum = getattr(stop, "signum", signal.SIGINT)
        how = "interrupted" if signum == signal.SIGINT else f"ended by {signal.Signals(signum).name}"
        manifest.close()
        if not manifest.released:
            _say(f"stopped: {how} {_NOTHING_RELEASED}{_left_as_it_was(args.output, created)}")
            return EXIT_INTERRUPTED if signum == signal.SIGINT else 128 + signum
        # the terms travel with the files: they say the run is partial
        _finish_stopped(args.output, manifest, f"Partial run: {how} after "
                                               f"{counted(manifest.released, 'privatized input')}; the terms below "
                                               "hold for those.")
        _say(f"stopped: {how} after {manifest.released} privatized; {args.output} holds a partial run "
             f"({MANIFEST_NAME} lists what was done{_not_completed(manifest, kind, '; ')}). {_RESTART}")
        return EXIT_INTERRUPTED if signum == signal.SIGINT else 128 + signum
    finally:
        manifest.close()
    _no_terms_without_releases(args.output, manifest)
    finish_guarantee(args.output)  # the run ended: its terms are no longer an unfinished run's
    if _stop_requests.signum is not None and not _stop_requests.raised:  # "stopping" was said: the run finished
        _say(f"the run had read every input when the {signal.Signals(_stop_requests.signum).name} came: it finished, "
             "nothing was left out")
    if not manifest.released and not manifest.failed and manifest.skipped:  # all done before
        _remove_run_files(args.output, created)
        _say(f"error: every input of {args.input} ({manifest.skipped}) has the name of one privatized by the run in "
             f"{earlier.folder} or one it continued: nothing was released, and nothing was written")
        return EXIT_NOTHING_PRIVATIZED
    if not manifest.released and not manifest.failed:  # a header without rows, a folder without files
        _remove_run_files(args.output, created)
        skipped = (f" ({counted(len(hidden), 'hidden or system file')} skipped)" if kind == "image" and hidden
                   else "")
        _say(f"error: {args.input} holds no {'rows' if kind == 'tabular' else 'files'} to privatize{skipped}; nothing "
             "was written")
        return EXIT_NOTHING_PRIVATIZED
    skipped = (f", skipped {manifest.skipped} (inputs of these names were privatized by the run in {earlier.folder} or "
               "one it continued)"
               if earlier is not None and manifest.skipped else "")
    _say(f"privatized {manifest.released}, unusable {manifest.failed}{skipped}; "
         f"details in {args.output / MANIFEST_NAME} (this run's record, not part of the release)")
    if manifest.reasons:
        reason, count = manifest.reasons.most_common(1)[0]
        _say(f"most common reason ({count} of {manifest.failed}): {reason}")
    if settings.seed is not None:
        _say(f"noise from seed {settings.seed}: {NOT_PRIVATE_SEED}")
    if kind == "image" and settings.names_copied and manifest.released:  # guarantee.txt says it too
        _say(f"note: {COPIED_NAMES_NOTE}")
    if manifest.write_error and manifest.released:  # its completion (totals; a CSV's outputs) needs room too
        _say(f"error: {_not_completed(manifest, kind)}. {_RESTART}")
        return EXIT_WRITE_ERROR
    return EXIT_OK if manifest.released else EXIT_NOTHING_PRIVATIZED


def _not_completed(manifest: Manifest, kind: str, lead: str = "") -> str:
    """That the manifest could not be completed, and what it then lacks, after ``lead``; "" when it was."""
    error = manifest.write_error
    if error is None or not manifest.released:
        return ""
    lacks = (f"its rows still say '{PENDING}' and lack which row of {PRIVATIZED_CSV_NAME} is whose and"
             if kind == "tabular" else "it lacks")
    return (f"{lead}{MANIFEST_NAME} could not be completed ({error.strerror or error}): {lacks} each record's "
            "releases_of_record and epsilon_record_total")


_RESTART = (f"Running again releases again: each record released again costs its epsilon again (basic composition), "
            f"and the privatized inputs are the ones {MANIFEST_NAME} lists; to finish, give a new OUTPUT and only the "
            "inputs not yet released (for images: the same INPUT with --skip-privatized and this OUTPUT), and, if "
            "this run had a --seed, another seed or none: the same seed would draw this run's noise again.")


def _say(message: str) -> None:
    """``message`` on stderr, where it can be written: a closed terminal (SIGHUP), a reader gone (a broken pipe), a
    full disk behind 2> or a closed stderr (2>&-) silences the rest of the run's messages, and stops nothing."""
    if sys.stderr is None:  # (print would write to stdout)
        return
    try:
        print(message, file=sys.stderr)
    except (OSError, ValueError):
        _stderr_failed()


def _stderr_failed() -> None:
    """Send the rest of this process's messages nowhere, once stderr cannot take them (and the process's exit
    cannot fail flushing what is left of them)."""
    try:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (open for the process's remaining life)
    except OSError:
        sys.stderr = None


LOG_PROGRESS_SECONDS = 30.0  # between progress lines where stderr is no terminal


class LogProgress:
    """Progress where stderr is no terminal (nohup, cron, a log file), where tqdm's bar is off and a long run was
    silent: a line every LOG_PROGRESS_SECONDS, and one at the end of a run that printed any (a short run stays
    quiet). Lines go through ``_say``: one the log cannot take stops nothing."""

    def __init__(self, description: str, unit: str, total: int | None = None):
        self.description, self.unit, self.total = description, unit, total
        self.count, self.lines = 0, 0
        self.start = self.last = time.monotonic()

    def update(self, count: int = 1) -> None:
        self.count += count
        now = time.monotonic()
        if now - self.last >= LOG_PROGRESS_SECONDS:
            self.last = now
            self._line(now)

    def _line(self, now: float, ending: str = "") -> None:
        self.lines += 1
        share = f" of {self.total:,} ({100 * self.count / self.total:.0f}%)" if self.total else ""
        _say(f"{self.description}: {self.count:,}{share} {self.unit}s after {now - self.start:.0f} s{ending}")

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, kind, _error, _trace) -> bool:
        if self.lines:
            self._line(time.monotonic(), "" if kind is None else ", stopped")
        return False


def progress_bar(description: str, unit: str, total: int | None = None):
    """A terminal's progress bar (tqdm), or ``LogProgress`` lines where stderr is no terminal."""
    if ProgressStream().isatty():
        return tqdm(total=total, desc=description, unit=unit, file=ProgressStream(), dynamic_ncols=True)
    return LogProgress(description, unit, total)


class ProgressStream:
    """stderr for the progress bar: a write to it that fails ends the bar's output (and the run's messages), not the
    run, which only the output's write errors stop."""

    @property
    def encoding(self) -> str:
        return getattr(sys.stderr, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        try:
            return sys.stderr is not None and sys.stderr.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:  # the bar's width is the terminal's (tqdm asks only with dynamic_ncols: not sys.stderr)
        if sys.stderr is None:
            raise OSError("stderr is closed")
        return sys.stderr.fileno()

    def write(self, text: str) -> int:
        try:
            return sys.stderr.write(text) if sys.stderr is not None else len(text)
        except (OSError, ValueError):
            _stderr_failed()
            return len(text)

    def flush(self) -> None:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
        except (OSError, ValueError):
            _stderr_failed()


def _no_terms_without_releases(output: Path, manifest: Manifest) -> None:
    """Remove the terms written before the first batch, and any cautions, when nothing was released: they are
    about no file."""
    if not manifest.released:
        try:
            (output / GUARANTEE_NAME).unlink(missing_ok=True)
            (output / CAUTIONS_NAME).unlink(missing_ok=True)  # about inputs of which none was released
        except OSError:
            pass


def _finish_stopped(output: Path, manifest: Manifest, status: str) -> None:
    """A stopped run's terms start with ``status`` where they can be written; if they cannot (disk full), they keep
    their "Incomplete run" line, which says as much."""
    _no_terms_without_releases(output, manifest)
    try:
        finish_guarantee(output, status)
    except OSError:
        pass


def _earlier_run(args, kind: str) -> EarlierRun | None:
    """The earlier run that --skip-privatized names, read and checked (None without the option)."""
    folder: Path | None = args.skip_privatized
    if folder is None:
        return None
    if kind != "image":
        raise UsageError("--skip-privatized is for image inputs; for a CSV, give the rows its earlier run's "
                         f"{MANIFEST_NAME} does not list as privatized")
    if not folder.is_dir():
        raise UsageError(f"--skip-privatized {folder}: not a folder (give the OUTPUT folder of the earlier run)")
    if folder.resolve() == args.output.resolve():
        raise UsageError("--skip-privatized names OUTPUT itself: give the earlier run's folder, and a new OUTPUT")
    earlier = read_earlier_run(folder)
    # PRIVACY.md: never reuse one noise draw (torch's generator keeps a seed's low 32 bits: 7 and 7 + 2**32 are one)
    if args.seed is not None and args.seed % 2**32 in {seed % 2**32 for seed in earlier.seeds}:
        raise UsageError(f"--seed {args.seed}: the run in {folder} (or one it continued) drew its noise from seed "
                         f"{args.seed} too (or one that draws alike: the generator keeps a seed's lowest 32 bits), "
                         "so this run would release other records with the same noise draws (the "
                         "difference of two such releases gives away how their records differ): give another "
                         "--seed, or none (noise from the operating system)")
    return earlier


def _make_folders(output: Path, created: list[Path]) -> None:
    """Make OUTPUT and its missing parents one at a time, noting in ``created`` (deepest first) only the folders this
    call made: a folder someone else makes meanwhile, or one reached through '..', is never taken for the run's."""
    target = output.absolute()  # ('..' kept as written: the folders are made as the system walks the path)
    for folder in reversed((target, *target.parents)):
        if folder.is_dir():
            continue
        try:
            os.mkdir(folder)
        except OSError:  # (EEXIST, or EISDIR / EACCES for an existing folder on some systems)
            if folder.is_dir():
                continue
            if folder.exists():
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder)) from None
            if folder.is_symlink():  # a link to nothing: mkdir said only "File exists"
                raise FileNotFoundError(errno.ENOENT, f"a link to {os.readlink(folder)}, which does not exist",
                                        str(folder)) from None
            raise
        created.insert(0, folder)


def _remove_run_files(output: Path, created: list[Path]) -> None:
    """Delete what a refused run wrote (its manifest, an empty privatized.csv, folders it made for outputs that
    were never written), and the folders it made (``created``: OUTPUT and its missing parents, deepest first) where
    they are empty."""
    for name in (MANIFEST_NAME, PRIVATIZED_CSV_NAME, GUARANTEE_NAME, LABELS_NAME, CAUTIONS_NAME):
        (output / name).unlink(missing_ok=True)
    for folder, _, _ in sorted(os.walk(output), key=lambda entry: -len(entry[0])):  # deepest first
        if Path(folder) != output and not any(Path(folder).iterdir()):
            Path(folder).rmdir()  # (OUTPUT was empty before the run: an empty folder in it is the run's)
    for folder in created:
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()


_NOTHING_RELEASED = "before any privatized input was written: nothing was released"


def _left_as_it_was(output: Path, created: list[Path]) -> str:
    """Remove a run's files when it released nothing (a retry can use OUTPUT again); what to say of OUTPUT."""
    try:
        _remove_run_files(output, created)
    except OSError:
        pass
    if not output.exists() or not any(output.iterdir()):
        return f", and {output} was left as it was"
    return f"; {output} still holds files the run could not remove"


def _zip_source(path: Path, iter_zip_images) -> tuple[Iterator, int | None]:
    """Members of the ZIP (read from disk one at a time), minus its labels.csv, and their count."""
    from cadp.uploads import sanitize_member_name
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(1 for info in archive.infolist() if not info.is_dir())
    except (zipfile.BadZipFile, OSError):
        total = None

    def members():
        with path.open("rb") as handle:
            for name, content in iter_zip_images(handle):
                if sanitize_member_name(name)[1]:  # unsafe: skipped, whatever its name says it is
                    yield name, content
                    continue
                if _is_zip_labels_member(name):
                    continue
                if _is_labels_name(name):  # deeper down: said so, not "not an image"
                    content = InputError(DEEPER_LABELS.format(where=f"the {LABELS_NAME} at the ZIP's top or in its "
                                                                    "single top folder"))
                elif PurePosixPath(name).suffix.lower() == ".csv" and isinstance(content, InputError):
                    content = InputError(OTHER_CSV.format(where=f"the {LABELS_NAME} at the ZIP's top or in its "
                                                                "single top folder"))
                yield name, content

    return members(), total


if __name__ == "__main__":  # the documented entry point is python -m cadp.privatize; this one works the same
    sys.exit(main(exiting=True))
