#!/usr/bin/env python3
"""Writes tests/fixtures/images/: JPEGs from another encoder (Pillow/libjpeg) that the image
loader's structure check must accept: progressive (DC scans, AC first and refining scans, each
with its own Huffman tables), optimised-Huffman baseline, and 4:2:0 subsampled colour.
Run once with Pillow installed; the small files are committed."""
import os
from PIL import Image

out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "images")
os.makedirs(out, exist_ok=True)
w, h = 23, 17
img = Image.new("RGB", (w, h))
img.putdata([((x * 11) % 256, (y * 15) % 256, ((x + y) * 7) % 256) for y in range(h) for x in range(w)])
img.save(os.path.join(out, "progressive.jpg"), "JPEG", quality=85, progressive=True)
img.save(os.path.join(out, "optimized.jpg"), "JPEG", quality=70, optimize=True, subsampling=2)
img.convert("L").save(os.path.join(out, "progressive_grey.jpg"), "JPEG", quality=90, progressive=True)
