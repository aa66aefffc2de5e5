"""Presentation contexts for C-GET: the storage SOP classes we accept, with SCP role selection.

During a C-GET the PACS sends each instance back as a C-STORE on our association, so for every storage
SOP class we must propose a context *and* ask for the SCP role (PS3.4 C.4.3.1, PS3.7 D.3.3.4).
An association carries at most 128 contexts (PS3.8 9.3.2.2: odd context IDs 1..255).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet
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


@dataclass(frozen=True)
class ContextPlan:
    """The contexts of one C-GET association: the GET model, then storage contexts with the SCP role."""

    sop_classes: tuple[str, ...]
    contexts: tuple[PresentationContext, ...]
    roles: tuple[SCP_SCU_RoleSelectionNegotiation, ...]


def _ladder(sop_classes: Sequence[str], budget: int, uncompressed_only: bool) -> list[PresentationContext]:
    """Storage contexts for ``sop_classes`` within ``budget``.

    The PACS picks one transfer syntax per context when the association is made, before it knows which
    instance goes on it. So each class gets its own uncompressed context, and then, budget allowing, one
    context per compressed syntax (round-robin over classes, most common syntaxes first): an instance
    stored compressed then travels as stored, without the PACS transcoding (or failing to).
    """
    contexts = [build_context(uid, list(UNCOMPRESSED)) for uid in sop_classes]
    if uncompressed_only:
        return contexts
    for ts in COMPRESSED:
        for uid in sop_classes:
            if len(contexts) >= budget:
                return contexts
            contexts.append(build_context(uid, [ts]))
    return contexts


def plan_contexts(sop_classes: Sequence[str], *, uncompressed_only: bool = False) -> list[ContextPlan]:
    """Split the storage classes a retrieve needs over as few associations as the 128-context limit allows."""
    unique = list(dict.fromkeys(str(uid) for uid in sop_classes)) or list(DEFAULT_STORAGE_CLASSES)
    per_association = MAX_CONTEXTS - 1  # one context is the Study Root GET model
    plans = []
    for start in range(0, len(unique), per_association):
        chunk = unique[start : start + per_association]
        storage = _ladder(chunk, per_association, uncompressed_only)
        contexts = [build_context(StudyRootQueryRetrieveInformationModelGet, list(UNCOMPRESSED)), *storage]
        plans.append(ContextPlan(tuple(chunk), tuple(contexts), tuple(build_role(uid, scp_role=True) for uid in chunk)))
    return plans
