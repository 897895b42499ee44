"""From a decoded photo and its candidates to one ranked, calibrated answer (``recogniser``), with the
calibration models (``confidence``) and board annotation (``annotate``)."""
