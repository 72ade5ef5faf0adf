#!/usr/bin/env python3
"""Voxel agreement of two folders of label maps (.nii.gz or .nii, the same case names and shapes), with
nothing but the standard library, so that it runs with any python3.

Usage: scripts/bench-agreement.py LABEL DIR_A DIR_B
Prints one line: LABEL, the fraction of all voxels (over all cases) whose labels are equal, and the
lowest fraction of a single case, naming it.
"""
import gzip
import os
import struct
import sys

# NIfTI-1 datatype codes of integer label maps -> struct/memoryview format
FORMATS = {2: "B", 4: "h", 8: "i", 256: "b", 512: "H", 768: "I"}


def read_labels(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    for order in "<>":
        if struct.unpack(order + "i", raw[:4])[0] == 348:
            break
    else:
        sys.exit(f"{path}: not a NIfTI-1 file")
    dims = struct.unpack(order + "8h", raw[40:56])
    datatype = struct.unpack(order + "h", raw[70:72])[0]
    offset = int(struct.unpack(order + "f", raw[108:112])[0])
    if datatype not in FORMATS:
        sys.exit(f"{path}: datatype {datatype} is not an integer label map")
    count = 1
    for n in dims[1 : dims[0] + 1]:
        count *= n
    data = memoryview(raw)[offset:]
    size = struct.calcsize(FORMATS[datatype])
    values = data[: count * size].cast(FORMATS[datatype])
    return dims[1 : dims[0] + 1], (values if order == "<" or size == 1 else values.tolist())


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.split("\n\n")[1])
    label, a, b = sys.argv[1:]
    names = sorted(n for n in os.listdir(a) if n.endswith((".nii.gz", ".nii")))
    if not names:
        sys.exit(f"{a}: no label maps")
    equal_total = voxels_total = 0
    worst = (2.0, "")
    for name in names:
        shape_a, x = read_labels(os.path.join(a, name))
        shape_b, y = read_labels(os.path.join(b, name))
        if shape_a != shape_b:
            sys.exit(f"{name}: shapes differ, {shape_a} vs {shape_b}")
        equal = len(x) - sum(1 for p, q in zip(x, y) if p != q)
        equal_total += equal
        voxels_total += len(x)
        worst = min(worst, (equal / len(x), name))
    print(f"{label}: labels equal on {100 * equal_total / voxels_total:.3f}% of all voxels "
          f"({len(names)} cases), worst case {100 * worst[0]:.3f}% ({worst[1]})")


if __name__ == "__main__":
    main()
