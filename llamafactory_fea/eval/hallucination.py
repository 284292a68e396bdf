r"""What EMPO measures, for FEA: AU hallucination, and robustness to questions that assert something false.

- `au_hallucination`: over the AU-labelled samples, the AUs a completion claims (`<think>`) that are not labelled:
  the share of responses with at least one (`response_rate`, CHAIR_s), the share of claimed AUs that are
  hallucinated (`claim_rate`, CHAIR_i), their mean per response, and per AU the share of the samples without that AU
  whose completion claims it.
- `misleading_rows`: the test rows with a false claim appended to the question (a wrong emotion or an absent AU),
  made by the same edit code as the instruction pairs of `data pairs` (`data/pairs.py`) with a seed namespace of its
  own, so a test set is never a training set drawn again; `images_in_pairs` finds test images used by pairs.
- `misleading_robustness`: accuracy on the plain questions against accuracy on the misleading ones (joined by the
  source row), and how often the answer follows the false claim.
"""

import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.pairs import AU_CATALOGUE, SourceRow, absent_aus, claim, wrong_emotions
from ..data.records import dataset_objects, read_dataset_info
from ..fea.aus import format_au
from .predictions import EvalSample


SEED_NAMESPACE = "hallucination-eval"  # training pairs seed with "<seed>:<id>:...": never the same draws


def au_hallucination(samples: Sequence[EvalSample]) -> dict[str, Any] | None:
    r"""AU hallucination over the AU-labelled samples (None without any); per AU over the samples not labelled with it."""
    scored = [sample for sample in samples if sample.aus is not None]
    if not scored:
        return None

    hallucinated = [sample.parsed.aus - sample.aus for sample in scored]
    claimed = sum(len(sample.parsed.aus) for sample in scored)
    per_au = {}
    for number in sorted(set().union(*(sample.parsed.aus for sample in scored)) | set(AU_CATALOGUE)):
        without = [sample for sample in scored if number not in sample.aus]
        claims = sum(1 for sample in without if number in sample.parsed.aus)
        if without:
            per_au[format_au(number)] = {"rate": claims / len(without), "claimed": claims, "unlabelled": len(without)}

    return {
        "responses": len(scored),
        "response_rate": sum(1 for extra in hallucinated if extra) / len(scored),
        "claim_rate": sum(len(extra) for extra in hallucinated) / claimed if claimed else 0.0,
        "mean_per_response": sum(len(extra) for extra in hallucinated) / len(scored),
        "per_au": per_au,
    }


def misleading_rows(rows: Sequence[SourceRow], seed: int = 0) -> tuple[list[dict[str, Any]], Counter]:
    r"""Sharegpt rows of the test set with one false claim each (alternating emotion and AU claims), and skip reasons."""
    out, skipped = [], Counter()
    for row in rows:
        problem = None if row.emotion is not None or row.aus else "no emotion or AU label"
        if problem is None and not row.prompt:
            problem = "no question"

        if problem is not None:
            skipped[problem] += 1
            continue

        rng = random.Random(f"{SEED_NAMESPACE}:{seed}:{row.id}:{row.index}")
        options = []
        if row.emotion is not None:
            options.append(("false_emotion", wrong_emotions(row, rng)[0]))

        if row.aus:
            false = absent_aus(row, rng.choice(sorted(row.aus)), rng)[0]
            options.append(("false_au", f"{format_au(false)} {AU_CATALOGUE[false].name}", false))

        kind, *entity = rng.choice(options)
        edit = {"type": kind, "claim": entity[-1]}
        question = claim(row.prompt[-1]["content"], entity[0])
        messages = [
            *row.prompt[:-1],
            {**row.prompt[-1], "content": question},
            {"role": "assistant", "content": row.response},
        ]
        out.append(
            {
                "id": f"{row.id}:misleading",
                "source_id": row.id,
                "dataset": row.dataset,
                "edit": json.dumps(edit, sort_keys=True),
                "messages": ([{"role": "system", "content": row.system}] if row.system else []) + messages,
                "images": row.images,
                "emotion": row.emotion,
                "aus": row.aus,
            }
        )

    return out, skipped


def images_in_pairs(test_rows: Sequence[SourceRow], dataset_dir: "str | Path", pairs: Sequence[str]) -> set[str]:
    r"""The test images that any registered pairs dataset uses on either side (a test set must share none)."""
    dataset_dir = Path(dataset_dir)
    info = read_dataset_info(dataset_dir)
    used = set()
    for name in pairs:
        for _, row in dataset_objects(dataset_dir / info[name]["file_name"]):
            used.update(row.get("images") or [])
            used.update(row.get("rejected_images") or [])

    return {image for row in test_rows for image in row.images} & used


def misleading_robustness(
    plain: Sequence[EvalSample], misled: Sequence[EvalSample], claims: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any] | None:
    r"""Emotion accuracy on plain and misleading questions over the source rows that have both, and claim following.

    `claims` maps a misleading sample's id to its row's `source_id` and `edit` (as `misleading_rows` writes them).
    """
    plain_by_id = {sample.id: sample for sample in plain}
    joined = [(plain_by_id.get(claims[s.id]["source_id"]), s) for s in misled if s.id in claims]
    joined = [(p, m) for p, m in joined if p is not None and p.emotion is not None]
    if not joined:
        return None

    edits = {m.id: json.loads(claims[m.id]["edit"]) for _, m in joined}
    followed_emotion = [
        m.parsed.emotion == edits[m.id]["claim"] for _, m in joined if edits[m.id]["type"] == "false_emotion"
    ]
    au_rows = [(p, m) for p, m in joined if edits[m.id]["type"] == "false_au"]
    plain_accuracy = sum(p.parsed.emotion == p.emotion for p, _ in joined) / len(joined)
    misled_accuracy = sum(m.parsed.emotion == m.emotion for _, m in joined) / len(joined)
    return {
        "samples": len(joined),
        "plain_accuracy": plain_accuracy,
        "misleading_accuracy": misled_accuracy,
        "accuracy_drop": plain_accuracy - misled_accuracy,
        "follows_false_emotion": sum(followed_emotion) / len(followed_emotion) if followed_emotion else None,
        "claims_false_au": (
            sum(edits[m.id]["claim"] in m.parsed.aus for _, m in au_rows) / len(au_rows) if au_rows else None
        ),
    }


def make_misleading_set(
    dataset_dir: "str | Path", dataset: str, name: str, seed: int = 0, pairs: Sequence[str] = ()
) -> tuple[int, Counter]:
    r"""Write and register `name`: the misleading questions of the test set `dataset` (atomically, beside it).

    Refused (`RecordError`, nothing written) when a test image appears in one of the `pairs` datasets.
    """
    from ..data.files import RecordError, jsonl, write_files
    from ..data.pairs import read_source
    from ..data.records import DATASET_INFO, dataset_info_entry, registry_text

    dataset_dir = Path(dataset_dir)
    rows, skipped = read_source(dataset_dir, dataset)
    shared = images_in_pairs(rows, dataset_dir, pairs)
    if shared:
        raise RecordError(
            str(dataset_dir / DATASET_INFO),
            None,
            f"{len(shared)} images of the test set {dataset} are used by {', '.join(pairs)} (e.g. {sorted(shared)[0]}): "
            "make the pairs from a training split only.",
        )

    misled, more = misleading_rows(rows, seed)
    skipped.update(more)
    file_name = f"misleading/{name}.jsonl"
    write_files(
        {
            dataset_dir / file_name: jsonl(misled),
            dataset_dir / DATASET_INFO: registry_text(dataset_dir, {name: dataset_info_entry(file_name)}),
        }
    )
    return len(misled), skipped
