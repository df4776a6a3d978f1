"""Names shared by the engine's outputs, the export and the Slicer side (docs/ARCHITECTURE.md).

Kept free of heavy imports so that the Slicer module can read them without torch.
"""

#: ``format`` field of the per-input report JSON written by ``segment``.
REPORT_FORMAT = "vertebra-traversal-report"
#: File name endings of ``segment`` outputs (VerSe naming for the label map and centroids).
LABELS_SUFFIX = "_seg-vert_msk.nii.gz"
CENTROIDS_SUFFIX = "_seg-subreg_ctd.json"
REPORT_SUFFIX = "_report.json"
SEGMENTATION_SUFFIX = ".seg.nrrd"

#: Segment tags (stored in .seg.nrrd and on Slicer segments).
TAG_PREFIX = "VertebraTraversal."
TAG_LABEL_ID = TAG_PREFIX + "labelId"
TAG_COMPLETE = TAG_PREFIX + "complete"
TAG_COMPLETENESS = TAG_PREFIX + "completenessProbability"
TAG_AT_EDGE = TAG_PREFIX + "atScanEdge"
TAG_LIKELIHOOD = TAG_PREFIX + "labelLikelihood"
TAG_CONFIDENCE = TAG_PREFIX + "labelConfidence"
#: The label counted from the ribs (report ``rib_label``), on the segments of a run that offers one.
TAG_RIB_LABEL = TAG_PREFIX + "ribLabelId"
#: The label by the run's own reading (report ``own_label``), on the segments of a run that counted from the ribs.
TAG_OWN_LABEL = TAG_PREFIX + "ownLabelId"

#: Appended to the segment name of a vertebra flagged incompletely visible: ``"T1 (incomplete)"``.
INCOMPLETE_SUFFIX = "(incomplete)"
#: Slicer terminology context of the vertebra segments.
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
