"""Where the backend is. Only from the server's own configuration, never from user input.

Order: the TIKKA_API_URL environment variable, then `api_url` in
.streamlit/secrets.toml, then the local Bento. The API key, when the Bento
wants one, likewise: TIKKA_API_KEY, then `api_key` in the secrets file. Query parameters and form fields
are never consulted: the server would otherwise post users' photos to any URL
a link chose (an SSRF and data-exfiltration hole).
"""

from __future__ import annotations

import os

DEFAULT_API_URL = "http://localhost:3000"


def api_url() -> str:
    url = _setting("TIKKA_API_URL", "api_url")
    return url.rstrip("/") if url else DEFAULT_API_URL


def api_key() -> str | None:
    """The key the Bento asks for when TIKKA_API_KEYS is set there; None: send none."""
    return _setting("TIKKA_API_KEY", "api_key")


def _setting(env_name: str, secret_name: str) -> str | None:
    if value := os.environ.get(env_name):
        return value
    try:
        import streamlit as st

        value = st.secrets.get(secret_name)
    except Exception:  # no secrets file is the normal case
        value = None
    return str(value) if value else None
