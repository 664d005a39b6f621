"""The app's pages: each page's file (as ``app.py`` names it for ``st.navigation``) and its title, in menu order.

``app.py`` builds its navigation from this table and the home page's "Where to start" list names the pages by it
(``cadp.ui.WHERE_TO_START``), so a page's title is written once. No Streamlit here: ``app.py`` imports it before
the page is configured.
"""

HOME = "views/home.py"
PAGES = (
    (HOME, "Home"),
    ("views/image.py", "Image privatization"),
    ("views/tabular.py", "Tabular privatization"),
    ("views/utility.py", "Utility curves"),
    ("views/audit.py", "Privacy audit"),
    ("views/model_card.py", "Model card"),
)
TITLES = dict(PAGES)
