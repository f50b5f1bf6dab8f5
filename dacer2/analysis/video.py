"""Recording one evaluation episode to a video file, with a clear answer when this machine cannot render.

MuJoCo tasks need an OpenGL backend (MUJOCO_GL = egl, osmesa or glfw). A broken backend can crash or hang the
process that tries it, so each candidate is probed in a short-lived subprocess that renders one frame of the
actual env; the first that works is exported to MUJOCO_GL before this process creates its render env.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np

GL_CANDIDATES = ("egl", "osmesa", "glfw")
PROBE_TIMEOUT_S = 60


class RenderError(RuntimeError):
    """Rendering (or writing the video) is not possible here; the message says why in one line."""


def needs_opengl(env_id: str) -> bool:
    entry = gym.spec(env_id).entry_point
    return isinstance(entry, str) and entry.startswith("gymnasium.envs.mujoco")


def _probe(env_id: str, backend: str) -> str | None:
    """None if `backend` renders a frame of env_id in a fresh process, else the last line of its error."""
    code = (
        "import gymnasium as gym, dacer2.envs\n"
        f"env = gym.make({env_id!r}, render_mode='rgb_array', width=32, height=32)\n"
        "env.reset(seed=0); frame = env.render(); assert frame is not None and frame.size\n"
    )
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend if backend != "glfw" else ""}
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "timed out"
    if proc.returncode == 0:
        return None
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return lines[-1][:120] if lines else f"exit code {proc.returncode}"


def ensure_rendering(env_id: str) -> str:
    """Make rendering of env_id work in this process, or raise RenderError. Returns the backend used."""
    if not needs_opengl(env_id):
        return "matplotlib"
    preset = os.environ.get("MUJOCO_GL")
    candidates = (preset,) if preset else tuple(c for c in GL_CANDIDATES if c != "glfw" or os.environ.get("DISPLAY"))
    failures = []
    for backend in candidates:
        error = _probe(env_id, backend)
        if error is None:
            os.environ["MUJOCO_GL"] = backend
            if backend != "glfw":
                os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
        failures.append(f"MUJOCO_GL={backend}: {error}")
    raise RenderError(
        f"cannot render {env_id}: no working MuJoCo OpenGL backend ({'; '.join(failures)}); install EGL or OSMesa "
        "(e.g. apt-get install libegl1 or libosmesa6) or set MUJOCO_GL to a backend that works here"
    )


def check_video_path(path: str | Path) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise RenderError(f"--video must end in .gif or .mp4, got {path.name}")
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401  (imageio's mp4 writer)
        except ImportError:
            raise RenderError("writing .mp4 needs imageio-ffmpeg (pip install imageio-ffmpeg); or use a .gif path") from None
    return path


def record_episode(env_id: str, act: Callable[[np.ndarray], np.ndarray], path: str | Path, seed: int = 0,
                   max_frames: int = 1000) -> int:
    """Render one episode of `act` (obs [S] -> action in env bounds) to `path`; returns the number of frames."""
    path = check_video_path(path)
    ensure_rendering(env_id)
    import imageio.v2 as imageio

    env = gym.make(env_id, render_mode="rgb_array")
    frames = []
    try:
        obs, _ = env.reset(seed=seed)
        frames.append(env.render())
        done = False
        while not done and len(frames) < max_frames:
            obs, _, terminated, truncated, _ = env.step(act(obs))
            frames.append(env.render())
            done = terminated or truncated
    finally:
        env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    fps = (env.metadata or {}).get("render_fps", 30)
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, frames, duration=1000.0 / fps, loop=0)
    else:
        imageio.mimsave(path, frames, fps=fps)
    return len(frames)
