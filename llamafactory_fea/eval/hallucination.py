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

In the CLI: `llamafactory-fea data misleading --dataset fea20k_test --name fea20k_test_misleading` writes the
misleading set (refused when a test image is in a registered pairs dataset); after a predict run on each set,
`llamafactory-fea eval plain/generated_predictions.jsonl --dataset fea20k_test --misleading
misleading/generated_predictions.jsonl --misleading-dataset fea20k_test_misleading` adds `misleading` to
metrics.json (`hallucination`, from the plain predictions, is always there) and both sections to report.md.
"""

import argparse
import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.pairs import AU_CATALOGUE, SourceRow, absent_aus, claim, wrong_emotions
from ..data.records import DATASET_INFO, dataset_objects, read_dataset_info
from ..fea.aus import format_au
from ..hparams import split_arg
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
    from ..data.files import RecordError

    dataset_dir = Path(dataset_dir)
    info = read_dataset_info(dataset_dir)
    where = lambda image: str((dataset_dir / image).resolve())  # relative to the folder, or absolute
    used = set()
    for name in pairs:
        if not isinstance(info.get(name), dict) or not isinstance(info[name].get("file_name"), str):
            raise RecordError(
                str(dataset_dir / DATASET_INFO), None, f"pairs dataset {name!r} is not registered there."
            )

        for _, row in dataset_objects(dataset_dir / info[name]["file_name"]):
            used.update(map(where, row.get("images") or []))
            used.update(map(where, row.get("rejected_images") or []))

    return {where(image) for row in test_rows for image in row.images} & used


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
    from ..data.records import dataset_info_entry, registry_text

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
    if not misled:
        return 0, skipped

    file_name = f"misleading/{name}.jsonl"
    write_files(
        {
            dataset_dir / file_name: jsonl(misled),
            dataset_dir / DATASET_INFO: registry_text(dataset_dir, {name: dataset_info_entry(file_name)}),
        }
    )
    return len(misled), skipped


def pair_datasets(dataset_dir: "str | Path") -> list[str]:
    r"""The registered ranking datasets with a local file: every pairs dataset a test image must stay out of."""
    dataset_dir = Path(dataset_dir)
    return [
        name
        for name, entry in read_dataset_info(dataset_dir).items()
        if isinstance(entry, dict)
        and entry.get("ranking")
        and isinstance(entry.get("file_name"), str)
        and (dataset_dir / entry["file_name"]).is_file()
    ]


def misleading_results(
    plain: Sequence[EvalSample],
    predictions: "str | Path",
    dataset_dir: "str | Path",
    dataset: str,
    max_samples: int | None = None,
) -> dict[str, Any]:
    r"""`misleading_robustness` of the predictions on the misleading set `dataset` against the plain samples."""
    from ..data.files import RecordError
    from .predictions import dataset_rows, load_samples

    path, rows = dataset_rows(dataset_dir, dataset)
    claims = {str(row.get("id", i)): row for i, (_, row) in enumerate(rows) if "source_id" in row and "edit" in row}
    if not claims:
        raise RecordError(
            str(path), None, f"{dataset} is not a misleading set: write one with `llamafactory-fea data misleading`."
        )

    misled, _ = load_samples(predictions, dataset_dir, dataset, max_samples)
    result = misleading_robustness(plain, misled, claims)
    if result is None:
        raise RecordError(
            str(predictions),
            None,
            "no misleading prediction meets a plain one of an emotion-labelled row: give --dataset, the test set the "
            "misleading set was made from, and the plain predictions on it.",
        )

    return result


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def markdown(results: dict[str, Any]) -> str:
    r"""The report.md sections of AU hallucination and misleading questions ("" when there is neither)."""
    lines = []
    hallucination = results.get("hallucination")
    if hallucination:
        lines += [
            "",
            "## AU hallucination (AUs claimed but not labelled)",
            "",
            f"Over {hallucination['responses']} AU-labelled responses: {_percent(hallucination['response_rate'])}% "
            f"claim at least one unlabelled AU; {_percent(hallucination['claim_rate'])}% of the claimed AUs are not "
            f"labelled; {hallucination['mean_per_response']:.2f} such AUs per response.",
            "",
            "| AU | Rate (%) | Claimed | Samples without it |",
            "|---|---|---|---|",
            *(
                f"| {name} | {_percent(v['rate'])} | {v['claimed']} | {v['unlabelled']} |"
                for name, v in hallucination["per_au"].items()
                if v["claimed"]
            ),
        ]

    misleading = results.get("misleading")
    if misleading:
        lines += [
            "",
            "## Misleading questions (a false emotion or AU asserted in the question)",
            "",
            "| Metric | Value (%) |",
            "|---|---|",
            f"| Emotion accuracy, plain question | {_percent(misleading['plain_accuracy'])} |",
            f"| Emotion accuracy, misleading question | {_percent(misleading['misleading_accuracy'])} |",
            f"| Accuracy drop | {_percent(misleading['accuracy_drop'])} |",
            f"| Answers following a false emotion | {_percent(misleading['follows_false_emotion'])} |",
            f"| Reasoning claiming a false AU | {_percent(misleading['claims_false_au'])} |",
            "",
            f"{misleading['samples']} test rows with both answers.",
        ]

    return "\n".join(lines) + "\n" if lines else ""


def summary(results: dict[str, Any]) -> str | None:
    r"""One line of the hallucination figures (None without any)."""
    parts = []
    hallucination = results.get("hallucination")
    if hallucination:
        parts.append(
            f"AU hallucination {hallucination['response_rate']:.3f} of responses, "
            f"{hallucination['claim_rate']:.3f} of claimed AUs"
        )

    misleading = results.get("misleading")
    if misleading:
        follows = misleading["follows_false_emotion"]
        parts.append(
            f"emotion accuracy plain {misleading['plain_accuracy']:.3f} vs misleading "
            f"{misleading['misleading_accuracy']:.3f}"
            + ("" if follows is None else f", follows false emotion {follows:.3f}")
        )

    return "; ".join(parts) or None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""The options of `llamafactory-fea data misleading`."""
    parser.description = (
        "A labelled test set with a false claim (a wrong emotion or an absent AU) appended to each question, made by "
        "the edit code of `data pairs` with seeds of its own, for `eval --misleading`."
    )
    parser.add_argument("--dataset", required=True, help="Registered labelled test set (sharegpt).")
    parser.add_argument("--name", required=True, help="Name of the misleading test set to register.")
    parser.add_argument(
        "--dataset-dir", default="data_registry", help="Folder with dataset_info.json (read, written)."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the claims (its own namespace: never a pair's).")
    parser.add_argument(
        "--pairs",
        default=None,
        help="Pairs datasets no test image may be in, comma-separated; None: every registered ranking dataset.",
    )
    parser.add_argument("--force", action="store_true", help="Replace a different registry entry of the same name.")


def run(args: argparse.Namespace) -> int:
    r"""Write and register the misleading set; print what was written and skipped, or the one reason nothing was."""
    from ..data.files import RecordError
    from ..data.records import dataset_info_entry

    try:
        info = read_dataset_info(args.dataset_dir)
        where = str(Path(args.dataset_dir) / DATASET_INFO)
        if args.name == args.dataset:
            raise RecordError(where, None, f"--name {args.name!r} would replace the test set.")

        entry = dataset_info_entry(f"misleading/{args.name}.jsonl")
        if not args.force and args.name in info and info[args.name] != entry:
            raise RecordError(where, None, f"already has a different entry {args.name!r}: choose another --name.")

        pairs = pair_datasets(args.dataset_dir) if args.pairs is None else split_arg(args.pairs)
        written, skipped = make_misleading_set(args.dataset_dir, args.dataset, args.name, args.seed, pairs)
    except (RecordError, OSError) as error:
        print(f"error: {error}")
        return 1

    skips = ", ".join(f"{reason} x{n}" for reason, n in sorted(skipped.items())) or "none"
    print(f"Registered {args.name} ({written} misleading questions from {args.dataset}) in {args.dataset_dir}")
    print(f"checked against pairs: {', '.join(pairs) or 'none registered'}; skipped: {skips}")
    return 0 if written else 1
