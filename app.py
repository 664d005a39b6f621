"""CADP app: `streamlit run app.py`. Navigation over views/; each page draws the shared sidebar.

The page files are not in pages/: Streamlit serves a pages/ folder at its own URLs (e.g. /image),
bypassing this navigation, so a direct link would open a page without the app's shell.
"""

import streamlit as st

from cadp.pages import HOME, PAGES, TITLES
from cadp.runtime import (
    configure_allocator,
    configure_blas_threads,
    keep_uploads_in_memory,
    limit_held_uploads,
    no_address_lookups,
)

configure_allocator()  # large image batches reuse freed memory instead of page-faulting it in each call
configure_blas_threads()  # OpenBLAS threads spinning after NumPy work slowed the next torch call
keep_uploads_in_memory()  # before any upload arrives: the server's parser wrote files over 1 MiB to disk
limit_held_uploads()  # the server held every file an uploader took, however many, for as long as shown
no_address_lookups()  # a cross-origin handshake made the server ask checkip.amazonaws.com, in its event loop
st.set_page_config(page_icon="🔒", layout="wide")

navigation = st.navigation([st.Page(path, title=title, default=path == HOME) for path, title in PAGES])
# each page its own tab title (tabs, history and a screen reader's page announcement told the pages apart by none)
st.set_page_config(page_title=("CADP — content-aware differential privacy" if navigation.title == TITLES[HOME]
                               else f"{navigation.title} · CADP"))
navigation.run()
