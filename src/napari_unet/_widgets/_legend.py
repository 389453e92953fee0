"""Labels that speak: the model's class names and colours on every labels layer the loop
uses, a legend that is also a named label picker, and the name next to napari's picker.

napari 0.9 shows a labels layer's ``features`` in the status bar (``2; name: kidney``)
but its label picker is a bare number box; the legend (click a class to paint with it)
is the named picker, and `name_napari_picker` puts the class name beside napari's box.
"""

from __future__ import annotations

import weakref

from qtpy.QtGui import QColor
from qtpy.QtWidgets import QGridLayout, QLabel, QPushButton, QSizePolicy, QWidget

from napari_unet._layers import label_colormap, label_features

_NAME_LABEL = "napari_unet_label_name"
_named: weakref.WeakSet = weakref.WeakSet()  # layers whose napari picker shows names


def apply_label_identity(layer, names: list[str], colors: list[str]) -> None:
    """Give ``layer`` the model's class names (``features``) and colours (colormap).

    Only what differs is set (each set repaints the layer).
    """
    if not names:
        return
    features = label_features(list(names))
    current = layer.features
    if "name" not in current or list(current["name"]) != features["name"]:
        layer.features = features
    if colors:
        wanted = label_colormap(list(colors))
        colormap = layer.colormap
        have = getattr(colormap, "color_dict", None)
        same = have is not None and all(
            key in have and _same_color(have[key], value) for key, value in wanted.items()
        )
        if not same:
            layer.colormap = wanted
    meta = layer.metadata.get("napari_unet")
    if isinstance(meta, dict) and meta.get("label_names") != list(names):
        meta["label_names"] = list(names)


def _same_color(a, b) -> bool:
    from napari.utils.colormaps.standardize_color import transform_color

    return bool((transform_color(a)[0] == transform_color(b)[0]).all())


def class_name(layer, value: int) -> str | None:
    """The name of label ``value`` in ``layer``'s features, None if it has none."""
    features = layer.features
    if "name" not in features:
        return None
    index = list(features["index"]) if "index" in features else list(range(len(features)))
    if value not in index:
        return None
    return str(features["name"].iloc[index.index(value)])


def name_napari_picker(anchor: QWidget, layer) -> bool:
    """Show the selected class's name beside napari's label number box (best effort).

    napari 0.9 has no public way to name labels in its picker: this finds the layer's
    controls among the widgets of ``anchor``'s window (the panel, once docked) and does
    nothing if they look different. Returns whether the name is shown.
    """
    if layer in _named:
        return True
    for controls in anchor.window().findChildren(QWidget):
        if getattr(controls, "layer", None) is layer and hasattr(controls, "_label_control"):
            break
    else:
        return False
    if controls.findChild(QLabel, _NAME_LABEL) is not None:
        return True
    try:
        row = controls._label_control.label_color.layout()
    except AttributeError:
        return False
    label = QLabel(controls)
    label.setObjectName(_NAME_LABEL)
    label.setMinimumWidth(40)
    row.insertWidget(row.count() - 1, label)

    def show(event=None) -> None:
        name = class_name(layer, int(layer.selected_label))
        label.setText(name or "")
        label.setToolTip(f"label {layer.selected_label}: {name}" if name else "")

    layer.events.selected_label.connect(show)
    layer.events.features.connect(show)
    show()
    _named.add(layer)
    return True


class LabelLegend(QWidget):
    """A swatch and a name per class; clicking one selects it for painting."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.layer = None
        self.buttons: list[QPushButton] = []
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setHorizontalSpacing(4)
        self._grid.setVerticalSpacing(2)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

    def set_classes(self, names: list[str], colors: list[str], layer=None) -> None:
        """Show ``names`` with ``colors``; clicks select the label in ``layer``."""
        if self.layer is not None:
            self.layer.events.selected_label.disconnect(self._highlight)
        self.layer = layer
        for button in self.buttons:
            self._grid.removeWidget(button)
            button.deleteLater()
        self.buttons = []
        columns = 2 if len(names) > 3 else 1
        for i, name in enumerate(names):
            color = QColor(colors[i] if i < len(colors) else "#b0b0b0")
            button = QPushButton(f"{i + 1}  {name}")
            button.setCheckable(True)
            button.setToolTip(f"paint with label {i + 1} ({name})")
            button.setStyleSheet(_button_style(color))
            button.clicked.connect(lambda _=False, value=i + 1: self.select(value))
            self._grid.addWidget(button, i // columns, i % columns)
            self.buttons.append(button)
        if layer is not None:
            layer.events.selected_label.connect(self._highlight)
        self._highlight()
        self.setVisible(bool(names))

    def select(self, value: int) -> None:
        """Paint with class ``value`` (1-based) from now on."""
        if self.layer is not None:
            self.layer.selected_label = value
        self._highlight()

    def _highlight(self, event=None) -> None:
        selected = int(self.layer.selected_label) if self.layer is not None else -1
        for i, button in enumerate(self.buttons):
            button.setChecked(i + 1 == selected)


def _button_style(color: QColor) -> str:
    """A flat button with a colour swatch on its left edge; bold border when checked."""
    return (
        "QPushButton { text-align: left; padding: 2px 6px 2px 10px; "
        f"border-left: 10px solid {color.name()}; border-radius: 2px; }}"
        f"QPushButton:checked {{ border: 2px solid {color.name()}; background: transparent; "
        f"border-left: 10px solid {color.name()}; font-weight: bold; }}"
    )
