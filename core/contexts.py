"""Presentation contexts for C-GET: the storage SOP classes we accept, with SCP role selection.

During a C-GET the PACS sends each instance back as a C-STORE on our association, so for every storage
SOP class we must propose a context *and* ask for the SCP role (PS3.4 C.4.3.1, PS3.7 D.3.3.4).
An association carries at most 128 contexts (PS3.8 9.3.2.2: odd context IDs 1..255).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import build_context, build_role
from pynetdicom import sop_class as sc
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext

MAX_CONTEXTS = 128

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

# Stored as received, never decoded. pydicom 3's JPEGLossless is process 14 (.57); most PACS store the
# selection-value-1 variant (.70), so both are proposed.
COMPRESSED = (
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    RLELossless,
    DeflatedExplicitVRLittleEndian,
)

# The storage classes most studies are made of, for when the PACS does not say what a study holds.
DEFAULT_STORAGE_CLASSES: tuple[str, ...] = (
    sc.CTImageStorage,
    sc.EnhancedCTImageStorage,
    sc.MRImageStorage,
    sc.EnhancedMRImageStorage,
    sc.ComputedRadiographyImageStorage,
    sc.DigitalXRayImageStorageForPresentation,
    sc.DigitalXRayImageStorageForProcessing,
    sc.DigitalMammographyXRayImageStorageForPresentation,
    sc.DigitalMammographyXRayImageStorageForProcessing,
    sc.UltrasoundImageStorage,
    sc.UltrasoundMultiFrameImageStorage,
    sc.SecondaryCaptureImageStorage,
    sc.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    sc.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    sc.MultiFrameTrueColorSecondaryCaptureImageStorage,
    sc.XRayAngiographicImageStorage,
    sc.XRayRadiofluoroscopicImageStorage,
    sc.NuclearMedicineImageStorage,
    sc.PositronEmissionTomographyImageStorage,
    sc.EnhancedPETImageStorage,
    sc.BasicTextSRStorage,
    sc.EnhancedSRStorage,
    sc.ComprehensiveSRStorage,
    sc.KeyObjectSelectionDocumentStorage,
    sc.GrayscaleSoftcopyPresentationStateStorage,
    sc.EncapsulatedPDFStorage,
    sc.RTImageStorage,
    sc.RTDoseStorage,
    sc.RTStructureSetStorage,
    sc.RTPlanStorage,
    sc.SegmentationStorage,
    sc.VLPhotographicImageStorage,
    sc.RawDataStorage,
)


def storage_contexts(
    sop_classes: Sequence[str], transfer_syntaxes: Sequence[str] = UNCOMPRESSED
) -> tuple[list[PresentationContext], list[SCP_SCU_RoleSelectionNegotiation]]:
    """One context per storage class with the given syntaxes, plus an SCP role selection item for each."""
    contexts = [build_context(uid, list(transfer_syntaxes)) for uid in sop_classes]
    roles = [build_role(uid, scp_role=True) for uid in sop_classes]
    return contexts, roles
