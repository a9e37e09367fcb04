"""File helpers: strict JSON of metrics, UTF-8 reads naming the file, output folders that are
files."""

import json

import numpy as np
import pytest

from crabser.errors import CrabserError, TextEncodingError
from crabser.io import ensure_folder, json_text, read_utf8


def test_json_text_writes_non_finite_numbers_as_null_and_names_them(caplog):
    data = {
        "uar": 0.5,
        "silhouette": {"legs": float("nan"), "final": 0.25},
        "ci": [float("-inf"), np.float64(0.7)],
    }
    text = json_text(data, indent=2)
    parsed = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    assert parsed == {"uar": 0.5, "silhouette": {"legs": None, "final": 0.25}, "ci": [None, 0.7]}
    assert "silhouette.legs" in caplog.text and "ci[0]" in caplog.text


def test_read_utf8_names_the_file_and_the_byte(tmp_path):
    path = tmp_path / "clip.txt"
    path.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(
        TextEncodingError, match=r"clip.txt: not UTF-8 text \(byte 0xe9 at offset 3\)"
    ):
        read_utf8(path)


def test_ensure_folder_names_the_file_in_the_way(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CrabserError, match="--out .*file is a file"):
        ensure_folder(blocker / "sub", "--out")
    assert ensure_folder(tmp_path / "a" / "b", "--out").is_dir()
