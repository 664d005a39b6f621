"""CADP app: `streamlit run app.py`. Navigation over pages/; each page draws the shared sidebar."""

import streamlit as st

st.set_page_config(page_title="CADP — content-aware differential privacy", page_icon="🔒", layout="wide")

navigation = st.navigation([
    st.Page("pages/home.py", title="Home", default=True),
    st.Page("pages/image.py", title="Image privatization"),
    st.Page("pages/tabular.py", title="Tabular privatization"),
    st.Page("pages/utility.py", title="Utility curves"),
    st.Page("pages/audit.py", title="Privacy audit"),
    st.Page("pages/model_card.py", title="Model card"),
])
navigation.run()
