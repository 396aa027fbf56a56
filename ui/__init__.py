"""Streamlit-only helpers shared by the dashboard pages. `poc` never imports this package."""
