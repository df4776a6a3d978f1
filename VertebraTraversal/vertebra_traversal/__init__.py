"""VertebraTraversal core: iterative FCN vertebra segmentation and identification.

Implements Lessmann et al., "Iterative fully convolutional neural networks for automatic vertebra
segmentation and identification", Medical Image Analysis 53 (2019). This package is pure Python
(torch, numpy, SimpleITK, scipy) and never imports slicer, vtk, qt or ctk.
"""
__version__ = "0.1.0"
