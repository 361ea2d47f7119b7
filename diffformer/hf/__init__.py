"""Hugging Face interop: export a run as a folder transformers loads (Llama layout or remote code)."""
