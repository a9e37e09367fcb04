"""Re-create data/emodb (16 kHz mono FLAC + manifest.csv) from the staged WAV copy of EmoDB.

Usage: python scripts/vendor_emodb.py ../shared/data/emodb data/emodb
FLAC is lossless: the decoded samples equal the WAV samples bit for bit.
"""

import sys
from pathlib import Path

import pandas as pd
import soundfile as sf


def main(source: Path, target: Path) -> None:
    """Convert every WAV listed in the source manifest to FLAC and write the new manifest."""
    manifest = pd.read_csv(source / "manifest.csv", dtype={"speaker": str})
    (target / "flac").mkdir(parents=True, exist_ok=True)
    paths = []
    for rel in manifest["path"]:
        audio, rate = sf.read(source / rel, dtype="int16")
        assert rate == 16000 and audio.ndim == 1, rel
        out = Path("flac") / (Path(rel).stem + ".flac")
        sf.write(target / out, audio, rate, format="FLAC", subtype="PCM_16")
        paths.append(out.as_posix())
    manifest["path"] = paths
    manifest = manifest.drop(columns=["md5"])
    manifest.to_csv(target / "manifest.csv", index=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
