"""Where the backend is. Only from the server's own configuration, never from user input.

Order: the TIKKA_API_URL environment variable, then `api_url` in
.streamlit/secrets.toml, then the local Bento. Query parameters and form fields
are never consulted: the server would otherwise post users' photos to any URL
a link chose (an SSRF and data-exfiltration hole).
"""

from __future__ import annotations

import os

DEFAULT_API_URL = "http://localhost:3000"


def api_url() -> str:
    if url := os.environ.get("TIKKA_API_URL"):
        return url.rstrip("/")
    try:
        import streamlit as st

        url = st.secrets.get("api_url")
    except Exception:  # no secrets file is the normal case
        url = None
    return str(url).rstrip("/") if url else DEFAULT_API_URL
