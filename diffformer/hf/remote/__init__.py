"""Files copied into exported folders as they are (they must import only torch and transformers)."""
