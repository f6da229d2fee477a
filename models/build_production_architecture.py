#!/usr/bin/env python
"""The production model's architecture, with random weights, imported into the model store.

The deployment this project replaces serves a SigLIP base patch16 224 vision tower
fine-tuned on Food-101 (~93M parameters), from a bucket that cannot be reached here.
This builds the same architecture from its config (nothing is downloaded): the vision
tower at full size, a 101-label Food-101 head, SigLIP's own processor, seeded random
weights. Its predictions mean nothing; its cost, memory and graph are the production
model's. It is imported through the path every checkpoint takes (models/download_model.py
--from-dir: ONNX export with the attention rollout in the graph), as TAG:<content version>.

    python models/build_production_architecture.py            # siglip-b16-food101-arch
    make bench-production                                      # builds it, then benchmarks it

Needs torch and transformers (the `models` extra, as every import does).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TAG = "siglip-b16-food101-arch"
# Food-101's classes, in its own order (the dataset's meta/classes.txt).
FOOD101 = """
apple_pie baby_back_ribs baklava beef_carpaccio beef_tartare beet_salad beignets bibimbap bread_pudding
breakfast_burrito bruschetta caesar_salad cannoli caprese_salad carrot_cake ceviche cheesecake cheese_plate
chicken_curry chicken_quesadilla chicken_wings chocolate_cake chocolate_mousse churros clam_chowder
club_sandwich crab_cakes creme_brulee croque_madame cup_cakes deviled_eggs donuts dumplings edamame
eggs_benedict escargots falafel filet_mignon fish_and_chips foie_gras french_fries french_onion_soup
french_toast fried_calamari fried_rice frozen_yogurt garlic_bread gnocchi greek_salad grilled_cheese_sandwich
grilled_salmon guacamole gyoza hamburger hot_and_sour_soup hot_dog huevos_rancheros hummus ice_cream lasagna
lobster_bisque lobster_roll_sandwich macaroni_and_cheese macarons miso_soup mussels nachos omelette
onion_rings oysters pad_thai paella pancakes panna_cotta peking_duck pho pizza pork_chop poutine prime_rib
pulled_pork_sandwich ramen ravioli red_velvet_cake risotto samosa sashimi scallops seaweed_salad
shrimp_and_grits spaghetti_bolognese spaghetti_carbonara spring_rolls steak strawberry_shortcake sushi tacos
takoyaki tiramisu tuna_tartare waffles
""".split()
# google/siglip-base-patch16-224's vision tower.
BASE_PATCH16_224 = {
    "image_size": 224,
    "patch_size": 16,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}


def save_checkpoint(directory: Path, vision: dict = BASE_PATCH16_224, labels: list[str] = FOOD101) -> Path:
    """SigLIP's image classifier with ``vision`` as its tower, saved as transformers saves it."""
    import torch
    from transformers import SiglipConfig, SiglipForImageClassification, SiglipImageProcessor

    torch.manual_seed(0)
    config = SiglipConfig(
        vision_config=vision,
        # Unused by the image classifier; the smallest the config accepts.
        text_config={
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "vocab_size": 100,
        },
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    SiglipForImageClassification(config).save_pretrained(directory)
    size = vision["image_size"]
    SiglipImageProcessor(size={"height": size, "width": size}).save_pretrained(directory)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default=TAG, help="model name in the store (default: %(default)s)")
    parser.add_argument("--tag-file", type=Path, help="write the imported model's store tag to this file")
    args = parser.parse_args(argv)
    assert len(FOOD101) == 101, len(FOOD101)
    from models.download_model import main as import_checkpoint

    with tempfile.TemporaryDirectory(prefix="tikka-production-arch-") as directory:
        save_checkpoint(Path(directory))
        command = ["--from-dir", directory, "--tag", args.tag]
        return import_checkpoint(command + (["--tag-file", str(args.tag_file)] if args.tag_file else []))


if __name__ == "__main__":
    raise SystemExit(main())
