"""Pictures of sequences: a labelled GIF and strip of context, ground truth and prediction.

Every picture says what it shows: the frames given to the model ("context"), the true
future ("ground truth") and the model's rollout ("prediction"), with frame numbers
counted from 1 over the whole sequence (context frames first). Frames are (H, W, 3) uint8.
"""

from __future__ import annotations

import functools
import io
import struct
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

STRIP_MAX_STEPS = 16  # predicted columns of a strip; longer rollouts are subsampled
CONTEXT, TRUTH, PREDICTION = "context", "ground truth", "prediction"
WHITE, INK, MUTED = (255, 255, 255), (20, 20, 20), (235, 235, 235)
GAP = 4  # pixels between panels


def _upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2) if factor > 1 else frames


def _scale_for(h: int) -> int:
    return max(1, 128 // h)


@functools.lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size)  # Pillow's bundled font: no system font needed


def text_bar(width: int, text: str, height: int = 18, size: int = 12, align: str = "left",
             color: tuple[int, int, int] = INK) -> np.ndarray:
    """(height, width, 3) white bar with text, cut to the width."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(img)
    font = _font(size)
    while text and draw.textlength(text, font=font) > width - 4:
        text = text[:-1]
    x = 2 if align == "left" else max(2, (width - draw.textlength(text, font=font)) / 2)
    draw.text((x, (height - size) / 2 - 1), text, fill=color, font=font)
    return np.asarray(img)


def _hgap(height: int, width: int = GAP) -> np.ndarray:
    return np.full((height, width, 3), 255, np.uint8)


def labelled_frame(lefts: Sequence[np.ndarray], rights: Sequence[np.ndarray], caption: str,
                   headers: tuple[str, str], scale: int = 1) -> np.ndarray:
    """One GIF frame: a caption, two headed columns, one row per sequence (left | right)."""
    rows = []
    for a, b in zip(lefts, rights):
        a, b = _upscale(a, scale), _upscale(b, scale)
        rows += [np.concatenate([a, _hgap(a.shape[0]), b], axis=1), _hgap(GAP, a.shape[1] * 2 + GAP)]
    body = np.concatenate(rows[:-1], axis=0)
    col = (body.shape[1] - GAP) // 2
    head = np.concatenate([text_bar(col, headers[0], align="center"), _hgap(18),
                           text_bar(col, headers[1], align="center")], axis=1)
    return np.concatenate([text_bar(body.shape[1], caption, size=12), head, body], axis=0)


def gif_frames(contexts: Sequence[np.ndarray], truths: Sequence[np.ndarray],
               preds: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
    """Labelled frames of a rollout: each context frame (shown in both columns), then ground
    truth | prediction for each predicted frame. contexts (S, P, H, W, 3), truths/preds (S, T, H, W, 3)."""
    n_past, horizon = contexts[0].shape[0], truths[0].shape[0]
    total, scale = n_past + horizon, _scale_for(truths[0].shape[1])
    for t in range(n_past):
        frames = [c[t] for c in contexts]
        yield labelled_frame(frames, frames, f"frame {t + 1}/{total}: context (given)", (CONTEXT, CONTEXT), scale)
    for k in range(horizon):
        yield labelled_frame([x[k] for x in truths], [x[k] for x in preds],
                             f"frame {n_past + k + 1}/{total}: predicted {k + 1}/{horizon}", (TRUTH, PREDICTION),
                             scale)


class GifStream:
    """Animated GIF written frame by frame: memory stays flat however long the video.

    Pillow (and imageio) keep every frame until the file is closed. Here each frame is
    quantised alone to its own adaptive 256-colour palette (median cut, no dithering:
    a small object keeps its colour instead of being merged into the background's shades)
    and its image block is appended with that palette as its local colour table.
    """

    def __init__(self, path: Path, fps: float = 8.0, scale: int = 1):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("wb")
        self.delay = max(2, round(100 / fps))  # GIF delays are in 1/100 s
        self.scale = scale
        self.size: tuple[int, int] | None = None

    def add(self, frame: np.ndarray, delay: int | None = None) -> None:
        """frame (H, W, 3) uint8; every frame of a GIF must have the first one's size."""
        from PIL import Image

        frame = _upscale(frame, self.scale)
        h, w = frame.shape[:2]
        if self.size not in (None, (w, h)):
            raise ValueError(f"GIF frame of {w}x{h} after frames of {self.size[0]}x{self.size[1]}")
        buf = io.BytesIO()
        Image.fromarray(frame).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, "GIF")
        data = buf.getvalue()
        flags = data[10]
        palette_len = 3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0
        palette = data[13:13 + palette_len]
        pos = 13 + palette_len
        while data[pos] == 0x21:  # skip Pillow's own extensions
            pos += 2
            while data[pos]:
                pos += data[pos] + 1
            pos += 1
        if self.size is None:
            self.size = (w, h)
            loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
            self.file.write(b"GIF89a" + struct.pack("<HHBBB", w, h, 0x70, 0, 0) + loop)
        descriptor = bytearray(data[pos:pos + 10])
        if palette_len:  # the frame's palette becomes its local colour table
            descriptor[9] = (descriptor[9] & 0x40) | 0x80 | (flags & 7)
        control = b"\x21\xf9\x04\x00" + struct.pack("<H", delay or self.delay) + b"\x00\x00"
        self.file.write(control + bytes(descriptor) + palette + data[pos + 10:-1])

    def close(self) -> None:
        self.file.write(b"\x3b")
        self.file.close()


def _same_length(truths: Sequence[np.ndarray], preds: Sequence[np.ndarray],
                 contexts: Sequence[np.ndarray] | None) -> tuple[list, list, list]:
    """The sequences as long as the first (eval.n_future 'all' rolls each out to its own length)."""
    contexts = list(contexts) if contexts else [t[:0] for t in truths]
    keep = [i for i, t in enumerate(truths) if t.shape[0] == truths[0].shape[0]]
    return [truths[i] for i in keep], [preds[i] for i in keep], [contexts[i] for i in keep]


def write_gif(path: Path, truths: Sequence[np.ndarray], preds: Sequence[np.ndarray],
              contexts: Sequence[np.ndarray] | None = None, fps: int = 4) -> Path:
    """Labelled animated GIF, one row per sequence: the context frames, then ground truth
    (left) beside prediction (right). truths/preds: (T, H, W, 3) uint8 with matching T;
    contexts: (P, H, W, 3) per sequence, or None."""
    truths, preds, contexts = _same_length(truths, preds, contexts)
    gif = GifStream(path, fps)
    frames = list(gif_frames(contexts, truths, preds))
    for i, frame in enumerate(frames):
        # the last frame lingers, so a viewer sees where the rollout ended before it loops
        gif.add(frame, delay=150 if i == len(frames) - 1 else None)
    gif.close()
    return path


def strip_columns(horizon: int, most: int = STRIP_MAX_STEPS) -> np.ndarray:
    """Indices of the predicted frames a strip shows (every one, or `most` spread evenly)."""
    return np.unique(np.linspace(0, horizon - 1, min(horizon, most)).round().astype(int))


def write_strip(path: Path, truths: Sequence[np.ndarray], preds: Sequence[np.ndarray],
                contexts: Sequence[np.ndarray] | None = None, frame_numbers: Sequence[int] | None = None,
                truth_label: str = TRUTH) -> Path:
    """PNG: per sequence a row of context + ground-truth frames over a row of predictions,
    time left to right, frame numbers on top (long rollouts subsampled to STRIP_MAX_STEPS).

    frame_numbers: the 1-based frame number of each column of truths/preds when they are
    already a subsample (predict); by default they are consecutive after the context.
    """
    from PIL import Image

    truths, preds, contexts = _same_length(truths, preds, contexts)
    n_past = contexts[0].shape[0]
    if frame_numbers is None:
        cols = strip_columns(truths[0].shape[0])
        numbers = [n_past + 1 + int(c) for c in cols]
    else:
        cols, numbers = np.arange(truths[0].shape[0]), list(frame_numbers)
    scale = _scale_for(truths[0].shape[1])
    h, w = truths[0].shape[1] * scale, truths[0].shape[2] * scale
    label_w, sep = 96, GAP * 3  # the row labels; a wider gap where the context ends
    blank = np.full((h, w, 3), MUTED, np.uint8)

    def row(label: str, given: Sequence[np.ndarray], future: Sequence[np.ndarray]) -> np.ndarray:
        height = future[0].shape[0]
        cells = [text_bar(label_w, label, height=height)]
        for i, f in enumerate([*given, *future]):
            cells += [_hgap(height, sep if i == len(given) and given else GAP), f]
        return np.concatenate(cells, axis=1)

    heads = [text_bar(w, f"{t}", align="center") for t in [*range(1, n_past + 1), *numbers]]
    numbers_row = row("frame", heads[:n_past], heads[n_past:])
    span = lambda n, extra: n * (w + GAP) + extra  # noqa: E731 - width of n cells
    groups = np.concatenate([_hgap(18, label_w + GAP), text_bar(span(n_past, 0) - GAP, CONTEXT, align="center")
                             if n_past else _hgap(18, 0), _hgap(18, sep if n_past else 0),
                             text_bar(span(len(numbers), 0) - GAP, "predicted frames", align="center")], axis=1)
    blocks = [groups[:, :numbers_row.shape[1]], numbers_row]
    for c, t, p in zip(contexts, truths, preds):
        up = lambda x: [_upscale(f, scale) for f in x]  # noqa: E731
        blocks += [row(truth_label, up(c), up(t[cols])), _hgap(GAP, numbers_row.shape[1]),
                   row(PREDICTION, [blank] * n_past, up(p[cols])), _hgap(GAP * 3, numbers_row.shape[1])]
    img = np.concatenate(blocks[:-1], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path
