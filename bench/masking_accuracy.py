"""Masking accuracy and speed: jitgate's detectors side by side with Microsoft Presidio's.

Run: ``python -m bench.masking_accuracy [--cells N] [--seed S] [--presidio-cells N]
[--no-presidio]`` (Presidio comes with ``pip install 'jitgate[bench]'``; without it, or
with ``--no-presidio``, only jitgate's side of the tables is printed).

Both run over the same seeded corpus (:mod:`bench.masking_corpus`). Scoring is
span-level, **overlap-based**: a predicted span is a true positive when it overlaps a
still-unmatched labelled span of the same type (one-to-one); every other prediction is a
false positive, every unmatched label a false negative. Exact-boundary micro F1 is
printed as well. Hard-negative cells carry no labels, so anything found in them is a
false positive (listed separately).

Presidio (``presidio-analyzer`` from PyPI, a benchmark-only dependency) runs its
predefined recognizers for the shared types (credit card, e-mail, US SSN, phone, IBAN,
IP) through an ``AnalyzerEngine`` on its ``NoOpNlpEngine``: no spaCy model is downloaded;
only the PhoneRecognizer is not a regex (it wraps ``phonenumbers``, as ours does).
Presidio has no credential recognizers, so ``secret`` is jitgate-only and micro F1 is
given both over all types and over the six shared ones. Throughput is single-threaded
cells per second over the whole corpus; the clean-cell cost is measured separately.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.masking_corpus import TYPES, LabelledCell, generate
from jitgate.masking import Masker, build_scanner

SHARED_TYPES = ("card", "email", "ssn", "phone", "iban", "ip")
PRESIDIO_ENTITIES = {
    "CREDIT_CARD": "card",
    "EMAIL_ADDRESS": "email",
    "US_SSN": "ssn",
    "PHONE_NUMBER": "phone",
    "IBAN_CODE": "iban",
    "IP_ADDRESS": "ip",
}

Spans = list[tuple[int, int, str]]
Detect = Callable[[str], Spans]


@dataclass
class Score:
    tp: Counter[str] = field(default_factory=Counter)
    fp: Counter[str] = field(default_factory=Counter)
    fn: Counter[str] = field(default_factory=Counter)
    exact: Counter[str] = field(default_factory=Counter)
    negative_fp: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def prf(self, types: Sequence[str]) -> tuple[float, float, float]:
        tp = sum(self.tp[t] for t in types)
        fp = sum(self.fp[t] for t in types)
        fn = sum(self.fn[t] for t in types)
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return precision, recall, f1

    def exact_f1(self, types: Sequence[str]) -> float:
        labelled = sum(self.tp[t] + self.fn[t] for t in types)
        predicted = sum(self.tp[t] + self.fp[t] for t in types)
        exact = sum(self.exact[t] for t in types)
        return 2 * exact / (labelled + predicted) if labelled + predicted else 1.0


def score(
    cells: Sequence[LabelledCell], predictions: Sequence[Spans], types: Sequence[str]
) -> Score:
    result = Score()
    for cell, predicted in zip(cells, predictions, strict=True):
        gold = [span for span in cell.spans if span[2] in types]
        matched = [False] * len(gold)
        for start, end, kind in sorted(predicted):
            if kind not in types:
                continue
            hit = next(
                (
                    index
                    for index, (g_start, g_end, g_kind) in enumerate(gold)
                    if not matched[index] and g_kind == kind and start < g_end and g_start < end
                ),
                None,
            )
            if hit is None:
                result.fp[kind] += 1
                if cell.shape == "negative":
                    result.negative_fp[kind] += 1
                if len(result.examples) < 12:
                    result.examples.append(
                        f"FP {kind}: {cell.text[start:end]!r} in {cell.text[:90]!r}"
                    )
                continue
            matched[hit] = True
            result.tp[kind] += 1
            if (start, end) == gold[hit][:2]:
                result.exact[kind] += 1
        for index, (start, end, kind) in enumerate(gold):
            if not matched[index]:
                result.fn[kind] += 1
                if len(result.examples) < 24:
                    result.examples.append(
                        f"FN {kind}: {cell.text[start:end]!r} in {cell.text[:90]!r}"
                    )
    return result


def run(detect: Detect, cells: Sequence[LabelledCell]) -> tuple[list[Spans], float]:
    started = time.perf_counter()
    predictions = [detect(cell.text) for cell in cells]
    return predictions, time.perf_counter() - started


def jitgate_detector() -> Detect:
    scanner = build_scanner(TYPES)

    def detect(text: str) -> Spans:
        return [(f.start, f.end, f.type) for f in scanner.scan(text)]

    return detect


def presidio_detector(*, all_recognizers: bool = False) -> Detect:
    """Presidio's predefined recognizers for the shared types, with no NLP model.

    With ``all_recognizers`` the registry holds every predefined English recognizer and
    ``analyze`` looks for every entity (Presidio's default set-up, minus spaCy).
    """
    import tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    # EmailRecognizer validates with tldextract, which would fetch the public suffix list
    # over the network; use the snapshot bundled with the package instead.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    engine.load()
    registry = RecognizerRegistry()
    if all_recognizers:
        registry.load_predefined_recognizers(languages=["en"], nlp_engine=engine)
    else:
        for recognizer in (
            CreditCardRecognizer(),
            EmailRecognizer(),
            UsSsnRecognizer(),
            PhoneRecognizer(),
            IbanRecognizer(),
            IpRecognizer(),
        ):
            registry.add_recognizer(recognizer)
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])
    entities = None if all_recognizers else list(PRESIDIO_ENTITIES)

    def detect(text: str) -> Spans:
        results = analyzer.analyze(text=text, language="en", entities=entities)
        return [
            (r.start, r.end, PRESIDIO_ENTITIES[r.entity_type])
            for r in results
            if r.entity_type in PRESIDIO_ENTITIES
        ]

    return detect


def clean_cost_ns(cells: Sequence[LabelledCell], rounds: int = 200) -> tuple[float, float]:
    """ns per clean cell: detection (all types) and ``Masker("strict").mask_text``."""
    texts = [cell.text for cell in cells if cell.shape == "clean"]
    scanner = build_scanner(TYPES)
    masker = Masker("strict")
    best_scan = best_mask = float("inf")
    for _ in range(3):
        started = time.perf_counter_ns()
        for _ in range(rounds):
            for text in texts:
                scanner.scan(text)
        best_scan = min(best_scan, (time.perf_counter_ns() - started) / (rounds * len(texts)))
        started = time.perf_counter_ns()
        for _ in range(rounds):
            for text in texts:
                masker.mask_text(text)
        best_mask = min(best_mask, (time.perf_counter_ns() - started) / (rounds * len(texts)))
    assert scanner.scanned == 0, "a clean cell got past the pre-filter"
    return best_scan, best_mask


def _row(name: str, values: Sequence[str]) -> str:
    return "| " + " | ".join([name, *values]) + " |"


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def report(
    cells: Sequence[LabelledCell],
    ours: Score,
    theirs: Score | None,
    our_rate: float,
    their_rate: float | None,
    mask_rates: dict[str, float],
    clean_ns: tuple[float, float],
    presidio_cells: int,
    default_rate: float | None,
) -> str:
    """The tables; ``theirs``/``their_rate``/``default_rate`` None: Presidio was not run."""
    support = Counter(kind for cell in cells for _, _, kind in cell.spans)
    shapes = Counter(cell.shape for cell in cells)
    na = ["n/a"] * 3

    def their(types: Sequence[str]) -> list[str]:
        return [_fmt(v) for v in theirs.prf(types)] if theirs is not None else na

    def versus(rate: float) -> str:
        return f"{rate / their_rate:,.0f}×" if their_rate else "n/a"

    lines = [
        f"Corpus: {len(cells)} cells ({', '.join(f'{n} {s}' for s, n in sorted(shapes.items()))}), "
        f"{sum(support.values())} labelled values. Matching: overlap, same type, one-to-one.",
        "",
        "| type | support | jitgate P | jitgate R | jitgate F1 "
        "| Presidio P | Presidio R | Presidio F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in TYPES:
        mine = ours.prf([kind])
        other = their([kind]) if kind in SHARED_TYPES else na
        lines.append(_row(kind, [str(support[kind]), *map(_fmt, mine), *other]))
    lines.append(_row("**micro (all 7 types)**", ["", *map(_fmt, ours.prf(TYPES)), "", "", "n/a"]))
    lines.append(
        _row(
            "**micro (6 shared types)**",
            ["", *map(_fmt, ours.prf(SHARED_TYPES)), *their(SHARED_TYPES)],
        )
    )
    their_exact = _fmt(theirs.exact_f1(SHARED_TYPES)) if theirs is not None else "n/a"
    lines.append(
        _row(
            "exact-span micro F1 (shared)",
            ["", "", "", _fmt(ours.exact_f1(SHARED_TYPES)), "", "", their_exact],
        )
    )
    negatives = shapes["negative"]
    their_negatives = (
        f"{sum(theirs.negative_fp.values())} ({dict(theirs.negative_fp)})"
        if theirs is not None
        else "n/a"
    )
    lines.append(
        _row(
            f"false positives in {negatives} hard-negative cells",
            ["", "", "", str(sum(ours.negative_fp.values())), "", "", their_negatives],
        )
    )
    lines += [
        "",
        "| throughput (1 core) | cells/s | vs Presidio |",
        "|---|---:|---:|",
        _row("jitgate detection, all 7 types", [f"{our_rate:,.0f}", versus(our_rate)]),
        *(
            _row(f'jitgate `Masker("{name}").mask_text`', [f"{rate:,.0f}", versus(rate)])
            for name, rate in mask_rates.items()
        ),
    ]
    if their_rate is not None:
        presidio = f"Presidio analyze, 6 types ({presidio_cells} cells)"
        lines.append(_row(presidio, [f"{their_rate:,.0f}", "1×"]))
    if their_rate is not None and default_rate is not None:
        lines.append(
            _row(
                "Presidio analyze, all predefined recognizers (1000 cells)",
                [f"{default_rate:,.0f}", f"{default_rate / their_rate:.2f}×"],
            )
        )
    lines += [
        "",
        "| cell without candidate characters | ns/cell |",
        "|---|---:|",
        _row("jitgate detection (pre-filter only)", [f"{clean_ns[0]:,.0f}"]),
        _row('jitgate `Masker("strict").mask_text`', [f"{clean_ns[1]:,.0f}"]),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="jitgate vs Presidio masking accuracy and speed")
    parser.add_argument("--cells", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--presidio-cells", type=int, default=None, help="run Presidio on the first N cells only"
    )
    parser.add_argument("--examples", action="store_true", help="print missed/extra spans")
    parser.add_argument(
        "--no-presidio", action="store_true", help="jitgate only (Presidio not run)"
    )
    args = parser.parse_args()
    if not args.no_presidio:
        try:
            import presidio_analyzer  # noqa: F401
        except ImportError:
            parser.error(
                "presidio-analyzer is not installed: pip install 'jitgate[bench]' "
                "(or run with --no-presidio)"
            )

    cells = generate(args.cells, args.seed)
    # Warm-up on other cells: loads phonenumbers' metadata without pre-filling any cache.
    warm_up = generate(500, args.seed + 1)
    ours_detect = jitgate_detector()
    run(ours_detect, warm_up)
    ours_predictions, ours_seconds = run(ours_detect, cells)
    mask_rates = {}
    for name in ("strict", "pii", "pci", "secrets"):  # pci and secrets run no phone check
        masker = Masker(name)
        for cell in warm_up:
            masker.mask_text(cell.text)
        started = time.perf_counter()
        for cell in cells:
            masker.mask_text(cell.text)
        mask_rates[name] = len(cells) / (time.perf_counter() - started)

    presidio_cells = cells[: args.presidio_cells] if args.presidio_cells else cells
    theirs: Score | None = None
    their_rate: float | None = None
    default_rate: float | None = None
    if not args.no_presidio:
        theirs_detect = presidio_detector()
        run(theirs_detect, warm_up[:50])
        theirs_predictions, theirs_seconds = run(theirs_detect, presidio_cells)
        default_detect = presidio_detector(all_recognizers=True)
        run(default_detect, warm_up[:50])
        default_cells = presidio_cells[:1000]
        _, default_seconds = run(default_detect, default_cells)
        theirs = score(presidio_cells, theirs_predictions, SHARED_TYPES)
        their_rate = len(presidio_cells) / theirs_seconds
        default_rate = len(default_cells) / default_seconds

    ours = score(cells, ours_predictions, TYPES)
    print(
        report(
            cells,
            ours,
            theirs,
            len(cells) / ours_seconds,
            their_rate,
            mask_rates,
            clean_cost_ns(cells),
            len(presidio_cells),
            default_rate,
        )
    )
    if args.examples:
        print("\njitgate:", *ours.examples, sep="\n  ")
        if theirs is not None:
            print("\nPresidio:", *theirs.examples, sep="\n  ")


if __name__ == "__main__":
    main()
