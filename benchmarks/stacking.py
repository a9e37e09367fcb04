"""StackingSER on EmoDB speaker folds: the random-forest stack vs. its best single base model.

Runs (or reads back: base runs resume) ``crabser stack configs/stacking/emodb.yaml``: five base
models in five speaker-independent folds, a stack per fold, every score on all folds' test clips
pooled. The baseline is the base model a user would have picked without stacking: the one with
the best pooled *validation* Macro-F1 (the test split never chooses). Prints and writes Macro-F1,
balanced-bootstrap Macro-F1 (100 class-balanced subsets, 95 % interval) and UAR of every model,
and the ratio of the stack's test Macro-F1 to that baseline's. Two stacks over the same base runs:
the forest fitted on the base models' logits of the training clips (the paper's recipe) and on
their logits of the validation clips (predictions on clips the base models did not train on).

About 85 minutes on a slow 2-core machine with ``--jobs 2`` (``crabser stack`` of 2026-11-30), so
``make bench`` leaves it out; ``python -m benchmarks.run_all --long`` includes it. ``--quick``: two
base models, two folds, one epoch, in runs/quick.

Usage (from the repository root): python -m benchmarks.stacking [--config
configs/stacking/emodb.yaml] [--jobs 2] [--quick]
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import command_line, header, quick_overrides, write_section
from crabser.stacking import load_stack_config, run_stack, stacking_markdown


def verdict(table: dict) -> str:
    """The stack vs. the base model chosen on validation Macro-F1 (and the best on test, to
    read)."""
    bases = [name for name in table if name != "stack"]
    chosen = max(bases, key=lambda name: table[name]["val"]["macro_f1"])
    best_test = max(bases, key=lambda name: table[name]["test"]["macro_f1"])
    ratio = table["stack"]["test"]["macro_f1"] / table[chosen]["test"]["macro_f1"]
    return (
        f"Stack test Macro-F1 / base model chosen on validation ({chosen}) = **{ratio:.3f}**; "
        f"balanced F1 {table['stack']['test']['balanced_macro_f1']:.4f} vs. "
        f"{table[chosen]['test']['balanced_macro_f1']:.4f}. "
        f"Best base model on test (for reading only): {best_test}, Macro-F1 "
        f"{table[best_test]['test']['macro_f1']:.4f}.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/stacking/emodb.yaml")
    parser.add_argument(
        "--fit-on",
        default="train,val",
        help="the splits whose base-model logits fit the forest, one stack each",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 base models, 2 folds, 1 epoch, in runs/quick"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="base runs trained side by side (crabser stack --jobs); 1 = one after another",
    )
    args = parser.parse_args()
    stack = load_stack_config(args.config)
    overrides = ["train.progress=false", *quick_overrides(args.quick)]
    if args.quick:
        keep = list(stack.models)[-2:]
        stack = stack.model_copy(update={"models": {name: stack.models[name] for name in keep}})
        overrides += ["data.folds=2", "train.epochs=1"]
    body = header(command_line()) + f"- config: `{args.config}`\n"
    for fit_on in args.fit_on.split(","):
        started = time.perf_counter()
        summary = run_stack(stack.model_copy(update={"fit_on": fit_on}), overrides, jobs=args.jobs)
        minutes = (time.perf_counter() - started) / 60
        note = FIT_NOTES.get(fit_on, "")
        body += (
            f"\n### Forest fitted on the base models' {fit_on} logits{note}\n\n"
            f"Folds: {summary['folds']}; forest: {summary['forest']}; out-of-fold Macro-F1 of the "
            "forests on their "
            f"fitting data {summary['out_of_fold_macro_f1']:.4f}; {minutes:.0f} min in this run "
            f"with --jobs {args.jobs} (finished base runs are read back).\n\n"
            + stacking_markdown(summary["metrics"])
            + "\n"
            + verdict(summary["metrics"])
        )
    print(body)
    write_section("StackingSER on EmoDB speaker folds: stack vs. best single model", body)


#: what each fitting split means for the numbers
FIT_NOTES = {
    "train": " (the paper's recipe: a balanced subset of the training partition)",
    "val": (
        " (held-out predictions, as stacked generalisation asks; the base models chose their epoch "
        "on"
        " these clips, and the stack's val columns are in-sample)"
    ),
}


if __name__ == "__main__":
    main()
