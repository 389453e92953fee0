import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "xcb" if os.environ.get("DISPLAY") else "offscreen")


def pytest_collection_modifyitems(items):
    for item in items:
        if "/widgets/" in str(item.fspath):
            item.add_marker(pytest.mark.gui)
