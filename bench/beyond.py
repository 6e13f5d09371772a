"""Beyond the fp32 bound, in one sitting: aud's defaults against the side-by-side compute bound, the speed
switches (``detect_every``, INT8 STAR, their combination) with their drift, and the official OpenFace 3.0
pipeline, all alternating round by round on the same cores.

    .venv/bin/python bench/beyond.py --official-python ../benchvenv/bin/python [--repeat 3]

Each round runs, for the shared 640x360 clip and its 1920x1080 upscale, every configuration below as an
``aud extract`` subprocess with 2 workers (AU45 off: 3 runs, their median, as one lasts seconds), then (360p)
the official pipeline (``bench/official.py run`` in the other venv, PyTorch on 2 threads), with STAR
and without it (the like of ``--no-au45``, which the AU45-off rows are compared with). Frames/s is
the sidecar's (the job's frames over its wall time, workers already warm) for aud, and the frame loop's
(decoding included, model loading not) for the official pipeline. The defaults and AU45 off are held to
the side-by-side bound of their cell (``bench.concurrent_bound``: two processes, one thread each, running
the models at once on real inputs), measured just before and just after their runs, so that a drift of
the machine's speed over the sitting (a shared host) moves both alike: the ratio is the round's frames/s
over the mean of the two. The report gives each configuration's median over the rounds with every
round's value, ratios of medians to the defaults and the official pipeline, and drift against the
defaults' first CSV (every run of a configuration writes the same CSV: checked).

Configurations: defaults (AU45 on), AU45 off (``--no-au45``), ``--detect-every 5``, INT8 STAR
(``aud models quantize``'s static INT8, calibrated on 32 face crops of the clip), INT8 with
``--detect-every 5``; at 1080p also INT8 with ``--detect-every 5 --detect-max-side 640``. Plots are off
in every run (the official pipeline draws none).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (bench/ is not a package)

PROJECT = bench.PROJECT
WORKERS = 2


def configurations(video: str) -> dict[str, dict]:
    """name -> (au45, models: 'fp32' | 'int8', extra flags)."""
    out = {
        "defaults": {"au45": True, "models": "fp32", "extra": ()},
        "AU45 off": {"au45": False, "models": "fp32", "extra": ()},
        "detect_every 5": {"au45": True, "models": "fp32", "extra": ("--detect-every", "5")},
        "INT8 STAR": {"au45": True, "models": "int8", "extra": ()},
        "INT8 + detect_every 5": {"au45": True, "models": "int8", "extra": ("--detect-every", "5")},
    }
    if video == "1080p":
        out["INT8 + detect_every 5 + detect_max_side 640"] = {
            "au45": True, "models": "int8", "extra": ("--detect-every", "5", "--detect-max-side", "640")}
    return out


EXACT = ("defaults", "AU45 off")  # the rows held to the bound
RUNS_PER_ROUND = {"defaults": 1, "AU45 off": 3}  # AU45-off runs last seconds: the median of 3 a round


def bound(models: Path, faces: bench.Faces, cell: str) -> float:
    """One cell of the side-by-side bound (frames/s of 2 processes running the models at once)."""
    per = bench.concurrent_bound(models, faces, [WORKERS], 10 if "on" in cell else 20, only={cell})
    return float(per[cell][str(WORKERS)]["fps"])


# --- drift ---------------------------------------------------------------------------------------

def quantiles(values: np.ndarray, digits: int = 4) -> dict | None:
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    q = np.quantile(values, [0.0, 0.5, 0.95, 1.0])
    return {k: round(float(v), digits) for k, v in zip(("min", "median", "p95", "max"), q)}


def drift(reference: Path, other: Path) -> dict:
    """``other`` against ``reference`` (one row per frame, the primary face): frames where both measured
    the same face (box IoU >= 0.5) give the drift; frames where they measured different faces (the clip
    has two people in some shots) are counted apart."""
    a, b = bench.load_csv(reference), bench.load_csv(other)
    if not np.array_equal(a["frame"], b["frame"]):
        raise ValueError(f"{reference} and {other} hold different frames")
    both = a["success"] & b["success"]
    iou = np.full(len(both), np.nan)
    iou[both] = bench.box_iou(a["box"][both], b["box"][both])
    same = both & (iou >= 0.5)
    out: dict = {"frames": int(len(both)), "faces_default": int(a["success"].sum()),
                 "faces_switch": int(b["success"].sum()), "other_face": int((both & ~same).sum()),
                 "compared": int(same.sum())}
    if not same.any():
        return out
    out["box_iou"] = quantiles(iou[same])
    out["au_abs"] = quantiles(np.abs(a["au"][same] - b["au"][same]).max(1))
    out["emotion_abs"] = quantiles(np.abs(a["emotion"][same] - b["emotion"][same]).max(1))
    out["gaze_abs"] = quantiles(np.abs(a["gaze"][same] - b["gaze"][same]).max(1))
    la, lb = a["landmarks"][same], b["landmarks"][same]
    if np.isfinite(la).all() and np.isfinite(lb).all():
        out["landmark_px"] = quantiles(np.linalg.norm(la - lb, axis=-1).mean(1))
        out["au45_abs"] = quantiles(np.abs(a["au45"][same] - b["au45"][same]))
    return out


# --- runs ----------------------------------------------------------------------------------------

def run_official(python: Path, video: Path, checkpoints: Path, landmarks: bool) -> dict:
    proc = subprocess.run([str(python), str(PROJECT / "bench" / "official.py"), "run", str(video),
                           "--checkpoints", str(checkpoints), "--threads", str(WORKERS),
                           *(() if landmarks else ("--no-landmarks",))],
                          capture_output=True, text=True, check=False, timeout=3 * 3600)
    if proc.returncode != 0:
        raise RuntimeError(f"official pipeline failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_csv(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def median_of(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def report(r: dict) -> str:
    lines = [f"# Beyond the fp32 bound ({r['machine']['started']})", "",
             f"{r['machine']['cpu']}, {r['machine']['cpu_count']} logical cores; commit "
             f"{r['machine']['git_commit']}{' (dirty)' if r['machine']['git_dirty'] else ''}; onnxruntime "
             f"{r['machine']['onnxruntime']}; official pipeline: openface-test 0.1.26 on torch "
             f"{r.get('official_torch')}, {WORKERS} threads. {r['repeat']} rounds, alternating; load average "
             f"{r['machine']['load_average_start']} before, {r.get('load_average_end')} after. INT8: "
             f"{r['int8']}.", ""]
    lines += ["| video | configuration | frames/s (median) | each round | bound (side by side, median) | fps / bound | "
              "speed-up vs defaults | vs official | same CSV every round |", "|---|---|---|---|---|---|---|---|---|"]
    official = r.get("official_fps")
    official_off = r.get("official_no_landmarks_fps")
    for video, configs in r["runs"].items():
        base = median_of(configs["defaults"]["fps"])
        for name, x in configs.items():
            fps = median_of(x["fps"])
            au45 = configurations(video)[name]["au45"]
            exact = name in EXACT
            cell = bench.key(video, au45)
            bound_text = f"{median_of(r['bound'][cell]):.2f}" if exact and cell in r["bound"] else ""
            ratio_text = (f"{statistics.median(x['ratio']):.3f} (rounds: "
                          + " / ".join(f"{v:.3f}" for v in x["ratio"]) + ")") if exact else ""
            versus = official if au45 else official_off  # like for like: without STAR against without it
            lines.append(f"| {video} | {name} | {fps:.2f} | {' / '.join(f'{v:.2f}' for v in x['fps'])} | "
                         f"{bound_text} | {ratio_text} | {fps / base:.2f} | "
                         f"{f'{fps / versus:.2f}' if versus and video == '360p' else ''} | "
                         f"{'yes' if x['same_csv'] else 'NO'} |")
    for label, fps in (("official", official), ("official_no_landmarks", official_off)):
        if fps:
            x = r[label]
            lines += ["", f"{'Official pipeline' if label == 'official' else 'Official pipeline without STAR'}"
                          f", 360p: {fps:.2f} frames/s (rounds: {' / '.join(f'{v:.2f}' for v in x['fps'])}; "
                          f"{x['faces']} faces measured; model loading {x['load_seconds']} s, not counted)."]
    lines += ["", "Drift against the defaults (frames where both measured the same face; quantiles min / median "
                  "/ p95 / max of per-frame values: box IoU; the largest |difference| over the 8 AUs, the 8 "
                  "emotion probabilities, gaze yaw/pitch (rad); mean landmark distance over 98 points, px; "
                  "|AU45_r difference|):", "",
              "| video | configuration | other face | box IoU | AU abs | emotion abs | gaze abs | landmark px | "
              "AU45 abs |", "|---|---|---|---|---|---|---|---|---|"]

    def q(x: dict | None) -> str:
        return "n/a" if not x else f"{x['min']:.3g} / {x['median']:.3g} / {x['p95']:.3g} / {x['max']:.3g}"

    for video, configs in r["drift"].items():
        for name, d in configs.items():
            lines.append(f"| {video} | {name} | {d['other_face']} of {d['frames']} | {q(d.get('box_iou'))} | "
                         f"{q(d.get('au_abs'))} | {q(d.get('emotion_abs'))} | {q(d.get('gaze_abs'))} | "
                         f"{q(d.get('landmark_px'))} | {q(d.get('au45_abs'))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official-python", type=Path, required=True,
                    help="the python of a venv with torch, torchvision, openface-test==0.1.26 and onnx")
    ap.add_argument("--shared", type=Path, default=PROJECT.parent / "shared")
    ap.add_argument("--repeat", type=int, default=3, help="rounds")
    ap.add_argument("--frames", type=int, default=None, help="a cut of the clip (smoke runs)")
    ap.add_argument("--out", type=Path, default=PROJECT / "bench" / "results" / "beyond")
    args = ap.parse_args(argv)

    models = (args.shared / "models" / "openface3").resolve()
    clip = (args.shared / "media" / "hamilton_clip.mp4").resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="aud-beyond-", dir="/tmp"))
    env = bench.isolate_environment(work)
    r: dict = {"machine": bench.machine_info(), "repeat": args.repeat, "workers": WORKERS}
    try:
        videos = {"360p": bench.write_video(clip, work / "clip360.mp4", None, args.frames) if args.frames else clip,
                  "1080p": bench.write_video(clip, work / "clip1080.mp4", (1920, 1080), args.frames)}
        bench.log("quantising STAR (static INT8, aud's choice for this CPU)")
        int8_dir, info = bench.int8_model_set(models, work, clip, 32)
        r["int8"] = info
        model_dirs = {"fp32": models, "int8": int8_dir}
        checkpoints = work / "official-checkpoints"
        subprocess.run([str(args.official_python), str(PROJECT / "bench" / "official.py"), "make-checkpoints",
                        str(checkpoints), "--models", str(models)], check=True, capture_output=True)
        faces = bench.face_inputs(models, clip, every=10, limit=30)
        r["bound"] = {}
        r["runs"] = {v: {name: {"fps": [], "csvs": []} for name in configurations(v)} for v in videos}
        r["official"], r["official_no_landmarks"] = {"fps": []}, {"fps": []}
        for round_ in range(args.repeat):
            for video, path in videos.items():
                for name, c in configurations(video).items():
                    exact = name in EXACT
                    cell = bench.key(video, c["au45"])
                    if exact:  # the bound side by side with the run: just before and just after it
                        before = bound(models, faces, cell)
                    fps = []
                    for i in range(RUNS_PER_ROUND[name] if exact else 1):
                        out = work / "csv" / f"{video}-{name.replace(' ', '_')}-{round_}-{i}.csv"
                        x = bench.run_extract(path, out, model_dirs[c["models"]], WORKERS, c["au45"], env,
                                              extra=("--no-plots", *c["extra"]))
                        fps.append(x["fps"])
                        r["runs"][video][name]["csvs"].append(str(out))
                    run_fps = statistics.median(fps)
                    r["runs"][video][name]["fps"].append(run_fps)
                    if exact:
                        adjacent = (before + bound(models, faces, cell)) / 2
                        r["bound"].setdefault(cell, []).append(round(adjacent, 3))
                        r["runs"][video][name].setdefault("ratio", []).append(round(run_fps / adjacent, 4))
                    bench.log(f"round {round_ + 1} {video} {name}: {fps} frames/s"
                              + (f", bound {r['bound'][cell][-1]}" if exact else ""))
                if video == "360p":
                    for landmarks, label in ((True, "official"), (False, "official_no_landmarks")):
                        o = run_official(args.official_python, path, checkpoints, landmarks)
                        r[label]["fps"].append(o["fps"])
                        r[label]["load_seconds"], r[label]["faces"] = o["load_seconds"], o["faces"]
                        r["official_torch"] = o["torch"]
                        bench.log(f"round {round_ + 1} {label}: {o['fps']} frames/s ({o['faces']} faces)")
        r["official_fps"] = median_of(r["official"]["fps"])
        r["official_no_landmarks_fps"] = median_of(r["official_no_landmarks"]["fps"])
        r["drift"] = {}
        for video, configs in r["runs"].items():
            reference = Path(configs["defaults"]["csvs"][0])
            for name, x in configs.items():
                x["same_csv"] = all(same_csv(Path(x["csvs"][0]), Path(p)) for p in x["csvs"][1:])
                if name not in EXACT:
                    r["drift"].setdefault(video, {})[name] = drift(reference, Path(x["csvs"][0]))
        r["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
        (args.out / "beyond.json").write_text(json.dumps(r, indent=1))
        text = report(r)
        (args.out / "beyond.md").write_text(text)
        print(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
