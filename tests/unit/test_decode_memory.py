"""The decode memory budget: estimates from the header (tikka/model/imaging.py) and the
budget that admits decodes by them (tikka/http/overload.py)."""

from __future__ import annotations

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from PIL import Image

from tests import helpers
from tikka.errors import ImageTooLarge, TooManyRequests
from tikka.http.overload import DecodeMemory
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


@pytest.mark.parametrize(("mode", "options"), [("RGB", {}), ("RGB", {"lossless": True}), ("RGBA", {}),
                                              ("RGBA", {"lossless": True})])
def test_a_webps_size_is_read_before_pillow_allocates_its_canvas(mode, options):
    data = helpers.encode(Image.new(mode, (1234, 567)), "WEBP", **options)
    assert webp_canvas(data) == (1234, 567, mode == "RGBA")
    assert decoding_cost(data, max_pixels=10**8) == (decoding_bytes(opened(Image.new(mode, (1234, 567)), "WEBP")), None)
    with pytest.raises(ImageTooLarge):
        decoding_cost(data, max_pixels=1000)
    assert webp_canvas(helpers.encode(Image.new("RGB", (8, 8)), "PNG")) is None


def test_what_fits_goes_what_cannot_fit_is_refused_and_waiting_is_bounded():
    budget = DecodeMemory(capacity=100, wait_s=0.5)
    order: list[str] = []

    async def decode(name: str, nbytes: int, seconds: float):
        async with budget.hold(nbytes):
            order.append(f"{name} in")
            await anyio.sleep(seconds)
        order.append(f"{name} out")

    async def scenario():
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(decode, "bomb", 80, 0.2)
            await wait_all_tasks_blocked()
            tasks.start_soon(decode, "second bomb", 80, 0.01)  # waits for the first
            await wait_all_tasks_blocked()
            tasks.start_soon(decode, "photo", 5, 0.01)  # fits beside it: goes at once
        with pytest.raises(ImageTooLarge, match="the limit is 0 MB"):
            await decode("too big", 101, 0)
        async with budget.hold(100):
            with pytest.raises(TooManyRequests):
                await decode("no room", 1, 0)

    anyio.run(scenario)
    assert order.index("photo in") < order.index("bomb out") < order.index("second bomb in")
    assert budget.held == 0
