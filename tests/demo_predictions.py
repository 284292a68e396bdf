r"""Demo predictions: a `generated_predictions.jsonl` as LLaMA-Factory writes it, fabricated for a registered set."""

import json
from pathlib import Path

from llamafactory_fea.data.files import atomic_write
from llamafactory_fea.eval.predictions import assistant_turn, dataset_rows
from llamafactory_fea.fea.aus import EMOTION_PROTOTYPES, format_au
from llamafactory_fea.fea.emotions import BASIC_EMOTIONS


def fabricate(index: int, row: dict) -> str:
    r"""A plausible completion for a row: mostly its reference, some with a wrong answer, a missed AU or no tags."""
    target, emotion, aus = assistant_turn(row), row.get("emotion") or "neutral", list(row.get("aus") or [])
    if index % 6 == 1:  # a wrong answer, reasoned from the wrong emotion's prototype AUs
        wrong = (
            BASIC_EMOTIONS[(BASIC_EMOTIONS.index(emotion) + 1) % len(BASIC_EMOTIONS)]
            if emotion in BASIC_EMOTIONS
            else "neutral"
        )
        named = (
            " and ".join(f"a movement ({format_au(au)})" for au in sorted(EMOTION_PROTOTYPES[wrong])[:2])
            or "no movement"
        )
        return f"<think>I see {named} on this face.</think><answer>{wrong}</answer>"

    if index % 6 == 3 and len(aus) > 1:  # one labelled AU missed
        return target.replace(f"({format_au(aus[-1])})", "")

    if index % 6 == 5:  # the format broken: no tags at all
        return f"The face looks like {emotion}."

    return target


def make_demo_predictions(dataset_dir: "str | Path", output: "str | Path", dataset: str = "fea_demo_test") -> Path:
    r"""Write fabricated predictions for every row of a registered dataset, in dataset order, with `label` = target."""
    _, rows = dataset_rows(dataset_dir, dataset)
    lines = [
        json.dumps({"prompt": "", "predict": fabricate(index, row), "label": assistant_turn(row)}, ensure_ascii=False)
        for index, (_, row) in enumerate(rows)
    ]
    atomic_write(output, "".join(f"{line}\n" for line in lines))
    return Path(output)
