from napari_unet.cli import entry

entry()
