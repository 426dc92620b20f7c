"""Writes the EXIF-orientation fixtures: one upright picture, and the same picture stored as a
camera would (pixels turned or mirrored) with the EXIF orientation that puts it upright.

    python tests/data/exif/make_exif_fixtures.py       # needs Pillow

| file | pixels stored | EXIF orientation |
|---|---|---|
| upright.png | upright, 48 wide x 32 high | none |
| rotate90.jpg | turned 90 degrees counter-clockwise (32 x 48) | 6 (turn 90 clockwise to view) |
| rotate270.png | turned 90 degrees clockwise (32 x 48) | 8 (turn 90 counter-clockwise), eXIf chunk |
| rotate180.jpg | turned 180 degrees | 3 |
| mirrored.jpg | mirrored left-right | 2 |

The picture is smooth (gradients and one bright block in the top-left corner) so that JPEG at
quality 100 stays within a few grey levels of the PNG.
"""
import os

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def picture():
    img = Image.new("L", (48, 32))
    px = img.load()
    for y in range(32):
        for x in range(48):
            px[x, y] = 40 + 2 * x + y
    for y in range(4, 14):
        for x in range(4, 18):
            px[x, y] = 250
    return img


def with_orientation(img, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def main():
    up = picture()
    up.save(os.path.join(HERE, "upright.png"))
    cases = [
        ("rotate90.jpg", up.transpose(Image.Transpose.ROTATE_90), 6),
        ("rotate270.png", up.transpose(Image.Transpose.ROTATE_270), 8),
        ("rotate180.jpg", up.transpose(Image.Transpose.ROTATE_180), 3),
        ("mirrored.jpg", up.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 2),
    ]
    for name, stored, orientation in cases:
        options = {"exif": with_orientation(stored, orientation)}
        if name.endswith(".jpg"):
            options.update(quality=100, subsampling=0)
        stored.save(os.path.join(HERE, name), **options)


if __name__ == "__main__":
    main()
