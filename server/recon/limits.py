"""The reconstruction's input limits. The service's request schema and upload checks import them; the add-on's
``params.py`` mirrors them (a test compares the two)."""

MIN_FRAMES = 8  # fewer views of an orbit do not constrain the hull
MIN_RESOLUTION, MAX_RESOLUTION = 32, 512  # grid cells along the object's longest side: coarser is a blob, finer
# costs cubic memory on a CPU
