"""Dock widgets: the only package that imports qtpy, magicgui or napari.qt."""
