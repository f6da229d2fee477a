"""The LLM helpers: the async Ollama client, prompt templates, generation slots."""
