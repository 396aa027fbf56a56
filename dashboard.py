"""ViTrine's entry point (`streamlit run dashboard.py`): picks the page from the URL and runs it.

Each file in pages/ is one page with the same shape (the frame call, a title, a one-line intro, `main()`).
The frame (page config, navigation, sidebar) is each page's first call, `ui.shell.frame()`, because a page
can also run without this file: see ui/shell.py.
"""

from __future__ import annotations

from ui import shell

shell.navigation().run()
