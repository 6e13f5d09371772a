"""The inference pipeline of one process: ONNX Runtime sessions for the three models, frames in, rows out.

For each frame: RetinaFace on the whole frame; the faces to measure (every face reaching the face
threshold, or with ``faces = "best"`` the best detection only); then, batched across frames, MTL on each
face's 224x224 crop and STAR on its 256x256 affine crop; AU45's eye openness from STAR's landmarks; with
``mirror``, MTL on each face's two hemi-face (mirrored) crops.

With ``detect_every`` > 1 most frames are not detected: each face is followed from the previous frame's
STAR landmarks (``follow.py``), so STAR runs frame by frame as the boxes are found, before the batch's MTL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import blink, crops, detection, follow, providers, wflw
from .models import open_model_set
from .openface2au.analyser import Analyser, ShardFrontEnd
from .openface2au.options import check_au_models
from .openface2au.segments import series_key
from .results import FaceRows
from .schema import SIDES
from .video import Frame

log = logging.getLogger("aud.pipeline")


class FacesMode(StrEnum):
    # the person followed: every face is measured here; the output keeps the longest-tracked one
    # (``tracking.follow_person``): one row per frame
    PRIMARY = "primary"
    BEST = "best"  # the best detection, if it reaches the face threshold (OpenFace 3.0's choice): one row per frame
    ALL = "all"  # every detection reaching the face threshold: one row per face per frame


@dataclass(frozen=True)
class PipelineOptions:
    models_dir: Path
    provider: str = "auto"
    workers: int = 1  # how many pipelines share the machine (sets intra-op threads)
    threads: int = 0  # intra-op threads per session; 0 = the machine's cores / workers
    au45: bool = True  # run STAR
    detect_max_side: int = 0  # 0 = full resolution
    batch_size: int = 4  # frames per batch (MTL runs batched; STAR runs one face at a time)
    faces: FacesMode = FacesMode.BEST  # a pipeline alone measures frames: the per-frame choice by default
    mirror: bool = False  # hemi-face analysis (needs STAR's landmarks)
    detect_every: int = 1  # detect every N-th frame, follow faces by their landmarks in between (needs STAR)
    au_models: str = "openface3"  # "openface3" | "openface2" | "both": "openface2"/"both" add OpenFace 2.2's AUs
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "aud" / "coreml")


def roles_for(au45: bool) -> tuple[str, ...]:
    """The models a run needs: STAR only when AU45 is on."""
    return ("detector", "multitask", "landmarks") if au45 else ("detector", "multitask")


@dataclass(frozen=True)
class _Face:
    """A face to measure: its row in the batch's rows and the frame it is in (with its landmarks when
    following already measured them)."""

    row: int
    frame: Frame
    box: np.ndarray
    landmarks: np.ndarray | None = None


@dataclass(frozen=True)
class _Located:
    """A frame's faces to measure (best first), detected or followed into it from the frame before."""

    frame: Frame
    faces: list[detection.Detection]
    best_score: float  # the frame's best detection score, or (followed) the faces' last detection's
    detected: bool
    landmarks: list[np.ndarray] | None = None  # per face, when following measured them


class Pipeline:
    """Holds the sessions; ``run(frames)`` turns frames into ``FaceRows``."""

    def __init__(self, options: PipelineOptions):
        if options.mirror and not options.au45:
            raise ValueError("hemi-face analysis (mirror) needs STAR's landmarks: turn AU45 on")
        if options.detect_every > 1 and not options.au45:
            raise ValueError("detect_every > 1 follows faces with STAR's landmarks: turn AU45 on")
        self.options = options
        self.of2 = None
        self._of2_shard: ShardFrontEnd | None = None  # during run()
        if options.au_models != "openface3":
            check_au_models(options.au_models, options.au45, options.models_dir)
            self.of2 = Analyser.load(options.models_dir)
        plan = providers.choose(options.provider, options.cache_dir)
        if providers.COREML in plan.names:
            options.cache_dir.mkdir(parents=True, exist_ok=True)
        session_options = providers.session_options(options.workers, threads=options.threads)
        self.models, self.sessions = open_model_set(
            options.models_dir, roles_for(options.au45),
            lambda path: ort.InferenceSession(str(path), session_options, providers=plan.providers))
        self.detector_buffer = detection.InputBuffer()
        self.providers = {role: s.get_providers()[0] for role, s in self.sessions.items()}
        log.info("sessions ready: %s", self.providers)

    def warm_up(self) -> None:
        """Run the detector once on a blank 640x360 frame, so that a shard's first frames do not pay for
        its first run in this process (one-time set-up and its first activations). MTL and STAR are
        left cold: warming MTL's batch first would hold its memory apart from the detector's (one
        arena, grown as asked), more memory a worker than it saves time (docs/benchmark.md,
        "Design measurements")."""
        self.detect(np.zeros((360, 640, 3), np.uint8))

    # --- the three models -------------------------------------------------------------------------

    def detect(self, image: np.ndarray) -> list[detection.Detection]:
        tensor, scale = detection.detector_input(image, self.options.detect_max_side, self.detector_buffer)
        assert self.models.outputs.detector is not None  # the set was opened with the detector role
        boxes, scores, _ = self.models.outputs.detector
        loc, conf = self.sessions["detector"].run(
            [boxes, scores], {self.models.input_name("detector"): tensor})
        return detection.detections(loc[0], conf[0], tensor.shape[2:], scale, detection.FACE_THRESHOLD)

    def multitask(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(emotion, gaze, au) for a batch of MTL inputs, in chunks of at most ``batch_size``."""
        if len(batch) > self.options.batch_size:
            parts = [self.multitask(batch[i:i + self.options.batch_size])
                     for i in range(0, len(batch), self.options.batch_size)]
            return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]
        assert self.models.outputs.multitask is not None
        emotion, gaze, au = self.sessions["multitask"].run(
            list(self.models.outputs.multitask), {self.models.input_name("multitask"): batch})
        return emotion, gaze, au

    def landmarks(self, batch: np.ndarray) -> np.ndarray:
        (points,) = self.sessions["landmarks"].run(
            [self.models.outputs.landmarks], {self.models.input_name("landmarks"): batch})
        return points

    # --- frames to rows ---------------------------------------------------------------------------

    def run(self, frames: Iterable[Frame], progress: Callable[[int], None] | None = None) -> FaceRows:
        """Rows for the frames, in the order given, batching MTL across frames; ``progress(n)`` with the
        frames finished so far, as each one finishes (with STAR, a frame finishes with its last face's
        landmarks: every few hundred milliseconds on a CPU, not only once a batch)."""
        parts: list[FaceRows] = []
        batch: list[Frame] = []
        done = 0

        def advance(frames_finished: int) -> None:
            nonlocal done
            done += frames_finished
            if progress and frames_finished:
                progress(done)

        follower = follow.Follower(self.options.detect_every) if self.options.detect_every > 1 else None
        # several faces a frame (all, and primary before its person is chosen): per-face segments in the shard
        self._of2_shard = (ShardFrontEnd(self.of2, several_faces=self.options.faces != FacesMode.BEST)
                           if self.of2 is not None else None)
        try:
            for frame in frames:
                batch.append(frame)
                if len(batch) == self.options.batch_size:
                    parts.append(self.run_batch(batch, advance, follower))
                    batch = []
            if batch:
                parts.append(self.run_batch(batch, advance, follower))
            rows = FaceRows.concat(parts)
            if self._of2_shard is not None:
                rows.of2_stats = self._of2_shard.stats()
            return rows
        finally:
            self._of2_shard = None

    def faces_of(self, found: list[detection.Detection]) -> list[detection.Detection]:
        """The faces to measure: the best detection (``best``), or every face (``all``, and ``primary``,
        whose person is chosen over the whole video when the rows are assembled)."""
        if self.options.faces == FacesMode.BEST:
            face = detection.primary_face(found)
            return [] if face is None else [face]
        return [d for d in found if d.score >= detection.FACE_THRESHOLD]

    def run_batch(self, frames: list[Frame], advance: Callable[[int], None] = lambda n: None,
                  follower: follow.Follower | None = None) -> FaceRows:
        """Rows of a batch of frames; with a ``follower`` (``detect_every`` > 1), frames in the order of
        the run, the follower carrying faces from one batch to the next."""
        if follower is None:
            located = [self._detected(frame, self.detect(frame.image)) for frame in frames]
        else:
            located = [self._locate(frame, follower) for frame in frames]
        rows = sum(max(1, len(at.faces)) for at in located)
        out = FaceRows.empty(rows)
        faces: list[_Face] = []
        row = 0
        for at in located:
            frame = at.frame
            of2_segments = self._of2_shard.segments if self._of2_shard is not None else None
            segments = (of2_segments.assign(frame.index, [face.box for face in at.faces])
                        if of2_segments is not None else None)
            if not at.faces:  # one row saying no face was found, with the best score seen
                out.frame[row], out.timestamp[row], out.detected[row] = frame.index, frame.timestamp, True
                out.confidence[row] = at.best_score
                row += 1
                continue
            for rank, face in enumerate(at.faces):
                out.frame[row], out.timestamp[row], out.detected[row] = frame.index, frame.timestamp, at.detected
                out.detection[row], out.success[row], out.confidence[row] = rank, True, face.score
                out.box[row] = face.box
                if segments is not None:
                    out.of2_segment[row] = segments[rank]
                faces.append(_Face(row, frame, face.box, at.landmarks[rank] if at.landmarks else None))
                row += 1
        finished = self._measure(out, faces, advance) if faces else 0
        advance(len(frames) - finished)
        return out

    def _detected(self, frame: Frame, found: list[detection.Detection]) -> _Located:
        return _Located(frame, self.faces_of(found), found[0].score if found else 0.0, True)

    def _locate(self, frame: Frame, follower: follow.Follower) -> _Located:
        """Follow the previous frame's faces into this one, or detect it (``follow.py`` says which);
        either way STAR measures the faces' landmarks here, since the next frame follows them."""
        followed = follower.plan(frame.image)
        if followed is not None:
            landmarks = [self._star(frame.image, f.box) for f in followed]
            if follower.drifted(followed, landmarks) is None:
                follower.found(followed, landmarks)
                faces = [detection.Detection(f.box, f.score) for f in followed]
                return _Located(frame, faces, max(f.score for f in followed), False, landmarks)
        if follower.lost:
            log.debug("frame %d: following lost (%s), detecting", frame.index, follower.lost)
        at = self._detected(frame, self.detect(frame.image))
        landmarks = [self._star(frame.image, face.box) for face in at.faces]
        follower.found([follow.Followed(face.box, face.score) for face in at.faces], landmarks)
        return _Located(frame, at.faces, at.best_score, True, landmarks)

    def _star(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """One face's 98 landmarks in frame pixels."""
        matrix = crops.star_matrix(box)
        points = self.landmarks(crops.star_input(image, matrix)[None])[0]
        return crops.star_points_to_frame(points, matrix)

    def _measure(self, out: FaceRows, faces: list[_Face], advance: Callable[[int], None]) -> int:
        """MTL (batched), STAR where following has not measured the landmarks yet, AU45's openness and
        the hemi-face analysis; returns how many frames it reported finished through ``advance``."""
        rows = [f.row for f in faces]
        mtl = np.stack([crops.mtl_input(f.frame.image, f.box) for f in faces])
        out.emotion[rows], out.gaze[rows], out.au[rows] = self.multitask(mtl)
        if "landmarks" not in self.sessions:
            return 0
        finished = 0
        for i, f in enumerate(faces):
            # STAR one face at a time: its hourglass activations outgrow the caches in a batch, so
            # batch 1 is fastest on a CPU (see docs/benchmark.md)
            if f.landmarks is not None:
                out.landmarks[f.row] = f.landmarks
                continue
            out.landmarks[f.row] = self._star(f.frame.image, f.box)
            if i + 1 == len(faces) or faces[i + 1].frame.index != f.frame.index:
                advance(1)  # the frame's last face
                finished += 1
        right, left = blink.openness(out.landmarks[rows])
        out.eye_open[rows, 0], out.eye_open[rows, 1] = right, left
        if self._of2_shard is not None:
            self._measure_of2(out, faces, self._of2_shard)
        if self.options.mirror:
            self._measure_mirrored(out, faces)
        return finished

    def _measure_of2(self, out: FaceRows, faces: list[_Face], of2: ShardFrontEnd) -> None:
        """OpenFace 2.2's AU front end on each face's 68 iBUG points (from STAR's 98, ``wflw.TO_IBUG68``): the
        models' projections per row, the person-median counts of the frames that update it
        (``openface2au``). A face whose fit fails (non-finite landmarks) keeps NaN: a failed frame to OpenFace."""
        for f in faces:
            points = out.landmarks[f.row][list(wflw.TO_IBUG68)].astype(np.float64)
            if not np.isfinite(points).all():
                continue
            found = of2.face(f.frame.image, points, f.frame.index, series_key(int(out.of2_segment[f.row])))
            if found is not None:
                out.of2_r_proj[f.row], out.of2_c_proj[f.row] = found

    def _measure_mirrored(self, out: FaceRows, faces: list[_Face]) -> None:
        """Each face's two hemi-face crops (``mirror.py``) through MTL; a face whose landmarks give no
        midline (degenerate eyes) keeps empty hemi-face values."""
        from . import mirror
        from .openface2au.hemiface import mirrored_landmarks

        inputs, measured = [], []
        for f in faces:
            try:
                line = mirror.midline(out.landmarks[f.row].astype(np.float64))
                box = mirror.mirrored_box(f.box, line)
            except ValueError as exc:
                log.debug("frame %d: no hemi-face analysis (%s)", f.frame.index, exc)
                continue
            for s, side_frame in enumerate(mirror.mirrored_frames(f.frame.image, line)):  # SIDES order
                inputs.append(crops.mtl_input(side_frame, box))
                if self._of2_shard is not None:
                    side = mirror.Side(SIDES[s])
                    points = mirrored_landmarks(out.landmarks[f.row], line, side)[list(wflw.TO_IBUG68)]
                    found = self._of2_shard.face(side_frame, points, f.frame.index,
                                                 series_key(int(out.of2_segment[f.row]), side.value))
                    if found is not None:
                        out.mirror_of2_r_proj[f.row, s], out.mirror_of2_c_proj[f.row, s] = found
            out.mirror_box[f.row] = box
            measured.append(f.row)
        if not measured:
            return
        emotion, gaze, au = self.multitask(np.stack(inputs))
        n = len(measured)
        out.mirror_emotion[measured] = emotion.reshape(n, 2, -1)
        out.mirror_gaze[measured] = gaze.reshape(n, 2, -1)
        out.mirror_au[measured] = au.reshape(n, 2, -1)
