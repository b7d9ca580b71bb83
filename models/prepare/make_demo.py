"""Demo camera material: 100 consecutive vtest.avi frames as JPEG, plus still images from packages.
Usage: make_demo.py FRAMES_DIR(f_NNNN.png) OUT_DIR(models/demo) STILL_FILE...
Frames START..START+COUNT-1 become frames/vtest_0000.jpg ... (Pillow JPEG quality 85, 4:4:4 chroma so that
different JPEG decoders agree closely). Stills are copied byte for byte."""
import argparse
import shutil
from pathlib import Path

from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("frames")
ap.add_argument("out")
ap.add_argument("stills", nargs="*")
ap.add_argument("--start", type=int, default=560)
ap.add_argument("--count", type=int, default=100)
args = ap.parse_args()
out = Path(args.out)
(out / "frames").mkdir(parents=True, exist_ok=True)
(out / "stills").mkdir(parents=True, exist_ok=True)
for old in (out / "frames").glob("vtest_*.jpg"):
    old.unlink()
for k in range(args.count):
    src = Path(args.frames) / f"f_{args.start + k:04d}.png"
    Image.open(src).convert("RGB").save(out / "frames" / f"vtest_{k:04d}.jpg", quality=85, subsampling=0)
for s in args.stills:
    shutil.copyfile(s, out / "stills" / Path(s).name)
print(f"{args.count} frames from {args.start}; stills: {[Path(s).name for s in args.stills]}")
