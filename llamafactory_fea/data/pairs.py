r"""`llamafactory-fea data pairs`: entity-centric preference pairs (EMPO) from a labelled dataset with reasoning.

Every pair differs from its row in one entity of facial emotion analysis, the emotion or an action unit (AU):
- response: the row's own response (chosen) against the same response with one entity edited in `<think>` and
  `<answer>` alike (rejected): `emotion_swap` (the emotion, in every form the text writes it, replaced by a commonly
  confused one, `CONFUSIONS`), `au_swap` (every mention of a labelled AU replaced by an AU the row does not have,
  written with its number and FACS name from `fea/aus.py`), `au_drop` (every mention of a labelled AU removed);
- instruction: the same image and response, the question with a claim about the face appended (`CLAIM`): the true
  emotion or a labelled AU (chosen; `instruction_chosen: plain` leaves the question as it is) against a false one
  (rejected): `false_emotion`, `false_au`;
- image: the same question and response, the row's face (chosen) against `region_hidden` (the face with the region
  of a labelled AU filled with the region's mean colour) or `other_face` (a face of the same source with another
  emotion label, a confused one when there is one).
Face regions assume aligned crops (eyes at about 40% of the height, as RAF-DB, AffectNet and FEA-20K crops are):
`upper` (AUs of the brows and eyes, FACS's upper face) is the top half, `lower` (nose, mouth, chin, jaw) the bottom
half.

The chosen response must agree with the row's labels (its `<answer>` names the labelled emotion, its `<think>` names
exactly the labelled AUs); rows that do not, and rows without reasoning or without the labels an edit needs, are
counted with the reason and skipped. Output, all files written together or none (`files.write_files`):
`<dataset_dir>/pairs/<name>.jsonl` (every pair, registered as `<name>` for `stage: empo`),
`<dataset_dir>/pairs/<name>_response.jsonl` (the response pairs only, registered as `<name>_response`, ranking
sharegpt rows that stock `stage: dpo` reads) and the edited images under `<dataset_dir>/pairs/<name>_images/`.
A row of the output: `messages` (the chosen prompt), `chosen`, `rejected` (assistant turns), `images` (the chosen
side's), `rejected_messages` and `rejected_images` (the rejected side's prompt and images, equal to the chosen side's
where the kind does not edit them), `pair_kind`, `edit` (a JSON string: the edit and its entities), `id`, `source_id`,
`dataset`, `emotion`, `aus`. Output is a function of the input rows and `seed` only.
"""

import argparse
import io
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fea.aus import AU_CATALOGUE, format_au
from ..fea.emotions import EMOTIONS, LABEL_SPACES, SYNONYMS
from ..fea.labels import answer_emotion, answer_text, extract_labels, named_aus, named_emotions, think_text
from .files import RecordError, jsonl, write_files
from .records import DATASET_INFO, dataset_objects, read_dataset_info, registry_text


PAIR_KINDS: tuple[str, ...] = ("response", "instruction", "image")
EDITS: dict[str, tuple[str, ...]] = {
    "response": ("emotion_swap", "au_swap", "au_drop"),
    "instruction": ("false_emotion", "false_au"),
    "image": ("region_hidden", "other_face"),
}
CONFUSIONS: dict[str, tuple[str, ...]] = {  # commonly confused expressions, the first most often
    "anger": ("disgust", "contempt"),
    "disgust": ("anger", "sadness"),
    "fear": ("surprise", "sadness"),
    "surprise": ("fear", "happiness"),
    "sadness": ("neutral", "fear"),
    "neutral": ("sadness", "contempt"),
    "happiness": ("surprise", "contempt"),
    "contempt": ("neutral", "happiness"),
}
ADJECTIVES: dict[str, str] = {
    "anger": "angry",
    "disgust": "disgusted",
    "fear": "fearful",
    "happiness": "happy",
    "neutral": "neutral",
    "sadness": "sad",
    "surprise": "surprised",
    "contempt": "contemptuous",
}
NOUN_WORDS = frozenset({"anger", "disgust", "fear", "happiness", "joy", "sadness", "sorrow", "surprise", "contempt"})
UPPER_REGIONS = frozenset({"brow", "eye"})  # FACS's upper face; every other region of `fea/aus.py` is lower
REGION_ROWS: dict[str, tuple[float, float]] = {"upper": (0.0, 0.5), "lower": (0.5, 1.0)}  # share of the height
CLAIM = "Note: this face shows {entity}."
PAIRS_FOLDER = "pairs"
RESPONSE_SUFFIX = "_response"


@dataclass
class PairOptions:
    r"""What `build_pairs` makes: which kinds, how many pairs of each kind per row, the seed, the edit styles."""

    kinds: tuple[str, ...] = PAIR_KINDS
    pairs_per_row: int = 1
    seed: int = 0
    instruction_chosen: str = "truthful"  # truthful: the question with a true claim; plain: the question as it is
    au_names: bool = True  # au_swap writes the new AU as "AU12 lip corner puller" (false: "AU12")

    def __post_init__(self) -> None:
        unknown = [kind for kind in self.kinds if kind not in PAIR_KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"pair kinds must be some of {', '.join(PAIR_KINDS)}, got {', '.join(self.kinds)}.")

        if self.pairs_per_row < 1:
            raise ValueError(f"pairs per row must be at least 1, got {self.pairs_per_row}.")

        if self.instruction_chosen not in ("truthful", "plain"):
            raise ValueError(f"instruction_chosen must be truthful or plain, got {self.instruction_chosen}.")


@dataclass
class SourceRow:
    r"""A labelled row read from the source dataset: its prompt, response, images and labels."""

    index: int
    id: str
    dataset: str
    system: str | None
    prompt: list[dict[str, str]]
    response: str
    images: list[str]
    emotion: str | None
    aus: list[int] | None


@dataclass
class PairsReport:
    r"""What `build_pairs` made and skipped: pairs per kind and edit, skipped (kind, reason) counts."""

    pairs: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        made = ", ".join(f"{kind}/{edit}: {n}" for (kind, edit), n in sorted(self.pairs.items())) or "none"
        skipped = ", ".join(f"{kind}: {reason} x{n}" for (kind, reason), n in sorted(self.skipped.items())) or "none"
        return f"pairs {sum(self.pairs.values())} ({made}); skipped {skipped}"


# Text edits: each returns the edited text, or None when the text does not allow it.
def _au_mention(number: int) -> re.Pattern:
    r"""A mention of an AU as reasoning writes it: AU4, AU04 (not AU43)."""
    return re.compile(rf"AU0*{number}(?!\d)")


def _same_case(word: str, new: str) -> str:
    r"""`new` in the letter case of `word` (lower, Capitalised or UPPER)."""
    if word.isupper() and len(word) > 1:
        return new.upper()

    return new.capitalize() if word[:1].isupper() else new


def swap_emotion(text: str, old: str, new: str) -> str | None:
    r"""Every word naming `old` (noun, adjective or synonym, any case) replaced by the same form of `new`.

    >>> swap_emotion("<think>Sad eyes, sadness.</think><answer>sadness</answer>", "sadness", "neutral")
    '<think>Neutral eyes, neutral.</think><answer>neutral</answer>'
    """

    def replace(match: re.Match) -> str:
        word = match.group(0)
        if SYNONYMS.get(word.lower()) != old:
            return word

        return _same_case(word, new if word.lower() in NOUN_WORDS else ADJECTIVES[new])

    edited = re.sub(r"[A-Za-z]+", replace, text)
    return edited if edited != text else None


def swap_au(text: str, old: int, new: int, with_name: bool = True) -> str | None:
    r"""Every mention of AU `old` replaced by AU `new`; its FACS name, where the text writes it, by the new one's.

    Where the text names the old AU only by number, the new one is written with its name when `with_name`.

    >>> swap_au("Brows down (AU4).", 4, 12)
    'Brows down (AU12 lip corner puller).'
    >>> swap_au("The brow lowerer (AU4) acts.", 4, 12)
    'The lip corner puller (AU12) acts.'
    """
    mention = _au_mention(old)
    if not mention.search(text):
        return None

    old_name, new_name = AU_CATALOGUE[old].name, AU_CATALOGUE[new].name
    named = re.compile(re.escape(old_name), re.IGNORECASE)
    if named.search(text):
        text = named.sub(lambda match: _same_case(match.group(0), new_name), text)
        return mention.sub(format_au(new), text)

    return mention.sub(f"{format_au(new)} {new_name}" if with_name else format_au(new), text)


def drop_au(text: str, number: int) -> str | None:
    r"""Every mention of an AU removed: from a parenthesised list, or with its parentheses when it is alone.

    >>> drop_au("Brows up (AU1, AU2), lips parted (AU25).", 2)
    'Brows up (AU1), lips parted (AU25).'
    >>> drop_au("Brows up (AU1, AU2), lips parted (AU25).", 25)
    'Brows up (AU1, AU2), lips parted.'
    """
    mention = _au_mention(number)
    if not mention.search(text):
        return None

    def drop_from_group(match: re.Match) -> str:
        items = [item for item in re.split(r"\s*[,;/]\s*|\s+and\s+", match.group(2).strip()) if item]
        kept = [item for item in items if not mention.match(item)]
        if len(kept) == len(items):
            return match.group(0)

        return f"{match.group(1)}({', '.join(kept)})" if kept else ""

    text = re.sub(r"(\s*)\(([^()]*)\)", drop_from_group, text)
    return re.sub(r"\s*" + mention.pattern, "", text)


def claim(question: str, entity: str) -> str:
    r"""The question with a claim about the face appended on its own line."""
    return f"{question}\n{CLAIM.format(entity=entity)}"


def claimed_labels(question: str) -> dict[str, Any]:
    r"""The emotion and AUs that the claim line of a question asserts (None: no claim, or no such entity).

    >>> claimed_labels(claim("Which emotion?", "AU12 lip corner puller"))
    {'emotion': None, 'aus': [12]}
    """
    prefix = CLAIM.split("{")[0]
    line = next((line for line in reversed(question.splitlines()) if line.startswith(prefix)), None)
    if line is None:
        return {"emotion": None, "aus": None}

    emotions, aus = named_emotions(line), sorted(named_aus(line))
    return {"emotion": emotions[0] if emotions else None, "aus": aus or None}


def au_region(number: int) -> str:
    r"""The face region (`upper` or `lower`) that shows an AU."""
    return "upper" if AU_CATALOGUE[number].region in UPPER_REGIONS else "lower"


def hide_region(image: Any, region: str) -> Any:
    r"""A copy of a PIL image with a region (`REGION_ROWS`) filled with its own mean colour."""
    from PIL import ImageStat

    image = image.convert("RGB")
    top, bottom = (round(share * image.height) for share in REGION_ROWS[region])
    box = (0, top, image.width, bottom)
    mean = tuple(round(value) for value in ImageStat.Stat(image.crop(box)).mean)
    edited = image.copy()
    edited.paste(mean, box)
    return edited


# Reading the source dataset.
def _sharegpt_columns(name: str, entry: dict[str, Any], source: str) -> dict[str, str]:
    r"""The messages/images columns and role tags of a registered sharegpt dataset (LLaMA-Factory's defaults)."""
    if entry.get("formatting", "alpaca") != "sharegpt" or entry.get("ranking"):
        raise RecordError(source, None, f"dataset {name!r} must be a sharegpt dataset of labelled rows (not ranking).")

    columns, tags = entry.get("columns", {}), entry.get("tags", {})
    return {
        "messages": columns.get("messages", "conversations"),
        "images": columns.get("images"),
        "system": columns.get("system"),
        "role": tags.get("role_tag", "from"),
        "content": tags.get("content_tag", "value"),
        "user": tags.get("user_tag", "human"),
        "assistant": tags.get("assistant_tag", "gpt"),
        "system_tag": tags.get("system_tag"),
    }


def read_source(dataset_dir: "str | Path", name: str) -> tuple[list[SourceRow], Counter]:
    r"""The rows of a registered sharegpt dataset, with their labels; rows that cannot be read are counted by reason."""
    dataset_dir = Path(dataset_dir)
    info = read_dataset_info(dataset_dir)
    info_path = str(dataset_dir / DATASET_INFO)
    if name not in info or not isinstance(info[name], dict) or "file_name" not in info[name]:
        raise RecordError(info_path, None, f"dataset {name!r} is not registered there (known: {', '.join(info)}).")

    columns = _sharegpt_columns(name, info[name], info_path)
    roles = {columns["user"]: "user", columns["assistant"]: "assistant"}
    rows, skipped = [], Counter()
    for index, (_, row) in enumerate(dataset_objects(dataset_dir / info[name]["file_name"])):
        messages = row.get(columns["messages"]) or []
        if not isinstance(messages, list) or not all(isinstance(message, dict) for message in messages):
            skipped["row", f"{columns['messages']} is not a list of turns"] += 1
            continue

        system = row.get(columns["system"]) if columns["system"] else None
        if messages and columns["system_tag"] and messages[0].get(columns["role"]) == columns["system_tag"]:
            system, messages = messages[0].get(columns["content"]), messages[1:]

        turns = [
            {"role": roles.get(m.get(columns["role"]), ""), "content": m.get(columns["content"], "")} for m in messages
        ]
        if len(turns) % 2 or not turns or any(t["role"] != ("user", "assistant")[i % 2] for i, t in enumerate(turns)):
            skipped["row", "not user/assistant turns ending with the answer"] += 1
            continue

        images = row.get(columns["images"]) if columns["images"] else None
        images = [images] if isinstance(images, str) else list(images or [])
        response = turns[-1]["content"] or ""
        labels = extract_labels(row, response)
        rows.append(
            SourceRow(
                index=index,
                id=str(row.get("id", index)),
                dataset=str(row.get("dataset") or name),
                system=system,
                prompt=turns[:-1],
                response=response,
                images=images,
                emotion=labels["emotion"],
                aus=labels["aus"],
            )
        )

    return rows, skipped


def _row_problem(row: SourceRow) -> str | None:
    r"""Why a row cannot give pairs: no reasoning, no labels, or a response that disagrees with its labels."""
    think = think_text(row.response)
    if not think:
        return "no reasoning (<think>) in the response"

    if row.emotion is None and not row.aus:
        return "no emotion or AU label"

    if row.emotion is not None and answer_emotion(answer_text(row.response)) != row.emotion:
        return "the <answer> does not name the labelled emotion"

    if row.aus is not None and named_aus(think) != frozenset(row.aus):
        return "the <think> does not name exactly the labelled AUs"

    return None


# Building pairs.
def wrong_emotions(row: SourceRow, rng: random.Random) -> list[str]:
    r"""Emotions to swap in: the confused ones first, then the rest of the source's label space."""
    space = LABEL_SPACES.get(row.dataset, EMOTIONS)
    confused = [e for e in CONFUSIONS.get(row.emotion, ()) if e in space and e != row.emotion]
    others = [e for e in space if e != row.emotion and e not in confused]
    rng.shuffle(others)
    return confused + others


def absent_aus(row: SourceRow, near: int | None, rng: random.Random) -> list[int]:
    r"""Catalogue AUs the row does not have: those of `near`'s region first (hard negatives), then the rest."""
    absent = [n for n in AU_CATALOGUE if n not in (row.aus or ())]
    rng.shuffle(absent)
    if near is None:
        return absent

    return sorted(absent, key=lambda n: au_region(n) != au_region(near))  # stable: shuffled within each group


def _interleave(groups: list[list[Any]], rng: random.Random) -> list[Any]:
    r"""Candidates of several edit types, one type after another, in a seeded order."""
    groups = [group for group in groups if group]
    rng.shuffle(groups)
    out = []
    while any(groups):
        for group in groups:
            if group:
                out.append(group.pop(0))

    return out


def _response_candidates(row: SourceRow, options: PairOptions, rng: random.Random) -> list[tuple[dict, str]]:
    r"""(edit, rejected response) of the response kind."""
    emotion_swaps, au_swaps, au_drops = [], [], []
    if row.emotion is not None:
        for new in wrong_emotions(row, rng)[:2]:
            rejected = swap_emotion(row.response, row.emotion, new)
            if rejected is not None:
                emotion_swaps.append(({"type": "emotion_swap", "from": row.emotion, "to": new}, rejected))

    labelled = list(row.aus or ())
    rng.shuffle(labelled)
    for old in labelled:
        new = absent_aus(row, old, rng)[0]
        rejected = swap_au(row.response, old, new, options.au_names)
        if rejected is not None:
            au_swaps.append(({"type": "au_swap", "from": old, "to": new}, rejected))

        rejected = drop_au(row.response, old)
        if rejected is not None:
            au_drops.append(({"type": "au_drop", "au": old}, rejected))

    return _interleave([emotion_swaps, au_swaps, au_drops], rng)


def _instruction_candidates(row: SourceRow, rng: random.Random) -> list[tuple[dict, str, str]]:
    r"""(edit, true entity, false entity) of the instruction kind."""
    false_emotions, false_aus = [], []
    if row.emotion is not None:
        for new in wrong_emotions(row, rng)[:2]:
            false_emotions.append(({"type": "false_emotion", "true": row.emotion, "claim": new}, row.emotion, new))

    labelled = list(row.aus or ())
    rng.shuffle(labelled)
    for true in labelled:
        new = absent_aus(row, true, rng)[0]
        entity = lambda n: f"{format_au(n)} {AU_CATALOGUE[n].name}"  # noqa: E731
        false_aus.append(({"type": "false_au", "true": true, "claim": new}, entity(true), entity(new)))

    return _interleave([false_emotions, false_aus], rng)


def _image_candidates(row: SourceRow, by_source: dict[str, list[SourceRow]], rng: random.Random) -> list[dict]:
    r"""Edits of the image kind: a hidden region per region of a labelled AU, another face of the same source."""
    regions = {}
    for number in sorted(row.aus or ()):
        regions.setdefault(au_region(number), number)

    hidden = [{"type": "region_hidden", "region": region, "au": au} for region, au in regions.items()]
    rng.shuffle(hidden)
    faces = []
    if row.emotion is not None:
        others = [
            o for o in by_source.get(row.dataset, []) if o.emotion not in (None, row.emotion) and len(o.images) == 1
        ]
        confused = CONFUSIONS.get(row.emotion, ())
        others.sort(key=lambda o: (confused.index(o.emotion) if o.emotion in confused else len(confused), o.index))
        if others:
            best = [o for o in others if o.emotion == others[0].emotion]
            other = rng.choice(best)
            faces.append({"type": "other_face", "face": other.id, "emotion": other.emotion, "image": other.images[0]})

    return _interleave([hidden, faces], rng)


def _pair(row: SourceRow, kind: str, edit: dict, number: int, **sides: Any) -> dict[str, Any]:
    r"""One output row; `sides` gives `messages`, `chosen`, `rejected`, `images`, `rejected_messages`, `rejected_images`."""
    messages = ([{"role": "system", "content": row.system}] if row.system else []) + sides.get("messages", row.prompt)
    rejected_messages = ([{"role": "system", "content": row.system}] if row.system else []) + sides.get(
        "rejected_messages", sides.get("messages", row.prompt)
    )
    images = sides.get("images", row.images)
    return {
        "id": f"{row.id}:{kind}:{number}",
        "source_id": row.id,
        "dataset": row.dataset,
        "pair_kind": kind,
        "edit": json.dumps(edit, sort_keys=True),
        "messages": messages,
        "chosen": {"role": "assistant", "content": row.response},
        "rejected": {"role": "assistant", "content": sides.get("rejected", row.response)},
        "images": images,
        "rejected_messages": rejected_messages,
        "rejected_images": sides.get("rejected_images", images),
        "emotion": row.emotion,
        "aus": row.aus,
    }


def _with_last_user(prompt: list[dict[str, str]], content: str) -> list[dict[str, str]]:
    r"""The prompt with its last (user) turn's content replaced."""
    return [*prompt[:-1], {**prompt[-1], "content": content}]


def _open_image(dataset_dir: Path, path: str) -> Any:
    r"""A row's image as LLaMA-Factory finds it: under the dataset folder when there, else as written."""
    from PIL import Image

    full = dataset_dir / path if (dataset_dir / path).is_file() else Path(path)
    with Image.open(full) as image:
        image.load()
        return image


def build_pairs(
    rows: Sequence[SourceRow], options: PairOptions, dataset_dir: "str | Path", image_folder: str
) -> tuple[list[dict[str, Any]], dict[str, bytes], PairsReport]:
    r"""The pairs of every row, the edited images (relative path -> PNG bytes) and the report."""
    dataset_dir, report = Path(dataset_dir), PairsReport()
    pairs: list[dict[str, Any]] = []
    images: dict[str, bytes] = {}
    usable = []
    for row in rows:
        problem = _row_problem(row)
        if problem is not None:
            report.skipped["row", problem] += 1
        else:
            usable.append(row)

    by_source: dict[str, list[SourceRow]] = {}
    for row in usable:
        by_source.setdefault(row.dataset, []).append(row)

    for row in usable:
        for kind in options.kinds:
            rng = random.Random(f"{options.seed}:{row.id}:{row.index}:{kind}")
            made = _row_pairs(row, kind, options, rng, by_source, dataset_dir, image_folder, images, report)
            pairs.extend(made)
            for pair in made:
                report.pairs[kind, json.loads(pair["edit"])["type"]] += 1

    return pairs, images, report


def _row_pairs(
    row: SourceRow,
    kind: str,
    options: PairOptions,
    rng: random.Random,
    by_source: dict[str, list[SourceRow]],
    dataset_dir: Path,
    image_folder: str,
    images: dict[str, bytes],
    report: PairsReport,
) -> list[dict[str, Any]]:
    r"""Up to `pairs_per_row` pairs of one kind for one row (a row giving none is counted with the reason)."""
    n = options.pairs_per_row
    if kind == "response":
        candidates = _response_candidates(row, options, rng)[:n]
        if not candidates:
            report.skipped[kind, "no labelled entity named in the response"] += 1

        return [_pair(row, kind, edit, i, rejected=rejected) for i, (edit, rejected) in enumerate(candidates)]

    if kind == "instruction":
        candidates = _instruction_candidates(row, rng)[:n]
        if not candidates:
            report.skipped[kind, "no label to make a claim about"] += 1

        question = row.prompt[-1]["content"]
        made = []
        for i, (edit, true, false) in enumerate(candidates):
            chosen = claim(question, true) if options.instruction_chosen == "truthful" else question
            made.append(
                _pair(
                    row,
                    kind,
                    edit,
                    i,
                    messages=_with_last_user(row.prompt, chosen),
                    rejected_messages=_with_last_user(row.prompt, claim(question, false)),
                )
            )

        return made

    if len(row.images) != 1:
        report.skipped[kind, "not exactly one image"] += 1
        return []

    candidates = _image_candidates(row, by_source, rng)[:n]
    if not candidates:
        report.skipped[kind, "no AU label and no other face of the source with another emotion"] += 1

    made = []
    for i, edit in enumerate(candidates):
        if edit["type"] == "other_face":
            rejected_images = [edit["image"]]
        else:
            try:
                edited = hide_region(_open_image(dataset_dir, row.images[0]), edit["region"])
            except OSError as error:
                report.skipped[kind, f"image does not open ({type(error).__name__})"] += 1
                continue

            path = f"{image_folder}/{row.index:06d}_{edit['region']}.png"
            buffer = io.BytesIO()
            edited.save(buffer, format="PNG")
            images[path] = buffer.getvalue()
            rejected_images = [path]

        made.append(_pair(row, kind, edit, i, rejected_images=rejected_images))

    return made


def pairs_entry(file_name: str) -> dict[str, Any]:
    r"""The `dataset_info.json` entry of a pairs file: ranking sharegpt rows with images."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "messages", "chosen": "chosen", "rejected": "rejected", "images": "images"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }


def make_pairs(
    dataset_dir: "str | Path",
    dataset: str,
    name: str,
    options: PairOptions,
    force: bool = False,
    media_dir: "str | Path | None" = None,
) -> PairsReport:
    r"""Read `dataset`, build its pairs, write and register `name` and `name_response` in `dataset_dir` (atomically).

    With `media_dir` (the loop: its registry is not the images' folder), the source images are found under
    `media_dir` as LLaMA-Factory finds them, and the edited images are named by absolute path.
    """
    dataset_dir = Path(dataset_dir)
    if name in (dataset, f"{dataset}{RESPONSE_SUFFIX}"):
        raise RecordError(str(dataset_dir / DATASET_INFO), None, f"--name {name!r} would replace the source dataset.")

    rows, skipped = read_source(dataset_dir, dataset)
    image_folder = f"{PAIRS_FOLDER}/{name}_images"
    if media_dir is not None:
        image_folder = str((dataset_dir / image_folder).absolute())

    pairs, images, report = build_pairs(
        rows, options, dataset_dir if media_dir is None else Path(media_dir), image_folder
    )
    report.skipped.update(skipped)
    entries = {
        name: pairs_entry(f"{PAIRS_FOLDER}/{name}.jsonl"),
        f"{name}{RESPONSE_SUFFIX}": pairs_entry(f"{PAIRS_FOLDER}/{name}{RESPONSE_SUFFIX}.jsonl"),
    }
    info = read_dataset_info(dataset_dir)
    for entry_name, entry in entries.items():
        if not force and entry_name in info and info[entry_name] != entry:
            raise RecordError(
                str(dataset_dir / DATASET_INFO),
                None,
                f"already has a different entry {entry_name!r}: choose another --name or pass --force to replace it.",
            )

    if not pairs:
        return report

    files: dict[Path, str | bytes] = {dataset_dir / path: data for path, data in images.items()}
    files[dataset_dir / entries[name]["file_name"]] = jsonl(pairs)
    response_pairs = [pair for pair in pairs if pair["pair_kind"] == "response"]
    files[dataset_dir / entries[f"{name}{RESPONSE_SUFFIX}"]["file_name"]] = jsonl(response_pairs)
    registered = entries if response_pairs else {name: entries[name]}
    files[dataset_dir / DATASET_INFO] = registry_text(dataset_dir, registered)
    write_files(files)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""The options of `llamafactory-fea data pairs`."""
    parser.description = __doc__.split("\n\n")[0].removeprefix("`llamafactory-fea data pairs`: ")
    parser.add_argument("--dataset", required=True, help="Registered labelled sharegpt dataset with reasoning.")
    parser.add_argument("--name", required=True, help="Name of the preference dataset to register.")
    parser.add_argument(
        "--dataset-dir", default="data_registry", help="Folder with dataset_info.json (read, written)."
    )
    parser.add_argument(
        "--kinds", default=",".join(PAIR_KINDS), help=f"Pair kinds, comma-separated: {', '.join(PAIR_KINDS)}."
    )
    parser.add_argument("--pairs-per-row", type=int, default=1, help="Most pairs of each kind per row.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of every choice (the output depends on it only).")
    parser.add_argument(
        "--instruction-chosen",
        choices=("truthful", "plain"),
        default="truthful",
        help="Chosen question of an instruction pair: with a true claim (the pair differs in the entity only) or as is.",
    )
    parser.add_argument(
        "--au-number-only", action="store_true", help="au_swap writes the new AU as AU12, not AU12 lip corner puller."
    )
    parser.add_argument("--force", action="store_true", help="Replace different registry entries of the same names.")


def run(args: argparse.Namespace) -> int:
    r"""Build and register the pairs; print what was written and skipped, or the one reason nothing was."""
    try:
        kinds = tuple(kind.strip() for kind in args.kinds.split(",") if kind.strip())
        options = PairOptions(kinds, args.pairs_per_row, args.seed, args.instruction_chosen, not args.au_number_only)
        report = make_pairs(args.dataset_dir, args.dataset, args.name, options, args.force)
    except (RecordError, OSError, ValueError) as error:
        print(f"error: {error}")
        return 1

    if not report.pairs:
        print(f"error: no pair could be made from {args.dataset}; {report.summary()}.")
        return 1

    folder = Path(args.dataset_dir) / PAIRS_FOLDER
    responses = any(kind == "response" for kind, _ in report.pairs)
    response = f" and {args.name}{RESPONSE_SUFFIX} (response pairs: stock `stage: dpo`)" if responses else ""
    print(f"Registered {args.name} (every pair: `stage: empo`){response} in {args.dataset_dir}, files under {folder}/")
    print(report.summary())
    return 0
