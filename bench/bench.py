#!/usr/bin/env python
"""aud's benchmark: model latencies and the compute bound, `aud extract` and the daemon end to end, and
the accuracy cost of the opt-in speed switches, in one run on this machine.

    python bench/bench.py [--quick] [--repeat N] [--out bench/results] [--shared ../shared]

Writes ``results.json``, ``results.md`` and ``throughput.png`` into ``--out``. Run it on a quiet machine:
every number is wall-clock time. ``--quick`` (a 24-frame cut, 1 and 2 workers, few repeats) is a smoke run.

The shared MTL and STAR have random weights: their AU and landmark values are what those networks
compute, not facial measurements, so the accuracy numbers here are numerical drift, not accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))  # the project (tests.e2e.daemonproc) before site-packages

import cv2
import numpy as np
import onnxruntime as ort
import psutil

from daemon.config import Settings
from daemon.core import crops, detection
from daemon.core.schema import AUS_R as AUS
from daemon.core.schema import BOX, EMOTION, GAZE, N_LANDMARKS
from daemon.core.video import probe
from daemon.tools import quantize

QUICK_FRAMES = 24
RSS_INTERVAL = 0.2
PSS_EVERY = 5  # samples: PSS once a second
MB = 1024 * 1024
DMS_SWITCHES = {"360p": (320, 480), "1080p": (640,)}  # detect_max_side values per video
EYE_CORNERS = (60, 72)  # WFLW outer eye corners: the inter-ocular distance of the NME
NOISE_GREY_LEVELS = 1.0  # the fp32 reference noise floor: uniform +-1 grey level on the STAR input


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- machine -------------------------------------------------------------------------------------

def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], check=False, cwd=PROJECT, capture_output=True, text=True,
                                  timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    return {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
        "cpu_count": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "onnxruntime": ort.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
        "git_commit": git("rev-parse", "--short", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def isolate_environment(work: Path) -> dict:
    """No AUD_* variables and no user config file for this process and every run it starts: each run
    uses the defaults plus its flags."""
    for name in [k for k in os.environ if k.startswith("AUD_")]:
        del os.environ[name]
    os.environ["XDG_CONFIG_HOME"] = str(work / "xdg-config")
    os.environ.setdefault("MPLCONFIGDIR", str(work / "matplotlib"))
    return dict(os.environ)


# --- media ---------------------------------------------------------------------------------------

def write_video(src: Path, dst: Path, size: tuple[int, int] | None, frames: int | None) -> Path:
    """Re-encode ``src`` as mp4v, the first ``frames`` frames, resized to ``size`` (w, h) if given."""
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    w, h = size or (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v to {dst}")
    n = 0
    try:
        while frames is None or n < frames:
            ok, frame = cap.read()
            if not ok:
                break
            if size:
                frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
            writer.write(frame)
            n += 1
    finally:
        writer.release()
        cap.release()
    return dst


def prepare_media(clip: Path, work: Path, quick: bool) -> dict[str, Path]:
    frames = QUICK_FRAMES if quick else None
    small = write_video(clip, work / "clip360.mp4", None, frames) if quick else clip
    large = write_video(small, work / "clip1080.mp4", (1920, 1080), None)
    return {"360p": small, "1080p": large}


def read_frames(video: Path, every: int = 1, limit: int | None = None) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    out, index = [], 0
    try:
        while limit is None or len(out) < limit:
            ok, frame = cap.read()
            if not ok:
                break
            if index % every == 0:
                out.append(frame)
            index += 1
    finally:
        cap.release()
    return out


# --- model latencies and the compute bound ------------------------------------------------------

def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_model(sess: ort.InferenceSession, x: np.ndarray, warmup: int, repeats: int) -> dict:
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return {"median_ms": round(1000 * float(np.median(times)), 2), "min_ms": round(1000 * min(times), 2),
            "repeats": repeats}


@dataclass
class Faces:
    """Real inputs from the 360p clip: frames, STAR crops (and their matrices), MTL crops."""

    frames: list[np.ndarray]
    star: np.ndarray
    matrices: np.ndarray
    mtl: np.ndarray


def face_inputs(models: Path, video: Path, every: int, limit: int) -> Faces:
    det = session(models / "retinaface.onnx", os.cpu_count() or 1)
    frames = read_frames(video, every, limit)
    star, mats, mtl = [], [], []
    for image in frames:
        tensor, scale = detection.detector_input(image)
        loc, conf, _ = det.run(None, {det.get_inputs()[0].name: tensor})
        face = detection.primary_face(detection.detections(loc[0], conf[0], tensor.shape[2:], scale))
        if face is None:
            continue
        m = crops.star_matrix(face.box)
        star.append(crops.star_input(image, m))
        mats.append(m)
        mtl.append(crops.mtl_input(image, face.box))
    if not star:
        raise RuntimeError(f"no face found in {video}")
    return Faces(frames, np.stack(star), np.stack(mats), np.stack(mtl))


def latencies(models: Path, star_int8: Path | None, faces: Faces, warmup: int, repeats: int) -> dict:
    """Single-thread, batch-1, fp32 latencies (and the INT8 STAR's) on real inputs."""
    frame = faces.frames[0]
    out = {}
    det = session(models / "retinaface.onnx", 1)
    for label, (w, h) in {"retinaface@640x360": (640, 360), "retinaface@1920x1080": (1920, 1080),
                          "retinaface@320x180": (320, 180), "retinaface@480x270": (480, 270)}.items():
        image = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
        out[label] = time_model(det, detection.detector_input(image)[0], warmup, repeats)
        log(f"latency {label}: {out[label]['median_ms']} ms")
    out["mtl@224"] = time_model(session(models / "mtl.onnx", 1), faces.mtl[:1], warmup, repeats)
    log(f"latency mtl@224: {out['mtl@224']['median_ms']} ms")
    out["star@256"] = time_model(session(models / "star.onnx", 1), faces.star[:1], warmup, repeats)
    log(f"latency star@256: {out['star@256']['median_ms']} ms")
    if star_int8:
        out["star-int8@256"] = time_model(session(star_int8, 1), faces.star[:1], warmup, repeats)
        log(f"latency star-int8@256: {out['star-int8@256']['median_ms']} ms")
    return out


def compute_bound(lat: dict, workers: list[int]) -> dict:
    """Frames/s one core can do on model compute alone, and n cores' (n x that), per video and AU45."""
    det = {"360p": lat["retinaface@640x360"]["median_ms"], "1080p": lat["retinaface@1920x1080"]["median_ms"]}
    mtl, star = lat["mtl@224"]["median_ms"], lat["star@256"]["median_ms"]
    out = {}
    for video, d in det.items():
        for au45 in (True, False):
            per_frame_ms = d + mtl + (star if au45 else 0.0)
            per_core = 1000.0 / per_frame_ms
            out[key(video, au45)] = {"per_frame_ms": round(per_frame_ms, 2), "per_core_fps": round(per_core, 3),
                                     "bound_fps": {str(n): round(n * per_core, 3) for n in workers}}
    return out


def _models_side_by_side(models: str, inputs: dict[str, np.ndarray], repeats: int, barrier, results) -> None:
    """One of n processes timing the models at once (``concurrent_bound``): warm up, wait for the
    others, then run every model once per frame ``repeats`` times."""
    feeds = []
    for name, x in inputs.items():
        sess = session(Path(models) / f"{name}.onnx", 1)
        feeds.append((sess, {sess.get_inputs()[0].name: x}))
    for _ in range(2):
        for sess, feed in feeds:
            sess.run(None, feed)
    barrier.wait()
    began = time.perf_counter()
    for _ in range(repeats):
        for sess, feed in feeds:
            sess.run(None, feed)
    results.put(1000 * (time.perf_counter() - began) / repeats)


def concurrent_bound(models: Path, faces: Faces, workers: list[int], repeats: int,
                     only: set[str] | None = None) -> dict:
    """The compute bound measured side by side: n processes (one thread each) run the models on real
    inputs at the same time, as n workers would, with nothing else to do. Cores share caches and
    memory bandwidth, so this is what n cores really give for model time alone; n x the one-core
    bound assumes they do not slow each other. ``only``: the cells (``key(video, au45)``) to measure."""
    frame = faces.frames[0]
    detector = {video: detection.detector_input(cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR))[0]
                for video, size in (("360p", (640, 360)), ("1080p", (1920, 1080)))}
    ctx = multiprocessing.get_context("spawn")
    out = {}
    for video, det in detector.items():
        for au45 in (True, False):
            if only is not None and key(video, au45) not in only:
                continue
            inputs = {"retinaface": det, "mtl": faces.mtl[:1]} | ({"star": faces.star[:1]} if au45 else {})
            per = {}
            for n in workers:
                barrier, results = ctx.Barrier(n), ctx.Queue()
                procs = [ctx.Process(target=_models_side_by_side,
                                     args=(str(models), inputs, repeats if au45 else 8 * repeats, barrier, results))
                         for _ in range(n)]
                for proc in procs:
                    proc.start()
                ms = [results.get(timeout=1800) for _ in procs]
                for proc in procs:
                    proc.join()
                mean_ms = float(np.mean(ms))
                per[str(n)] = {"ms_per_frame": round(mean_ms, 2), "fps": round(n * 1000 / mean_ms, 3)}
            out[key(video, au45)] = per
            log(f"side-by-side bound {key(video, au45)}: "
                + ", ".join(f"{n}w {v['fps']} fps ({v['ms_per_frame']} ms/frame)" for n, v in per.items()))
    return out


def key(video: str, au45: bool) -> str:
    return f"{video} AU45 {'on' if au45 else 'off'}"


def pipeline_single_thread(models: Path, videos: dict[str, Path], frames: int) -> dict:
    """The in-process pipeline with one intra-op thread on decoded frames: model compute plus the
    per-frame Python work (pre/post-processing, crops), without decoding, processes or pools."""
    from daemon.core.pipeline import Pipeline, PipelineOptions
    from daemon.core.providers import share_cpu_arena
    from daemon.core.video import read_range

    share_cpu_arena()  # the sessions' memory as in a worker (prepare_process)
    cores = os.cpu_count() or 1
    out = {}
    for au45 in (True, False):
        pipe = Pipeline(PipelineOptions(models_dir=models, provider="cpu", workers=cores, au45=au45))
        for video, path in videos.items():
            batch = list(read_range(path, 0, frames))
            pipe.run(batch[:2])  # warm-up
            t = time.perf_counter()
            pipe.run(batch)
            seconds = time.perf_counter() - t
            out[key(video, au45)] = {"frames": len(batch), "seconds": round(seconds, 3),
                                     "fps": round(len(batch) / seconds, 3)}
            log(f"pipeline 1 thread {key(video, au45)}: {out[key(video, au45)]['fps']} frames/s")
    return out


# --- process tree sampling -----------------------------------------------------------------------

class Sampling:
    """A context in which ``_run`` (a subclass's sampling loop, ending when ``_stop`` is set) runs on a
    daemon thread; subclasses call ``super().__init__()`` once their own state is set."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class TreeSampler(Sampling):
    """Samples the memory of a process and all its descendants every ``interval`` seconds.

    RSS counts pages shared between processes (libraries, copy-on-write) once per process, so a sum of
    RSS overstates the tree; PSS splits each shared page among the processes sharing it, so the PSS
    sum is the memory the tree really holds (Linux; where the system has no PSS, as on macOS, USS,
    the pages only that process holds, stands in and understates slightly).
    Workers are the ``multiprocessing`` spawn children (``spawn_main`` in their command line)."""

    def __init__(self, pid: int, interval: float = RSS_INTERVAL):
        self.pid, self.interval = pid, interval
        self.peak = {"rss": 0, "pss": 0}
        self.peak_parent = 0
        self.peak_worker: dict[int, int] = {}
        self.samples = 0
        self._roles: dict[int, str] = {}
        super().__init__()

    def _role(self, proc: psutil.Process) -> str:
        if proc.pid not in self._roles:
            try:
                cmd = " ".join(proc.cmdline())
            except (psutil.Error, OSError):
                return "other"
            self._roles[proc.pid] = "worker" if "spawn_main" in cmd else "other"
        return self._roles[proc.pid]

    def sample(self) -> None:
        # PSS reads /proc/<pid>/smaps (~3 ms a process): every PSS_EVERY-th sample only, so the sampler
        # itself takes well under 1 % of a core from the run it measures
        with_pss = self.samples % PSS_EVERY == 0
        try:
            root = psutil.Process(self.pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            return
        total = {"rss": 0, "pss": 0}
        for proc in procs:
            try:
                rss = proc.memory_info().rss
                full = proc.memory_full_info() if with_pss else None
            except psutil.Error:
                continue
            total["rss"] += rss
            if full is not None:
                total["pss"] += getattr(full, "pss", full.uss)
            if proc.pid == self.pid:
                self.peak_parent = max(self.peak_parent, rss)
            elif self._role(proc) == "worker":
                self.peak_worker[proc.pid] = max(self.peak_worker.get(proc.pid, 0), rss)
        for kind, value in total.items():
            self.peak[kind] = max(self.peak[kind], value)
        self.samples += 1

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                break

    def result(self) -> dict:
        return {"peak_pss_total_mb": round(self.peak["pss"] / MB, 1),
                "peak_rss_total_mb": round(self.peak["rss"] / MB, 1),
                "peak_rss_parent_mb": round(self.peak_parent / MB, 1),
                "peak_rss_worker_mb": round(max(self.peak_worker.values(), default=0) / MB, 1),
                "workers_seen": len(self.peak_worker), "rss_samples": self.samples}


# --- aud extract ---------------------------------------------------------------------------------

def run_extract(video: Path, csv_path: Path, models: Path, workers: int, au45: bool, env: dict,
                detect_max_side: int = 0, cwd: Path = PROJECT, extra: tuple[str, ...] = ()) -> dict:
    """One ``python -m daemon extract`` subprocess (with ``extra`` flags), timed and sampled. The ``daemon``
    it runs is the one in ``cwd`` (``-m`` puts the working directory first on the path), else the first
    on ``env``'s PYTHONPATH."""
    cmd = [sys.executable, "-m", "daemon", "extract", str(video), "-o", str(csv_path), "--models", str(models),
           "--workers", str(workers), "--provider", "cpu"]
    if not au45:
        cmd.append("--no-au45")
    if detect_max_side:
        cmd += ["--detect-max-side", str(detect_max_side)]
    cmd += list(extra)
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=cwd)
    lines: list[tuple[float, str]] = []

    def pump() -> None:
        for line in proc.stderr:
            lines.append((time.perf_counter() - began, line.rstrip()))

    reader = threading.Thread(target=pump, daemon=True)
    with TreeSampler(proc.pid) as sampler:
        reader.start()
        code = proc.wait(timeout=4 * 3600)
    reader.join(10)
    external = time.perf_counter() - began
    if code != 0:
        raise RuntimeError(f"aud extract failed ({code}): {' '.join(cmd)}\n" + "\n".join(t for _, t in lines))
    sidecar = json.loads(csv_path.with_suffix(".json").read_text())
    frames = int(sidecar["frames"])
    wall = float(sidecar["wall_seconds"])
    first_frame = sidecar.get("first_frame_seconds")  # not in the sidecar yet: asked the lead
    progress = [t for t, text in lines if text.endswith(" frames") and "/" in text]
    out = {
        "frames": frames, "faces": sidecar.get("frames_with_face"),
        "wall_seconds": wall, "fps": round(frames / wall, 3),
        "external_seconds": round(external, 3), "fps_external": round(frames / external, 3),
        "first_frame_seconds": first_frame,
        "steady_fps": round(frames / (wall - first_frame), 3) if first_frame else None,
        "first_shard_done_seconds": round(progress[0], 3) if progress else None,
        "csv": str(csv_path), **sampler.result(),
    }
    return out


def run_extract_repeated(repeat: int, *args, **kwargs) -> dict:
    """``run_extract`` ``repeat`` times in a row: the run with the median frames/s, with every run's
    frames/s in order (``fps_runs``), so a target is not decided by one noisy run. The CSV is the last
    run's (every run computes the same values)."""
    runs = [run_extract(*args, **kwargs) for _ in range(max(1, repeat))]
    median = sorted(runs, key=lambda x: x["fps"])[(len(runs) - 1) // 2]
    return {**median, "fps_runs": [x["fps"] for x in runs]}


# --- the daemon ----------------------------------------------------------------------------------

def daemon_class():
    from tests.e2e.daemonproc import DaemonProcess

    class BenchDaemon(DaemonProcess):
        """``aud run`` on our model directory (DaemonProcess runs the shared one)."""

        def __init__(self, models: Path, **kw):
            super().__init__(**kw)
            self.models = models

        def command(self) -> list[str]:
            cmd = super().command()
            cmd[cmd.index("--models") + 1] = str(self.models)
            return cmd

    return BenchDaemon


def run_daemon(videos: dict[str, Path], models: Path, workers: int, au45: bool, work: Path,
               settle: float) -> dict:
    """One daemon with ``workers`` workers; each video dropped in turn and timed from the drop to job_done."""
    root = Path(tempfile.mkdtemp(prefix=f"d{workers}{'a' if au45 else 'n'}-", dir=work))
    shard_frames = Settings.model_fields["shard_frames"].default
    daemon = daemon_class()(models, root=root, workers=workers,
                            env={"AUD_SETTLE_SECONDS": str(settle), "AUD_SHARD_FRAMES": str(shard_frames),
                                 "AUD_AU45": "true" if au45 else "false"})
    t = time.perf_counter()
    daemon.start()
    ready = time.perf_counter() - t
    out: dict = {"ready_seconds": round(ready, 3), "settle_seconds": settle, "videos": {}}
    try:
        idle = TreeSampler(daemon.proc.pid)
        idle.sample()
        out["idle_rss"] = idle.result()
        sub = daemon.subscribe()
        for video, path in videos.items():
            name = f"{video}.mp4"
            part = daemon.inbox / f".{name}.part"
            shutil.copyfile(path, part)
            with TreeSampler(daemon.proc.pid) as sampler:
                dropped = time.time()
                part.rename(daemon.inbox / name)
                queued = sub.wait_for(lambda e, name=name: e["type"] == "job_queued" and e["file"] == name, 600)
                job = queued["job"]
                done = sub.wait_for(
                    lambda e, job=job: e.get("job") == job and e["type"] in ("job_done", "job_failed"), 4 * 3600)
            if done["type"] != "job_done":
                raise RuntimeError(f"daemon job failed: {done}")
            events = [e for e in sub.events if e.get("job") == job]
            started = next(e for e in events if e["type"] == "job_started")
            progress = [e for e in events if e["type"] == "progress"]
            frames = int(done["frames"])
            from_drop = done["ts"] - dropped
            processing = done["ts"] - started["ts"]
            out["videos"][video] = {
                "frames": frames, "drop_to_done_seconds": round(from_drop, 3),
                "fps_from_drop": round(frames / from_drop, 3),
                "fps_excl_settle": round(frames / max(1e-9, from_drop - settle), 3),
                "fps_processing": round(frames / processing, 3) if processing > 0 else None,
                "fps_reported": done.get("fps"),
                "queued_after_seconds": round(queued["ts"] - dropped, 3),
                "first_progress_seconds": round(progress[0]["ts"] - dropped, 3) if progress else None,
                "csv": done["csv"], **sampler.result(),
            }
            log(f"daemon W={workers} {key(video, au45)}: {out['videos'][video]['fps_excl_settle']} frames/s "
                f"(excl. {settle} s settle)")
        sub.close()
    finally:
        daemon.stop()
    return out


# --- CSV comparisons -----------------------------------------------------------------------------

def load_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))

    def col(name: str) -> np.ndarray:
        return np.array([float(r[name]) if r[name] != "" else np.nan for r in rows], np.float64)

    return {
        "frame": col("frame"),
        "success": col("success") == 1,
        "box": np.stack([col(c) for c in BOX], 1),
        "au": np.stack([col(c) for c in AUS], 1),
        "emotion": np.stack([col(c) for c in EMOTION[1:]], 1),  # the probabilities (EMOTION[0] is the label)
        "gaze": np.stack([col(c) for c in GAZE], 1),
        "au45": col("AU45_r"),
        "landmarks": np.stack([np.stack([col(f"x_{i}"), col(f"y_{i}")], 1) for i in range(N_LANDMARKS)], 1),
    }


def stat(values: np.ndarray, digits: int = 4) -> dict:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"mean": None, "max": None}
    return {"mean": round(float(values.mean()), digits), "max": round(float(values.max()), digits)}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lo, hi = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area_a, area_b = (np.prod(x[:, 2:] - x[:, :2], axis=1) for x in (a, b))
    return inter / (area_a + area_b - inter)


def compare(reference: Path, other: Path) -> dict:
    """Drift of ``other`` against ``reference`` on the frames where both picked the same face (box IoU
    >= 0.5); frames where they picked different faces (the clip has two people) are counted apart."""
    a, b = load_csv(reference), load_csv(other)
    both = a["success"] & b["success"]
    iou = np.zeros(len(both))
    iou[both] = box_iou(a["box"][both], b["box"][both])
    same = both & (iou >= 0.5)
    out = {"frames": len(a["success"]), "faces_reference": int(a["success"].sum()),
           "faces_other": int(b["success"].sum()), "face_disagreements": int((a["success"] != b["success"]).sum()),
           "other_face_picked": int((both & ~same).sum()), "compared_frames": int(same.sum())}
    if not same.any():
        return out
    out["box_px"] = stat(np.abs(a["box"][same] - b["box"][same]).mean(1))
    out["au_abs"] = stat(np.abs(a["au"][same] - b["au"][same]).mean(1))
    la, lb = a["landmarks"][same], b["landmarks"][same]
    if np.isfinite(la).all() and np.isfinite(lb).all():
        d = np.linalg.norm(la - lb, axis=-1)  # [frames, 98]
        iod = np.linalg.norm(la[:, EYE_CORNERS[0]] - la[:, EYE_CORNERS[1]], axis=-1)
        out["landmark_px"] = stat(d.mean(1))
        out["landmark_px_worst_point"] = round(float(d.max()), 4)
        out["nme_iod"] = stat(d.mean(1) / np.where(iod > 0, iod, np.nan))
        out["iod_px_mean"] = round(float(iod.mean()), 3)
        out["au45_abs"] = stat(np.abs(a["au45"][same] - b["au45"][same]))
    return out


def star_drift(faces: Faces, reference: Path, other: Path | None, noise: float = 0.0) -> dict:
    """In-process STAR on the same crops: ``other`` against ``reference`` (or the reference on inputs
    with uniform +-``noise`` grey levels added): drift in crop pixels (256 crop), in frame pixels, NME."""
    threads = os.cpu_count() or 1
    ref_sess = session(reference, threads)

    def run(sess, x):
        name = sess.get_inputs()[0].name
        return np.concatenate([sess.run(None, {name: x[i:i + 8]})[0] for i in range(0, len(x), 8)])

    ref = run(ref_sess, faces.star)
    if other is None:
        x = faces.star + np.random.default_rng(0).uniform(-noise, noise, faces.star.shape).astype(np.float32) * 2 / 255
        got = run(ref_sess, x)
    else:
        got = run(session(other, threads), faces.star)
    crop_ref, crop_got = ((ref + 1) * 256 - 1) / 2, ((got + 1) * 256 - 1) / 2
    d_crop = np.linalg.norm(crop_got - crop_ref, axis=-1)
    scale = faces.matrices[:, 0, 0][:, None]  # crop pixels per frame pixel (a similarity transform)
    d_frame = d_crop / scale
    iod = np.linalg.norm(crop_ref[:, EYE_CORNERS[0]] - crop_ref[:, EYE_CORNERS[1]], axis=-1)
    return {"crops": len(ref), "crop_px": stat(d_crop.mean(1)), "frame_px": stat(d_frame.mean(1)),
            "nme_iod": stat(d_crop.mean(1) / np.where(iod > 0, iod, np.nan))}


# --- the int8 model set --------------------------------------------------------------------------

def int8_model_set(shared_models: Path, work: Path, video: Path, samples: int) -> tuple[Path, dict]:
    """A model directory with symlinks to the shared RetinaFace and MTL and a static INT8 STAR."""
    d = work / "models-int8"
    d.mkdir()
    for name in ("retinaface.onnx", "mtl.onnx"):
        (d / name).symlink_to(shared_models / name)
    calibration = quantize.calibration_inputs(shared_models, [video], samples)
    result = quantize.quantize_star(shared_models / "star.onnx", d / "star.int8.onnx", method="static",
                                    calibration=calibration)
    (d / "manifest.toml").write_text('[models]\nlandmarks = "star.int8.onnx"\n')
    info = {"method": result.method, "calibration_samples": result.calibration_samples,
            "calibration_source": str(video), "seconds": round(result.seconds, 1),
            "fp32_mb": round(result.source_bytes / 1e6, 1), "int8_mb": round(result.output_bytes / 1e6, 1),
            "reduce_range": result.choice.reduce_range, "per_channel": result.choice.per_channel}
    return d, info


# --- report --------------------------------------------------------------------------------------

def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def runs_text(x: dict) -> str:
    return " / ".join(f"{v:.2f}" for v in x.get("fps_runs", [x["fps"]]))


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(r: dict) -> str:
    m, workers, lat = r["machine"], r["workers"], r["latency"]
    videos = ", ".join(f"{k}: {v['width']}x{v['height']} {v['frames']} frames {v['codec']}"
                       for k, v in r["videos"].items())
    parts = [
        f"# aud benchmark{' (QUICK smoke run: noisy, few frames)' if r['quick'] else ''}",
        (f"{m['cpu']}, {m['cpu_count']} logical cores, {m['memory_gb']} GB; {m['platform']}; "
         f"onnxruntime {m['onnxruntime']}, opencv {m['opencv']}; commit {m['git_commit']}"
         f"{' (dirty)' if m['git_dirty'] else ''}; {m['started']}. Load average before/after: "
         f"{m['load_average_start']} / {m.get('load_average_end')}."),
        (f"Videos: {videos}. CPU provider only. MTL and STAR have random weights: the drift numbers are "
         "numerical differences, not accuracy."),
    ]

    repeats = next(iter(lat.values()))["repeats"]
    parts.append(f"## Model latency (1 thread, batch 1, median of {repeats} after warm-up)")
    parts.append(table(["model@input", "median ms", "min ms"],
                       [[k, v["median_ms"], v["min_ms"]] for k, v in lat.items()]))

    side = r["concurrent_bound"]
    parts.append("## Compute bound (model time only: 1/(det+mtl[+star]) per core, x n cores)")
    parts.append(table(
        ["video, AU45", "ms/frame", "per core fps"] + [f"bound {n}w" for n in workers]
        + [f"side by side {n}w" for n in workers]
        + ["pipeline 1 thread fps", "pipeline / 1-core bound"],
        [[k, v["per_frame_ms"], v["per_core_fps"]] + [v["bound_fps"][str(n)] for n in workers]
         + [side[k][str(n)]["fps"] for n in workers]
         + [r["pipeline_1thread"][k]["fps"], r["pipeline_1thread"][k]["fps"] / v["per_core_fps"]]
         for k, v in r["compute_bound"].items()]))
    parts.append("*bound n w*: n x the one-core bound from the latencies above (the bound the targets use); "
                 "*side by side n w*: measured, n processes running the three models at once on the same "
                 "inputs, one thread each, nothing else (cores share caches and memory bandwidth); "
                 "*pipeline 1 thread*: the in-process pipeline (detect, crops, MTL, STAR, Python "
                 "post-processing) on already decoded frames, one intra-op thread.")

    rows = []
    for k, runs in r["extract"].items():
        base = runs.get("1")
        for n, x in runs.items():
            bound = r["compute_bound"][k]["bound_fps"][n]
            eff = x["fps"] / (int(n) * base["fps"]) if base and n != "1" else None
            steady = x["steady_fps"] / bound if x["steady_fps"] else None
            rows.append([k, n, x["frames"], x["wall_seconds"], x["fps"], runs_text(x), x["fps"] / bound,
                         x["fps"] / side[k][n]["fps"], eff, x["steady_fps"], steady,
                         x["first_frame_seconds"], x["first_shard_done_seconds"], x["external_seconds"],
                         x["peak_rss_worker_mb"], x["peak_rss_total_mb"], x["peak_pss_total_mb"]])
    parts.append("## aud extract")
    parts.append(table(["video, AU45", "workers", "frames", "wall s", "fps", "fps of each run", "fps / bound",
                        "fps / side by side",
                        "scaling eff", "steady fps", "steady / bound", "first frame s", "first shard s", "process s",
                        "peak RSS/worker MB", "peak RSS total MB", "peak PSS total MB"], rows))
    parts.append(f"AU45-on rows: the median of {r.get('repeat', 1)} runs in a row (*fps of each run*, in order; "
                 "the other columns are the median run's). "
                 "*wall s*, *fps*: the sidecar's (probe to last shard, model loading included); *steady fps*: "
                 "without the time to first frame; *first shard s*: the first progress line, from process start; "
                 "*process s*: the whole subprocess (interpreter start to exit); *scaling eff*: fps(n)/(n*fps(1)). "
                 "One worker runs with all cores as intra-op threads (aud gives each worker cores//workers), so "
                 "it can beat the 1-core bound. Memory: RSS sampled every 0.2 s, PSS every 1 s; the RSS sum "
                 "counts pages shared between the processes once per process, the PSS sum splits them (the "
                 "memory the run really holds).")

    if r.get("extract_1thread"):
        rows = []
        for k, x in r["extract_1thread"].items():
            bound = r["compute_bound"][k]["bound_fps"]
            two = r["extract"][k].get("2")
            rows.append([k, x["fps"], runs_text(x), x["fps"] / bound["1"], x["steady_fps"],
                         x["steady_fps"] / bound["1"] if x["steady_fps"] else None,
                         two["fps"] / x["fps"] if two else None])
        parts.append("## aud extract, one worker on one thread")
        parts.append(table(["video, AU45", "fps", "fps of each run", "fps / 1-core bound", "steady fps",
                            "steady / bound",
                            "2 workers / this"], rows))
        parts.append("AUD_THREADS_PER_WORKER=1: the same per-core footing as the compute bound and as each of "
                     "N workers; *2 workers / this* is the speed-up of two workers over one on one core.")

    rows = []
    for k, runs in r["daemon"].items():
        base = runs.get("1")
        for n, x in runs.items():
            bound = r["compute_bound"][k]["bound_fps"][n]
            eff = x["fps_excl_settle"] / (int(n) * base["fps_excl_settle"]) if base and n != "1" else None
            rows.append([k, n, x["frames"], x["drop_to_done_seconds"], x["fps_from_drop"], x["fps_excl_settle"],
                         x["fps_excl_settle"] / bound, x["fps_excl_settle"] / side[k][n]["fps"], eff,
                         x["fps_processing"], x["queued_after_seconds"], x["first_progress_seconds"],
                         x["peak_rss_worker_mb"], x["peak_rss_total_mb"], x["peak_pss_total_mb"]])
    ready = ", ".join(f"{n}: {s} s" for n, s in r["daemon_ready_seconds"].items())
    parts.append("## Daemon end to end (inbox -> CSV)")
    parts.append(table(["video, AU45", "workers", "frames", "drop->done s", "fps from drop", "fps excl settle",
                        "fps / bound", "fps / side by side", "scaling eff", "fps started->done", "queued after s",
                        "first progress s", "peak RSS/worker MB", "peak RSS total MB", "peak PSS total MB"], rows))
    parts.append(f"Timed from the rename into the inbox to the job_done event; *fps excl settle* subtracts the "
                 f"configured settle period ({r['daemon_settle_seconds']} s, AUD_SETTLE_SECONDS) during which the "
                 f"daemon waits for the file to stop changing. The workers are loaded before the drop (daemon "
                 f"start to ready, per workers: {ready}).")

    rows = []
    for sw in r["switches"]:
        c = sw["drift"]

        def get(name: str, which: str = "mean", c=c):
            return (c.get(name) or {}).get(which)

        rows.append([sw["switch"], sw["video"], sw["fps"], sw["speedup"],
                     f"{c['faces_other']}/{c['faces_reference']}", c["face_disagreements"],
                     c["other_face_picked"],
                     get("box_px"), get("box_px", "max"), get("landmark_px"), get("landmark_px", "max"),
                     get("nme_iod"), get("au_abs"), get("au_abs", "max"), get("au45_abs")])
    parts.append("## Speed switches: speed and drift against the default run")
    parts.append(table(["switch", "video", "fps", "speed-up", "faces (switch/default)", "face disagreements",
                        "other face picked", "box px mean", "box px max", "landmark px mean", "landmark px max",
                        "NME (IOD)",
                        "AU abs mean", "AU abs max", "AU45 abs mean"], rows))
    parts.append(f"All with {workers[-1]} workers; the default is the same video with full-resolution detection, "
                 "fp32 and AU45 on. *other face picked*: frames where both found a face but not the same one "
                 "(box IoU < 0.5: the clip has two people and the primary face is the best-scored one). Drift is "
                 "over the frames where both picked the same face, in frame pixels; NME "
                 "is the mean point-to-point distance over the inter-ocular distance (WFLW points 60 and 72) of "
                 "the default run. *fp32 rerun (1 worker)*: the default's own run-to-run and thread-count noise.")

    q = r["quantization"]
    rows = [["fp32", q["fp32_mb"], lat["star@256"]["median_ms"], 1.0, 0.0, 0.0, 0.0]]
    for label, d, size, ms in (
            ("static INT8 (QDQ)", q["int8_vs_fp32"], q["int8_mb"], lat["star-int8@256"]["median_ms"]),
            (f"fp32, input +-{NOISE_GREY_LEVELS:g} grey level", q["fp32_noise_floor"], q["fp32_mb"],
             lat["star@256"]["median_ms"])):
        rows.append([label, size, ms, lat["star@256"]["median_ms"] / ms, d["crop_px"]["mean"],
                     d["frame_px"]["mean"], d["nme_iod"]["mean"]])
    parts.append("## STAR INT8 (aud models quantize)")
    parts.append(table(["STAR", "MB", "ms (1 thread)", "speed-up", "landmark drift, crop px", "frame px",
                        "NME (IOD)"], rows))
    parts.append(f"Static QDQ quantisation (uint8 activations, per-channel int8 conv weights, first and last "
                 f"conv float), calibrated on {q['calibration_samples']} face crops of the clip (frames it is also "
                 f"measured on: in-sample), in {q['seconds']} s. Drift measured in process on "
                 f"{q['int8_vs_fp32']['crops']} crops of the clip against fp32 (256x256 crop pixels, frame "
                 "pixels). The noise-floor row is the fp32 model's own sensitivity: the random-weight STAR moves "
                 f"its points this much for +-{NOISE_GREY_LEVELS:g} grey level of input noise, so INT8 drift of "
                 "that order says little about a trained model.")
    return "\n\n".join(parts) + "\n"


def plot(r: dict, path: Path) -> None:
    """frames/s against workers: one panel per video x AU45 setting (their scales differ tenfold), each with
    aud extract, the daemon and the compute bound (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    videos = list(r["videos"])
    fig, axes = plt.subplots(2, len(videos), figsize=(5.5 * len(videos), 8), squeeze=False)
    for col, video in enumerate(videos):
        v = r["videos"][video]
        for row, au45 in enumerate((True, False)):
            ax, k = axes[row][col], key(video, au45)
            b = r["compute_bound"][k]["bound_fps"]
            ax.plot([int(n) for n in b], list(b.values()), "--", color="grey", label="compute bound (n x 1 core)")
            sb = r["concurrent_bound"][k]
            ax.plot([int(n) for n in sb], [x["fps"] for x in sb.values()], ":", color="black",
                    label="models side by side (measured)")
            ns = [int(n) for n in r["extract"][k]]
            ax.plot(ns, [r["extract"][k][str(n)]["fps"] for n in ns], "o-", color="tab:blue", label="aud extract")
            if k in r.get("daemon", {}):
                dn = [int(n) for n in r["daemon"][k]]
                ax.plot(dn, [r["daemon"][k][str(n)]["fps_excl_settle"] for n in dn], "s-", color="tab:orange",
                        label="daemon (drop to CSV)")
            ax.set_title(f"{v['width']}x{v['height']}, AU45 {'on' if au45 else 'off (no STAR)'}")
            ax.set_xlabel("workers")
            ax.set_ylabel("frames/s")
            ax.set_xticks(r["workers"])
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="upper left")
    m = r["machine"]
    frames = ", ".join(f"{k} {v['frames']} frames" for k, v in r["videos"].items())
    fig.suptitle(f"aud throughput, CPU, {m['cpu_count']} cores ({frames}"
                 f"{'; QUICK smoke run' if r['quick'] else ''})")
    fig.text(0.5, 0.01, "extract: sidecar wall time (model loading included); daemon: inbox drop to job_done minus "
             f"the {r.get('daemon_settle_seconds')} s settle period; compute bound: n x 1/(model time per frame, "
             "1 thread)", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_FRAMES} frames, 1-2 workers, few repeats")
    ap.add_argument("--out", type=Path, default=PROJECT / "bench" / "results")
    ap.add_argument("--shared", type=Path, default=PROJECT.parent / "shared")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="up to this many workers")
    ap.add_argument("--settle", type=float, default=1.0, help="the daemon's settle seconds (subtracted)")
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary videos, CSVs and models")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each default-settings (AU45 on) extract this many times; report the median")
    args = ap.parse_args(argv)

    shared_models = (args.shared / "models" / "openface3").resolve()
    clip = (args.shared / "media" / "hamilton_clip.mp4").resolve()
    for p in (shared_models / "retinaface.onnx", shared_models / "mtl.onnx", shared_models / "star.onnx", clip):
        if not p.is_file():
            sys.exit(f"bench: {p} not found (point --shared at the shared material)")
    workers = [1, 2] if args.quick else list(range(1, max(1, args.workers) + 1))
    warmup, repeats = (1, 3) if args.quick else (3, 15)
    args.out.mkdir(parents=True, exist_ok=True)
    # AF_UNIX socket paths are short: the daemons' state lives under this directory
    work = Path(tempfile.mkdtemp(prefix="aud-bench-", dir="/tmp"))
    env = isolate_environment(work)
    began = time.perf_counter()
    r: dict = {"quick": args.quick, "machine": machine_info(), "workers": workers, "repeat": args.repeat}
    try:
        log(f"work directory {work}")
        videos = prepare_media(clip, work, args.quick)
        r["videos"] = {k: {**probe(v).properties(), "path": str(v)} for k, v in videos.items()}

        log("quantising STAR (static INT8)")
        int8_dir, r["quantization"] = int8_model_set(shared_models, work, videos["360p"], 8 if args.quick else 32)
        faces = face_inputs(shared_models, videos["360p"], every=1 if args.quick else 3, limit=8 if args.quick else 48)

        r["latency"] = latencies(shared_models, int8_dir / "star.int8.onnx", faces, warmup, repeats)
        r["compute_bound"] = compute_bound(r["latency"], workers)
        r["concurrent_bound"] = concurrent_bound(shared_models, faces, workers, 3 if args.quick else 10)
        r["pipeline_1thread"] = pipeline_single_thread(shared_models, videos, 8 if args.quick else 24)

        log("STAR INT8 drift in process")
        r["quantization"]["int8_vs_fp32"] = star_drift(faces, shared_models / "star.onnx", int8_dir / "star.int8.onnx")
        r["quantization"]["fp32_noise_floor"] = star_drift(faces, shared_models / "star.onnx", None,
                                                           noise=NOISE_GREY_LEVELS)

        r["extract"] = {}
        for video, path in videos.items():
            for au45 in (True, False):
                k = key(video, au45)
                r["extract"][k] = {}
                for n in workers:
                    csv_path = work / "csv" / f"extract-{video}-{'au45' if au45 else 'noau45'}-{n}w.csv"
                    x = run_extract_repeated(args.repeat if au45 else 1, path, csv_path, shared_models, n, au45, env)
                    r["extract"][k][str(n)] = x
                    log(f"extract W={n} {k}: {x['fps']} frames/s, peak RSS {x['peak_rss_total_mb']} MB")

        # one worker pinned to one thread: the same per-core footing as the compute bound and as each
        # of N workers (by default one worker gets every core as intra-op threads)
        r["extract_1thread"] = {}
        for video, path in videos.items():
            csv_path = work / "csv" / f"extract-{video}-au45-1w1t.csv"
            x = run_extract_repeated(args.repeat, path, csv_path, shared_models, 1, True,
                                     {**env, "AUD_THREADS_PER_WORKER": "1"})
            r["extract_1thread"][key(video, True)] = x
            log(f"extract W=1 threads=1 {key(video, True)}: {x['fps']} frames/s")

        r["daemon"], r["daemon_ready_seconds"], r["daemon_settle_seconds"] = {}, {}, args.settle
        for au45 in (True, False):
            for n in workers:
                d = run_daemon(videos, shared_models, n, au45, work, args.settle)
                r["daemon_ready_seconds"][f"{n}{'' if au45 else ' no-AU45'}"] = d["ready_seconds"]
                for video, x in d["videos"].items():
                    r["daemon"].setdefault(key(video, au45), {})[str(n)] = {**x, "idle_rss": d["idle_rss"]}

        log("speed switches")
        top = str(workers[-1])
        switches = []
        for video, path in videos.items():
            default = r["extract"][key(video, True)][top]
            ref_csv = Path(default["csv"])
            rerun = r["extract"][key(video, True)]["1"]
            switches.append({"switch": "fp32 rerun (1 worker)", "video": video, "fps": rerun["fps"],
                             "speedup": rerun["fps"] / default["fps"], "drift": compare(ref_csv, Path(rerun["csv"]))})
            off = r["extract"][key(video, False)][top]
            switches.append({"switch": "AU45 off (no STAR)", "video": video, "fps": off["fps"],
                             "speedup": off["fps"] / default["fps"], "drift": compare(ref_csv, Path(off["csv"]))})
            for side in DMS_SWITCHES[video]:
                csv_path = work / "csv" / f"dms{side}-{video}.csv"
                x = run_extract(path, csv_path, shared_models, int(top), True, env, detect_max_side=side)
                switches.append({"switch": f"detect_max_side {side}", "video": video, "fps": x["fps"],
                                 "speedup": x["fps"] / default["fps"], "run": x, "drift": compare(ref_csv, csv_path)})
                log(f"detect_max_side {side} on {video}: {x['fps']} frames/s")
            csv_path = work / "csv" / f"int8-{video}.csv"
            x = run_extract(path, csv_path, int8_dir, int(top), True, env)
            switches.append({"switch": "STAR INT8", "video": video, "fps": x["fps"],
                             "speedup": x["fps"] / default["fps"],
                             "run": x, "drift": compare(ref_csv, csv_path)})
            log(f"STAR INT8 on {video}: {x['fps']} frames/s")
        r["switches"] = switches
    finally:
        r["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        r["bench_seconds"] = round(time.perf_counter() - began, 1)
        (args.out / "results.json").write_text(json.dumps(r, indent=2, default=str) + "\n")
        if not r.get("switches"):  # failed part-way: keep the work for a look
            log(f"results.json written; work kept in {work}")
    try:
        (args.out / "results.md").write_text(markdown(r))
        plot(r, args.out / "throughput.png")  # matplotlib's cache lives in the work directory
    finally:
        if args.keep_work:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    log(f"done in {r['bench_seconds']} s: {args.out / 'results.md'}, results.json, throughput.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
