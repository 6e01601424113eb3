"""The frozen promptable segmenters (SAM, MedSAM, LiteMedSAM, SAM2.1, MedSAM2) behind one protocol; their factory."""
