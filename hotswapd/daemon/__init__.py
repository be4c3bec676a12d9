"""The daemon: socket loop, registry of loaded models, lifecycle."""
