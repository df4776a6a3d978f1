"""Where the voxels of each predicted vertebra lie: its own reference vertebra, a neighbour, other
bone, or soft tissue -- and how far from the reference bone the soft-tissue part lies.

    python benchmarks/error_breakdown.py --pred ct-pred --ref ct-test [--bone-hu 200]

``--pred`` is a folder of ``segment`` outputs (``<case>_*seg-vert_msk.nii.gz``), ``--ref`` a dataset
folder (project or VerSe layout). Each predicted instance is matched to the reference vertebra that
holds most of its voxels; instances lying wholly outside the reference vertebrae are left out (they
are false detections, counted by ``evaluate``). All fractions are of the matched instances' voxels,
summed over all cases; "missed" is the part of the matched reference vertebrae that the instance
does not cover. "Bone" is intensity above ``--bone-hu`` (CT only; for MR everything outside the
vertebrae counts as soft tissue). ``straddling`` counts the matched instances that hold at least
``STRADDLE_SHARE`` of each of two reference vertebrae: shifted instances (part of one vertebra and part
of the next) and merged ones. ``missed_by_depth_mm`` splits the missed part by how deep inside its
vertebra it lies (distance to the vertebra's outside, so the outermost voxel layer falls in the first
bin), and ``outer_layer_missed`` is the share of that layer that the instances leave out: a mask whose
surface lies a voxel too far in misses mostly the first bin, one that misses a process the deeper ones.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from vertebra_traversal.dataset import list_cases

#: Distance bins (mm) for soft-tissue voxels, measured from the nearest reference vertebra voxel.
BINS_MM = (0.0, 2.0, 4.0, 10.0, np.inf)
#: Depth bins (mm) for missed voxels, measured inside the reference vertebra from its outside.
DEPTH_BINS_MM = (0.0, 2.0, 3.0, 5.0, np.inf)
#: Share of a reference vertebra that an instance must hold for that vertebra to count towards straddling.
STRADDLE_SHARE = 0.3


def breakdown(pred: np.ndarray, ref: np.ndarray, image: np.ndarray, spacing_zyx: tuple,
              bone_hu: float | None) -> dict:
    """Voxel counts of one case; ``pred``/``ref`` (z, y, x) label maps, ``image`` the intensities."""
    counts = dict(own=0, neighbour=0, other_bone=0, soft=0, missed=0, instances=0, straddling=0)
    soft_hist = np.zeros(len(BINS_MM) - 1, dtype=np.int64)
    depth_hist, layer = np.zeros(len(DEPTH_BINS_MM) - 1, dtype=np.int64), np.zeros(2, dtype=np.int64)
    volumes = np.bincount(ref.ravel().astype(np.int64))
    boxes = ndimage.find_objects(ref.astype(np.int64))
    distance = ndimage.distance_transform_edt(ref == 0, sampling=spacing_zyx)
    for label in np.unique(pred)[1:]:
        inside = pred == label
        refs, n = np.unique(ref[inside], return_counts=True)
        on_vertebra = refs > 0
        if not on_vertebra.any():
            continue
        own = refs[on_vertebra][np.argmax(n[on_vertebra])]
        outside = inside & (ref == 0)
        bone = outside & (image > bone_hu) if bone_hu is not None else np.zeros_like(outside)
        soft = outside & ~bone
        counts["own"] += int(n[refs == own].sum())
        counts["neighbour"] += int(n[on_vertebra & (refs != own)].sum())
        counts["other_bone"] += int(bone.sum())
        counts["soft"] += int(soft.sum())
        depth, missed = _depth_inside(ref, own, boxes[own - 1], inside, spacing_zyx)
        counts["missed"] += int(np.count_nonzero(missed))
        depth_hist += np.histogram(depth[missed], bins=DEPTH_BINS_MM)[0]
        outer = depth < DEPTH_BINS_MM[1]
        layer += (int(np.count_nonzero(outer & missed)), int(np.count_nonzero(outer)))
        counts["instances"] += 1
        held = n[on_vertebra] >= STRADDLE_SHARE * volumes[refs[on_vertebra]]
        counts["straddling"] += int(np.count_nonzero(held) >= 2)
        soft_hist += np.histogram(distance[soft], bins=BINS_MM)[0]
    counts["soft_by_distance"] = soft_hist.tolist()
    counts["missed_by_depth"] = depth_hist.tolist()
    counts["outer_layer"] = layer.tolist()
    return counts


def _depth_inside(ref: np.ndarray, label: int, box: tuple, inside: np.ndarray, spacing_zyx: tuple) -> tuple:
    """``(depth, missed)`` over the voxels of vertebra ``label`` (flat arrays): each voxel's distance (mm)
    to the vertebra's outside, and whether the instance ``inside`` leaves it out. Computed in the
    vertebra's box (``ndimage.find_objects`` of ``ref``) grown by one voxel."""
    box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
    on = ref[box] == label
    depth = ndimage.distance_transform_edt(on, sampling=spacing_zyx)
    return depth[on], ~inside[box][on]


def _shares(bins: tuple, counts, total) -> dict:
    """``{"lo-hi": share}`` of ``counts`` per bin, each divided by ``total`` (at least 1)."""
    return {f"{lo:g}-{hi:g}": round(int(v) / max(1, int(total)), 3) for lo, hi, v in zip(bins[:-1], bins[1:], counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", type=Path, required=True)
    parser.add_argument("--ref", type=Path, required=True)
    parser.add_argument("--bone-hu", type=float, default=200.0)
    args = parser.parse_args()
    total: dict = {}
    for case in list_cases(args.ref):
        found = sorted(args.pred.glob(f"{case.case_id}_*seg-vert_msk.nii.gz"))
        if not found:
            continue
        ref_image = sitk.ReadImage(str(case.labels))
        image = sitk.ReadImage(str(case.image))
        ct = "_ct" in case.image.name
        counts = breakdown(sitk.GetArrayFromImage(sitk.ReadImage(str(found[0]))), sitk.GetArrayFromImage(ref_image),
                           sitk.GetArrayFromImage(image), ref_image.GetSpacing()[::-1],
                           args.bone_hu if ct else None)
        for key, value in counts.items():
            total[key] = np.add(total.get(key, 0), value)
    predicted = sum(int(total[k]) for k in ("own", "neighbour", "other_bone", "soft"))
    summary = {k: round(int(total[k]) / predicted, 3) for k in ("own", "neighbour", "other_bone", "soft", "missed")}
    summary["instances"] = int(total["instances"])
    summary["straddling"] = int(total["straddling"])
    summary["soft_by_distance_mm"] = _shares(BINS_MM, total["soft_by_distance"], total["soft"])
    summary["missed_by_depth_mm"] = _shares(DEPTH_BINS_MM, total["missed_by_depth"], total["missed"])
    summary["outer_layer_missed"] = round(int(total["outer_layer"][0]) / max(1, int(total["outer_layer"][1])), 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
