"""Writes models/oidv4.pbtxt from the label list packed at the start of the Objectron assets file.
Usage: write_labels.py objectron_solution_packed_assets.data models/oidv4.pbtxt"""
import sys

data = open(sys.argv[1], "rb").read(184)
names = data.decode("utf-8").splitlines()
assert names[0] == "???" and len(names) == 24, names
with open(sys.argv[2], "w") as f:
    # No comment lines: keep the file to the plain item form every parser accepts (see MODEL_CARD.md).
    for i, n in enumerate(names[1:], start=1):
        f.write(f"item {{\n  id: {i}\n  name: '{n}'\n}}\n")
print(sys.argv[2], len(names) - 1, "labels")
