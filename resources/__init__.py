"""Files shipped with PacsPull (installed as ``pacspull.resources``): the app icon as SVG and PNG.

``build_scripts/render_icons.py`` renders pacspull.svg to the .png, .ico and .icns files beside it.
"""
