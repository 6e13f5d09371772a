"""Which OpenFace 2.2.0 files aud fetches for its OpenFace 2.2 AU models, where they come from, and what is
known about them before download.

The set (OpenFace repository-relative paths; installed under ``<models>/openface2/``):

* the fixed files (``FIXED_PATHS``): ``AU_all_best.txt`` (``AU_LIST_PATH``), the list of AU models OpenFace
  2.2's ``FaceAnalyser`` loads for a video (``lib/local/FaceAnalyser/AU_predictors/main_dynamic_svms.txt``
  names it as its ``AUPredictor``); the 68-point PDM ``In-the-wild_aligned_PDM_68.txt`` (``PDM_PATH``); the
  face-mask triangulation ``tris_68_full.txt`` (``TRIANGULATION_PATH``);
* every model file ``AU_all_best.txt`` lists (``parse_au_list``; ``FaceAnalyser::ReadAU`` in
  ``lib/local/FaceAnalyser/src/FaceAnalyser.cpp`` reads one model per line, ``<path relative to the list's
  folder> <AU names, comma separated>``). aud fetches what the list names, and only files it may name: a
  ``.dat`` directly in ``svr_combined/`` or ``svm_combined/``, at most ``MAX_LISTED`` of them.

``AU_LIST_ENTRIES`` is that list as known for OpenFace 2.2.0: 18 SVM occurrence models (``svm_combined/``) and
17 SVR intensity models (``svr_combined/``), the list of OpenFace's history from 2017 on (its SVR file names
are the 17 ``svr_combined`` files pyfaceau pins for the tag, and the static/dynamic choice per AU the one
pyfaceau's ``model_parser.py`` states for ``AU_all_best.txt``). A fetched list that differs is reported.

Where they come from: the official repository ``TadasBaltrusaitis/OpenFace`` at ``REF``, as raw files
(``OFFICIAL_URL``). ``REF`` is the release tag ``OpenFace_2.2.0``, not its commit: the tag's commit could not
be resolved where this was written (no copy of the repository's history was at hand); the pinned hashes
below hold those files whatever the tag points at.

What is known before download (``PINNED``: size and sha256): the PDM, the triangulation and the 17
``svr_combined`` files, as the PyPI sdist of ``pyfaceau`` 1.4.1 lists them for the ``OpenFace_2.2.0`` tag
(``pyfaceau/openface_models.json``). The PDM and the triangulation also match, byte for byte, the files of
the same names in OpenFace's history from 2017 (``lib/local/LandmarkDetector/model/``), checked here; the
2017 ``svr_combined`` files do not (retrained since), so no hash is taken from that history.
``AU_all_best.txt`` and the ``svm_combined`` files have no pinned hash: from the official source their hashes
are recorded in the manifest when first fetched; a mirror must vouch for them with its ``SHA256SUMS``.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

OPENFACE2_DIR = "openface2"  # under the models directory
REPOSITORY = "TadasBaltrusaitis/OpenFace"
REF = "OpenFace_2.2.0"
OFFICIAL_URL = f"https://raw.githubusercontent.com/{REPOSITORY}/{REF}/"

AU_PREDICTORS = "lib/local/FaceAnalyser/AU_predictors"
AU_LIST_PATH = f"{AU_PREDICTORS}/AU_all_best.txt"
PDM_PATH = "lib/local/LandmarkDetector/model/pdms/In-the-wild_aligned_PDM_68.txt"
TRIANGULATION_PATH = f"{AU_PREDICTORS}/tris_68_full.txt"

# AU_all_best.txt, line by line: (model file relative to AU_predictors/, AU name)
AU_LIST_ENTRIES: tuple[tuple[str, str], ...] = (
    ("svm_combined/AU_1_dynamic.dat", "AU01"),
    ("svm_combined/AU_2_dynamic.dat", "AU02"),
    ("svm_combined/AU_4_static.dat", "AU04"),
    ("svm_combined/AU_5_static.dat", "AU05"),
    ("svm_combined/AU_6_static.dat", "AU06"),
    ("svm_combined/AU_7_static.dat", "AU07"),
    ("svm_combined/AU_9_dynamic.dat", "AU09"),
    ("svm_combined/AU_10_static.dat", "AU10"),
    ("svm_combined/AU_12_static.dat", "AU12"),
    ("svm_combined/AU_14_static.dat", "AU14"),
    ("svm_combined/AU_15_dynamic.dat", "AU15"),
    ("svm_combined/AU_17_dynamic.dat", "AU17"),
    ("svm_combined/AU_20_dynamic.dat", "AU20"),
    ("svm_combined/AU_23_static.dat", "AU23"),
    ("svm_combined/AU_25_dynamic.dat", "AU25"),
    ("svm_combined/AU_26_dynamic.dat", "AU26"),
    ("svm_combined/AU_28_static.dat", "AU28"),
    ("svm_combined/AU_45_dynamic.dat", "AU45"),
    ("svr_combined/AU_1_dynamic_intensity_comb.dat", "AU01"),
    ("svr_combined/AU_2_dynamic_intensity_comb.dat", "AU02"),
    ("svr_combined/AU_4_static_intensity_comb.dat", "AU04"),
    ("svr_combined/AU_5_dynamic_intensity.dat", "AU05"),
    ("svr_combined/AU_6_static_intensity_comb.dat", "AU06"),
    ("svr_combined/AU_7_static_intensity_comb.dat", "AU07"),
    ("svr_combined/AU_9_dynamic_intensity.dat", "AU09"),
    ("svr_combined/AU_10_static_intensity_comb.dat", "AU10"),
    ("svr_combined/AU_12_static_intensity_comb.dat", "AU12"),
    ("svr_combined/AU_14_static_intensity.dat", "AU14"),
    ("svr_combined/AU_15_dynamic_intensity_comb.dat", "AU15"),
    ("svr_combined/AU_17_dynamic_intensity_comb.dat", "AU17"),
    ("svr_combined/AU_20_dynamic_intensity.dat", "AU20"),
    ("svr_combined/AU_23_dynamic_intensity_comb.dat", "AU23"),
    ("svr_combined/AU_25_dynamic_intensity_comb.dat", "AU25"),
    ("svr_combined/AU_26_dynamic_intensity_comb.dat", "AU26"),
    ("svr_combined/AU_45_dynamic_intensity_comb.dat", "AU45"),
)
# the list first: it is read before anything it lists is downloaded
FIXED_PATHS: tuple[str, ...] = (AU_LIST_PATH, PDM_PATH, TRIANGULATION_PATH)
EXPECTED_LIST_TEXT = "".join(f"{model} {au}\n" for model, au in AU_LIST_ENTRIES)
MAX_LISTED = 64  # OpenFace 2.2.0 lists 35
LISTED_FILE = re.compile(r"(svr_combined|svm_combined)/[A-Za-z0-9_.-]+\.dat")

# (size, sha256) of the OpenFace_2.2.0 files, from pyfaceau 1.4.1's openface_models.json
PINNED: dict[str, tuple[int, str]] = {
    PDM_PATH: (69_023, "b9eafb292b18505b55cdbc5d8ba45413709cd300cf3e7e8d1946cd0f5c5b94b1"),
    TRIANGULATION_PATH: (1_076, "d79b0c786bf497ddf18b97080e5949c67781ca1c017e558374883a1821b17181"),
    f"{AU_PREDICTORS}/svr_combined/AU_1_dynamic_intensity_comb.dat":
        (75_276, "ee09197389d14c15c04239158db550368122d7c57bca16cf47d5a31ab35d78d0"),
    f"{AU_PREDICTORS}/svr_combined/AU_2_dynamic_intensity_comb.dat":
        (75_276, "d47d0444f225528f70a66d57634a1d6127dab902a3a54104ff7fa6f0c0f2f94b"),
    f"{AU_PREDICTORS}/svr_combined/AU_4_static_intensity_comb.dat":
        (75_268, "40944f7bdb63506a01347edacb113d7f3073a82d926a782b264a5cbfde2127c6"),
    f"{AU_PREDICTORS}/svr_combined/AU_5_dynamic_intensity.dat":
        (75_276, "d9aa0162f10b9d066484095f1d45543fae18f384f4fc3e95ccc7b453a30c04d6"),
    f"{AU_PREDICTORS}/svr_combined/AU_6_static_intensity_comb.dat":
        (75_268, "3b63e59596ece180bd20757cc59916b27d258b77346a0d01fbae000a00b48408"),
    f"{AU_PREDICTORS}/svr_combined/AU_7_static_intensity_comb.dat":
        (75_268, "a577f1192b954bebec36a88360e15162bb06b76209e574af249ef6f824d9188d"),
    f"{AU_PREDICTORS}/svr_combined/AU_9_dynamic_intensity.dat":
        (75_276, "fc12e797479e02489f8a809d5d81d025bd2e75a9fd7ba8333211a9ac8355341b"),
    f"{AU_PREDICTORS}/svr_combined/AU_10_static_intensity_comb.dat":
        (75_268, "f97e1f9dd70810e59e356cdfa5dcceedec184b831f680a01f629467c6930f474"),
    f"{AU_PREDICTORS}/svr_combined/AU_12_static_intensity_comb.dat":
        (75_268, "fd895c3272abb0a3c612d0e9d002cf2fb86b93c79b477126a1ae10f310e6a928"),
    f"{AU_PREDICTORS}/svr_combined/AU_14_static_intensity.dat":
        (75_268, "dce666400f38454807ce2bfb0553b3175eb34ab555db0b2bd0658518d6d9e2d2"),
    f"{AU_PREDICTORS}/svr_combined/AU_15_dynamic_intensity_comb.dat":
        (75_276, "f1dcf770fbd52e102f8e904cb087414b880b7924bb717bb9b791d94a2186bbf1"),
    f"{AU_PREDICTORS}/svr_combined/AU_17_dynamic_intensity_comb.dat":
        (75_276, "7dc6a65e21e4c3686517af8c68c741f300781cda7b1ea9c972f3cae968e55c50"),
    f"{AU_PREDICTORS}/svr_combined/AU_20_dynamic_intensity.dat":
        (75_276, "3bcd6639ee770970f4507344b7ed78b73035d108c41bfe8fad82d64b9ea2af4f"),
    f"{AU_PREDICTORS}/svr_combined/AU_23_dynamic_intensity_comb.dat":
        (75_276, "415d2fb7b3d4b2a384f584b6081a72497fdabaf1d9bbb13f7b147b8a1fada2b7"),
    f"{AU_PREDICTORS}/svr_combined/AU_25_dynamic_intensity_comb.dat":
        (75_276, "4e1f4b79e309bbb7104a6ff0ad269790f6c23ae50f8901ed4e5f5772e3cd74e7"),
    f"{AU_PREDICTORS}/svr_combined/AU_26_dynamic_intensity_comb.dat":
        (75_276, "d1bf66b8d31e26ca2fc4d2b9223535563eefdfe88ccbd0d9a2372cd7958d2882"),
    f"{AU_PREDICTORS}/svr_combined/AU_45_dynamic_intensity_comb.dat":
        (75_276, "2b69232af9fc7cd1014623b53fb36a20a4a3b0f6ee2388583ad4bc383f6e356d"),
}

# Largest size accepted for a file whose exact size is not pinned (a mirror's own file, or one without a
# pinned hash): about 14x the official sizes (models 75 KB, PDM 69 KB, lists and triangulation 1-2 KB).
KIND_CAPS = {".dat": 1 << 20, ".txt": 1 << 20}
LIST_CAP = 64 << 10  # AU_all_best.txt and tris_68_full.txt: a few lines
SUMS_CAP = 64 << 10  # a mirror's SHA256SUMS: 38 lines of ~150 bytes

LICENSE_URL = "https://github.com/TadasBaltrusaitis/OpenFace/blob/master/OpenFace-license.txt"
LICENSE_SUMMARY = f"""\
The OpenFace 2.2 files (the PDM, the face-mask triangulation and the AU models of
{REPOSITORY}) are licensed by Carnegie Mellon University under the OpenFace Software License Agreement, for
ACADEMIC OR NON-PROFIT ORGANIZATION NONCOMMERCIAL RESEARCH USE ONLY:
  - you may use them only for your own noncommercial internal research;
  - you may not distribute, copy (beyond that use), sell, sublicense or give third parties access to
    them; derivatives you make are owned by the licensor and bound by the same terms;
  - publications using them must cite OpenFace 2.0 (Baltrusaitis et al., FG 2018);
  - they come without warranty; the licence ends if you break its terms, and you must then delete them.
Full terms: {LICENSE_URL}"""


class AUListError(ValueError):
    """An ``AU_all_best.txt`` that is not the list aud declares; the message names the difference."""


def size_cap(path: str, exact: bool) -> int:
    """The most bytes accepted for ``path``: its pinned size when it is held to the pinned hash
    (``exact``), else the cap of its kind."""
    if exact and path in PINNED:
        return PINNED[path][0]
    if path in (AU_LIST_PATH, TRIANGULATION_PATH):
        return LIST_CAP
    return KIND_CAPS[PurePosixPath(path).suffix]


def parse_au_list(text: str, source: str = AU_LIST_PATH) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``(repository path, AU names)`` per model line of an ``AU_all_best.txt``, read as ``FaceAnalyser::ReadAU``
    reads it (first token the model file relative to ``AU_predictors/``, the rest comma-separated AU names);
    AUListError for a line aud will not fetch (a path outside ``svr_combined/`` or ``svm_combined/``, not a
    ``.dat``, no AU name), a repeated file, or more than ``MAX_LISTED`` lines."""
    entries: list[tuple[str, tuple[str, ...]]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        location, _, names = line.strip().partition(" ")
        aus = tuple(n.strip() for n in names.split(",") if n.strip())
        if not LISTED_FILE.fullmatch(location) or not aus:
            raise AUListError(f"{source}: line {number} is not '<svr_combined|svm_combined>/<file>.dat <AU names>': "
                              f"{line[:80]!r}; refused")
        path = f"{AU_PREDICTORS}/{location}"
        if any(path == p for p, _ in entries):
            raise AUListError(f"{source}: line {number} lists {location} again")
        entries.append((path, aus))
        if len(entries) > MAX_LISTED:
            raise AUListError(f"{source}: lists more than {MAX_LISTED} models; not an AU list")
    if not entries:
        raise AUListError(f"{source}: lists no AU model")
    return tuple(entries)


def set_paths(au_list_text: str, source: str = AU_LIST_PATH) -> tuple[str, ...]:
    """Every file of the set whose ``AU_all_best.txt`` reads ``au_list_text``: the fixed files, then the
    listed models in the list's order."""
    return FIXED_PATHS + tuple(path for path, _ in parse_au_list(au_list_text, source))


def differs_from_known(au_list_text: str) -> bool:
    """Whether the list names other models (or AUs) than ``AU_LIST_ENTRIES``."""
    known = tuple((f"{AU_PREDICTORS}/{m}", (au,)) for m, au in AU_LIST_ENTRIES)
    return parse_au_list(au_list_text) != known


EXPECTED_PATHS = set_paths(EXPECTED_LIST_TEXT)  # the set of OpenFace 2.2.0, as known here
