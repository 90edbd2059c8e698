"""Camera-like event streams with ground truth, composed from real photographs.

Every stream is generated from a seed: a still background (a real texture photograph, tinted), real
objects (photographs bundled with scikit-image: a cat, a coffee cup, a rocket, a motorcycle, ...)
entering, leaving, moving along a lane and being swapped for another, a lighting change, camera
shake, sensor noise and scene cuts (the background changes). Because the generator places every
object, the answers to an operator's questions are known exactly (:mod:`.questions`).

Objects and backgrounds are split three ways (train / val / test): a test stream shows only objects
and backgrounds no training stream showed. :class:`Imagery` replaces the bundled test pictures with a
user's own (objects: any image file, whole or by its alpha; backgrounds: images, or videos looping under
the objects), so the same questions can be asked of the same answerer on an operator's own scene.

Frames are ``(224, 224, 3)`` uint8 RGB at :data:`FPS` frames a second. An object is *in view* on a
frame when it is drawn on it; objects move in separate horizontal lanes, so none hides another.

Size: one generator: what a scene is (its script) and how a frame of it is drawn are kept together, because
every answer of the benchmark is read off the script the renderer draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

__all__ = ["Appearance", "BACKGROUNDS", "FPS", "IMAGE_SUFFIXES", "Imagery", "OBJECTS", "SIZE", "Scene", "SceneSpec",
           "VIDEO_SUFFIXES", "generate_scene", "object_on_grey", "object_reference_frame", "render", "scene_objects", "scripted_scene"]

SIZE = 224
FPS = 5.0
_MARGIN = 16  # background is rendered larger by this on every side, for camera shake
_LANES = (40, 112, 184)  # lane centres (rows): objects in different lanes never overlap
_MAX_OBJECT = 70

# name -> (file in skimage's data directory, crop (y0, y1, x0, x1) as fractions or None, split)
OBJECTS: dict[str, tuple[str, tuple[float, float, float, float] | None, str]] = {
    "cat": ("chelsea.png", (0.0, 1.0, 0.15, 0.85), "train"),
    "astronaut": ("astronaut.png", (0.0, 0.6, 0.25, 0.8), "train"),
    "cameraman": ("camera.png", (0.05, 0.9, 0.15, 0.75), "train"),
    "chessboard": ("chessboard_RGB.png", None, "train"),
    "galaxy": ("hubble_deep_field.jpg", (0.3, 0.6, 0.3, 0.6), "train"),
    "retina": ("retina.jpg", None, "train"),
    "tissue": ("ihc.png", (0.0, 0.5, 0.0, 0.5), "train"),
    "moon": ("moon.png", (0.2, 0.8, 0.2, 0.8), "train"),
    "phantom": ("phantom.png", None, "train"),
    "clock": ("clock_motion.png", (0.1, 0.9, 0.2, 0.8), "train"),
    "colour-chart": ("color.png", None, "train"),
    "coins": ("coins.png", (0.0, 0.5, 0.0, 0.5), "val"),
    "logo": ("logo.png", None, "val"),
    "cell": ("cell.png", (0.2, 0.6, 0.2, 0.6), "val"),
    "coffee": ("coffee.png", (0.05, 0.95, 0.15, 0.85), "test"),
    "rocket": ("rocket.jpg", (0.0, 1.0, 0.3, 0.7), "test"),
    "horse": ("horse.png", None, "test"),
    "motorcycle": ("motorcycle_left.png", (0.05, 0.95, 0.05, 0.95), "test"),
}
# name -> (file, split); greyscale textures, tinted per stream
BACKGROUNDS: dict[str, tuple[str, str]] = {
    "brick": ("brick.png", "train"),
    "grass": ("grass.png", "train"),
    "text": ("text.png", "train"),
    "page": ("page.png", "train"),
    "microaneurysms": ("microaneurysms.png", "val"),
    "gravel": ("gravel.png", "test"),
    "chessboard-grey": ("chessboard_GRAY.png", "test"),
}
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v")
_MAX_BACKGROUND_FRAMES = 300  # a video background loops after this many frames (60 s at 5 fps)


@dataclass(frozen=True)
class Imagery:
    """A user's own pictures for the test streams, in place of the bundled test split's.

    Attributes:
        objects: name -> image file (the name is the file's stem). An image with an alpha channel is
            pasted by its alpha, any other whole.
        backgrounds: name -> image or video file. A video loops under the objects, sampled at :data:`FPS`.
            Either mapping may be empty: that kind then comes from the bundled test split.
    """

    objects: dict[str, Path] = field(default_factory=dict)
    backgrounds: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def from_dirs(cls, objects: str | Path | None = None, backgrounds: str | Path | None = None) -> "Imagery":
        """Every image file in ``objects`` and every image or video file in ``backgrounds`` (not recursive).

        Raises ValueError for a directory that does not exist, holds fewer than two objects (a question
        compares two) or no background, or two files of one name."""

        def scan(d: str | Path | None, suffixes: tuple[str, ...], least: int, what: str) -> dict[str, Path]:
            if d is None:
                return {}
            d = Path(d)
            if not d.is_dir():
                raise ValueError(f"{what}: {d} is not a directory")
            files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
            out: dict[str, Path] = {}
            for f in files:
                if f.stem in out:
                    raise ValueError(f"{what}: two files are named {f.stem!r} ({out[f.stem].name}, {f.name})")
                out[f.stem] = f
            if len(out) < least:
                raise ValueError(f"{what}: {d} holds {len(out)} usable files ({', '.join(suffixes)}); need {least}")
            return out

        return cls(scan(objects, IMAGE_SUFFIXES, 2, "--objects"),
                   scan(backgrounds, IMAGE_SUFFIXES + VIDEO_SUFFIXES, 1, "--backgrounds"))

    def object_names(self) -> list[str]:
        return list(self.objects) or split_objects("test")

    def background_names(self) -> list[str]:
        return list(self.backgrounds) or split_backgrounds("test")

    @cached_property
    def fingerprint(self) -> str:
        """A digest of every file's name and bytes (cache keys: other pictures, other streams); read once."""
        import hashlib

        h = hashlib.sha1()
        for kind, files in (("o", self.objects), ("b", self.backgrounds)):
            for name, path in sorted(files.items()):
                h.update(f"{kind}|{name}|".encode())
                h.update(hashlib.sha1(Path(path).read_bytes()).digest())
        return h.hexdigest()[:16]

    def __hash__(self) -> int:  # the lru caches key on it
        return hash((tuple(sorted(self.objects.items())), tuple(sorted(self.backgrounds.items()))))


def _data_dir() -> Path:
    try:
        import skimage
    except ImportError as exc:
        raise RuntimeError("the event-QA benchmark needs scikit-image's bundled photos: pip install "
                           "'streamdycoke[eval]' (or scikit-image)") from exc
    return Path(skimage.__file__).parent / "data"


@lru_cache(maxsize=None)
def _photo(file: str) -> np.ndarray:
    """A bundled photo as float32 RGBA in [0, 1], ``(H, W, 4)``."""
    from PIL import Image

    im = Image.open(_data_dir() / file)
    im = np.asarray(im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB"), dtype=np.float32) / 255.0
    if im.shape[2] == 3:
        im = np.concatenate([im, np.ones_like(im[..., :1])], axis=2)
    return im


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    chans = [np.asarray(Image.fromarray(img[..., c]).resize((w, h), Image.BILINEAR)) for c in range(img.shape[2])]
    return np.stack(chans, axis=2)


@lru_cache(maxsize=None)
def _user_photo(path: Path) -> np.ndarray:
    """A user's picture as float32 RGBA in [0, 1], ``(H, W, 4)`` (opaque where it has no alpha)."""
    from PIL import Image

    with Image.open(path) as im:
        im = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    return im


@lru_cache(maxsize=None)
def _sprite(name: str, size: int, imagery: Imagery | None = None) -> np.ndarray:
    """Object ``name`` as float32 RGBA, longest side ``size`` pixels (a user's picture where ``imagery``
    names it)."""
    if imagery is not None and name in imagery.objects:
        im = _user_photo(imagery.objects[name])
        h, w = im.shape[:2]
        s = size / max(h, w)
        return _resize(np.ascontiguousarray(im), max(2, round(h * s)), max(2, round(w * s)))
    file, crop, _ = OBJECTS[name]
    im = _photo(file)
    if crop is not None:
        H, W = im.shape[:2]
        y0, y1, x0, x1 = crop
        im = im[int(y0 * H):int(y1 * H), int(x0 * W):int(x1 * W)]
    if name == "horse":  # a black silhouette on transparent: give it a coat
        a = 1.0 - im[..., :3].mean(-1, keepdims=True)  # the horse is the dark pixels
        im = np.concatenate([np.broadcast_to(np.array([0.45, 0.28, 0.15], np.float32), im.shape[:2] + (3,)), a], 2)
    h, w = im.shape[:2]
    s = size / max(h, w)
    return _resize(np.ascontiguousarray(im), max(2, round(h * s)), max(2, round(w * s)))


@lru_cache(maxsize=None)
def _texture(name: str) -> np.ndarray:
    """Background ``name`` as float32 grey ``(S, S)`` with ``S = SIZE + 2 * margin``, tiled if small."""
    im = _photo(BACKGROUNDS[name][0])[..., :3].mean(-1)
    side = SIZE + 2 * _MARGIN
    if min(im.shape) < side // 2:
        reps = (-(-side // im.shape[0]), -(-side // im.shape[1]))
        im = np.tile(im, reps)
    s = side / min(im.shape)
    im = _resize(im[..., None], max(side, round(im.shape[0] * s)), max(side, round(im.shape[1] * s)))[..., 0]
    return np.ascontiguousarray(im[:side, :side])


@lru_cache(maxsize=8)
def _user_background(path: Path) -> np.ndarray:
    """A user's background as uint8 RGB frames ``(F, S, S, 3)``, ``S = SIZE + 2 * margin``: one for an image,
    a video's frames at :data:`FPS` (at most :data:`_MAX_BACKGROUND_FRAMES`) for a video, each scaled to
    cover ``S x S`` and centre-cropped."""
    from PIL import Image

    side = SIZE + 2 * _MARGIN

    def square(img: Image.Image) -> np.ndarray:
        w, h = img.size
        s = side / min(w, h)
        img = img.convert("RGB").resize((max(side, round(w * s)), max(side, round(h * s))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - side) // 2, (h - side) // 2
        return np.asarray(img.crop((left, top, left + side, top + side)), dtype=np.uint8)

    if path.suffix.lower() in VIDEO_SUFFIXES:
        from ..video import decode_frames

        frames, next_t = [], None
        for fr in decode_frames(str(path)):
            if next_t is None:
                next_t = fr.timestamp
            if fr.timestamp + 1e-6 < next_t:
                continue
            frames.append(square(Image.fromarray(fr.rgb)))
            next_t += 1.0 / FPS
            if len(frames) >= _MAX_BACKGROUND_FRAMES:
                break
        if not frames:
            raise ValueError(f"background video {path} has no frames")
        return np.stack(frames)
    with Image.open(path) as im:
        return square(im)[None]


@dataclass(frozen=True)
class Appearance:
    """One object on screen from frame ``start`` to ``end`` (exclusive), its top-left corner per frame."""

    name: str
    start: int
    end: int
    size: int
    lane: int
    xs: tuple[int, ...]  # left edge on frames start..end-1

    def in_view(self, frame: int) -> bool:
        return self.start <= frame < self.end


@dataclass(frozen=True)
class SceneSpec:
    """Stream-level randomness."""

    frames: int = 40
    p_cut: float = 0.5
    p_light: float = 0.35
    p_shake: float = 0.3
    p_swap: float = 0.25
    p_brief: float = 0.3
    noise: float = 2.0 / 255


@dataclass
class Scene:
    """A generated stream and its ground truth."""

    seed: int
    split: str
    frames: int
    backgrounds: list[tuple[str, tuple[float, float, float]]]  # (texture, tint) before / after the cut
    cut: int | None  # frame at which the background changes, or None
    light: tuple[int, float] | None  # (start frame, gain reached 5 frames later)
    shake: tuple[int, int] | None  # frames [a, b) with camera shake
    appearances: list[Appearance] = field(default_factory=list)
    noise: float = SceneSpec.noise  # sensor noise (std, in [0, 1] units)
    imagery: Imagery | None = None  # a user's pictures, where they replace the bundled test split's

    def distinct_objects(self, upto: int | None = None) -> list[str]:
        """Names in order of first appearance (ties: by lane), up to frame ``upto`` inclusive."""
        upto = self.frames - 1 if upto is None else upto
        seen = sorted((a.start, a.lane, a.name) for a in self.appearances if a.start <= upto)
        out: list[str] = []
        for _, _, n in seen:
            if n not in out:
                out.append(n)
        return out

    def in_view(self, frame: int) -> set[str]:
        return {a.name for a in self.appearances if a.in_view(frame)}

    def first_seen(self, name: str) -> int | None:
        starts = [a.start for a in self.appearances if a.name == name]
        return min(starts) if starts else None


def split_objects(split: str) -> list[str]:
    return [n for n, (_, _, s) in OBJECTS.items() if s == split]


def split_backgrounds(split: str) -> list[str]:
    return [n for n, (_, s) in BACKGROUNDS.items() if s == split]


def scene_objects(scene: Scene) -> list[str]:
    """The objects a question about ``scene`` may name: its imagery's, else its split's."""
    return scene.imagery.object_names() if scene.imagery is not None else split_objects(scene.split)


def generate_scene(seed: int, split: str, spec: SceneSpec | None = None, imagery: Imagery | None = None) -> Scene:
    """The scene of stream ``seed`` in ``split`` (same seed and split, same scene). With ``imagery`` (test
    split only): its objects and backgrounds in place of the bundled test split's, the same randomness
    otherwise; a user's background is shown in its own colours (the bundled grey textures are tinted)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if imagery is not None and split != "test":
        raise ValueError("a user's imagery replaces the test split's only (no training stream may show it)")
    spec = spec or SceneSpec()
    T = spec.frames
    rng = np.random.default_rng([seed, SPLITS.index(split), 7919])
    bgs = imagery.background_names() if imagery is not None else split_backgrounds(split)
    objs = imagery.object_names() if imagery is not None else split_objects(split)
    user_bgs = set(imagery.backgrounds) if imagery is not None else set()

    def tint(bg: str) -> tuple[float, float, float]:
        t = tuple(float(v) for v in rng.uniform(0.55, 1.0, 3))
        return (1.0, 1.0, 1.0) if bg in user_bgs else t

    first_bg = str(rng.choice(bgs))
    backgrounds = [(first_bg, tint(first_bg))]
    cut = None
    if rng.random() < spec.p_cut:
        cut = int(rng.integers(T // 5, T - T // 5))
        bg = str(rng.choice(bgs))
        backgrounds.append((bg, tint(bg)))
    light = (int(rng.integers(2, T - 6)), float(rng.choice([rng.uniform(0.6, 0.8), rng.uniform(1.2, 1.4)]))) \
        if rng.random() < spec.p_light else None
    shake = None
    if rng.random() < spec.p_shake:
        a = int(rng.integers(0, T - 8))
        shake = (a, a + int(rng.integers(5, 12)))
    n_obj = int(rng.choice([0, 1, 2, 3], p=[0.1, 0.3, 0.35, 0.25]))
    names = [str(n) for n in rng.permutation(objs)[:n_obj]]
    lanes = [int(v) for v in rng.permutation(len(_LANES))[:n_obj]]
    apps: list[Appearance] = []
    pool = [n for n in objs if n not in names]
    for name, lane in zip(names, lanes):
        size = int(rng.integers(50, _MAX_OBJECT + 1))
        if rng.random() < spec.p_brief:
            dur = int(rng.integers(2, 5))
        else:
            dur = int(rng.integers(8, T + 1))
        start = int(rng.integers(0, max(1, T - min(dur, T) + 1)))
        end = min(T, start + dur)
        x0 = float(rng.uniform(0, SIZE - size))
        v = 0.0 if rng.random() < 0.5 else float(rng.uniform(3, 8) * rng.choice([-1, 1]))
        xs = []
        x = x0
        for _ in range(start, end):
            xs.append(int(round(x)))
            x += v
            if x < 0 or x > SIZE - size:  # bounce off the frame's edges
                v = -v
                x = min(max(x, 0.0), float(SIZE - size))
        swap_at = None
        if pool and end - start >= 8 and rng.random() < spec.p_swap and len(names) + len(apps) < 4:
            swap_at = start + int(rng.integers(3, end - start - 2))
        if swap_at is None:
            apps.append(Appearance(name, start, end, size, lane, tuple(xs)))
        else:
            other = str(pool.pop(int(rng.integers(len(pool)))))
            k = swap_at - start
            apps.append(Appearance(name, start, swap_at, size, lane, tuple(xs[:k])))
            apps.append(Appearance(other, swap_at, end, size, lane, tuple(xs[k:])))
    scene = Scene(seed, split, T, backgrounds, cut, light, shake, apps, spec.noise, imagery)
    # At most one swap can happen with three objects (the guard above), making a fourth distinct object;
    # dropping the last appearance (the swap's, or the third object's) brings it back to at most three.
    if len(scene.distinct_objects()) > 3:
        scene.appearances.pop()
    return scene


def _paste(canvas: np.ndarray, sprite: np.ndarray, top: int, left: int) -> None:
    h, w = sprite.shape[:2]
    a = sprite[..., 3:4]
    region = canvas[top:top + h, left:left + w]
    region[:] = region * (1 - a) + sprite[..., :3] * a


def render(scene: Scene, frame: int) -> np.ndarray:
    """Frame ``frame`` of ``scene``: ``(224, 224, 3)`` uint8 RGB (deterministic, noise included)."""
    if not 0 <= frame < scene.frames:
        raise ValueError(f"frame {frame} outside 0..{scene.frames - 1}")
    rng = np.random.default_rng([scene.seed, SPLITS.index(scene.split), frame, 104729])
    bg_name, tint = scene.backgrounds[1 if scene.cut is not None and frame >= scene.cut else 0]
    im = scene.imagery
    dy = dx = 0
    if scene.shake is not None and scene.shake[0] <= frame < scene.shake[1]:
        dy, dx = (int(v) for v in rng.integers(-5, 6, 2))
    y0, x0 = _MARGIN + dy, _MARGIN + dx
    if im is not None and bg_name in im.backgrounds:  # a user's picture, or its video's frame (looping)
        frames = _user_background(im.backgrounds[bg_name])
        tex = frames[frame % len(frames)].astype(np.float32) / 255.0
        canvas = tex[y0:y0 + SIZE, x0:x0 + SIZE] * np.asarray(tint, np.float32)  # (224, 224, 3)
    else:
        canvas = _texture(bg_name)[y0:y0 + SIZE, x0:x0 + SIZE, None] * np.asarray(tint, np.float32)
    canvas = np.ascontiguousarray(canvas)
    for a in scene.appearances:
        if a.in_view(frame):
            sprite = _sprite(a.name, a.size, im)
            top = min(max(0, _LANES[a.lane] - sprite.shape[0] // 2 + dy), SIZE - sprite.shape[0])
            left = min(max(0, a.xs[frame - a.start] + dx), SIZE - sprite.shape[1])
            _paste(canvas, sprite, top, left)
    if scene.light is not None and frame >= scene.light[0]:
        ramp = min(1.0, (frame - scene.light[0] + 1) / 5)
        canvas *= 1.0 + ramp * (scene.light[1] - 1.0)
    canvas += rng.normal(0.0, scene.noise, canvas.shape).astype(np.float32)
    return (np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def scripted_scene(name: str, enter_s: float, leave_s: float, seconds: float = 20.0, background: str = "brick",
                   lane: int = 1, size: int = 64, seed: int = 0) -> Scene:
    """A still scene where object ``name`` enters at ``enter_s``, walks slowly along ``lane`` and leaves
    at ``leave_s`` (the demo's camera: its ground truth is exactly that interval)."""
    if name not in OBJECTS or background not in BACKGROUNDS:
        raise ValueError(f"unknown object {name!r} or background {background!r}")
    T, a, b = int(round(seconds * FPS)), int(round(enter_s * FPS)), int(round(leave_s * FPS))
    if not 0 <= a < b <= T:
        raise ValueError(f"need 0 <= enter_s < leave_s <= seconds, got {enter_s}, {leave_s}, {seconds}")
    xs = tuple(int(round(10 + (SIZE - size - 20) * (f - a) / max(1, b - a - 1))) for f in range(a, b))
    return Scene(seed=seed, split=OBJECTS[name][2], frames=T, backgrounds=[(background, (0.85, 0.8, 0.75))],
                 cut=None, light=None, shake=None, appearances=[Appearance(name, a, b, size, lane, xs)])


def object_reference_frame(name: str, size: int = 96, imagery: Imagery | None = None) -> np.ndarray:
    """The object alone, centred on mid grey: the picture a question refers to, ``(224, 224, 3)`` uint8."""
    return object_on_grey(name, size, imagery=imagery)[0]


def object_on_grey(name: str, size: int, shift: tuple[int, int] = (0, 0),
                   imagery: Imagery | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The object at ``size`` px on mid grey, centred then moved by ``shift`` (rows, columns): the frame
    ``(224, 224, 3)`` uint8 and where the object is, ``(224, 224)`` float alpha in [0, 1]."""
    canvas = np.full((SIZE, SIZE, 3), 0.5, np.float32)
    sprite = _sprite(name, size, imagery)
    top = (SIZE - sprite.shape[0]) // 2 + shift[0]
    left = (SIZE - sprite.shape[1]) // 2 + shift[1]
    _paste(canvas, sprite, top, left)
    alpha = np.zeros((SIZE, SIZE), np.float32)
    alpha[top:top + sprite.shape[0], left:left + sprite.shape[1]] = sprite[..., 3]
    return (canvas * 255.0 + 0.5).astype(np.uint8), alpha
