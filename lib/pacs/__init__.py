"""The PACS side: a DICOMweb datastore that fetches whole series and stores labels as DICOM SEG with the question."""
