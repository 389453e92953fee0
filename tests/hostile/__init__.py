"""The malformed-and-hostile corpus (issue 11): each module adds cases of one kind.

Every case goes through the real front end (`napari_unet.cli.main`, in-process) and must
give exit status 2 and exactly one line on stderr that names the offending file (or
option), with no traceback; `refuse` asserts that and returns the line. `CASES` counts
the cases each module registered, so a test can check the corpus keeps its size.
"""
