"""An Ollama-compatible stand-in for development, tests and CI (not for production).

It serves the real Gemma 3 270M (GGUF from PyPI) with llama.cpp behind the
subset of Ollama's REST API that this project and the official `ollama` client
use. Production runs the real `ollama/ollama` image; see the README.
"""
