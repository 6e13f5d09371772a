"""The model set: three ONNX files in one directory, found, hashed and checked against their roles.

Roles: ``detector`` (RetinaFace), ``multitask`` (MTL: emotion, gaze, AUs) and ``landmarks`` (STAR).
Defaults are ``retinaface.onnx``, ``mtl.onnx`` and ``star.onnx``; an optional ``manifest.toml`` in the
directory may name other files (``[models] detector = "..."``) and pin sha256 hashes
(``[sha256] detector = "..."``). Input and output names are read from the file, never assumed.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from .provenance import EXPORT_INSTALL

ROLES = ("detector", "multitask", "landmarks")
DEFAULT_FILES = {"detector": "retinaface.onnx", "multitask": "mtl.onnx", "landmarks": "star.onnx"}
MANIFEST = "manifest.toml"


class ModelError(ValueError):
    """A model file is missing, unreadable or has the wrong signature; the message names it."""


class ModelsChanged(ModelError):
    """A model file is no longer the one hashed when aud started: results computed with it would be
    labelled (job key, sidecar) with the old file's sha256. The message names the file."""


@dataclass(frozen=True)
class FileStamp:
    """What tells, without reading a file, that it is still the one seen: device, inode, size and
    modification time. A file replaced (renamed over, copied over, rewritten) gets another stamp."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStamp:
        st = os.stat(path)
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str | None, ...]

    def __str__(self) -> str:
        dims = ",".join("?" if d in (None, "") else str(d) for d in self.shape)
        return f"{self.name}[{dims}]"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class ModelFile:
    role: str
    path: Path
    size: int
    sha256: str | None  # None in a worker's set (open_model_set): the parent hashed the file
    signature: Signature | None  # None when only found and hashed (load_model_set(signatures=False))
    stamp: FileStamp | None = None  # the file as it was when hashed (taken before reading it)

    @property
    def read_signature(self) -> Signature:
        """The signature, which every set loaded with signatures has (ModelError otherwise)."""
        if self.signature is None:
            raise ModelError(f"{self.path} ({self.role}): its signature was not read")
        return self.signature


@dataclass(frozen=True)
class OutputNames:
    """Which output is which, read from the graph."""

    detector: tuple[str, str, str] | None = None  # boxes, scores, landmarks
    multitask: tuple[str, str, str] | None = None  # emotion, gaze, au
    landmarks: str | None = None


@dataclass(frozen=True)
class ModelSet:
    directory: Path
    files: dict[str, ModelFile]
    outputs: OutputNames

    def path(self, role: str) -> Path:
        return self.files[role].path

    def input_name(self, role: str) -> str:
        return self.files[role].read_signature.inputs[0].name


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def manifest_data(directory: Path, error: type[Exception] = ModelError) -> dict | None:
    """``manifest.toml`` of a model folder as plain data, or None where there is none; ``error`` (naming the
    file) when it cannot be read."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise error(f"{path}: cannot read the manifest: {exc}") from exc


def read_manifest(directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    """File names and pinned hashes per role from ``manifest.toml`` (both optional)."""
    data = manifest_data(directory)
    if data is None:
        return dict(DEFAULT_FILES), {}
    names = dict(DEFAULT_FILES)
    names.update({k: str(v) for k, v in data.get("models", {}).items() if k in ROLES})
    hashes = {k: str(v).lower() for k, v in data.get("sha256", {}).items() if k in ROLES and v}
    return names, hashes


def _dims(shape) -> tuple[int | str | None, ...]:
    return tuple(d if isinstance(d, int) else (d or None) for d in shape)


def read_signature(path: Path) -> Signature:
    """Input and output names and shapes, as ONNX Runtime reads them from the file."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 4
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several types for a damaged file
        raise ModelError(f"{path}: not a readable ONNX model ({exc.__class__.__name__}: {exc})") from exc
    return signature_of(session)


def signature_of(session: ort.InferenceSession) -> Signature:
    inputs = tuple(TensorSpec(v.name, _dims(v.shape)) for v in session.get_inputs())
    outputs = tuple(TensorSpec(v.name, _dims(v.shape)) for v in session.get_outputs())
    return Signature(inputs, outputs)


def _last_dim(spec: TensorSpec) -> int | str | None:
    return spec.shape[-1] if spec.shape else None


def _one_image_input(role: str, path: Path, sig: Signature, size: int | None) -> None:
    if len(sig.inputs) != 1:
        raise ModelError(f"{path} ({role}): expected one input, found {len(sig.inputs)}")
    shape = sig.inputs[0].shape
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise ModelError(f"{path} ({role}): input {sig.inputs[0]} is not an image batch [N,3,H,W]")
    if size is not None and all(isinstance(d, int) and d > 0 for d in shape[2:]):
        if tuple(shape[2:]) != (size, size):
            raise ModelError(f"{path} ({role}): input {sig.inputs[0]} must be {size}x{size}")


def detector_outputs(path: Path, sig: Signature) -> tuple[str, str, str]:
    """RetinaFace outputs told apart by their last dimension: 4 boxes, 2 scores, 10 landmarks."""
    by_last: dict[int | str | None, str] = {}
    for spec in sig.outputs:
        by_last.setdefault(_last_dim(spec), spec.name)
    missing = [n for n in (4, 2, 10) if n not in by_last]
    if missing:
        found = ", ".join(str(s) for s in sig.outputs)
        raise ModelError(
            f"{path} (detector): needs outputs with last dimension 4 (boxes), 2 (scores) and 10 "
            f"(landmarks); found {found}"
        )
    return by_last[4], by_last[2], by_last[10]


def multitask_outputs(path: Path, sig: Signature) -> tuple[str, str, str]:
    """(emotion [N,8], gaze [N,2], au [N,8]) by name where names say so, else in that order."""
    outs = list(sig.outputs)
    if len(outs) != 3 or [_last_dim(o) for o in outs] not in ([8, 2, 8], [8, 8, 2], [2, 8, 8]):
        found = ", ".join(str(s) for s in outs)
        raise ModelError(
            f"{path} (multitask): needs three outputs emotion [N,8], gaze [N,2], au [N,8]; found {found}"
        )
    def named(key: str, size: int) -> str | None:
        hits = [o.name for o in outs if key in o.name.lower() and _last_dim(o) == size]
        return hits[0] if len(hits) == 1 else None

    emotion, gaze = named("emotion", 8), named("gaze", 2)
    if emotion and gaze:  # names say which is which; the AU output is the one left
        return emotion, gaze, next(o.name for o in outs if o.name not in (emotion, gaze))
    gaze = next(o.name for o in outs if _last_dim(o) == 2)
    eights = [o.name for o in outs if _last_dim(o) == 8]
    return eights[0], gaze, eights[1]


def landmark_output(path: Path, sig: Signature) -> str:
    """The [N,98,2] output (the last one, if several)."""
    matches = [o.name for o in sig.outputs if tuple(o.shape[-2:]) == (98, 2)]
    if not matches:
        found = ", ".join(str(s) for s in sig.outputs)
        raise ModelError(f"{path} (landmarks): needs an output of shape [N,98,2]; found {found}")
    return matches[-1]


def inspect_file(role: str, path: Path, pinned: str | None = None, signature: bool = True) -> ModelFile:
    try:
        stamp = FileStamp.of(path)  # before reading: a change while hashing makes the stamps differ
        digest = sha256_of(path)
    except OSError as exc:
        raise ModelError(f"{path} ({role}): cannot read: {exc.strerror}") from exc
    if pinned and pinned != digest:
        raise ModelError(f"{path} ({role}): sha256 {digest} does not match the manifest's {pinned}")
    if not signature:
        return ModelFile(role, path, stamp.size, digest, None, stamp)
    return checked_file(role, path, stamp.size, digest, read_signature(path), stamp)


def checked_file(role: str, path: Path, size: int, digest: str | None, sig: Signature,
                 stamp: FileStamp | None = None) -> ModelFile:
    """The file, once its input is the image batch its role needs."""
    _one_image_input(role, path, sig, {"detector": None, "multitask": 224, "landmarks": 256}[role])
    return ModelFile(role, path, size, digest, sig, stamp)


def locate(directory: Path, roles: tuple[str, ...]) -> tuple[Path, dict[str, Path], dict[str, str]]:
    """The directory, each role's file (the manifest's names, else the defaults) and pinned hashes;
    ModelError when the directory or a file is not there. Cheap: nothing is read but the manifest."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise ModelError(f"model directory not found: {directory}. {fetch_hint(directory)}")
    names, hashes = read_manifest(directory)
    paths = {r: directory / names[r] for r in roles}
    missing = [f"{path} ({role}): file not found" for role, path in paths.items() if not path.is_file()]
    if missing:
        what = "no model set" if len(missing) == len(paths) else "incomplete model set"
        raise ModelError(f"{what} in {directory}: {'; '.join(missing)}. {fetch_hint(directory)}")
    return directory, paths, hashes


def fetch_hint(directory: Path) -> str:
    """What to run when the model set is not there (the one message every command prints)."""
    return (f"Get the trained OpenFace 3.0 models with: aud models fetch --accept-license --to {directory} "
            f"(needs PyTorch: {EXPORT_INSTALL}), or point --models at a directory holding "
            f"{', '.join(DEFAULT_FILES.values())}")


def load_model_set(directory: Path, roles: tuple[str, ...] = ROLES, signatures: bool = True) -> ModelSet:
    """Find, hash and check the model files in ``directory``; raise ModelError naming any problem.

    ``signatures=False`` only finds and hashes the files: a process that will not run the models (the
    daemon, the parent of a pool) need not hold them in memory; its workers check the signatures."""
    directory, paths, hashes = locate(directory, roles)
    files = {r: inspect_file(r, paths[r], hashes.get(r), signatures) for r in roles}
    return with_outputs(directory, files) if signatures else ModelSet(directory, files, OutputNames())


def open_model_set(directory: Path, roles: tuple[str, ...],
                   open_session: Callable[[Path], ort.InferenceSession],
                   ) -> tuple[ModelSet, dict[str, ort.InferenceSession]]:
    """A worker's models: each file loaded once, as the session that will run it, and checked through
    that session's signature. Not hashed (``sha256`` None): the parent process hashed the files and
    checked pinned hashes before it started the workers. Loading each file a second time to read its
    signature, and hashing it in every worker, made worker start-up slower for nothing."""
    directory, paths, _ = locate(directory, roles)
    files, sessions = {}, {}
    for role, path in paths.items():
        try:
            sessions[role] = open_session(path)
        except Exception as exc:  # onnxruntime raises several types for a damaged file
            raise ModelError(f"{path}: not a readable ONNX model ({exc.__class__.__name__}: {exc})") from exc
        files[role] = checked_file(role, path, path.stat().st_size, None, signature_of(sessions[role]))
    return with_outputs(directory, files), sessions


def changed(file: ModelFile, what: str) -> ModelsChanged:
    return ModelsChanged(f"{file.path} ({file.role}) changed on disk since aud started ({what}); the "
                         f"results are labelled with the sha256 it had then ({file.sha256}): restart aud "
                         f"to use the new file, or put the old one back")


def unchanged(reference: ModelSet) -> dict[str, FileStamp]:
    """Check that every file of ``reference`` (a hashed set: ``load_model_set``) is still the one hashed:
    the same stamp, or else the same sha256 (a copy of the same bytes). Returns each file's stamp as
    seen now (before any hashing), for ``check_loaded``; raises ``ModelsChanged`` naming the file."""
    seen = {}
    for role, file in reference.files.items():
        try:
            stamp = FileStamp.of(file.path)
            if stamp != file.stamp:
                digest = sha256_of(file.path)
                if digest != file.sha256:
                    raise changed(file, f"its sha256 is {digest} now")
        except OSError as exc:
            raise changed(file, f"cannot read it: {exc.strerror or exc}") from exc
        seen[role] = stamp
    return seen


def check_loaded(reference: ModelSet, loaded: ModelSet, seen: Mapping[str, FileStamp]) -> None:
    """The set a process loaded is the reference's files, untouched since ``unchanged`` saw them (the
    same paths: the manifest names the same files; the same stamps: nothing replaced them in between,
    so the bytes loaded are the bytes hashed). Raises ``ModelsChanged``."""
    for role, file in loaded.files.items():
        expected = reference.files.get(role)
        if expected is None or expected.path != file.path or role not in seen:
            raise ModelsChanged(f"{file.path} ({role}): not the file aud hashed when it started "
                                f"({expected.path if expected else 'none'}; the manifest changed?): restart aud")
        try:
            now = FileStamp.of(file.path)
        except OSError as exc:
            raise changed(expected, f"cannot read it: {exc.strerror or exc}") from exc
        if now != seen[role]:
            raise changed(expected, "it was replaced while it was being loaded")


def with_outputs(directory: Path, files: dict[str, ModelFile]) -> ModelSet:
    """The set, with each role's outputs told apart from the signatures (ModelError when they do not fit)."""
    outputs = OutputNames(
        detector=detector_outputs(files["detector"].path, files["detector"].read_signature)
        if "detector" in files else None,
        multitask=multitask_outputs(files["multitask"].path, files["multitask"].read_signature)
        if "multitask" in files else None,
        landmarks=landmark_output(files["landmarks"].path, files["landmarks"].read_signature)
        if "landmarks" in files else None,
    )
    return ModelSet(directory, files, outputs)
