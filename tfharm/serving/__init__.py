"""Serving: the SavedModel signatures, the export and the file-level harmonise helpers."""
