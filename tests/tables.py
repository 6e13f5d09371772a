"""Synthetic result tables in aud's CSV column naming (one row per face per frame), for output-format tests."""

from __future__ import annotations

import numpy as np

EMOTIONS = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
MTL_AUS = ("AU01", "AU02", "AU04", "AU06", "AU09", "AU12", "AU25", "AU26")
MIRROR_COLUMNS = (
    ["frame", "face_id", "timestamp", "confidence", "success", "face_x1", "face_y1", "face_x2", "face_y2",
     "gaze_yaw", "gaze_pitch", "emotion"] + [f"emotion_{e}" for e in EMOTIONS]
    + [f"{au}_r" for au in MTL_AUS] + ["AU45_r"] + [f"{au}_c" for au in MTL_AUS] + ["eye_open"]
)


def aud_table(frames: int = 120, fps: float = 30.0, faces: dict[int, range] | None = None,
              seed: int = 0) -> dict[str, np.ndarray | list[str]]:
    """A table of ``frames`` frames; ``faces`` maps face_id -> the frames (0-based) it is present in (default:
    face 0 everywhere). A frame where no face is present gets one row with success 0 and face_id NaN. Values
    are smooth random curves with a few blinks (AU45_r peaks), so plots have something to show."""
    rng = np.random.default_rng(seed)
    faces = {0: range(frames)} if faces is None else faces
    rows: list[tuple[int, float]] = []  # (frame, face_id)
    for f in range(frames):
        present = [fid for fid, span in faces.items() if f in span]
        rows += [(f, float(fid)) for fid in present] if present else [(f, np.nan)]
    n = len(rows)
    frame = np.array([r[0] for r in rows])
    face = np.array([r[1] for r in rows])
    ok = np.isfinite(face)
    t = frame / fps

    def wave(scale: float, offset: float = 0.0) -> np.ndarray:
        phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 1.0)
        return offset + scale * np.sin(2 * np.pi * freq * t + phase + face.clip(0) * 1.3)

    table: dict[str, np.ndarray | list[str]] = {
        "frame": frame + 1.0, "face_id": face, "timestamp": t, "confidence": np.where(ok, 0.99, 0.1),
        "success": ok.astype(np.float64),
    }
    nan = np.where(ok, 1.0, np.nan)
    for k, name in enumerate(("face_x1", "face_y1", "face_x2", "face_y2")):
        table[name] = nan * (100.0 + 50 * k + wave(5.0))
    table["gaze_yaw"], table["gaze_pitch"] = nan * wave(0.3), nan * wave(0.2)
    table["pose_Tx"], table["pose_Ty"], table["pose_Tz"] = nan * wave(30.0), nan * wave(20.0), nan * wave(50.0, 700)
    table["pose_Rx"], table["pose_Ry"], table["pose_Rz"] = nan * wave(0.2), nan * wave(0.5), nan * wave(0.15)
    logits = np.stack([wave(2.0) for _ in EMOTIONS], axis=1)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for k, e in enumerate(EMOTIONS):
        table[f"emotion_{e}"] = nan * probs[:, k]
    table["emotion"] = [EMOTIONS[int(np.argmax(p))] if o else "" for p, o in zip(probs, ok)]
    for au in MTL_AUS:
        table[f"{au}_r"] = nan * np.clip(wave(0.6, 0.2), -1, 1)
        table[f"{au}_c"] = nan * (table[f"{au}_r"] >= 0.5)
    blink = np.zeros(n)
    for centre in rng.uniform(0, t.max() if n else 1, max(1, frames // 40)):
        blink += 5.0 * np.exp(-(((t - centre) / 0.06) ** 2))
    table["AU45_r"] = nan * np.clip(blink + rng.uniform(0, 0.3, n), 0, 5)
    table["eye_open_right"] = nan * (0.3 - table["AU45_r"] / 20)
    table["eye_open_left"] = nan * (0.31 - table["AU45_r"] / 20)
    for i in range(98):
        table[f"x_{i}"] = nan * (200.0 + i + wave(3.0))
        table[f"y_{i}"] = nan * (150.0 + (i % 17) * 3 + wave(3.0))
    return table


def mirror_table(main: dict, side: str, seed: int = 1) -> dict[str, np.ndarray | list[str]]:
    """A ``<stem>.<side>_mirrored.csv`` table for ``main``: same rows and identity columns, the AUs moved a
    little (the two hemi-faces differ)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray | list[str]] = {}
    for name in MIRROR_COLUMNS:
        if name == "eye_open":
            out[name] = np.asarray(main["eye_open_right" if side == "right" else "eye_open_left"])
        elif name.endswith("_r") and name != "AU45_r":
            shift = 0.15 if side == "left" else -0.15
            out[name] = np.clip(np.asarray(main[name]) + shift + rng.normal(0, 0.02, len(main["frame"])), -1, 1)
        else:
            out[name] = main[name]
    return out
