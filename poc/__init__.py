"""ViTrine proof-of-concept package: data, models, training, evaluation, artifacts.

Never imports Streamlit: it returns data; the dashboard renders it.
"""

__version__ = "0.1.0"
