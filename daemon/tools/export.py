"""``aud models export``: the official OpenFace 3.0 checkpoints to the ONNX model set aud runs.

Each checkpoint is loaded safely and strictly (:mod:`.checkpoints`) into the project's own architectures
(:mod:`.arch`), exported with ``torch.onnx.export`` (the TorchScript exporter, ``dynamo=False``: the one
the reference ONNX files were made with; the newer exporter needs onnxscript), opset 17, with the input
and output names of ``models/README.md``. Every ONNX file is then run by ONNX Runtime next to the PyTorch
forward pass on the same face crops; a difference above the tolerance fails the export.

The set is written to a sibling temporary directory and only then swapped in for the target, so a failed
or interrupted export never becomes the active model set.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch

from ..core import crops, detection
from ..core.models import DEFAULT_FILES, MANIFEST, sha256_of
from ..core.provenance import Provenance, Verified, describe_source
from .checkpoints import BY_ROLE, OFFICIAL, Role, load_network
from .openface2_files import OPENFACE2_DIR
from .openface2_set import carry_over

OPSET = 17
TOLERANCE = 1e-4
DETECTOR_SIZES = ((360, 640), (720, 1280))  # (height, width) the detector is verified at
OUTPUT_NAMES = {
    Role.DETECTOR: ("loc", "conf", "landms"),
    Role.MULTITASK: ("emotion", "gaze", "au"),
    Role.LANDMARKS: ("landmarks",),
}


class ExportError(RuntimeError):
    """The export cannot go on; the message says which model and why. The target is left as it was."""


@dataclass(frozen=True)
class SourceFile:
    role: Role
    name: str
    sha256: str
    size: int
    verified: str = Verified.NOTHING  # what the checkpoint was checked against (core.provenance.Verified)


@dataclass(frozen=True)
class Source:
    """Where the checkpoints came from, for the manifest."""

    location: str  # the URL or folder they were read from
    revision: str | None
    files: tuple[SourceFile, ...]


@dataclass
class ExportReport:
    directory: Path
    max_difference: dict[Role, float] = field(default_factory=dict)
    sha256: dict[Role, str] = field(default_factory=dict)


# --- verification inputs ------------------------------------------------------------------------------

def synthetic_face(height: int = 720, width: int = 1280) -> np.ndarray:
    """A deterministic BGR picture with a face-like figure (skin-toned oval, eyes, brows, nose, mouth) on a
    textured background: verification input when no image is given. Real faces are better (``--image``)."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([60 + 40 * xx / width, 80 + 30 * yy / height, 110 - 20 * xx / width], axis=-1)
    img += rng.normal(0, 6, img.shape)
    cx, cy, s = width * 0.5, height * 0.5, height * 0.32
    cv2.ellipse(img, (int(cx), int(cy)), (int(s * 0.78), int(s)), 0, 0, 360, (120, 150, 200), -1)
    for side in (-1, 1):
        ex = int(cx + side * s * 0.33)
        cv2.ellipse(img, (ex, int(cy - s * 0.2)), (int(s * 0.14), int(s * 0.07)), 0, 0, 360, (235, 235, 235), -1)
        cv2.circle(img, (ex, int(cy - s * 0.2)), int(s * 0.055), (40, 30, 20), -1)
        cv2.line(img, (ex - int(s * 0.17), int(cy - s * 0.38)), (ex + int(s * 0.17), int(cy - s * 0.4)),
                 (40, 50, 70), max(2, int(s * 0.04)))
    cv2.line(img, (int(cx), int(cy - s * 0.1)), (int(cx - s * 0.06), int(cy + s * 0.2)), (90, 110, 160), 3)
    cv2.ellipse(img, (int(cx), int(cy + s * 0.45)), (int(s * 0.25), int(s * 0.08)), 0, 0, 180, (70, 70, 170), -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.2)
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class VerificationInputs:
    detector: tuple[np.ndarray, ...]  # [1,3,H,W] per verified size
    multitask: np.ndarray  # [N,3,224,224]
    landmarks: np.ndarray  # [N,3,256,256]


def verification_inputs(image_bgr: np.ndarray, detector: torch.nn.Module) -> VerificationInputs:
    """The detector's input at 640x360 and 1280x720, and MTL and STAR crops of the faces the (just
    loaded) detector finds at 1280x720 — at most two, else a central box — exactly as aud crops them."""
    frames = [cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_AREA) for h, w in DETECTOR_SIZES]
    det_inputs = tuple(detection.detector_input(f)[0].copy() for f in frames)
    frame = frames[-1]
    with torch.no_grad():
        loc, conf, _ = detector(torch.from_numpy(det_inputs[-1]))
    found = detection.detections(loc[0].numpy(), conf[0].numpy(), frame.shape[:2], 1.0)
    boxes = [d.box for d in found if d.score >= detection.FACE_THRESHOLD][:2]
    if not boxes:
        h, w = frame.shape[:2]
        boxes = [np.array([w * 0.35, h * 0.15, w * 0.65, h * 0.85], dtype=np.float32)]
    mtl = np.stack([crops.mtl_input(frame, b) for b in boxes])
    star = np.stack([crops.star_input(frame, crops.star_matrix(b)) for b in boxes])
    return VerificationInputs(det_inputs, mtl, star)


# --- export and verification --------------------------------------------------------------------------

def export_onnx(role: Role, model: torch.nn.Module, path: Path) -> None:
    outputs = OUTPUT_NAMES[role]
    if role is Role.DETECTOR:
        example = torch.zeros(1, 3, *DETECTOR_SIZES[0])
        axes = {"input": {0: "batch", 2: "height", 3: "width"}}
        axes.update({n: {0: "batch", 1: "priors"} for n in outputs})
    else:
        size = 224 if role is Role.MULTITASK else 256
        example = torch.zeros(1, 3, size, size)
        axes = {n: {0: "batch"} for n in ("input", *outputs)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(model, (example,), str(path), opset_version=OPSET, input_names=["input"],
                          output_names=list(outputs), dynamic_axes=axes, dynamo=False)


def max_difference(model: torch.nn.Module, path: Path, inputs: tuple[np.ndarray, ...]) -> float:
    """Largest absolute difference between PyTorch's and ONNX Runtime's outputs over ``inputs``."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            expected = model(torch.from_numpy(x))
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(None, {session.get_inputs()[0].name: x})
        for e, g in zip(expected, got):
            if tuple(e.shape) != g.shape:
                raise ExportError(f"{path.name}: ONNX output shape {g.shape} differs from PyTorch's "
                                  f"{tuple(e.shape)}")
            worst = max(worst, float(np.max(np.abs(e.numpy() - g))))
    return worst


def inputs_for(role: Role, v: VerificationInputs) -> tuple[np.ndarray, ...]:
    if role is Role.DETECTOR:
        return v.detector
    batch = v.multitask if role is Role.MULTITASK else v.landmarks
    return tuple(batch[i:i + 1] for i in range(len(batch))) + (batch,)  # one at a time, and as a batch


# --- the model directory ------------------------------------------------------------------------------

def provenance_of(source: Source) -> Provenance:
    """Where the checkpoints came from and what each was verified against, in words."""
    return describe_source(source.location, source.revision, {f.role.value: f.verified for f in source.files})


def manifest_text(report: ExportReport, source: Source) -> str:
    lines = [f"# Written by `aud models export` on {datetime.date.today().isoformat()} from",
             f"# {provenance_of(source)}.",
             "# OpenFace 3.0 licence: non-commercial research use; do not redistribute these files.",
             "", "[models]"]
    lines += [f'{r.value} = "{DEFAULT_FILES[r.value]}"' for r in Role]
    lines += ["", "[sha256]"]
    lines += [f'{r.value} = "{report.sha256[r]}"' for r in Role]
    lines += ["", "[source]", f'location = "{_toml_escape(source.location)}"']
    if source.revision:
        lines.append(f'revision = "{source.revision}"')
    for f in source.files:
        lines += ["", f"[source.{f.role.value}]", f'file = "{_toml_escape(f.name)}"', f'sha256 = "{f.sha256}"',
                  f"size = {f.size}", f'verified = "{_toml_escape(str(f.verified))}"']
    lines += ["", "[export]", f'torch = "{torch.__version__}"', f'onnxruntime = "{ort.__version__}"',
              f"opset = {OPSET}"]
    lines += [f"max_difference_{r.value} = {report.max_difference[r]:.3g}" for r in Role]
    return "\n".join(lines) + "\n"


def _toml_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


MODEL_SET_FILES = {*DEFAULT_FILES.values(), MANIFEST}


def check_replaceable(target: Path) -> None:
    """Refuse to replace a directory that holds anything but a model set (``*.onnx``, the manifest)."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ExportError(f"{target}: exists and is not a directory")
    strangers = [p.name for p in target.iterdir()
                 if p.suffix != ".onnx" and p.name not in MODEL_SET_FILES and p.name != OPENFACE2_DIR]
    if strangers:
        raise ExportError(f"{target}: holds other files ({', '.join(sorted(strangers)[:5])}); export to an "
                          f"empty or new directory, or to a model directory")


def swap_in(staged: Path, target: Path) -> None:
    """Make ``staged`` the directory ``target``: the previous set is moved aside, the new one renamed in,
    the previous one removed. Both renames stay on one file system (siblings), so each is atomic; should the
    process die between them, the previous set is still whole at ``.<name>.previous`` (restored by the next
    export)."""
    previous = target.with_name(f".{target.name}.previous")
    if previous.exists():
        shutil.rmtree(previous)
    if target.exists():
        os.replace(target, previous)
    os.replace(staged, target)
    if previous.exists():
        shutil.rmtree(previous)


def restore_interrupted(target: Path) -> None:
    previous = target.with_name(f".{target.name}.previous")
    if previous.exists() and not target.exists():
        os.replace(previous, target)


def source_from_folder(folder: Path) -> Source:
    files = []
    for spec in OFFICIAL:
        path = folder / spec.filename
        if not path.is_file():
            raise ExportError(f"{path}: not found (the export needs {', '.join(s.filename for s in OFFICIAL)} "
                              f"in {folder}; `aud models fetch` downloads them)")
        files.append(SourceFile(spec.role, spec.filename, sha256_of(path), path.stat().st_size))
    return Source(folder.resolve().as_uri(), None, tuple(files))


def export_set(checkpoints: Path, target: Path, source: Source | None = None, image: np.ndarray | None = None,
               tolerance: float = TOLERANCE, say: Callable[[str], None] = print) -> ExportReport:
    """Export the three checkpoints in ``checkpoints`` into ``target`` (replaced only when all three are
    exported and verified)."""
    target = Path(target).expanduser().absolute()
    restore_interrupted(target)
    check_replaceable(target)
    source = source or source_from_folder(checkpoints)
    networks = {}
    for spec in OFFICIAL:
        say(f"loading {spec.filename}")
        networks[spec.role] = load_network(spec.role, checkpoints / spec.filename)
    inputs = verification_inputs(image if image is not None else synthetic_face(), networks[Role.DETECTOR])
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.export-", dir=target.parent))
    report = ExportReport(target)
    try:
        for role in Role:
            path = staged / DEFAULT_FILES[role.value]
            say(f"exporting {BY_ROLE[role].filename} -> {path.name}")
            export_onnx(role, networks[role], path)
            diff = max_difference(networks[role], path, inputs_for(role, inputs))
            say(f"  {path.name}: max |PyTorch - ONNX Runtime| = {diff:.3g}")
            if not diff <= tolerance:
                raise ExportError(f"{path.name}: ONNX Runtime differs from PyTorch by {diff:.3g} (more than "
                                  f"{tolerance:g}); the export is wrong, the model set was not replaced")
            report.max_difference[role] = diff
            report.sha256[role] = sha256_of(path)
        (staged / MANIFEST).write_text(manifest_text(report, source))
        carry_over(target, staged)  # the OpenFace 2.2 files and their [openface2] record stay
        for p in staged.iterdir():
            _fsync(p)
        swap_in(staged, target)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return report


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

