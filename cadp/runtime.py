"""Process-wide settings for CPU inference, applied by the app and the command-line tools.

PyTorch's CPU tensors come straight from the C library's ``malloc``. glibc serves each
allocation above its mmap threshold (adaptive, at most 32 MiB) with a fresh ``mmap`` and
unmaps it on ``free``, and gives freed memory at the top of its heap back to the system
above a trim threshold. A large batch through the image flow allocates and frees tens of
activations of 3-50 MiB per call, so each one was page-faulted in again every time: the
bench worker measured mnist-cinn at batch 256 at 611 ms per call with glibc's defaults and
358 ms with these settings (BENCHMARKS.md, "Third round").
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 512 * 2**20  # freed memory the process may keep for its next batch


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library this process runs on
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None  # glibc only: musl's mallopt does nothing


def configure_allocator() -> bool:
    """Serve large allocations from the heap and keep up to 512 MiB of freed memory for reuse.

    glibc on Linux only (elsewhere nothing changes). The cost is memory held after a large
    batch (at most ``TRIM_THRESHOLD_BYTES`` above what is in use). Idempotent; returns whether
    the settings are in force.
    """
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def mmapped_bytes() -> int | None:
    """Bytes glibc currently holds in mmapped chunks (``mallinfo2().hblkhd``); None without glibc >= 2.33."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().hblkhd)


def configure_blas_threads() -> list[str]:
    """One thread for the OpenBLAS libraries NumPy and SciPy bring (torch keeps its own threads).

    OpenBLAS worker threads busy-wait for about 0.1 s after each call. In the app, the NumPy
    work of one page run (statistics, scikit-learn) was followed by the next run's torch work,
    and on 2 cores the spinning threads took a core from it: the table page's privatize call
    (442 rows) took 8-14 ms after this and 60-80 ms right after the page's NumPy work before it
    (BENCHMARKS.md, "Fourth round"). The app's NumPy and SciPy work is small. An OpenBLAS
    loaded later reads ``OPENBLAS_NUM_THREADS``. Returns the libraries limited; the work is done
    once per process (app.py runs on every rerun of a page; scanning the loaded libraries took ~3 ms).
    """
    global _BLAS_LIMITED
    if _BLAS_LIMITED is None:
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        from threadpoolctl import ThreadpoolController

        selected = ThreadpoolController().select(internal_api="openblas")
        selected.limit(limits=1)  # stays in force: the limiter is not used as a context manager
        _BLAS_LIMITED = [info["filepath"] for info in selected.info()]
    return _BLAS_LIMITED


_BLAS_LIMITED: list[str] | None = None


def keep_uploads_in_memory() -> bool:
    """Make the app's server hold each uploaded file in memory while it parses the upload request.

    Streamlit (1.67) parses an upload with Starlette's ``request.form()``, whose multipart parser spools any file
    over 1 MiB (``MultiPartParser.spool_max_size``) to an unnamed temporary file in the temp folder: an upload's
    bytes were written to disk before the page ever saw them, against the app's word that uploads are held in
    memory only. Streamlit caps the request at ``server.maxUploadSize`` while it streams, so memory per upload stays
    bounded. Idempotent, process-wide; returns whether the setting is in force (False without Starlette)."""
    try:
        from starlette.formparsers import MultiPartParser
    except ImportError:
        return False
    MultiPartParser.spool_max_size = sys.maxsize  # SpooledTemporaryFile rolls over to disk only above this
    return True


def no_address_lookups() -> bool:
    """Stop the app's server from looking up this machine's addresses for cross-origin websocket handshakes.

    For a handshake whose Origin is not its host, Streamlit (1.67) tries the machine's internal address (a UDP
    socket towards 8.8.8.8) and its public one (an HTTP request to checkip.amazonaws.com, 2 x 1 s timeouts, made
    in the event loop every visitor shares, and asked again after every failure): any web page could make the
    server send requests, and stall it where the network hangs. Both are set to 127.0.0.1, which Streamlit allows
    already; same-origin connections (the app's own pages, a Space's iframe) are not checked this way. Idempotent;
    returns whether it applied (False where Streamlit has no such cache)."""
    try:
        from streamlit import net_util
    except ImportError:
        return False
    if not hasattr(net_util, "_external_ip") or not hasattr(net_util, "_internal_ip"):
        return False
    net_util._external_ip = net_util._external_ip or "127.0.0.1"
    net_util._internal_ip = net_util._internal_ip or "127.0.0.1"
    return True


# a session's uploads held at once: well above a page's own 200 MB (said there), as Streamlit keeps a page's files
# after the visitor moves to another page (until they are removed from their box, or the session ends)
SESSION_UPLOAD_BYTES = 512 * 2**20
UPLOADS_BYTES_ENV = "CADP_UPLOADS_MAX_BYTES"
UPLOADS_BYTES = 2 * 2**30  # every session's uploads held at once, in the process


def limit_held_uploads(per_session: int = SESSION_UPLOAD_BYTES, in_all: int | None = None) -> bool:
    """Refuse, at the server, an uploaded file that would make one session hold more than ``per_session`` bytes of
    uploads, or the process more than ``in_all`` (default ``$CADP_UPLOADS_MAX_BYTES``, else 2 GiB).

    Streamlit stores every file an uploader takes in the process's memory before the page sees it, capped per file
    (``server.maxUploadSize``) but not in number: a page that refused 5 files of 47 MB still held them, and tabs of
    such uploads could take a hosted app's memory from every visitor. The refused file gets HTTP 413 (the uploader
    shows it as failed); a session's earlier files stay. Idempotent, process-wide; returns whether it is in force
    (False without Streamlit's in-memory upload store)."""
    try:
        from starlette.exceptions import HTTPException
        from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    except ImportError:
        return False
    if in_all is None:
        in_all = int(os.environ.get(UPLOADS_BYTES_ENV) or UPLOADS_BYTES)
    add_file = getattr(MemoryUploadedFileManager.add_file, "unlimited", MemoryUploadedFileManager.add_file)

    def limited_add_file(self, session_id, file) -> None:
        with self._lock:
            session = self.file_storage.get(session_id, {})
            replaced = len(session[file.file_id].data) if file.file_id in session else 0
            held = sum(len(held_file.data) for held_file in session.values()) - replaced
            if held + len(file.data) > per_session:
                raise HTTPException(status_code=413, detail=f"this session holds uploads of {held:,} bytes: at most "
                                                            f"{per_session:,} at once (remove some files)")
            if self._total_bytes - replaced + len(file.data) > in_all:
                raise HTTPException(status_code=503, detail="this app holds as many uploads as it can now: try "
                                                            "again later")
        add_file(self, session_id, file)

    limited_add_file.unlimited = add_file
    MemoryUploadedFileManager.add_file = limited_add_file
    return True
