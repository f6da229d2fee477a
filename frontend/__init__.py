"""The Streamlit front end: it uses only the Bento's public HTTP API."""
