"""CADP app entry point (placeholder until the app lands)."""

import streamlit as st

st.title("CADP — content-aware differential privacy")
st.write("The app is being built.")
