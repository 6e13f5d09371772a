"""Head pose from STAR's 98 WFLW landmarks: ``cv2.solvePnP`` against a generic, left/right symmetric 3D face.

Output per face, as OpenFace 2.2's ``pose_Tx, pose_Ty, pose_Tz, pose_Rx, pose_Ry, pose_Rz`` (the columns
``schema.POSE``, in this order):

* **Frame.** The camera frame of OpenCV and OpenFace 2.2: origin at the camera's optical centre, X to the
  image's right, Y down the image, Z forward (away from the camera, into the scene). Translations in mm.
* **T** is where the face model's origin (the centroid of the 13 model points below, a little behind the tip
  of the nose) sits in that frame; ``pose_Tz`` is its distance along the optical axis. (OpenFace 2.2 places
  the origin at the centroid of its 68-point model, which lies a few cm further back: the same head gives a
  ``pose_Tz`` a few cm larger there.)
* **R** (radians) are the Euler angles of OpenFace 2.2: the head's rotation matrix is
  ``R = Rx(pose_Rx) · Ry(pose_Ry) · Rz(pose_Rz)`` (X-Y-Z order; ``Utilities::Euler2RotationMatrix`` in
  OpenFace 2.2's ``lib/local/Utilities/include/RotationHelpers.h``), and from a matrix
  ``pitch = atan2(-R12, R22)``, ``yaw = asin(R02)``, ``roll = atan2(-R01, R00)`` — exactly what its
  ``RotationMatrix2Euler`` computes through a quaternion. OpenFace's ``LandmarkDetector::GetPose`` (what
  ``FeatureExtraction`` writes) turns solvePnP's rotation vector into these angles the same way
  (``AxisAngle2Euler``). All zero is a face looking straight into the camera, upright. Signs, as seen in the
  (unmirrored) image:

  - ``pose_Rx`` (pitch) > 0: head tilted down (chin towards the chest; the nose tip moves down the image);
  - ``pose_Ry`` (yaw) > 0: head turned towards the subject's right (the nose moves to the image's left);
  - ``pose_Rz`` (roll) > 0: head tilted clockwise in the image (towards the subject's left shoulder).

**The 3D shape.** 13 points from Google MediaPipe's canonical face model (Apache-2.0;
https://github.com/google-ai-edge/mediapipe/blob/master/mediapipe/modules/face_geometry/data/canonical_face_model.obj ,
vertices in cm, X to the subject's left, Y up, Z out of the face), converted to mm in the frame above
(X = 10·x, Y = -10·y, Z = -10·z) and centred on their centroid. The WFLW point each vertex stands for is the
usual MediaPipe -> iBUG-68 correspondence (bridge 168, 197, 5, 4; lower nose 75, 97, 2, 326, 305; eye corners
33, 133, 362, 263). Only points that stay put when the face moves are used:

    WFLW 51-54  nose bridge, top to tip        (MediaPipe 168, 197, 5, 4)
    WFLW 55-59  lower edge of the nose         (75, 97, 2, 326, 305)
    WFLW 60, 64 right eye outer/inner corner   (33, 133)
    WFLW 68, 72 left eye inner/outer corner    (362, 263)

Not used: lids and pupils (blinks, gaze), brows (AU1/2/4), lips and mouth corners (AU12, AU25/26 move them
by a centimetre), the jaw and face contour (AU26 moves the chin; contour points slide along the cheek when
the head turns). So the pose does not change when the expression does — which is what it is for: telling AU
changes apart from head turns.

**Symmetry.** The subject's left-side points are the right-side ones with X negated (the MediaPipe model is
symmetric to its 6 decimals anyway), and the midline points have X = 0 exactly, so the shape is its own mirror
image. Mirrored landmarks (``wflw.mirror_landmarks`` with ``cx`` the camera's) then give exactly the same pitch
and ``pose_Ty, pose_Tz``, and negated yaw, roll and ``pose_Tx``.

**Camera.** ``Camera`` holds fx, fy, cx, cy in pixels. Without a calibration aud does what OpenFace 2.2 does
(``SequenceCapture::SetCameraIntrinsics``): ``fx = 500·width/640``, ``fy = 500·height/480``, then both set to
their mean; ``cx = width/2``, ``cy = height/2``. Translations scale with the focal length, so they are only as
good as it is; angles depend on it weakly.

**When there is no pose (a NaN row).** No face (any of the 13 points not finite); the points spread over less
than ``MIN_SPREAD_PX`` (a degenerate input); solvePnP raises or fails; anything not finite; the model origin or
any model point at or behind the camera (Z ≤ 0); or the fit does not explain the points: the RMS reprojection
error exceeds ``MAX_RESIDUAL_FRACTION`` of the points' RMS spread around their centroid (landmarks that are not
face-shaped). The solver is SQPnP (a global minimiser of the reprojection error, no initial guess needed),
refined by Levenberg-Marquardt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from . import wflw

MIN_SPREAD_PX = 1.0
MAX_RESIDUAL_FRACTION = 0.25

# (WFLW index, MediaPipe canonical vertex, x, y, z in cm as in canonical_face_model.obj): the midline and the
# subject's right side; the left side is their mirror image.
_MEDIAPIPE_POINTS = (
    (51, 168, 0.0, 3.271027, 5.236015),
    (52, 197, 0.0, 1.728369, 6.316750),
    (53, 5, 0.0, 0.365669, 7.242870),
    (54, 4, 0.0, -0.463170, 7.586580),
    (55, 75, -1.043625, -1.464973, 5.662455),
    (56, 97, -0.597442, -2.013686, 5.866456),
    (57, 2, 0.0, -2.089024, 6.058267),
    (60, 33, -4.445859, 2.663991, 3.173422),
    (64, 133, -1.856432, 2.585245, 3.757904),
)


def _model() -> tuple[tuple[int, ...], np.ndarray]:
    points: dict[int, tuple[float, float, float]] = {}
    for index, _vertex, x, y, z in _MEDIAPIPE_POINTS:
        xyz = (10.0 * x, -10.0 * y, -10.0 * z)
        points[index] = xyz
        partner = int(wflw.MIRROR[index])
        points[partner] = (-xyz[0], xyz[1], xyz[2])
    indices = tuple(sorted(points))
    shape = np.array([points[i] for i in indices], np.float64)
    shape -= shape.mean(axis=0)
    shape[np.abs(shape[:, 0]) < 1e-12, 0] = 0.0  # midline points exactly on X = 0
    return indices, shape


MODEL_INDICES, MODEL_POINTS = _model()
MODEL_POINTS.setflags(write=False)


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics in pixels (no lens distortion)."""

    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        for name in ("fx", "fy", "cx", "cy"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"camera_{name} must be a finite number of pixels, got {value!r}")
        for name in ("fx", "fy"):
            if getattr(self, name) <= 0:
                raise ValueError(f"camera_{name} must be a positive focal length in pixels, "
                                 f"got {getattr(self, name)!r}")

    @classmethod
    def openface_default(cls, width: int, height: int) -> Camera:
        """OpenFace 2.2's guess for an uncalibrated camera."""
        _check_size(width, height)
        f = (500.0 * width / 640.0 + 500.0 * height / 480.0) / 2.0
        return cls(fx=f, fy=f, cx=width / 2.0, cy=height / 2.0)

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


def camera_for(width: int, height: int, fx: float | None = None, fy: float | None = None,
               cx: float | None = None, cy: float | None = None) -> Camera:
    """The camera for a ``width``×``height`` video with the user's overrides (the ``camera_*`` settings).
    As in OpenFace 2.2, the focal length and the optical centre default separately: no ``fx`` -> the default
    focal length for both (then ``fy`` must not be given alone); ``fy`` defaults to ``fx``; no ``cx``/``cy`` ->
    the image centre."""
    default = Camera.openface_default(width, height)
    if fx is None and fy is not None:
        raise ValueError("camera_fy is set but camera_fx is not: give camera_fx (and camera_fy if it differs)")
    fx_ = default.fx if fx is None else float(fx)
    fy_ = fx_ if fy is None else float(fy)
    return Camera(fx=fx_, fy=fy_, cx=default.cx if cx is None else float(cx),
                  cy=default.cy if cy is None else float(cy))


def _check_size(width: int, height: int) -> None:
    if not (width > 0 and height > 0):
        raise ValueError(f"video size must be positive to set up the camera, got {width}x{height}")


def euler_to_matrix(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """OpenFace 2.2's rotation for Euler angles: Rx(pitch) · Ry(yaw) · Rz(roll)."""
    s1, c1 = math.sin(pitch), math.cos(pitch)
    s2, c2 = math.sin(yaw), math.cos(yaw)
    s3, c3 = math.sin(roll), math.cos(roll)
    rx = np.array([[1, 0, 0], [0, c1, -s1], [0, s1, c1]])
    ry = np.array([[c2, 0, s2], [0, 1, 0], [-s2, 0, c2]])
    rz = np.array([[c3, -s3, 0], [s3, c3, 0], [0, 0, 1]])
    return rx @ ry @ rz


def matrix_to_euler(r: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) of a rotation matrix, OpenFace 2.2's convention (inverse of ``euler_to_matrix``
    for |yaw| < 90°)."""
    pitch = math.atan2(-r[1, 2], r[2, 2])
    yaw = math.asin(min(1.0, max(-1.0, r[0, 2])))
    roll = math.atan2(-r[0, 1], r[0, 0])
    return pitch, yaw, roll


def project_model(pose: np.ndarray, camera: Camera) -> np.ndarray:
    """Pixel positions [13, 2] of the model points (in ``MODEL_INDICES`` order) for a pose
    (Tx, Ty, Tz, Rx, Ry, Rz)."""
    r = euler_to_matrix(*pose[3:6])
    cam = MODEL_POINTS @ r.T + np.asarray(pose[:3], np.float64)
    return np.stack([camera.fx * cam[:, 0] / cam[:, 2] + camera.cx,
                     camera.fy * cam[:, 1] / cam[:, 2] + camera.cy], axis=1)


def estimate_poses(landmarks: np.ndarray, width: int, height: int, camera: Camera | None = None) -> np.ndarray:
    """Head pose per row of ``landmarks`` [N, 98, 2] (frame pixels; a row of NaN = no face) as an [N, 6]
    float64 array (pose_Tx, pose_Ty, pose_Tz in mm, pose_Rx, pose_Ry, pose_Rz in radians); NaN rows where
    there is no pose (see the module docstring for the rule). ``camera`` defaults to OpenFace 2.2's guess for
    a ``width``×``height`` video."""
    points = np.asarray(landmarks)
    if points.ndim != 3 or points.shape[1:] != (wflw.N_POINTS, 2):
        raise ValueError(f"landmarks must be [N, {wflw.N_POINTS}, 2], got shape {points.shape}")
    cam = camera if camera is not None else Camera.openface_default(width, height)
    k = cam.matrix()
    subset = points[:, MODEL_INDICES, :].astype(np.float64)
    out = np.full((len(points), 6), np.nan)
    for i in range(len(points)):
        pose = _solve(subset[i], k)
        if pose is not None:
            out[i] = pose
    return out


def _solve(image_points: np.ndarray, k: np.ndarray) -> np.ndarray | None:
    # OpenCV reads a non-contiguous view's memory as if it were contiguous (wrong points, no error)
    image_points = np.ascontiguousarray(image_points, dtype=np.float64)
    if not np.isfinite(image_points).all():
        return None
    spread = math.sqrt(np.mean(np.sum((image_points - image_points.mean(axis=0)) ** 2, axis=1)))
    if spread < MIN_SPREAD_PX:
        return None
    try:
        ok, rvec, tvec = cv2.solvePnP(MODEL_POINTS, image_points, k, None, flags=cv2.SOLVEPNP_SQPNP)
        if not ok:
            return None
        rvec, tvec = cv2.solvePnPRefineLM(MODEL_POINTS, image_points, k, None, rvec, tvec)
    except cv2.error:
        return None
    rvec, tvec = rvec.reshape(3), tvec.reshape(3)
    if not (np.isfinite(rvec).all() and np.isfinite(tvec).all()):
        return None
    r, _ = cv2.Rodrigues(rvec)
    in_camera = MODEL_POINTS @ r.T + tvec
    if tvec[2] <= 0 or (in_camera[:, 2] <= 0).any():
        return None
    projected = in_camera[:, :2] / in_camera[:, 2:3] * (k[0, 0], k[1, 1]) + (k[0, 2], k[1, 2])
    residual = math.sqrt(np.mean(np.sum((projected - image_points) ** 2, axis=1)))
    if not residual <= MAX_RESIDUAL_FRACTION * spread:
        return None
    return np.array([*tvec, *matrix_to_euler(r)])
