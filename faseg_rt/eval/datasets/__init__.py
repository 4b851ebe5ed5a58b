"""One reader per benchmark (base.py: the shared interface; registry.py: names to readers)."""
