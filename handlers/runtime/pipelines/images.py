"""``image-classification`` and ``image-detection``: JPEG or PNG in, built on :class:`ModelPipeline`.

Each element of the BYTES input is an image's bytes (the binary extension, a V1 ``{"b64": ...}``) or
their base64 text (plain JSON). Images are decoded with Pillow (the pipeline's own layer), converted to
RGB (or BGR), resized to the model's size, scaled, normalized per channel and laid out NCHW or NHWC.
Detection boxes come back in the original image's pixels, after a score threshold and per-class
non-maximum suppression, as one JSON list per image.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from contract.manifest import ImagePipeline, Manifest, ManifestError
from handlers.runtime.errors import InvalidInput, PayloadTooLarge
from handlers.runtime.pipelines.base import Tensors
from handlers.runtime.pipelines.classification import classification_outputs
from handlers.runtime.pipelines.custom import ModelPipeline

MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
MAX_PIXELS = 40_000_000  # a decompression bomb (a tiny PNG of a huge canvas) is refused before it is decoded


def image_inputs(config: ImagePipeline) -> list[dict[str, Any]]:
    return [{"name": config.input, "datatype": "BYTES", "shape": [-1]}]


def image_outputs(config: ImagePipeline, classes: int) -> list[dict[str, Any]]:
    """The client-facing outputs: a classification's, or each image's detections as JSON and their count."""
    if config.kind == "image-classification":
        return classification_outputs(list(config.labels), classes)
    return [
        {"name": "detections", "datatype": "BYTES", "shape": [-1]},
        {"name": "count", "datatype": "INT64", "shape": [-1]},
    ]


def image_bytes(item: Any, label: str) -> bytes:
    """The image's bytes: as given, or decoded from base64 text."""
    raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
    if raw.startswith(MAGIC):
        return raw
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if decoded.startswith(MAGIC):
        return decoded
    raise InvalidInput(f"{label}: expected JPEG or PNG bytes, or their base64")


def decode(raw: bytes, label: str, color: str) -> np.ndarray:
    """An HWC uint8 array in ``color`` order."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            if image.width * image.height > MAX_PIXELS:
                raise PayloadTooLarge(f"{label}: {image.width}×{image.height} is over {MAX_PIXELS:,} pixels")
            array = np.asarray(image.convert("RGB"))
    except PayloadTooLarge:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"{label}: the image is over {MAX_PIXELS:,} pixels") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
        raise InvalidInput(f"{label}: not a readable JPEG or PNG ({type(exc).__name__})") from exc
    return array[:, :, ::-1] if color == "BGR" else array


class ImagePipelineBase(ModelPipeline):
    """Decode, resize, normalize and lay out; subclasses read the model's outputs."""

    def __init__(
        self, manifest: Manifest, session: Any, files: Mapping[str, bytes], options: Mapping[str, Any]
    ) -> None:
        super().__init__(manifest, session, files, options)
        config = manifest.pipeline
        assert isinstance(config, ImagePipeline)
        if importlib.util.find_spec("PIL") is None:
            raise ManifestError(f"{config.kind} needs Pillow, not on this function's path: its layer is missing")
        self.config = config
        inputs = {i.name: i for i in session.get_inputs()}
        self.model_input = config.model_input or (next(iter(inputs)) if len(inputs) == 1 else "")
        if self.model_input not in inputs:
            raise ManifestError(f"{config.kind}: model_input {config.model_input!r} is not one of {sorted(inputs)}")
        shape = list(inputs[self.model_input].shape)
        height, width = config.size
        expected = [3, height, width] if config.layout == "NCHW" else [height, width, 3]
        if len(shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected, strict=True)):
            raise ManifestError(f"{config.kind}: the model takes {shape}, the pipeline makes [batch, {expected}]")

    def _prepare(self, inputs: Mapping[str, np.ndarray]) -> tuple[Tensors, list[tuple[int, int]]]:
        from PIL import Image

        config = self.config
        height, width = config.size
        batch, sizes = [], []
        for index, item in enumerate(inputs[config.input].reshape(-1)):
            label = f'input "{config.input}" element {index}'
            pixels = decode(image_bytes(item, label), label, config.color)
            sizes.append((pixels.shape[1], pixels.shape[0]))
            resized = np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR))
            batch.append(resized)
        scaled = np.stack(batch).astype(np.float32) * np.float32(config.scale)
        array = np.asarray((scaled - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32))
        if config.layout == "NCHW":
            array = array.transpose(0, 3, 1, 2)
        return {self.model_input: np.ascontiguousarray(array, dtype=np.float32)}, sizes

    def preprocess(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        return self._prepare(inputs)[0]

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> Tensors:
        feeds, sizes = self._prepare(inputs)
        results = self.read(self.infer(feeds), sizes)
        return {name: results[name] for name in outputs}

    def postprocess(self, outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray]) -> Tensors:
        return self.read(outputs, self._prepare(inputs)[1])

    def read(self, outputs: Mapping[str, np.ndarray], sizes: list[tuple[int, int]]) -> Tensors:
        raise NotImplementedError


class ImageClassification(ImagePipelineBase):
    def read(self, outputs: Mapping[str, np.ndarray], sizes: list[tuple[int, int]]) -> Tensors:
        config = self.config
        scores = np.asarray(outputs[config.scores_output or self.model_outputs[0]], dtype=np.float32)
        scores = scores.reshape(scores.shape[0], -1)
        if config.softmax:
            shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores = shifted / shifted.sum(axis=-1, keepdims=True)
        label = scores.argmax(axis=-1).astype(np.int64)
        results: Tensors = {"probabilities": scores, "label": label}
        if config.labels:
            names = np.array([n.encode("utf-8") for n in config.labels], dtype=object)
            results["label_name"] = names[label]
        return results


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression over xyxy boxes: the indices kept, best first."""
    order = list(np.argsort(-scores))
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    kept: list[int] = []
    while order:
        best = order.pop(0)
        kept.append(int(best))
        if not order:
            break
        rest = np.array(order)
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        overlap = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        union = areas[best] + areas[rest] - overlap
        ratio = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
        order = [int(i) for i, r in zip(rest, ratio, strict=True) if r <= iou]
    return kept


class ImageDetection(ImagePipelineBase):
    def __init__(
        self, manifest: Manifest, session: Any, files: Mapping[str, bytes], options: Mapping[str, Any]
    ) -> None:
        super().__init__(manifest, session, files, options)
        config = self.config
        needed = [config.scores_output, config.boxes_output] if config.detection_format == "boxes_scores" else []
        missing = [name for name in needed if name not in self.model_outputs]
        if missing or (config.detection_format == "yolo" and len(self.model_outputs) < 1):
            raise ManifestError(f"image-detection: the model has no output {missing}; it has {self.model_outputs}")
        self.drift_output = config.scores_output or self.model_outputs[0]

    def _boxes_scores(self, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        config = self.config
        if config.detection_format == "yolo":
            raw = np.asarray(outputs[config.scores_output or self.model_outputs[0]], np.float32)
            table = raw.transpose(0, 2, 1)  # [B, N, 4 + classes]
            boxes, scores = table[..., :4], table[..., 4:]
        else:
            boxes = np.asarray(outputs[config.boxes_output], np.float32)
            scores = np.asarray(outputs[config.scores_output], np.float32)
            if scores.ndim == 2:
                scores = scores[..., None]
        if config.box_format == "cxcywh" or config.detection_format == "yolo":
            cx, cy, w, h = (boxes[..., i] for i in range(4))
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
        return boxes, scores

    def read(self, outputs: Mapping[str, np.ndarray], sizes: list[tuple[int, int]]) -> Tensors:
        config = self.config
        height, width = config.size
        boxes, scores = self._boxes_scores(outputs)
        answers, counts = [], []
        for image, (w, h) in enumerate(sizes):
            classes = scores[image].argmax(axis=-1)
            best = scores[image].max(axis=-1)
            keep = np.flatnonzero(best >= config.score_threshold)
            found = []
            for cls in np.unique(classes[keep]):
                members = keep[classes[keep] == cls]
                for i in nms(boxes[image][members], best[members], config.iou_threshold):
                    found.append((float(best[members[i]]), int(cls), boxes[image][members[i]]))
            found.sort(key=lambda f: -f[0])
            detections = []
            for score, cls, box in found[: config.max_detections]:
                scaled = np.clip(box * np.array([w / width, h / height, w / width, h / height]), 0, [w, h, w, h])
                detection: dict[str, Any] = {"box": [round(float(v), 2) for v in scaled], "score": round(score, 4)}
                detection["class"] = cls
                if cls < len(config.labels):
                    detection["label"] = config.labels[cls]
                detections.append(detection)
            answers.append(json.dumps(detections).encode("utf-8"))
            counts.append(len(detections))
        return {"detections": np.array(answers, dtype=object), "count": np.array(counts, dtype=np.int64)}


def build_classification(manifest: Manifest, session: Any, files: Mapping[str, bytes]) -> ImageClassification:
    return ImageClassification(manifest, session, files, {})


def build_detection(manifest: Manifest, session: Any, files: Mapping[str, bytes]) -> ImageDetection:
    return ImageDetection(manifest, session, files, {})
