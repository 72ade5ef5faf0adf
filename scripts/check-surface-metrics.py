"""Checks nn-eval's HD95 and NSD in a summary.json against an independent computation with scipy
(MONAI's definitions: surface = mask ^ erosion with the 6-neighbour cross, distances from scipy's exact
EDT with the image spacing, P95 by numpy.percentile, NSD tolerance from the summary).
Usage: python3 check-surface-metrics.py SUMMARY.json REF_DIR PRED_DIR  (needs numpy, scipy, SimpleITK)"""
import json, os, sys
import numpy as np, SimpleITK as sitk
from scipy.ndimage import binary_erosion, distance_transform_edt

summary_path, ref_dir, pred_dir = sys.argv[1:]
summary = json.loads(open(summary_path).read())
tolerance = summary.get("nn_tools", {}).get("nsd_tolerance_mm", 1.0)  # nn-eval's default
largest, compared = 0.0, 0
for case in summary["metric_per_case"]:
    name = os.path.basename(case["reference_file"])
    image = sitk.ReadImage(os.path.join(ref_dir, name))
    spacing = image.GetSpacing()[::-1]
    ref, pred = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(pred_dir, name)))
    for key, metrics in case["metrics"].items():
        a, b = ref == int(key), pred == int(key)
        if not a.any() and not b.any():
            expected = (np.nan, np.nan)
        elif not a.any() or not b.any():
            expected = (np.nan, 0.0)
        else:
            ea, eb = a ^ binary_erosion(a), b ^ binary_erosion(b)
            b_to_a = distance_transform_edt(~ea, sampling=spacing)[eb]
            a_to_b = distance_transform_edt(~eb, sampling=spacing)[ea]
            hd95 = max(np.percentile(b_to_a, 95), np.percentile(a_to_b, 95))
            nsd = ((b_to_a <= tolerance).sum() + (a_to_b <= tolerance).sum()) / (len(b_to_a) + len(a_to_b))
            expected = (hd95, nsd)
        for ours, theirs in zip((metrics["HD95"], metrics["NSD"]), expected):
            if np.isnan(theirs) or np.isinf(theirs):
                assert ours == theirs or (np.isnan(ours) and np.isnan(theirs)), (name, key, ours, theirs)
            else:
                largest, compared = max(largest, abs(ours - theirs)), compared + 1
print(f"HD95/NSD against scipy: {compared} finite values, max |difference| {largest:g}")
assert largest < 1e-9
