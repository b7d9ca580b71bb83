#!/usr/bin/env python3
"""Builds the full 70,000-item Fashion-MNIST catalog (60,000 train + 10,000 test images, one colour each)
for benchmarks, in the same bundle format as catalog/demo (models/CONTRACTS.md section 7), into
catalog/full/ (git-ignored) or the folder given. About 0.9 GB and, on 2 cores, 35-50 minutes.

  python3 catalog/make_full_catalog.py [OUT_DIR]

Needs numpy, Pillow and onnxruntime (pip install -r models/prepare/requirements-ort.lock.txt) and Debian's
dataset-fashion-mnist package. The recipe is the demo catalog's (see catalog/README.md)."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "models" / "prepare"))
import make_catalog  # noqa: E402

out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "catalog" / "full"
make_catalog.build("full", out)
