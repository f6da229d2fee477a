"""The one allow-list of ImageNet-1k classes that the embedded default model serves.

The default classifier is an ImageNet model, not a Food-101 model: ImageNet has
no ramen, pad thai or huevos rancheros. What it does have are ~40 foods and
dishes; the default model's head is cut down to exactly these, so every answer
it gives is a food and probabilities are renormalised over foods only.

Left out on purpose: tableware and non-food classes that food photos often hit
(plate 923, cup 968, wok, frying pan), hay (958), and drinks that are not dishes
(red wine 966). Names are snake_case, like Food-101's, so the front end can
humanise both the same way.
"""

from __future__ import annotations

# ImageNet-1k class index -> served label. Explicit, not derived from the synset
# descriptions, so that a timm upgrade cannot silently change the served labels.
FOOD_CLASSES: dict[int, str] = {
    924: "guacamole",
    925: "consomme",
    926: "hot_pot",
    927: "trifle",
    928: "ice_cream",
    929: "ice_lolly",
    930: "french_loaf",
    931: "bagel",
    932: "pretzel",
    933: "cheeseburger",
    934: "hotdog",
    935: "mashed_potato",
    936: "head_cabbage",
    937: "broccoli",
    938: "cauliflower",
    939: "zucchini",
    940: "spaghetti_squash",
    941: "acorn_squash",
    942: "butternut_squash",
    943: "cucumber",
    944: "artichoke",
    945: "bell_pepper",
    946: "cardoon",
    947: "mushroom",
    948: "granny_smith",
    949: "strawberry",
    950: "orange",
    951: "lemon",
    952: "fig",
    953: "pineapple",
    954: "banana",
    955: "jackfruit",
    956: "custard_apple",
    957: "pomegranate",
    959: "carbonara",
    960: "chocolate_sauce",
    961: "dough",
    962: "meat_loaf",
    963: "pizza",
    964: "potpie",
    965: "burrito",
    967: "espresso",
    969: "eggnog",
    987: "corn",
}
