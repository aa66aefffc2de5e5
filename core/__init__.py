"""PacsPull core: everything DICOM, free of Qt."""

__version__ = "0.1.0"
