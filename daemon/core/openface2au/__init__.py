"""OpenFace 2.2.0's AU models (17 SVR intensities, 18 SVM occurrences) computed from aud's own 68 landmarks.

A reimplementation of OpenFace 2.2.0's ``FaceAnalyser`` pipeline (TadasBaltrusaitis/OpenFace, tag
``OpenFace_2.2.0``): PDM fit, similarity-aligned masked face, FHOG, geometry descriptor, running-median person
normalisation, linear SVR/SVM, offline post-processing. Pure numpy/OpenCV; the model files are the user's (fetched
by ``aud models fetch``), never shipped.
"""
