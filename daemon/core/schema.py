"""What aud measures, declared once: the per-face fields a worker computes and the CSV column groups.

Two layers, both declared here and nowhere else:

* ``FIELDS``: the arrays a worker fills, one row per (frame, face). ``FaceRows`` (results.py), the shard
  format (``SHARD_FORMAT``) and assembly all iterate over this tuple.
* ``GROUPS``: the CSV's column groups in order (identity, box, gaze, pose, emotion, AUs, eyes,
  landmarks). Each group names its columns; ``daemon.output`` fills them from an assembled table, writes
  them (aud's style or OpenFace 2.2's) and plots them by these names.

The thresholds that turn a score into an occurrence (``AU_THRESHOLD``, ``BLINK_AU45``) are declared here too:
the CSV's ``AUxx_c``, the OpenFace 2.2 style and the plot all read them from here.

Bump ``SHARD_FORMAT`` whenever ``FIELDS`` changes: a resumed job whose stored shards carry another
format computes them again instead of misreading them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHARD_FORMAT = 4  # 1: one row per frame, .npz on the worker's disk (before faces = "all"); 2: before "detected";
# 3: before the OpenFace 2.2 AU projections (of2_*)

N_LANDMARKS = 98
EMOTIONS = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
# The MTL's AU head, in its output order (DISFA's AU1, 2, 4, 6, 9, 12, 25, 26)
AU_NUMBERS = (1, 2, 4, 6, 9, 12, 25, 26)
AU_THRESHOLD = 0.5  # an AU "occurs" (AUxx_c = 1) when its score reaches this (the authors' evaluation)
# a blink: AU45_r at least this (both eyes at most half as open as the video's usual open eye; blink.py)
BLINK_AU45 = 2.5
AU_DESCRIPTIONS = {1: "inner brow raiser", 2: "outer brow raiser", 4: "brow lowerer", 6: "cheek raiser",
                   9: "nose wrinkler", 12: "lip corner puller", 25: "lips part", 26: "jaw drop", 45: "blink"}
SIDES = ("left_mirrored", "right_mirrored")  # hemi-face outputs, in the order of the mirror arrays


@dataclass(frozen=True)
class Field:
    """One per-face array: ``shape`` is the shape of one row, ``fill`` its value where nothing was measured."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    fill: float | int | bool

    def empty(self, n: int) -> np.ndarray:
        return np.full((n, *self.shape), self.fill, dtype=self.dtype)


NAN = float("nan")
FIELDS: tuple[Field, ...] = (
    Field("frame", (), "int64", 0),  # 0-based
    Field("timestamp", (), "float64", 0.0),  # seconds (stream position)
    Field("detection", (), "int16", -1),  # rank of the face among the frame's detections; -1: no face
    Field("success", (), "bool", False),
    Field("confidence", (), "float32", 0.0),  # the face's detector score (no face: the best score seen)
    Field("box", (4,), "float32", NAN),  # x1, y1, x2, y2, frame pixels
    Field("gaze", (2,), "float32", NAN),  # yaw, pitch (radians)
    Field("emotion", (8,), "float32", NAN),  # logits, EMOTIONS order
    Field("au", (8,), "float32", NAN),  # the AU head's raw scores, AU_NUMBERS order
    Field("landmarks", (N_LANDMARKS, 2), "float32", NAN),  # frame pixels (NaN when AU45 is off)
    Field("eye_open", (2,), "float32", NAN),  # subject's right, left
    # hemi-face analysis (mirror = true), per side in SIDES order
    Field("mirror_box", (2, 4), "float32", NAN),
    Field("mirror_gaze", (2, 2), "float32", NAN),
    Field("mirror_emotion", (2, 8), "float32", NAN),
    Field("mirror_au", (2, 8), "float32", NAN),
    # False: the face's box was followed from the previous frame's landmarks (detect_every > 1), not detected
    Field("detected", (), "bool", True),
    # OpenFace 2.2 AU models (au_models = "openface2" | "both"): each model's x . w for this face
    # (daemon/core/openface2au/predict.py), in OF2_AUS_R / OF2_AUS_C order; NaN: not computed or failed
    Field("of2_r_proj", (17,), "float64", NAN),
    Field("of2_c_proj", (18,), "float64", NAN),
    Field("mirror_of2_r_proj", (2, 17), "float64", NAN),  # per side in SIDES order (mirror = true)
    Field("mirror_of2_c_proj", (2, 18), "float64", NAN),
    # faces = "all": the row's person-median segment (openface2au/segments.py); -1: the whole video is one person
    Field("of2_segment", (), "int64", -1),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)


def au_name(number: int, kind: str) -> str:
    """``AU01_r``, ``AU45_c`` …"""
    return f"AU{number:02d}_{kind}"


# --- CSV column groups ------------------------------------------------------------------------------

def landmark_x(point: int) -> str:
    return f"x_{point}"


def landmark_y(point: int) -> str:
    return f"y_{point}"


FRAME, FACE_ID, TIMESTAMP, CONFIDENCE, SUCCESS = IDENTITY = ("frame", "face_id", "timestamp", "confidence",
                                                             "success")
BOX = ("face_x1", "face_y1", "face_x2", "face_y2")
GAZE_YAW, GAZE_PITCH = GAZE = ("gaze_yaw", "gaze_pitch")
POSE_T = ("pose_Tx", "pose_Ty", "pose_Tz")  # mm, OpenFace 2.2's camera frame (pose.py)
POSE_R = ("pose_Rx", "pose_Ry", "pose_Rz")  # radians: pitch, yaw, roll (pose.py)
POSE = (*POSE_T, *POSE_R)
EMOTION_LABEL = "emotion"  # the most probable emotion's name (the one text column)
EMOTION_PROBS = tuple(f"emotion_{e}" for e in EMOTIONS)
EMOTION = (EMOTION_LABEL, *EMOTION_PROBS)
AUS_R = tuple(au_name(n, "r") for n in AU_NUMBERS)
AUS_C = tuple(au_name(n, "c") for n in AU_NUMBERS)
AU45_R, AU45_C = au_name(45, "r"), au_name(45, "c")
AUS = (*AUS_R, AU45_R, *AUS_C)
EYE_OPEN_RIGHT, EYE_OPEN_LEFT = EYES = ("eye_open_right", "eye_open_left")  # subject's right, left
LANDMARKS = (*(landmark_x(i) for i in range(N_LANDMARKS)), *(landmark_y(i) for i in range(N_LANDMARKS)))
# with detect_every > 1 only (``columns``): 1 where the row's box is the detector's, 0 where it was followed
# from the previous frame's landmarks (the ``detected`` field)
FACE_DETECTED = "face_detected"
FOLLOWING = (FACE_DETECTED,)
TEXT_COLUMNS = frozenset({EMOTION_LABEL})  # every other column is a number
INTEGER_COLUMNS = frozenset({FRAME, FACE_ID, SUCCESS, FACE_DETECTED, *AUS_C})  # written without decimals

GROUPS: dict[str, tuple[str, ...]] = {
    "identity": IDENTITY,
    "box": BOX,
    "gaze": GAZE,
    "pose": POSE,
    "emotion": EMOTION,
    "aus": AUS,
    "eyes": EYES,
    "landmarks": LANDMARKS,
}
COLUMNS: tuple[str, ...] = tuple(c for group in GROUPS.values() for c in group)


def columns(following: bool) -> tuple[str, ...]:
    """The main CSV's columns: ``COLUMNS``, with ``FOLLOWING`` after the identity group when faces are
    followed between detections (detect_every > 1), so that every other CSV keeps its columns."""
    if not following:
        return COLUMNS
    return (*IDENTITY, *FOLLOWING, *COLUMNS[len(IDENTITY):])

# a hemi-face CSV: the main CSV's identity, then that side's measurements and its kept eye
EYE_OPEN = "eye_open"
MIRROR_GROUPS: dict[str, tuple[str, ...]] = {
    "identity": IDENTITY,
    "box": BOX,
    "gaze": GAZE,
    "emotion": EMOTION,
    "aus": AUS,
    "eyes": (EYE_OPEN,),
}
MIRROR_COLUMNS: tuple[str, ...] = tuple(c for group in MIRROR_GROUPS.values() for c in group)

# --- OpenFace 2.2's AU models (appended) -------------------------------------------------------------
# the AUs OpenFace 2.2 FeatureExtraction writes (17 intensities, 18 occurrences), in its order; aud's CSV names
# them ``of2_AU01_r`` … so they cannot be taken for OpenFace 3.0's ``AU01_r`` …
OF2_AU_NUMBERS_R = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
OF2_AU_NUMBERS_C = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 28, 45)
OF2_PREFIX = "of2_"
OF2_AUS_R = tuple(OF2_PREFIX + au_name(n, "r") for n in OF2_AU_NUMBERS_R)
OF2_AUS_C = tuple(OF2_PREFIX + au_name(n, "c") for n in OF2_AU_NUMBERS_C)
OF2_AUS = (*OF2_AUS_R, *OF2_AUS_C)  # the column group after COLUMNS when the OpenFace 2.2 AUs are on
