"""The decode memory budget and the turns of costly decodes: estimates from the header
(tikka/model/imaging.py) and what admits decodes by them (tikka/http/overload.py)."""

from __future__ import annotations

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from PIL import Image

from tests import helpers
from tikka.errors import ImageTooLarge, TooManyRequests
from tikka.http.overload import CostlyDecodes, DecodeMemory
from tikka.model.imaging import decoding_bytes, decoding_cost, open_upload, webp_canvas


def opened(image: Image.Image, fmt: str, draft_size: int | None = None) -> Image.Image:
    return open_upload(helpers.encode(image, fmt), max_pixels=10**8, draft_size=draft_size)


def test_estimates_follow_mode_format_and_draft():
    size = (1000, 800)
    per_pixel = {
        "RGB JPEG": (opened(Image.new("RGB", size), "JPEG"), 4),
        "RGB WebP": (opened(Image.new("RGB", size), "WEBP"), 16),
        "RGBA PNG": (opened(Image.new("RGBA", size), "PNG"), 20),
        "grey PNG": (opened(Image.new("L", size), "PNG"), 5),
        "palette GIF": (opened(Image.new("P", size), "GIF"), 5),
    }
    for name, (image, expected) in per_pixel.items():
        assert decoding_bytes(image) == expected * 1000 * 800, name
    drafted = opened(Image.new("RGB", (4000, 3000)), "JPEG", draft_size=448)
    assert decoding_bytes(drafted) <= 4 * 4000 * 3000 // 16, "libjpeg's reduced scale is what is decoded"
    sixteen_bit = open_upload(helpers.sixteen_bit_png(), max_pixels=10**8)
    assert decoding_bytes(sixteen_bit) == 9 * sixteen_bit.size[0] * sixteen_bit.size[1]


@pytest.mark.parametrize(
    ("mode", "options"), [("RGB", {}), ("RGB", {"lossless": True}), ("RGBA", {}), ("RGBA", {"lossless": True})]
)
def test_a_webps_size_is_read_before_pillow_allocates_its_canvas(mode, options):
    data = helpers.encode(Image.new(mode, (1234, 567)), "WEBP", **options)
    assert webp_canvas(data) == (1234, 567, mode == "RGBA")
    cost = decoding_cost(data, max_pixels=10**8)
    assert cost.memory_bytes == decoding_bytes(opened(Image.new(mode, (1234, 567)), "WEBP"))
    assert (cost.pixel_passes, cost.opened) == (1234 * 567, None)
    with pytest.raises(ImageTooLarge):
        decoding_cost(data, max_pixels=1000)
    assert webp_canvas(helpers.encode(Image.new("RGB", (8, 8)), "PNG")) is None


def a_photo_passes_two_bombs(admit, bomb: int, photo: int, then=None) -> None:
    """Two costly decodes and a cheap one through ``admit(cost)``, an async context manager:
    the photo goes in while the first bomb holds its place, and the second bomb waits for
    the first. ``then(decode)`` runs after them, for a test's own cases."""
    order: list[str] = []

    async def decode(name: str, cost: int, seconds: float):
        async with admit(cost):
            order.append(f"{name} in")
            await anyio.sleep(seconds)
        order.append(f"{name} out")

    async def scenario():
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(decode, "bomb", bomb, 0.2)
            await wait_all_tasks_blocked()
            tasks.start_soon(decode, "second bomb", bomb, 0.01)  # waits for the first
            await wait_all_tasks_blocked()
            tasks.start_soon(decode, "photo", photo, 0.01)  # goes at once
        if then:
            await then(decode)

    anyio.run(scenario)
    assert order.index("photo in") < order.index("bomb out") < order.index("second bomb in")


def test_what_fits_goes_what_cannot_fit_is_refused_and_waiting_is_bounded():
    budget = DecodeMemory(capacity=100, wait_s=0.5)

    async def refusals(decode):
        with pytest.raises(ImageTooLarge, match="the limit is 0 MB"):
            await decode("too big", 101, 0)
        async with budget.hold(100):
            with pytest.raises(TooManyRequests):
                await decode("no room", 1, 0)

    a_photo_passes_two_bombs(budget.hold, bomb=80, photo=5, then=refusals)
    assert budget.held == 0


def test_a_jpegs_passes_are_its_full_size_pixels_times_its_scans_whatever_the_draft():
    photo = helpers.photo_image("pizza.jpg").resize((3000, 2000))
    baseline = decoding_cost(helpers.encode(photo, "JPEG"), max_pixels=10**8, draft_size=448)
    progressive = decoding_cost(helpers.encode(photo, "JPEG", progressive=True), max_pixels=10**8, draft_size=448)
    png = decoding_cost(helpers.encode(photo, "PNG"), max_pixels=10**8)
    assert baseline.opened.size < (3000, 2000), "drafted"
    assert (baseline.pixel_passes, progressive.pixel_passes, png.pixel_passes) == (6_000_000, 60_000_000, 6_000_000)


def test_costly_decodes_take_turns_and_cheap_ones_pass_them():
    lanes = CostlyDecodes(slots=1, threshold=100, wait_s=0.5)

    async def no_turn(decode):
        async with lanes.turn(1000):
            with pytest.raises(TooManyRequests, match="costly images"):
                await decode("no turn", 1000, 0)

    a_photo_passes_two_bombs(lanes.turn, bomb=1000, photo=100, then=no_turn)
