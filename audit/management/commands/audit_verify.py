"""Check the tamper-evidence chain of the log families: every record's link, no gaps, and
the end of the chain where the chain head says it is."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import chain, store


class Command(BaseCommand):
    help = (
        "Verify the hash chain of log records. Reports the first broken link per family and "
        "exits with status 1 if any family's chain is broken."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--family",
            choices=[*chain.FAMILIES, "all"],
            default="all",
            help="Which log family to check (default: all).",
        )
        parser.add_argument(
            "--from", dest="first", type=int, help="First sequence number to check."
        )
        parser.add_argument("--to", dest="last", type=int, help="Last sequence number to check.")

    def handle(
        self, *args: Any, family: str, first: int | None, last: int | None, **_: Any
    ) -> None:
        if first is not None and last is not None and first > last:
            raise CommandError("--from must not be after --to.")
        families = list(chain.FAMILIES) if family == "all" else [family]
        target = store.current()
        broken = 0
        for name in families:
            verdict = self._verify(target, name, first, last)
            span = f"{verdict.first_seq}..{verdict.last_seq}" if verdict.checked else "no records"
            if verdict.ok:
                self.stdout.write(f"{name}: ok, {verdict.checked} records ({span})")
            else:
                broken += 1
                self.stdout.write(
                    f"{name}: BROKEN at record {verdict.broken_seq}: {verdict.reason} "
                    f"({verdict.checked} records verified before it)"
                )
        if broken:
            raise CommandError(f"{broken} chain(s) broken", returncode=1)

    @staticmethod
    def _verify(
        target: store.Store, family: str, first: int | None, last: int | None
    ) -> chain.Verdict:
        head = store.head(family)
        start = max(first or 0, head.anchor_seq + 1)
        if start == head.anchor_seq + 1:
            previous = (head.anchor_seq, head.anchor_hash)
        else:
            before = target.read(family, after_seq=start - 2, until_seq=start - 1, limit=1)
            if not before:
                verdict = chain.Verdict(family)
                verdict.broken_seq = start - 1
                verdict.reason = f"record {start - 1}, which record {start} links to, is missing"
                return verdict
            previous = (start - 1, before[0]["chain_hash"])
        to_the_end = last is None or last >= head.seq
        rows = store.iterate(target, family, after_seq=start - 1, until_seq=last)
        return chain.verify(
            family, rows, previous=previous, head=(head.seq, head.hash) if to_the_end else None
        )
