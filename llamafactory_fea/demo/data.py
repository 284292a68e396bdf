r"""The embedded demo set: cartoon faces drawn from their AU labels, plus scikit-image's public-domain astronaut."""

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from ..data.files import write_jsonl
from ..data.records import FEARecord, register_dataset
from ..fea.aus import format_au


DEMO_FOLDER = "demo"
TRAIN_FILE, TEST_FILE = f"{DEMO_FOLDER}/fea_demo.jsonl", f"{DEMO_FOLDER}/fea_demo_test.jsonl"
TRAIN_DATASET, TEST_DATASET = "fea_demo", "fea_demo_test"
SIZE = 112
ASTRONAUT_SIZE = 128
ASTRONAUT_FACE_BOX = (120, 0, 340, 220)  # the face in skimage.data.astronaut() (512 x 512)

# four AU sets per emotion; the last of each goes to the test split
DEMO_FACES: dict[str, tuple[tuple[int, ...], ...]] = {
    "anger": ((4, 7, 23), (4, 5, 24), (4, 7, 17, 24), (4, 5, 23)),
    "disgust": ((9, 10), (9, 15, 17), (4, 9, 10), (9, 10, 25)),
    "fear": ((1, 2, 4, 5, 20), (1, 2, 5, 20, 26), (1, 4, 5, 25), (1, 2, 5, 20, 25)),
    "happiness": ((6, 12), (6, 12, 25), (12, 25), (6, 12, 26)),
    "neutral": ((25,), (43,), (25,), (43,)),
    "sadness": ((1, 4, 15), (1, 15, 17), (1, 4, 15, 17), (1, 4, 15, 43)),
    "surprise": ((1, 2, 5, 26), (1, 2, 5, 27), (1, 2, 26), (1, 2, 5, 25)),
}
ASTRONAUT_AUS = (6, 12)

# what each drawn AU looks like, in the reasoning's words
AU_PHRASES: dict[int, str] = {
    1: "the inner ends of the brows are raised",
    2: "the outer ends of the brows are lifted",
    4: "the brows are lowered and drawn together",
    5: "the upper eyelids are raised so the eyes look wide open",
    6: "the cheeks are raised and bunch up under the eyes",
    7: "the lower eyelids are tightened, narrowing the eyes",
    9: "the nose is wrinkled",
    10: "the upper lip is raised",
    12: "the lip corners are pulled up",
    15: "the lip corners are pulled down",
    17: "the chin is pushed up under the lower lip",
    20: "the lips are stretched sideways",
    23: "the lips are tightened into a narrow line",
    24: "the lips are pressed together",
    25: "the lips are parted",
    26: "the jaw drops open",
    27: "the mouth is stretched wide open",
    43: "the eyes are closed",
}
CONCLUSIONS: dict[str, str] = {
    "anger": "A lowered brow with tense eyes and lips reads as anger.",
    "disgust": "A wrinkled nose and a raised or turned-down mouth read as disgust.",
    "fear": "Raised, knitted brows with wide eyes and a tense mouth read as fear.",
    "happiness": "A smile with the cheeks lifted reads as happiness.",
    "neutral": "Apart from that the face is relaxed and shows no emotion, so it is neutral.",
    "sadness": "Raised inner brows with a downturned mouth read as sadness.",
    "surprise": "Raised brows with wide eyes and an open mouth read as surprise.",
}
SKIN_TONES = ((241, 204, 170), (224, 172, 130), (198, 134, 90), (141, 85, 54), (250, 220, 196))
HAIR_COLOURS = ((40, 30, 25), (110, 70, 35), (200, 160, 90), (90, 90, 95))
BACKGROUNDS = ((200, 220, 235), (230, 225, 205), (215, 235, 215), (235, 215, 225))
FACE_SHAPES = ((30, 40), (35, 38), (38, 34))  # half width, half height: oval, round, wide
DARK, WHITE, IRIS = (40, 30, 30), (250, 250, 250), (60, 90, 130)


@dataclass(frozen=True)
class Face:
    r"""Where a cartoon face is drawn and how it looks apart from its AUs."""

    cx: int
    cy: int
    rx: int
    ry: int
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    background: tuple[int, int, int]

    @property
    def shade(self) -> tuple[int, int, int]:
        r"""A darker skin tone for creases and cheeks."""
        return tuple(int(c * 0.72) for c in self.skin)


def _face(index: int) -> Face:
    r"""The look of the index-th face: skin tone, face shape, hair, background and a small shift."""
    rx, ry = FACE_SHAPES[index % len(FACE_SHAPES)]
    return Face(
        cx=SIZE // 2 + (index % 3) - 1,
        cy=SIZE // 2 + 4 + (index % 2),
        rx=rx,
        ry=ry,
        skin=SKIN_TONES[index % len(SKIN_TONES)],
        hair=HAIR_COLOURS[(index // 2) % len(HAIR_COLOURS)],
        background=BACKGROUNDS[(index // 3) % len(BACKGROUNDS)],
    )


def _curve(a: tuple[float, float], c: tuple[float, float], b: tuple[float, float], n: int = 8) -> list[tuple]:
    r"""Points of the quadratic Bézier curve from a to b with control point c."""
    points = []
    for i in range(n + 1):
        t = i / n
        x = (1 - t) ** 2 * a[0] + 2 * t * (1 - t) * c[0] + t**2 * b[0]
        y = (1 - t) ** 2 * a[1] + 2 * t * (1 - t) * c[1] + t**2 * b[1]
        points.append((round(x), round(y)))

    return points


def _draw_head(draw: ImageDraw.ImageDraw, face: Face) -> None:
    r"""Hair, head and ears."""
    cx, cy, rx, ry = face.cx, face.cy, face.rx, face.ry
    draw.ellipse((cx - rx - 3, cy - ry - 5, cx + rx + 3, cy + ry - 24), fill=face.hair)
    draw.ellipse((cx - rx - 5, cy - 8, cx - rx + 5, cy + 8), fill=face.skin)
    draw.ellipse((cx + rx - 5, cy - 8, cx + rx + 5, cy + 8), fill=face.skin)
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=face.skin)
    draw.chord((cx - rx, cy - ry, cx + rx, cy - ry + 16), 180, 360, fill=face.hair)


def _draw_brows(draw: ImageDraw.ImageDraw, face: Face, aus: set[int]) -> None:
    r"""Brows: inner ends up (AU1), outer ends up (AU2), lowered and knitted with a crease (AU4)."""
    y = face.cy - 16
    inner_dy = (-6 if 1 in aus else 0) + (4 if 4 in aus else 0)
    outer_dy = -6 if 2 in aus else (-1 if 4 in aus else 0)
    inner_x = 4 if 4 in aus else 6
    for side in (-1, 1):
        inner = (face.cx + side * inner_x, y + inner_dy)
        outer = (face.cx + side * 20, y + outer_dy + 1)
        middle = (face.cx + side * 13, min(inner[1], outer[1]) - 2)
        draw.line(_curve(inner, middle, outer), fill=face.hair, width=3)

    if 4 in aus:
        draw.line((face.cx - 1, y + 1, face.cx - 1, y + 6), fill=face.shade, width=1)
        draw.line((face.cx + 1, y + 1, face.cx + 1, y + 6), fill=face.shade, width=1)


def _draw_eyes(draw: ImageDraw.ImageDraw, face: Face, aus: set[int]) -> None:
    r"""Eyes: wide (AU5), narrowed (AU7), smiling crescents with raised cheeks (AU6), closed (AU43)."""
    y = face.cy - 8
    for side in (-1, 1):
        x = face.cx + side * 13
        if 43 in aus:
            draw.line(_curve((x - 6, y), (x, y + 4), (x + 6, y)), fill=DARK, width=2)
            continue

        half_height = 5 if 5 in aus else (2 if 7 in aus else 3)
        if 6 in aus:
            draw.arc(
                (x - 11, y + 5, x + 1, y + 11) if side < 0 else (x - 1, y + 5, x + 11, y + 11), 200, 340, face.shade
            )
            half_height = 2

        draw.ellipse((x - 6, y - half_height, x + 6, y + half_height), fill=WHITE, outline=DARK)
        iris = min(half_height, 3)
        draw.ellipse((x - 2, y + half_height - 2 * iris + (1 if 5 in aus else 0), x + 2, y + half_height), fill=IRIS)
        if 7 in aus:
            draw.line((x - 6, y + half_height, x + 6, y + half_height), fill=face.shade, width=2)

        if 6 in aus:
            draw.line(_curve((x - 6, y + half_height), (x, y - 2), (x + 6, y + half_height)), fill=DARK, width=1)


def _draw_nose(draw: ImageDraw.ImageDraw, face: Face, aus: set[int]) -> None:
    r"""Nose, with wrinkles across the bridge (AU9)."""
    cx, y = face.cx, face.cy + 3
    draw.line(((cx, y - 8), (cx - 3, y + 2), (cx + 2, y + 3)), fill=face.shade, width=1)
    if 9 in aus:
        for dy in (-8, -5, -2):
            draw.line((cx - 5, y + dy, cx + 5, y + dy + 1), fill=face.shade, width=1)


def _draw_mouth(draw: ImageDraw.ImageDraw, face: Face, aus: set[int]) -> None:
    r"""Mouth: corners up (AU12) or down (AU15), wide (AU20), narrow (AU23, AU24), open (AU25-27), chin (AU17)."""
    cx, y = face.cx, face.cy + 18
    half_width = 11 + (5 if 20 in aus else 0) + (2 if 12 in aus else 0) - (3 if aus & {23, 24} else 0)
    lift = 5 if 12 in aus else (-4 if 15 in aus else 0)
    opening = 16 if 27 in aus else (11 if 26 in aus else (5 if 25 in aus else 0))
    left, right = (cx - half_width, y - lift), (cx + half_width, y - lift)
    top = (cx, y - opening - (6 if 10 in aus else 0))  # a Bézier curve reaches half way to its control point
    bottom = (cx, y + opening + 2 * max(lift, 0))
    if opening or 10 in aus:
        outline = _curve(left, top, right) + _curve(right, bottom, left)[1:]
        draw.polygon(outline, fill=(120, 30, 40), outline=DARK)
        if 10 in aus or 12 in aus:
            draw.line(
                _curve((left[0] + 3, left[1]), (top[0], top[1] + 3), (right[0] - 3, right[1])), fill=WHITE, width=2
            )
    else:
        draw.line(_curve(left, (cx, y + lift), right), fill=DARK, width=3 if 24 in aus else 2)
        if 24 in aus:
            draw.line((left[0], y - 2, left[0], y + 2), fill=face.shade)
            draw.line((right[0], y - 2, right[0], y + 2), fill=face.shade)

    if 17 in aus:
        draw.arc((cx - 6, y + 7, cx + 6, y + 13), 180, 360, fill=face.shade, width=2)


def draw_face(aus: tuple[int, ...], index: int) -> Image.Image:
    r"""A cartoon face whose brows, eyes, nose and mouth show the given AUs; the index varies its look."""
    face = _face(index)
    image = Image.new("RGB", (SIZE, SIZE), face.background)
    draw = ImageDraw.Draw(image)
    labelled = set(aus)
    _draw_head(draw, face)
    _draw_brows(draw, face, labelled)
    _draw_eyes(draw, face, labelled)
    _draw_nose(draw, face, labelled)
    _draw_mouth(draw, face, labelled)
    return image


def astronaut_face() -> Image.Image:
    r"""The smiling face of scikit-image's public-domain astronaut photo (Eileen Collins), downscaled."""
    from skimage import data

    photo = Image.fromarray(data.astronaut()).crop(ASTRONAUT_FACE_BOX)
    return photo.resize((ASTRONAUT_SIZE, ASTRONAUT_SIZE), Image.Resampling.LANCZOS)


def reasoning(aus: tuple[int, ...], emotion: str) -> str:
    r"""Reference reasoning naming each AU in parentheses, then the emotion the AUs add up to."""
    clauses = [f"{AU_PHRASES[au]} ({format_au(au)})" for au in aus]
    described = clauses[0] if len(clauses) == 1 else f"{', '.join(clauses[:-1])} and {clauses[-1]}"
    return f"In this face {described}. {CONCLUSIONS[emotion]}"


def _save(image: Image.Image, output_dir: Path, relative: str) -> str:
    r"""Save a PNG under the dataset folder; return its path relative to that folder."""
    path = output_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)
    return relative


def _record(output_dir: Path, name: str, image: Image.Image, emotion: str, aus: tuple[int, ...]) -> FEARecord:
    r"""Save one demo image and return its labelled record."""
    relative = _save(image, output_dir, f"{DEMO_FOLDER}/images/{name}.png")
    return FEARecord(
        id=f"demo_{name}",
        image=relative,
        emotion=emotion,
        aus=sorted(aus),
        reasoning=reasoning(aus, emotion),
        dataset="demo",
    )


def demo_records(output_dir: "str | Path") -> tuple[list[FEARecord], list[FEARecord]]:
    r"""Draw the demo images under `output_dir/demo/images`; return the train and test records."""
    output_dir = Path(output_dir)
    train, test = [], []
    index = 0
    for emotion, variants in DEMO_FACES.items():
        for variant, aus in enumerate(variants):
            record = _record(output_dir, f"{emotion}_{variant}", draw_face(aus, index), emotion, aus)
            (test if variant == len(variants) - 1 else train).append(record)
            index += 1

    train.append(_record(output_dir, "astronaut", astronaut_face(), "happiness", ASTRONAUT_AUS))
    return train, test


def make_demo(output_dir: "str | Path") -> dict[str, Path]:
    r"""Write the demo set (images, train and test JSONL) and register `fea_demo` and `fea_demo_test`."""
    output_dir = Path(output_dir)
    train, test = demo_records(output_dir)
    files = {TRAIN_DATASET: (TRAIN_FILE, train), TEST_DATASET: (TEST_FILE, test)}
    for name, (file_name, records) in files.items():
        write_jsonl(output_dir / file_name, (record.to_row() for record in records))
        register_dataset(output_dir, name, file_name)

    return {name: output_dir / file_name for name, (file_name, _) in files.items()}
