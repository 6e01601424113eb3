"""Medical images: files with their geometry, header checks and size limits, display windows, DICOM series checks."""
