"""The paralinguistic stream: openSMILE eGeMAPS v02 low-level descriptors, a third frame sequence.

25 descriptors per 10 ms frame (loudness, pitch, jitter, shimmer, HNR, formants, spectral slope,
MFCC 1-4, ...), the offline stand-in for StackingSER's FACodec prosody/speaker codes. Needs
``pip install crabser[paralinguistic]``. Crab averages these frames in runs of
``model.paralinguistic_frame_stride`` (4 = 25 Hz) before its GRU; features are z-normalised with the
training statistics like the other streams.
"""

from __future__ import annotations

import numpy as np

from crabser.errors import CrabserError
from crabser.features.encoders import EncodedBatch, Modality, pad_batch


class EGeMAPSEncoder:
    """openSMILE eGeMAPSv02 LLDs of 16 kHz waves: ``(frames at 100 Hz, 25)``."""

    modality: Modality = "paralinguistic"
    sample_rate = 16000
    frame_rate = 100.0

    def __init__(self) -> None:
        try:
            import opensmile
        except ImportError:
            raise CrabserError(
                "the paralinguistic stream needs openSMILE: pip install 'crabser[paralinguistic]'"
            ) from None
        self.smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.LowLevelDescriptors,
        )
        self.feature_names = list(self.smile.feature_names)
        self.output_dim = len(self.feature_names)
        self.cache_id = f"egemaps-v02-lld@opensmile-{opensmile.__version__}"

    def _encode_one(self, wave: np.ndarray) -> np.ndarray:
        frames = self.smile.process_signal(wave, self.sample_rate).to_numpy(dtype=np.float32)
        if len(frames) == 0:  # shorter than one 20 ms window
            frames = np.zeros((1, self.output_dim), dtype=np.float32)
        return np.nan_to_num(frames)

    def encode(self, batch: list[np.ndarray]) -> EncodedBatch:
        """One LLD sequence per wave, padded into a batch."""
        return pad_batch([self._encode_one(np.asarray(w, dtype=np.float32)) for w in batch])
